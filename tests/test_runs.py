"""Run folders (issue 11): a resume under another config or dataset is refused and config.json
is never rewritten, checksummed checkpoints, a torn metrics line, exact train_* rows after a
Ctrl-C, and the run/plot/bench CLI's one-line errors."""
import json
import os
import shutil
import signal

import pytest
import torch

from conftest import one_line_error, run
from jumpbench import records
from jumpbench.benchmarks.training.train import train
from jumpbench.errors import JumpbenchError
from jumpbench.models.jump import JUMP


def interrupted(data, out, monkeypatch, at=4, how="crash", overrides=()):
    """A smoke run of jump stopped in step `at` (KeyboardInterrupt, or a SIGINT that lets the
    step finish); returns its folder."""
    real = JUMP.forward

    def forward(self, batch, step):
        if step == at:
            if how == "crash":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, batch, step)

    monkeypatch.setattr(JUMP, "forward", forward)
    with pytest.raises(KeyboardInterrupt):
        train("jump", data, "smoke", list(overrides), 0, out, name="r", progress=False)
    monkeypatch.setattr(JUMP, "forward", real)
    return out / "traveling_salesman" / "jump" / "r" / "seed-0"


def status(folder):
    return json.loads((folder / "status.json").read_text())


# ---------------------------------------------------------------- 2. config check on resume

@pytest.mark.parametrize("change, differs", [
    (dict(overrides=["train.lr=0.01"]), "train.lr"),
    (dict(overrides=["model.nf_z=4"]), "model.nf_z"),  # another model size: refused before loading
    (dict(data="other"), "dataset_sha256"),
])
def test_resume_under_another_config_or_dataset_is_refused(small_ts, tmp_path, monkeypatch, change, differs):
    folder = interrupted(small_ts, tmp_path, monkeypatch)
    config = (folder / "config.json").read_bytes()
    data = small_ts
    if "data" in change:  # the same dataset name, other bytes
        from jumpbench.generators.base import generate
        from jumpbench.generators.narratives import NarrativesConfig, NarrativesGenerator

        data = generate(NarrativesGenerator(NarrativesConfig(seed=5)), tmp_path / "other",
                        {"train": 40, "test": 10}, 16, progress=False)
    with pytest.raises(JumpbenchError, match=f"another config; differs: .*{differs}"):
        train("jump", data, "smoke", change.get("overrides", []), 0, tmp_path, name="r", progress=False)
    assert (folder / "config.json").read_bytes() == config
    r = run("run", "--model", "jump", "--data", data, "--preset", "smoke", "--name", "r", "--out", tmp_path,
            "--quiet", *[a for o in change.get("overrides", []) for a in ("--set", o)])
    one_line_error(r, differs)
    if "data" in change:  # and says what to do about it
        one_line_error(r, "the dataset's manifest is not the one the run trained on")
    train("jump", small_ts, "smoke", [], 0, tmp_path, name="r", progress=False)  # the same settings resume
    assert status(folder)["status"] == "done"


# ---------------------------------------------------------------- 5. checksummed checkpoints

def test_a_corrupted_checkpoint_is_refused(small_ts, tmp_path, monkeypatch):
    folder = interrupted(small_ts, tmp_path, monkeypatch)
    ckpt = folder / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    at = int(len(data) * 0.3)
    data[at:at + 64] = bytes(64)
    ckpt.write_bytes(bytes(data))
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--name", "r", "--out", tmp_path,
            "--quiet")
    one_line_error(r, "checkpoint.pt: corrupt checkpoint")
    assert status(folder)["status"] == "failed" and "checkpoint.pt" in status(folder)["why"]


def test_a_checkpoint_that_does_not_load_is_named(small_ts, tmp_path, monkeypatch):
    folder = interrupted(small_ts, tmp_path, monkeypatch)
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (folder / "checkpoint.pt.sha256").unlink()  # a run folder from before checksums
    with pytest.raises(JumpbenchError, match="checkpoint.pt: checkpoint does not load"):
        train("jump", small_ts, "smoke", [], 0, tmp_path, name="r", progress=False)
    assert status(folder)["status"] == "failed"


def test_the_previous_checkpoint_still_loads_after_a_crash_between_renames(small_ts, tmp_path, monkeypatch):
    from jumpbench.benchmarks import runs

    path = tmp_path / "checkpoint.pt"
    state = {"model": {}, "optimizer": {}, "step": 1}
    runs.save_checkpoint(path, state)
    old = path.read_bytes()
    runs.save_checkpoint(path, {**state, "step": 2})
    path.write_bytes(old)  # as if the crash came after the sidecar and before the rename
    assert runs.load_checkpoint(path)["step"] == 1


# ---------------------------------------------------------------- metrics and running sums

def test_a_torn_metrics_line_is_dropped_on_resume(small_ts, tmp_path, monkeypatch):
    folder = interrupted(small_ts, tmp_path, monkeypatch)
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "wall": 0.1, "train_lo')
    train("jump", small_ts, "smoke", [], 0, tmp_path, name="r", progress=False)
    rows = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and status(folder)["status"] == "done"


def test_train_averages_are_exact_after_ctrl_c(small_ts, tmp_path, monkeypatch):
    whole = train("jump", small_ts, "smoke", [], 0, tmp_path / "a", name="r", progress=False)
    folder = interrupted(small_ts, tmp_path / "b", monkeypatch, how="sigint")
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["count"] == 2  # steps 4 and 5
    assert status(folder)["status"] == "interrupted" and "resume" in status(folder)["why"]
    train("jump", small_ts, "smoke", [], 0, tmp_path / "b", name="r", progress=False)
    a, b = ([json.loads(ln) for ln in (f / "metrics.jsonl").read_text().splitlines()] for f in (whole, folder))
    keys = [k for k in a[-1] if k.startswith("train_")]
    assert keys and all(a[-1][k] == pytest.approx(b[-1][k], rel=1e-6) for k in keys)


# ---------------------------------------------------------------- the CLI's one-line errors

@pytest.mark.parametrize("item, text", [
    ("train.eval_every=true", "train.eval_every must be int"),
    ("train.steps=abc", "train.steps must be int"),
    ("train.steps=1.5", "train.steps must be int"),
    ("model.pixel_var_values=3", "model.pixel_var_values must be a list"),
    ("model.viewpoint_scale=abc", "model.viewpoint_scale must be float or None"),
    ("train.lr=nan", "train.lr must be a finite number"),
    ("model.pixel_var_boundaries=[10.5,20]", "model.pixel_var_boundaries must be a list of whole numbers"),
])
def test_set_checks_types(small_ts, tmp_path, item, text):
    one_line_error(run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--set", item,
                       "--out", tmp_path), text)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../../../escape", "a/b", ".."])
def test_name_must_be_a_plain_folder_name(small_ts, tmp_path, name):
    out = tmp_path / "deep" / "runs"
    one_line_error(run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--name", name,
                       "--out", out), "--name")
    assert not any(tmp_path.rglob("config.json"))


@pytest.mark.parametrize("model", ["sv2p", "cdna", "sssm"])
def test_video_models_need_a_video_dataset(small_ts, tmp_path, model):
    dice = shutil.copytree(small_ts, tmp_path / "mnist_dice")
    m = json.loads((dice / "manifest.json").read_text())  # a manifest the dice generator could write
    from jumpbench.generators import dice as dice_gen

    m.update(generator="dice", version=dice_gen.VERSION, dataset="mnist_dice", schema=dice_gen.SCHEMA,
             viewpoint={"key": "cameras", "dim": 7})
    del m["params"]["narrative"], m["params"]["frames"]
    m["params"]["views"] = 12
    m["params_sha256"] = records.dataset_proof(m["generator"], m["version"], m["dataset"], m["params"])
    (dice / "manifest.json").write_text(json.dumps(m))
    one_line_error(run("run", "--model", model, "--data", dice, "--preset", "smoke", "--out", tmp_path / "r"),
                   "needs a video dataset")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("frames", range(5, 12))
def test_bench_jumpy_takes_what_its_check_says(tmp_path, monkeypatch, frames):
    from jumpbench.benchmarks.speed import speed

    seen = {}

    def fake(models, frames, ts, **kw):
        seen["ts"] = ts
        return {"frames": frames, "context": 3, "batch": 1, "image_size": 64, "ts": ts, "seconds": {}}

    monkeypatch.setattr(speed, "jumpy_speed", fake)
    monkeypatch.setattr(speed, "format_table", lambda r: "table")
    r = run("bench", "jumpy", "--frames", frames, "--out", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    assert all(3 <= t < frames for t in seen["ts"])
    one_line_error(run("bench", "jumpy", "--frames", 4, "--out", tmp_path / "s.json"), "--frames must be")


def test_plot_refuses_nothing_to_plot(tmp_path):
    one_line_error(run("plot", "--runs", tmp_path / "nonexistent", "--out", tmp_path / "f"), "no such folder")
    (tmp_path / "runs").mkdir()
    one_line_error(run("plot", "--runs", tmp_path / "runs", "--out", tmp_path / "f"), "nothing to plot")


# ---------------------------------------------------------------- continuing a run: --extend

def test_extend_continues_a_done_run_to_the_weights_of_a_longer_one(small_ts, tmp_path):
    folder = train("jump", small_ts, "smoke", [], 0, tmp_path, name="r", progress=False)
    assert status(folder)["status"] == "done"
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--name", "r", "--out", tmp_path,
            "--quiet", "--steps", "9")  # without --extend: another config, refused
    one_line_error(r, "train.steps: 6 -> 9")
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet",
            "--extend")
    one_line_error(r, "--extend needs --steps")
    shutil.move(str(tmp_path / "traveling_salesman/jump/r"), str(tmp_path / "traveling_salesman/jump/smoke"))
    folder = tmp_path / "traveling_salesman/jump/smoke/seed-0"
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet",
            "--steps", "9", "--extend")
    assert r.exit_code == 0, r.output
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["train"]["steps"] == 9 and config["extended_from"] == [6]
    made = config["dataset_generator"]  # enough to make the dataset again elsewhere
    assert made["generator"] == "narratives" and made["params"]["counts"] == {"train": 40, "test": 10}
    assert status(folder)["status"] == "done"
    assert [row["step"] for row in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())] == [3, 6, 9]
    straight = train("jump", small_ts, "smoke", ["train.steps=9"], 0, tmp_path, name="s", progress=False)
    a = torch.load(folder / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet",
            "--steps", "5", "--extend")  # fewer steps is no extension
    one_line_error(r, "train.steps: 9 -> 5")
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet",
            "--steps", "12", "--extend", "--set", "train.lr=0.01", "--name", "smoke")  # nothing else may change
    one_line_error(r, "train.lr")
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet",
            "--steps", "12", "--extend", "--set", "train.lr=0.01")  # a folder with no run in it
    one_line_error(r, "no run to continue")


def test_a_branch_starts_from_another_runs_checkpoint_and_goes_on_under_its_own_config(small_ts, tmp_path):
    parent = train("jump", small_ts, "smoke", [], 0, tmp_path, name="r", progress=False)
    common = ("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet")
    one_line_error(run(*common, "--steps", "9", "--from", parent), "give it a --name")
    one_line_error(run(*common, "--steps", "9", "--from", parent, "--name", "b", "--seed", "1"),
                   "its seed is 0, this run's 1")
    one_line_error(run(*common, "--steps", "6", "--from", parent, "--name", "b"), "above it")
    one_line_error(run(*common, "--steps", "9", "--from", parent, "--name", "b", "--set", "model.nf_z=2"),
                   "does not fit this run")
    for key, value in (("train.eval_scenes", 3), ("train.eval_samples", 2), ("data.eval_context", 2)):
        # its evaluations would join the parent's curve measured another way
        one_line_error(run(*common, "--steps", "9", "--from", parent, "--name", "b", "--set", f"{key}={value}"),
                       f"it evaluates with {key}=")
    one_line_error(run(*common, "--steps", "9", "--from", tmp_path, "--name", "b"), "no run for seed 0 there")
    one_line_error(run(*common, "--steps", "9", "--from", parent, "--name", "r"), "another config")
    # the same config: the branch is the run that had asked for 9 steps from the start
    r = run(*common, "--steps", "9", "--from", parent.parent, "--name", "b")  # a config folder: its seed-0
    assert r.exit_code == 0, r.output
    branch = tmp_path / "traveling_salesman/jump/b/seed-0"
    origin = json.loads((branch / "config.json").read_text())["branched_from"]
    assert {k: origin[k] for k in ("name", "seed", "step")} == {"name": "r", "seed": 0, "step": 6}
    assert str(tmp_path) not in json.dumps(origin)
    assert [json.loads(x)["step"] for x in (branch / "metrics.jsonl").read_text().splitlines()] == [3, 6, 9]
    straight = train("jump", small_ts, "smoke", ["train.steps=9"], 0, tmp_path, name="s", progress=False)
    a = torch.load(branch / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert status(parent)["why"].startswith("6 steps")  # the parent is untouched
    one_line_error(run(*common, "--steps", "9", "--from", parent, "--name", "s"), "not a branch")  # s: a plain run
    r = run(*common, "--steps", "12", "--name", "b", "--extend")  # extending a branch keeps its origin
    assert r.exit_code == 0, r.output
    config = json.loads((branch / "config.json").read_text())
    assert config["branched_from"] == origin and config["extended_from"] == [9]
    # another schedule from the same step: trains, and its own checkpoint is what a rerun resumes
    r = run(*common, "--steps", "9", "--from", parent, "--name", "lr", "--set", "train.lr=0.01")
    assert r.exit_code == 0, r.output
    one_line_error(run(*common, "--steps", "9", "--from", branch, "--name", "lr2", "--set", "train.lr=0.01"),
                   "above it")
    (branch / "checkpoint.pt").unlink()  # its published weights are then what a branch starts from
    one_line_error(run(*common, "--steps", "12", "--from", branch, "--name", "c"), "weights.safetensors is at step 12")
    (branch / "weights.safetensors").unlink()
    one_line_error(run(*common, "--steps", "13", "--from", branch, "--name", "c"),
                   "no checkpoint.pt or weights.safetensors")


def test_a_finished_run_under_another_config_is_refused_not_skipped(small_ts, tmp_path):
    train("jump", small_ts, "smoke", [], 0, tmp_path, name="r", progress=False)
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--name", "r", "--out", tmp_path,
            "--quiet", "--set", "train.lr=0.01")
    one_line_error(r, "train.lr")
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--name", "r", "--out", tmp_path)
    assert r.exit_code == 0 and "done already" in r.output


def test_a_run_is_scored_only_on_the_scenes_it_was_trained_for(small_ts, tmp_path):
    """score/consistency --data: the same generator parameters (any shard layout) or a refusal."""
    from jumpbench.benchmarks.runs import record, run_dataset, RunSpec
    from jumpbench.dataset import dataset_info
    from jumpbench.generators.base import generate
    from jumpbench.generators.narratives import NarrativesConfig, NarrativesGenerator

    rec = record(RunSpec(model="jump", data=str(small_ts)), 1, dataset_info(small_ts), {})
    assert run_dataset(rec) == small_ts and run_dataset(rec, small_ts) == small_ts
    relaid = generate(NarrativesGenerator(NarrativesConfig()), tmp_path / "b", {"train": 8, "test": 12},
                      shard_size=5, progress=False)
    assert run_dataset(rec, relaid) == relaid  # other split sizes and shards: the same scenes
    other = generate(NarrativesGenerator(NarrativesConfig(seed=5)), tmp_path / "c", {"train": 40, "test": 10},
                     shard_size=16, progress=False)
    with pytest.raises(JumpbenchError, match="other scenes.*seed: 0 -> 5"):
        run_dataset(rec, other)


def test_a_run_folder_is_trained_by_one_process_at_a_time(small_ts, tmp_path):
    from jumpbench.files import file_lock

    args = ("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet",
            "--set", "train.steps=2", "--name", "two")
    folder = tmp_path / "traveling_salesman" / "jump" / "two" / "seed-0"
    folder.mkdir(parents=True)
    with file_lock(folder):  # another process is training seed 0
        one_line_error(run(*args), "seed-0 is being trained by another jumpbench process")
        assert not any(folder.iterdir())  # nothing of it was touched
        for f in folder.parent.glob(".*"):  # no lock file whose deletion would let a second trainer in
            f.unlink()
        one_line_error(run(*args), "seed-0 is being trained by another jumpbench process")
    assert run(*args).exit_code == 0  # once it has gone


def test_a_run_refused_before_it_wrote_anything_leaves_no_folder(small_ts, tmp_path):
    """A refusal inside the run's lock (here: a branch from a parent already at its steps)
    removes the folder the lock made."""
    common = ("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet")
    assert run(*common, "--steps", 6, "--name", "p").exit_code == 0
    parent = tmp_path / "traveling_salesman" / "jump" / "p" / "seed-0"
    one_line_error(run(*common, "--steps", 6, "--from", parent, "--name", "b"), "above it")
    assert (tmp_path / "traveling_salesman" / "jump" / "b").is_dir()  # made for the lock, then emptied
    assert not (tmp_path / "traveling_salesman" / "jump" / "b" / "seed-0").exists()


def test_a_run_stopped_while_its_data_is_set_up_is_marked_interrupted(small_ts, tmp_path, monkeypatch):
    """SIGTERM (a scheduler's stop) while the frame cache is built: not left "running"."""
    import time

    from jumpbench import cache as FC

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first
        raise AssertionError("SIGTERM did not stop the setup")

    monkeypatch.setattr(FC.FrameCache, "__init__", stopped)
    before = signal.getsignal(signal.SIGTERM)
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet")
    assert r.exit_code == 130 and "interrupted" in r.output, r.output
    status = json.loads((tmp_path / "traveling_salesman/jump/smoke/seed-0/status.json").read_text())
    assert status["status"] == "interrupted", status
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the caller's again
