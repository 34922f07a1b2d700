"""The one training loop: exact resume, NaN -> diverged, DDP with gloo, the run CLI's errors."""
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from jumpbench.benchmarks.machine import free_port
from jumpbench.benchmarks.training.train import train
from jumpbench.cli import cli
from jumpbench.models.jump import JUMP
from conftest import one_line_error


def _params(folder):
    return torch.load(folder / "checkpoint.pt", weights_only=False)["model"]


def test_run_writes_the_run_folder(small_ts, tmp_path):
    folder = train("jump", small_ts, "smoke", [], 0, tmp_path, progress=False)
    assert folder == tmp_path / "traveling_salesman" / "jump" / "smoke" / "seed-0"
    assert json.loads((folder / "status.json").read_text())["status"] == "done"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert all(0 <= r["test_min_mse"] <= 1 and r["train_loss"] > 0 for r in rows)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model"] == "jump" and cfg["seed"] == 0 and cfg["config"]["data"]["image_size"] == 16
    assert (folder / "samples.png").stat().st_size > 0


def _interrupt_and_resume(data, tmp_path, monkeypatch, seed, at_step, overrides=()):
    """Train a seed whole, and again with `at_step(step)` called in the forward pass of every
    step (it interrupts); then resume. Returns the interrupted run's folder and the step of
    the checkpoint it left, after checking both runs end with the same parameters."""
    overrides = list(overrides)
    whole = train("jump", data, "smoke", overrides, seed, tmp_path / "a", progress=False)
    real = JUMP.forward

    def interrupted(self, batch, step):
        at_step(step)
        return real(self, batch, step)

    monkeypatch.setattr(JUMP, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train("jump", data, "smoke", overrides, seed, tmp_path / "b", progress=False)
    part = tmp_path / "b" / whole.relative_to(tmp_path / "a")
    left_at = torch.load(part / "checkpoint.pt", weights_only=False)["step"]
    monkeypatch.setattr(JUMP, "forward", real)
    train("jump", data, "smoke", overrides, seed, tmp_path / "b", progress=False)
    a, b = _params(whole), _params(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    return part, left_at


def test_interrupted_run_resumes_exactly(small_ts, tmp_path, monkeypatch):
    def crash(step):
        if step == 4:
            raise KeyboardInterrupt

    part, left_at = _interrupt_and_resume(small_ts, tmp_path, monkeypatch, 1, crash)
    assert left_at == 3  # the last evaluation's checkpoint
    steps = [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_ctrl_c_checkpoints_between_steps_and_resumes_exactly(small_ts, tmp_path, monkeypatch, precision):
    """Bit-exact in fp32; in bf16 too, on the same machine (same kernels, same rounding)."""
    import signal

    from jumpbench.benchmarks.machine import cpu_has_bf16

    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")

    def ctrl_c(step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step: the step still completes

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job
    _, left_at = _interrupt_and_resume(small_ts, tmp_path, monkeypatch, 2, ctrl_c, [f"train.precision={precision}"])
    assert left_at == 5  # checkpointed at the next step boundary
    assert signal.getsignal(signal.SIGINT) is before  # the loop's handler is gone again


def test_auto_precision_is_bf16_on_cpus_that_have_it_and_on_gpus_only_when_compiled(monkeypatch):
    import torch

    from jumpbench.benchmarks import machine as M
    from jumpbench.errors import JumpbenchError

    for has in (True, False):
        monkeypatch.setattr(M, "has_bf16", lambda device, has=has: has)
        assert M.resolve_precision("auto", torch.device("cpu")) == ("bf16" if has else "fp32")
        assert M.resolve_precision("auto", torch.device("cuda")) == "fp32"  # eager bf16 is slower there
        assert M.resolve_precision("auto", torch.device("cuda"), compiled=True) == ("bf16" if has else "fp32")
        assert M.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(JumpbenchError, match="no native bf16"):
        M.resolve_precision("bf16", torch.device("cpu"))


def _poison_losses_from(monkeypatch, first: int) -> None:
    """JUMP's loss is NaN from step `first` on."""
    real = JUMP.forward

    def poisoned(self, batch, step):
        out = real(self, batch, step)
        if step >= first:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(JUMP, "forward", poisoned)


def test_nan_marks_the_run_diverged(small_ts, tmp_path, monkeypatch):
    _poison_losses_from(monkeypatch, 2)
    folder = train("jump", small_ts, "smoke", [], 0, tmp_path, progress=False)
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "diverged" and "nan at step 2" in status["why"]


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_reading_the_device_every_few_steps_changes_no_number(small_ts, tmp_path, monkeypatch):
    """GPUs read the loss sums and the finiteness flag every 50 steps, not every step. The
    rows are the means of each step's terms summed as Python floats (as the loop did before
    the sums moved to the device), with reads every step and every 4 steps alike; and every
    4 steps means 3 reads in 6 steps (steps 3 and 6 evaluate, step 4 is the fourth)."""
    from jumpbench.benchmarks.training import train as T

    real, seen = JUMP.forward, []

    def recorded(self, batch, step):
        out = real(self, batch, step)
        if self.training:  # not the evaluation's forward passes
            seen.append({k: float(v.detach()) for k, v in out.items()})
        return out

    monkeypatch.setattr(JUMP, "forward", recorded)
    every = train("jump", small_ts, "smoke", [], 0, tmp_path / "a", progress=False)
    expected = []
    for window in (seen[:3], seen[3:6]):
        sums = {}
        for out in window:
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
        expected.append({f"train_{k}": v / 3 for k, v in sums.items()})
    assert [{k: r[k] for k in e} for r, e in zip(_rows(every), expected)] == expected

    reads = []
    real_read = T._StepStats.first_nonfinite
    monkeypatch.setattr(T._StepStats, "first_nonfinite", lambda self: reads.append(1) or real_read(self))
    monkeypatch.setattr(T, "_sync_every", lambda device: 4)
    lazy = train("jump", small_ts, "smoke", [], 0, tmp_path / "b", progress=False)
    assert len(reads) == 3
    assert [{k: r[k] for k in e} for r, e in zip(_rows(lazy), expected)] == expected
    a, b = _params(every), _params(lazy)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_seen_late_still_marks_the_step_and_checkpoints_nothing_after_it(small_ts, tmp_path, monkeypatch):
    from jumpbench.benchmarks.training import train as T

    monkeypatch.setattr(T, "_sync_every", lambda device: 50)  # seen only at the evaluation of step 6
    _poison_losses_from(monkeypatch, 4)
    folder = train("jump", small_ts, "smoke", [], 0, tmp_path, progress=False)
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "diverged" and "nan at step 4" in status["why"]
    assert [r["step"] for r in _rows(folder)] == [3]
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_a_stop_request_with_a_nan_not_read_yet_marks_the_run_diverged_and_still_stops(small_ts, tmp_path,
                                                                                        monkeypatch):
    import signal

    from jumpbench.benchmarks.training import train as T

    monkeypatch.setattr(T, "_sync_every", lambda device: 50)
    _poison_losses_from(monkeypatch, 7)
    poisoned = JUMP.forward

    def ctrl_c(self, batch, step):
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)  # seen before step 9, the NaN of step 7 not read yet
        return poisoned(self, batch, step)

    monkeypatch.setattr(JUMP, "forward", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train("jump", small_ts, "smoke", ["train.steps=12", "train.eval_every=6"], 0, tmp_path, progress=False)
    (folder,) = (tmp_path / "traveling_salesman" / "jump").glob("*/seed-0")
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "diverged" and "nan at step 7" in status["why"]
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["step"] == 6


def test_auto_precision_resumes_in_the_precision_the_run_started_in(small_ts, tmp_path, monkeypatch):
    """A run checkpointed in fp32 under "auto" goes on in fp32 when "auto" now picks bf16 (as
    a GPU run begun before a release changed the rule would), so the resume stays exact. bf16
    autocast runs on any CPU (emulated where it is not native), so this runs everywhere."""
    from jumpbench.benchmarks import machine as M

    real_forward = JUMP.forward
    monkeypatch.setattr(M, "has_bf16", lambda device: False)   # auto -> fp32 while it starts
    whole = train("jump", small_ts, "smoke", [], 0, tmp_path / "a", progress=False)

    def crash(self, batch, step):
        if step == 4:
            raise KeyboardInterrupt
        return real_forward(self, batch, step)

    monkeypatch.setattr(JUMP, "forward", crash)
    with pytest.raises(KeyboardInterrupt):
        train("jump", small_ts, "smoke", [], 0, tmp_path / "b", progress=False)
    part = tmp_path / "b" / whole.relative_to(tmp_path / "a")
    ckpt = torch.load(part / "checkpoint.pt", weights_only=False)
    assert (ckpt["precision"], ckpt["device_type"]) == ("fp32", "cpu")
    monkeypatch.setattr(JUMP, "forward", real_forward)
    monkeypatch.setattr(M, "has_bf16", lambda device: True)    # auto -> bf16 now
    assert M.resolve_precision("auto", torch.device("cpu")) == "bf16"
    train("jump", small_ts, "smoke", [], 0, tmp_path / "b", progress=False)
    a, b = _params(whole), _params(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    cpu = torch.device("cpu")
    assert M.resumed_precision(None, None, "bf16", cpu) == "bf16"       # older checkpoints
    assert M.resumed_precision("fp32", "cuda", "bf16", cpu) == "bf16"   # made on another kind of device
    assert M.resumed_precision("bf16", "cpu", "fp32", cpu) == "bf16"


def test_two_process_gloo_ddp(small_ts, tmp_path):
    """Two gloo processes train one run. Once (a full test run in a fresh clone) a worker
    aborted (SIGABRT) with its cause cut from the report, and 14 launches after it passed,
    loaded or not; so a second launch is allowed, and a failure of both is reported with the
    start of each stderr (where the cause is) as well as its end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    errors = []
    for attempt in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), "-m", "jumpbench.cli", "run", "--model", "jump",
               "--data", str(small_ts), "--preset", "smoke", "--out", str(tmp_path / str(attempt)), "--quiet"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        if proc.returncode == 0:
            break
        errors.append(proc.stderr[:3000] + "\n...\n" + proc.stderr[-1500:])
    assert proc.returncode == 0, "\n=====\n".join(errors)
    tmp_path = tmp_path / str(attempt)
    folder = tmp_path / "traveling_salesman" / "jump" / "smoke" / "seed-0"
    assert json.loads((folder / "config.json").read_text())["world_size"] == 2
    assert json.loads((folder / "status.json").read_text())["status"] == "done"


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("args, text", [
    (["--model", "transformer"], "transformer"),
    (["--model", "jump", "--data", "nowhere/traveling_salesman"], "jumpbench generate narratives"),
    (["--model", "jump", "--set", "lr"], "key=value"),
    (["--model", "jump", "--set", "wings=3"], "unknown key 'wings'"),
    (["--model", "jump", "--set", "model.nt=0"], "nt"),
    (["--model", "jump", "--seeds", 0], "--seeds"),
    (["--model", "jump", "--preset", "huge"], "huge"),
])
def test_run_bad_input(small_ts, tmp_path, args, text):
    if "--data" not in args:
        args = args + ["--data", small_ts]
    r = _cli("run", *args, "--out", tmp_path)
    one_line_error(r, text)
    assert not any(tmp_path.rglob("checkpoint.pt"))


def test_seeds_skip_those_done(small_ts, tmp_path):
    r = _cli("run", "--model", "gqn", "--data", small_ts, "--preset", "smoke", "--seeds", 2,
             "--out", tmp_path, "--quiet")
    assert r.exit_code == 0, r.output
    r = _cli("run", "--model", "gqn", "--data", small_ts, "--preset", "smoke", "--seeds", 2,
             "--out", tmp_path, "--quiet")
    assert r.output.count("skipped") == 2
