"""Seed sweeps in parallel processes and through submitit, grid sweeps and best.json, CLI errors."""
import json
import shutil

import pytest
from click.testing import CliRunner

from jumpbench.benchmarks.sweep import parse_grid, run_seeds
from jumpbench.cli import cli
from jumpbench.errors import JumpbenchError
from conftest import one_line_error


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _status(folder):
    return json.loads((folder / "status.json").read_text())["status"]


def test_jobs_2_runs_two_seeds_in_parallel_then_skips_them(small_ts, tmp_path):
    args = ["run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--seeds", 2, "--jobs", 2,
            "--out", tmp_path, "--quiet"]
    r = _cli(*args)
    assert r.exit_code == 0, r.output
    base = tmp_path / "traveling_salesman" / "jump" / "smoke"
    assert [_status(base / f"seed-{k}") for k in (0, 1)] == ["done", "done"]
    assert all((base / f"seed-{k}" / "metrics.jsonl").read_text().count("\n") == 2 for k in (0, 1))
    r = _cli(*args)
    assert r.exit_code == 0 and r.output.count("skipped") == 2, r.output


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_seed_does_not_stop_the_others(small_ts, tmp_path, jobs):
    # seed 1's folder holds a corrupt checkpoint: that seed fails (the sweep says why), seeds 0
    # and 2 finish (one job: in order, so seed 2 comes after the failure)
    bad = tmp_path / "traveling_salesman" / "jump" / "smoke" / "seed-1"
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    failed = run_seeds("jump", small_ts, "smoke", [], [0, 1, 2], tmp_path, progress=False, jobs=jobs)
    assert [k for k, _ in failed] == [1] and "checkpoint.pt: checkpoint does not load" in failed[0][1], failed
    assert _status(bad.parent / "seed-0") == _status(bad.parent / "seed-2") == "done"
    assert _status(bad) == "failed"


@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_submitit_executors(small_ts, tmp_path, cluster):
    failed = run_seeds("gqn", small_ts, "smoke", [], [0], tmp_path, progress=False, launcher="slurm",
                       cluster=cluster)
    assert failed == []
    assert _status(tmp_path / "traveling_salesman" / "gqn" / "smoke" / "seed-0") == "done"
    assert (tmp_path / ".submitit").is_dir()


def test_grid_sweep_writes_best_json_and_run_config_best_uses_it(small_ts, tmp_path):
    r = _cli("sweep", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--grid", "lr=1e-4,1e-3",
             "--metric", "test_min_mse", "--out", tmp_path, "--quiet")
    assert r.exit_code == 0, r.output
    best = json.loads((tmp_path / "traveling_salesman" / "jump" / "best.json").read_text())
    ranking = best["ranking"]
    assert len(ranking) == 2 and best["metric"] == "test_min_mse" and best["lower_is_better"]
    assert ranking[0]["value"] <= ranking[1]["value"]
    assert best["best"]["overrides"] == ranking[0]["overrides"]
    assert {tuple(x["overrides"]) for x in ranking} == {("lr=1e-4",), ("lr=1e-3",)}
    name = best["best"]["name"]
    for x in ranking:  # each point lives under its config's name
        assert _status(tmp_path / "traveling_salesman" / "jump" / x["name"] / "seed-0") == "done"

    r = _cli("run", "--model", "jump", "--data", small_ts, "--config", "best", "--seeds", 2, "--out", tmp_path,
             "--quiet")
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output  # seed 0 is the sweep's own run
    folder = tmp_path / "traveling_salesman" / "jump" / name / "seed-1"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["preset"] == "smoke" and cfg["overrides"] == best["best"]["overrides"]
    assert _status(folder) == "done"


def test_parse_grid_splits_outside_brackets():
    assert parse_grid(["lr=1e-4, 3e-4", "lstm_sizes=[8,8],[16,16]"]) == {
        "lr": ["1e-4", "3e-4"], "lstm_sizes": ["[8,8]", "[16,16]"]}
    with pytest.raises(JumpbenchError):
        parse_grid(["lr=1e-4,,3e-4"])


@pytest.mark.parametrize("args, text", [
    (["sweep", "--grid", "lr"], "--grid expects key=v1,v2"),
    (["sweep", "--grid", "lr="], "--grid expects key=v1,v2"),
    (["sweep", "--grid", "wings=1,2"], "unknown key 'wings'"),
    (["sweep", "--grid", "lr=1e-4,1e-3", "--metric", "accuracy"], "unknown metric 'accuracy'"),
    (["sweep", "--grid", "lr=1e-4", "--jobs", 0], "--jobs must be at least 1"),
    (["run", "--jobs", 0], "--jobs must be at least 1"),
    (["run", "--launcher", "pbs"], "pbs"),
    (["run", "--config", "best"], "jumpbench sweep"),
    pytest.param(["run", "--launcher", "slurm"], "--launcher slurm",
                 marks=pytest.mark.skipif(shutil.which("srun") is not None, reason="a real slurm cluster")),
])
def test_bad_input_is_one_line(small_ts, tmp_path, args, text):
    r = _cli(*args, "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet")
    one_line_error(r, text)
    assert not any(tmp_path.rglob("status.json"))


def test_procs_2_trains_one_run_in_two_processes_and_resumes_only_so(small_ts, tmp_path):
    args = ["run", "--model", "cdna", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet"]
    r = _cli(*args, "--procs", 2)
    assert r.exit_code == 0, r.output
    folder = tmp_path / "traveling_salesman" / "cdna" / "smoke" / "seed-0"
    assert _status(folder) == "done"
    assert json.loads((folder / "config.json").read_text())["world_size"] == 2
    assert (folder / "metrics.jsonl").read_text().count("\n") == 2
    one_line_error(_cli(*args, "--steps", 8, "--extend"), "world_size: 2 -> 1")  # the run's own --procs only
    one_line_error(_cli(*args, "--procs", 3, "--name", "p3"), "does not split evenly over 3 processes")
    one_line_error(_cli(*args, "--procs", 2, "--launcher", "slurm", "--name", "s"), "local launcher")


def test_a_stop_reaches_every_process_of_a_data_parallel_run(small_ts, tmp_path):
    """SIGTERM to `run --procs 2` (a scheduler's stop; Ctrl-C alike): both processes stop at the
    same step, the run is checkpointed and marked interrupted, and nothing is left running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "traveling_salesman" / "cdna" / "long" / "seed-0"
    cmd = [sys.executable, "-m", "jumpbench.cli", "run", "--model", "cdna", "--data", str(small_ts), "--preset",
           "smoke", "--set", "train.steps=100000", "--set", "train.eval_every=2", "--name", "long",
           "--procs", "2", "--out", str(tmp_path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (folder / "metrics.jsonl").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().endswith("re-run the same command to resume"), err
    assert _status(folder) == "interrupted" and (folder / "checkpoint.pt").is_file()
    ps = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "processes left running"
