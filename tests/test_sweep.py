"""Seed sweeps in parallel processes and through submitit, grid sweeps and best.json, CLI errors."""
import json
import shutil

import pytest
from click.testing import CliRunner

from jumpbench.benchmarks import runs
from jumpbench.benchmarks.training import sweep as SW
from jumpbench.benchmarks.training.sweep import parse_grid, run_seeds
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


def test_rank_sign_lower_for_errors_higher_for_scores_and_none_for_the_rest():
    assert SW.rank_sign("test_min_mse") == SW.rank_sign("test_loss") == 1
    assert SW.rank_sign("test_score_reaction_forward") == SW.rank_sign("test_score_route_coverage") == -1
    for metric in ("test_baseline_repeat_last", "test_score_truth_route_validity", "test_time_variation",
                   "test_score_diversity"):
        with pytest.raises(JumpbenchError, match="ranks nothing|the same at every grid point"):
            SW.rank_sign(metric)


def test_sweep_by_a_score_ranks_the_highest_first_and_skips_outdated_scores(small_ts, tmp_path, monkeypatch):
    # the points "train" by writing their last evaluation: lr=1e-3 scores higher, and its
    # higher score wins; lr=1e-4's later row has a score of an older definition, which is not read
    def fake(tasks, *args, **kwargs):
        for t in tasks:
            folder = t.folder("traveling_salesman")
            folder.mkdir(parents=True)
            high = "lr=1e-3" in t.overrides
            rows = [{"step": 1, "test_score_route_validity": 0.5 if high else 0.2, "scores_definition": 2},
                    {"step": 2, "test_score_route_validity": 0.9}] if not high else \
                [{"step": 2, "test_score_route_validity": 0.5, "scores_definition": 2}]
            (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            runs.write_status(folder, "done", "fake")
        return []
    monkeypatch.setattr(SW, "run_tasks", fake)
    monkeypatch.setattr("jumpbench.benchmarks.evaluation.probes.load_probe", lambda data, size: None)  # as if trained
    best = SW.sweep("jump", small_ts, "smoke", ["lr=1e-4,1e-3"], tmp_path, "test_score_route_validity",
                    progress=False)
    assert not best["lower_is_better"]
    assert [(r["overrides"], r["value"], r["step"]) for r in best["ranking"]] == \
        [(["lr=1e-3"], 0.5, 2), (["lr=1e-4"], 0.2, 1)]


def test_a_sweep_by_a_score_needs_a_score_of_the_dataset_a_model_that_draws_it_and_a_probe(small_ts, tmp_path):
    ts = {"name": "traveling_salesman"}
    with pytest.raises(JumpbenchError, match="not a score of traveling_salesman"):
        SW.check_score_metric("test_score_agreement", "jump", small_ts, ts, 16)
    with pytest.raises(JumpbenchError, match="cdna is not jumpy"):
        SW.check_score_metric("test_score_reaction_backward_mover", "cdna", small_ts, {"name": "color_reaction"}, 16)
    with pytest.raises(JumpbenchError, match="there is none: no 16px probe"):
        SW.check_score_metric("test_score_route_validity", "jump", small_ts, ts, 16)
    r = _cli("sweep", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--grid", "lr=1e-4,1e-3",
             "--metric", "test_score_route_validity", "--out", tmp_path, "--quiet")
    one_line_error(r, "jumpbench probe train")
    assert not (tmp_path / "traveling_salesman").exists()  # refused before anything trained


def test_last_value_skips_a_score_that_is_none(tmp_path):
    # a model that is not jumpy logs its backward score as None: the earlier value, or none
    rows = [{"step": 1, "test_score_reaction_backward": 0.5, "scores_definition": 2},
            {"step": 2, "test_score_reaction_backward": None, "scores_definition": 2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runs.last_value(tmp_path, "test_score_reaction_backward", "color_reaction") == (0.5, 1)
    assert runs.last_value(tmp_path, "test_score_reaction_forward") == (None, None)


@pytest.mark.parametrize("metric", ["test_time_variation", "test_baseline_black", "test_score_diversity"])
def test_sweep_refuses_a_metric_that_ranks_nothing_before_training(small_ts, tmp_path, metric):
    r = _cli("sweep", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--grid", "lr=1e-4,1e-3",
             "--metric", metric, "--out", tmp_path, "--quiet")
    one_line_error(r, metric)
    assert not (tmp_path / "traveling_salesman").exists()


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
    (["sweep", "--grid", "lr=1e-4,1e-3", "--metric", "test_min_mze"], "logs test_kl, test_loss, test_min_mse"),
    (["sweep", "--grid", "lr=1e-4", "--procs", 0], "--procs must be at least 1"),
    (["run", "--procs", 0], "--procs must be at least 1"),
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


def test_why_a_data_parallel_run_failed_names_the_process_that_failed_first_of_its_own_accord():
    from jumpbench.benchmarks.training.train import PEER_LOST
    from jumpbench.launch import why_failed

    def _why_failed(order, said, codes):
        return why_failed(order, said, codes, aside=PEER_LOST)  # as the local launcher asks

    lost = f"{PEER_LOST} (killed, ...)"
    assert _why_failed([], {}, [0, 0]) is None
    assert _why_failed([0, 1], {0: lost, 1: "shard 3 is corrupt"}, [1, 1]) == "shard 3 is corrupt (process 1 of 2)"
    assert _why_failed([0, 1], {0: lost}, [1, -9]) == "killed by signal 9 (process 1 of 2), perhaps for want of memory"
    assert _why_failed([0], {0: "no such dataset"}, [1]) == "no such dataset"
    assert _why_failed([1], {}, [0, 3]) == "exit status 3 (process 1 of 2)"
    assert why_failed([0, 1], {0: lost}, [1, 1]) == lost + " (process 0 of 2)"  # no aside: every reason its own


def test_a_second_sigterm_waits_for_the_checkpoint_a_second_ctrl_c_does_not():
    """A scheduler signals every process of a job and the launcher passes its own on: the
    second SIGTERM must not cut the checkpoint short; a second Ctrl-C is a person insisting."""
    import signal

    from jumpbench.benchmarks.training.train import _StopRequest
    from jumpbench.launch import Children

    stop = _StopRequest()
    try:
        stop._handle(signal.SIGTERM, None)
        stop._handle(signal.SIGTERM, None)
        assert stop.signalled
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)
    finally:
        stop.restore()

    class Child:
        def __init__(self):
            self.got = []

        def send_signal(self, sig):
            self.got.append(sig)

    children, child = Children(), Child()
    children.live.add(child)
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGINT):
        children.stop(sig)
    assert child.got == [signal.SIGTERM, signal.SIGINT]


def test_run_config_best_trains_in_the_sweeps_processes(tmp_path):
    from jumpbench.benchmarks.training.sweep import load_best

    best = tmp_path / "best.json"
    best.write_text(json.dumps({"preset": "cpu", "best": {"name": "lr-1e-4", "overrides": ["lr=1e-4"]}, "procs": 2}))
    assert load_best(tmp_path, None, "cdna", str(best)) == ("cpu", ["lr=1e-4"], 2)
    best.write_text(json.dumps({"preset": "cpu", "best": {"name": "cpu", "overrides": []}}))  # before --procs
    assert load_best(tmp_path, None, "cdna", str(best)) == ("cpu", [], 1)


def test_a_data_parallel_run_of_the_per_process_batch_is_not_resumed(tmp_path):
    from jumpbench.benchmarks.runs import check_global_batch

    (tmp_path / "config.json").write_text(json.dumps({"world_size": 2}))
    with pytest.raises(JumpbenchError, match="per process"):
        check_global_batch(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"world_size": 2, "batch_size_is_global": True}))
    check_global_batch(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"world_size": 1}))
    check_global_batch(tmp_path)
