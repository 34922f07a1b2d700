"""Every input checked once, at the edge, by the same code for the CLI and the API (issue 30,
hole 5), values beyond what the data and the machine allow, diverged runs that fail, and
workers that end quietly with a killed parent (hole 6)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import jumpbench
from jumpbench import dataset as DS
from jumpbench import workers as W
from jumpbench.benchmarks import config as C
from conftest import one_line_error, run

INTERNAL = ("TypeError", "ValueError", "KeyError", "AttributeError", "EOFError", "Traceback")


def _refused(call, text):
    """A one-line JumpbenchError naming `text`, which names no internal exception."""
    with pytest.raises(jumpbench.JumpbenchError) as e:
        call()
    line = str(e.value)
    assert text in line and len(line.splitlines()) == 1 and not any(x in line for x in INTERNAL), line


@pytest.mark.parametrize("call, text", [
    (lambda d, o: jumpbench.open_dataset(123), "path must be a folder"),
    (lambda d, o: jumpbench.open_dataset(None), "path must be a folder"),
    (lambda d, o: jumpbench.open_dataset(""), "path must name a folder"),
    (lambda d, o: jumpbench.open_dataset(d, split=None), "split must be"),
    (lambda d, o: jumpbench.open_dataset(d, image_size=True), "image_size must be a whole number"),
    (lambda d, o: jumpbench.generate("narratives", o, n="4"), "--n must be a whole number, got '4'"),
    (lambda d, o: jumpbench.generate("narratives", o, n=4.5), "--n must be a whole number, got 4.5"),
    (lambda d, o: jumpbench.generate("narratives", o, n=True), "--n must be a whole number, got True"),
    (lambda d, o: jumpbench.generate("narratives", o, frames=12.0), "--frames must be a whole number"),
    (lambda d, o: jumpbench.generate("narratives", o, wings=3), "no option 'wings'"),
    (lambda d, o: jumpbench.generate("narratives", ""), "--out must name a folder"),
    (lambda d, o: jumpbench.generate(["dice"], o), "unknown generator"),
    (lambda d, o: jumpbench.train("nosuch", d, "smoke", out=o), "unknown model 'nosuch'"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", seed=-1, out=o), "--seed must be at least 0, got -1"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", seed="x", out=o), "--seed must be a whole number"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", seed=1.0, out=o), "--seed must be a whole number"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", overrides=[5], out=o), "overrides must be 'key=value'"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", overrides="lr=1", out=o), "a list of 'key=value'"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", out=""), "--out must name a folder"),
    (lambda d, o: jumpbench.train("jump", None, "smoke", out=o), "--data must be a folder"),
    (lambda d, o: jumpbench.train("jump", d, 5, out=o), "unknown preset 5"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", name=5, out=o), "--name must be"),
    (lambda d, o: jumpbench.train("jump", d, "smoke", ["data.eval_context=20"], out=o), "data.eval_context=20"),
])
def test_the_api_refuses_bad_input_in_one_line_and_writes_nothing(small_ts, tmp_path, call, text):
    _refused(lambda: call(small_ts, tmp_path / "out"), text)
    assert not (tmp_path / "out").exists()  # no folder left behind (train(seed=-1) made seed--1)


@pytest.mark.parametrize("args, text", [
    (["run", "--model", "jump", "--out", ""], "--out must name a folder"),
    (["run", "--model", "jump", "--seed", -1], "--seed must be at least 0, got -1"),
    (["sweep", "--model", "jump", "--grid", "lr=1e-4,1e-3", "--out", ""], "--out must name a folder"),
    (["sweep", "--model", "jump", "--grid", "lr=1e-4,1e-3", "--seed", -2], "--seed must be at least 0, got -2"),
    (["sweep", "--model", "jump", "--grid", "lr=1e-4,1e-4"], "--grid lr: 1e-4 given twice"),
    (["sweep", "--model", "jump", "--grid", "lr=1e-4,0.0001"], "are the same config"),
    (["run", "--model", "jump", "--set", "data.context_min=19", "--set", "data.context_max=19",
      "--set", "data.targets_min=2"], "do not fit"),
])
def test_the_cli_refuses_bad_runs_and_sweeps_before_any_folder(small_ts, tmp_path, monkeypatch, args, text):
    monkeypatch.chdir(tmp_path)
    out = [] if "--out" in args else ["--out", tmp_path / "runs"]
    one_line_error(run(*args, "--data", small_ts, "--preset", "smoke", "--quiet", *out), text)
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_an_empty_out_and_a_missing_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(run("generate", "narratives", "--n", 2, "--test-n", 1, "--out", ""), "--out must name a folder")
    assert list(tmp_path.iterdir()) == []
    one_line_error(run("plot", "--out", ""), "--out must name a folder")
    r = run("generate")
    one_line_error(r, "generate needs a command: dice")
    assert r.exit_code == 2 and "narratives" in r.output and "Options" not in r.output


def test_values_beyond_the_data_and_machine_are_clamped_and_recorded(small_ts, tmp_path, monkeypatch):
    info = DS.dataset_info(small_ts)  # 20-frame videos, 10 test scenes
    monkeypatch.setattr(W, "usable_cores", lambda: 1)
    sets = ["data.context_max=100", "train.eval_scenes=100000", "train.threads=999", "train.sample_scenes=50",
            "data.targets=30"]
    cfg = C.resolve("jump", "smoke", info["name"], info, sets)
    tc, dc = cfg["train"], cfg["data"]
    assert (dc.context_max, dc.targets, tc.eval_scenes, tc.sample_scenes, tc.threads) == (19, 19, 10, 10, 1)
    assert len(cfg["warnings"]) == 5 and "data.context_max=100 is more than" in cfg["warnings"][0]
    with pytest.raises(jumpbench.JumpbenchError, match="data.eval_context=20 leaves no frame"):
        C.resolve("jump", "smoke", info["name"], info, ["data.eval_context=20"])

    sets = sets[:3]
    warnings = C.resolve("jump", "smoke", info["name"], info, sets)["warnings"]
    assert [w.split(" ")[0] for w in warnings] == sets
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--quiet", "--out", tmp_path,
            *sum((["--set", s] for s in sets), []))
    assert r.exit_code == 0, r.output
    assert [ln for ln in r.output.splitlines() if ln.startswith("warning: ")] == [f"warning: {w}" for w in warnings]
    record = json.loads(next(tmp_path.rglob("config.json")).read_text())
    assert record["warnings"] == warnings
    assert record["config"]["data"]["context_max"] == 19 and record["config"]["train"]["eval_scenes"] == 10
    assert record["config"]["train"]["threads"] == 1


def test_a_diverged_run_fails_the_command_and_the_sweep(small_ts, tmp_path):
    args = ["run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--quiet", "--out", tmp_path]
    for _ in range(2):  # trained, then skipped as diverged already: a failure both times
        r = run(*args, "--set", "train.lr=1e10")
        assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith(
            "error: 1 of 1 seed(s) failed: seed 0: diverged (loss became nan at step"), r.output
    status = json.loads(next(tmp_path.rglob("status.json")).read_text())
    assert status["status"] == "diverged"
    r = run("sweep", *args[1:], "--grid", "lr=1e-3,1e10", "--metric", "test_loss")
    assert r.exit_code == 0, r.output
    best = json.loads((tmp_path / "traveling_salesman" / "jump" / "best.json").read_text())
    ranked = {tuple(x["overrides"]): x for x in best["ranking"]}
    assert len(ranked) == len(best["ranking"]) == 2 and best["best"]["overrides"] == ["lr=1e-3"]
    assert not ranked[("lr=1e10",)]["ok"] and ranked[("lr=1e10",)]["why"].startswith("diverged (")


def _killed_parent_says(code: str, ready, sig: int, tmp_path) -> str:
    """stderr of a `python -c code` whose workers are busy (`ready()`) when it is sent `sig`,
    read until every process that holds it (the workers too) has ended."""
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "JUMPBENCH_CACHE": str(tmp_path / "cache")})
    deadline = time.time() + 60
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_parent_of_generation_workers_prints_no_traceback(tmp_path, sig):
    code = ("from jumpbench.cli import cli; cli(['generate', 'narratives', '--n', '4000', '--test-n', '4', "
            "'--shard-size', '10', '--workers', '2', '--quiet', '--out', 'out'])")
    err = _killed_parent_says(code, lambda: any((tmp_path / "out").rglob("*.tfmeta")), sig, tmp_path)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_parent_of_the_cache_build_prints_no_traceback(small_ts, tmp_path, sig):
    started = tmp_path / "started"
    code = f"""
import time
from pathlib import Path
from jumpbench import cache as FC, dataset as DS
from jumpbench.benchmarks.training import train as T

FC.CACHE_CHUNK = 1
decode = FC._decode_chunk
def slow(chunk, scenes=None):
    Path({str(started)!r}).touch()
    time.sleep(0.3)
    return decode(chunk, scenes)
FC._decode_chunk = slow
with T._sigterm_interrupts():  # as a run builds it
    FC.FrameCache._build(DS.Scenes({str(small_ts)!r}, "train", 16), False, workers=2)
"""
    err = _killed_parent_says(code, started.exists, sig, tmp_path)
    assert "BrokenPipe" not in err and "ForkPoolWorker" not in err, err
