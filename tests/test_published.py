"""Published weights (weights.safetensors) and runs continued from them, as on a fresh clone:
the continued loss curve joins the uninterrupted one, a changed config is refused as --extend
refuses it, corrupt weights are refused, legs are recorded, and the weights committed under
results/ load and sample."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import one_line_error, run
from jumpbench.benchmarks import runs as R
from jumpbench.benchmarks.training.train import train
from jumpbench.errors import JumpbenchError

ROOT = Path(__file__).resolve().parent.parent
FP32 = ["train.precision=fp32", "train.eval_every=5"]


def folder_of(out, name):
    return out / "traveling_salesman" / "jump" / name / "seed-0"


def losses(folder):
    return {r["step"]: r["train_loss"] for r in R.read_metrics(folder / R.METRICS)}


def drop_checkpoint(folder):
    for f in folder.glob("checkpoint.pt*"):
        f.unlink()


def test_continued_from_weights_joins_the_uninterrupted_run(small_ts, tmp_path):
    straight = train("jump", small_ts, "smoke", FP32 + ["train.steps=20"], 0, tmp_path / "a", name="r", progress=False)
    half = train("jump", small_ts, "smoke", FP32 + ["train.steps=10"], 0, tmp_path / "b", name="r", progress=False)
    assert (half / R.WEIGHTS).is_file() and (half / "weights.safetensors.sha256").is_file()
    drop_checkpoint(half)  # a fresh clone: config, metrics, weights
    train("jump", small_ts, "smoke", FP32 + ["train.steps=20"], 0, tmp_path / "b", name="r", progress=False,
          extend=True)
    a, b = losses(straight), losses(half)
    assert sorted(a) == sorted(b) == [5, 10, 15, 20]
    for step in (15, 20):  # Adam's moments carried in bf16: the same curve within rounding
        assert b[step] == pytest.approx(a[step], rel=1e-3)
    legs = R.read_legs(half)
    assert [(leg["from"], leg["to"], leg["resumed"], leg["optimizer"]) for leg in legs] == [
        (0, 10, "start", "new"), (10, 20, "weights", "restored")]
    assert legs[1]["device"] == "cpu" and legs[1]["precision"] == "fp32" and legs[1]["machine"]
    model, record = R.load_run(half)
    assert record["checkpoint_step"] == 20


def test_weights_without_moments_continue_with_a_new_adam(small_ts, tmp_path):
    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=10"], 0, tmp_path, name="r", progress=False)
    result = run("publish", "--weights-only", folder)
    assert result.exit_code == 0 and "step 10" in result.output, result.output
    assert not R.load_weights(folder / R.WEIGHTS)["moments"]
    drop_checkpoint(folder)
    train("jump", small_ts, "smoke", FP32 + ["train.steps=15"], 0, tmp_path, name="r", progress=False, extend=True)
    assert R.read_legs(folder)[-1]["optimizer"] == "new, warm-up"
    drop_checkpoint(folder)
    one_line_error(run("publish", folder), "no checkpoint.pt to publish")


def test_publishing_over_newer_weights_says_so(small_ts, tmp_path):
    """An older checkpoint.pt beside newer published weights (a checkout that pulled a later leg):
    nothing to publish, said as such, and the weights are left as they are."""
    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=10"], 0, tmp_path, name="r", progress=False)
    old = {name: (folder / name).read_bytes() for name in (R.CHECKPOINT, R.CHECKPOINT + ".sha256")}
    train("jump", small_ts, "smoke", FP32 + ["train.steps=15"], 0, tmp_path, name="r", progress=False, extend=True)
    for name, data in old.items():
        (folder / name).write_bytes(data)
    weights = (folder / R.WEIGHTS).read_bytes()
    one_line_error(run("publish", folder), "(step 15) is newer than its checkpoint.pt")
    assert (folder / R.WEIGHTS).read_bytes() == weights


@pytest.mark.parametrize("extend", [False, True])
def test_continuing_weights_under_another_config_is_refused(small_ts, tmp_path, extend):
    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=10"], 0, tmp_path, name="r", progress=False)
    drop_checkpoint(folder)
    config = (folder / R.CONFIG).read_bytes()
    with pytest.raises(JumpbenchError, match="another config; differs: train.lr"):
        train("jump", small_ts, "smoke", FP32 + ["train.steps=20", "train.lr=0.01"], 0, tmp_path, name="r",
              progress=False, extend=extend)
    assert (folder / R.CONFIG).read_bytes() == config


def test_corrupt_or_foreign_weights_are_refused(small_ts, tmp_path):
    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=5"], 0, tmp_path, name="r", progress=False)
    drop_checkpoint(folder)
    path = folder / R.WEIGHTS
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(JumpbenchError, match="corrupt published weights"):
        R.load_run(folder)
    one_line_error(run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path,
                       "--name", "r", "--quiet", *[x for o in FP32 + ["train.steps=5"] for x in ("--set", o)],
                       "--steps", 9, "--extend"), "corrupt published weights")
    (folder / "weights.safetensors.sha256").unlink()  # no sidecar: the file's own header is checked
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(JumpbenchError, match="not jumpbench's published weights"):
        R.load_run(folder)


def test_minutes_stops_a_leg_and_the_same_command_goes_on(small_ts, tmp_path):
    args = ["run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--name", "r",
            "--quiet", "--steps", 100000, "--minutes", 0.02]
    first = run(*args)
    assert first.exit_code == 0, first.output
    folder = folder_of(tmp_path, "r")
    state = json.loads((folder / R.STATUS).read_text())
    assert state["status"] == "interrupted" and "--minutes 0.02" in state["why"]
    step = R.load_weights(folder / R.WEIGHTS)["step"]
    assert step > 0 and R.read_legs(folder)[-1]["to"] == step
    assert run(*args).exit_code == 0
    assert R.read_legs(folder)[-1]["from"] == step
    one_line_error(run(*args[:-1], 0), "--minutes must be above 0")


def tracked_weights() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "results/runs"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.split() if p.endswith("/" + R.WEIGHTS)]


def test_committed_weights_load_and_sample():
    """Every run published in git loads (sha256 checked, no pickle) and samples frames of its
    dataset's shape from its test viewpoints' layout, as after `git clone`."""
    paths = tracked_weights()
    assert paths, "no published weights under results/runs"
    for path in paths:
        model, record = R.load_run(path.parent)
        assert record["weights_source"] in ("weights", "checkpoint")
        c = model.config
        torch.manual_seed(0)
        if c.viewpoint_dim == 1:  # a video: frames 0..4 seen, 5..frames-1 asked for
            views = torch.arange(c.frames, dtype=torch.float32).view(1, -1, 1)
            ctx, query = views[:, :5], views[:, 5:]
        else:
            views = torch.rand(1, 5, c.viewpoint_dim)
            ctx, query = views[:, :3], views[:, 3:]
        frames = torch.rand(1, ctx.shape[1], 3, c.image_size, c.image_size)
        out = model.sample(frames, ctx, query, 2)
        assert out.shape == (1, 2, query.shape[1], 3, c.image_size, c.image_size)
        assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
        meta = R.load_weights(path)
        assert meta["step"] == record["checkpoint_step"] or record["weights_source"] == "checkpoint"


def test_a_leg_may_run_with_other_threads(small_ts, tmp_path):
    """Threads, loader workers and the frame cache say how a leg runs on its machine, not what
    the run is: a continuation elsewhere may change them; legs.json records each leg's."""
    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=5", "train.threads=1"], 0, tmp_path, name="r",
                   progress=False)
    drop_checkpoint(folder)
    train("jump", small_ts, "smoke", FP32 + ["train.steps=8", "train.threads=2", "train.cache=false"], 0, tmp_path,
          name="r", progress=False, extend=True)
    assert [leg["threads"] for leg in R.read_legs(folder)] == [1, 2]


@pytest.mark.parametrize("damage", ["deleted", "cut"])
def test_a_resume_whose_metrics_have_a_gap_is_refused(small_ts, tmp_path, damage):
    """The metrics must reach the checkpoint's step with no gap (a deleted or cut metrics.jsonl
    would otherwise finish "done" with rows missing for good); the error says how to go on."""
    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=20"], 0, tmp_path, name="r", progress=False)
    metrics = folder / R.METRICS
    if damage == "deleted":
        metrics.unlink()
    else:
        metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:2]))
    config = (folder / R.CONFIG).read_bytes()
    with pytest.raises(JumpbenchError, match=r"lacks the evaluations at step (5|15).*--from .* --name NEW"):
        train("jump", small_ts, "smoke", FP32 + ["train.steps=30"], 0, tmp_path, name="r", progress=False,
              extend=True)
    assert (folder / R.CONFIG).read_bytes() == config  # a refused --extend rewrote nothing
    branch = train("jump", small_ts, "smoke", FP32 + ["train.steps=30"], 0, tmp_path, name="b", progress=False,
                   branch_from=folder)
    assert max(losses(branch)) == 30


def test_continue_takes_everything_from_the_run_folder(small_ts, tmp_path):
    """`jumpbench continue RUN` trains a run folder from git on with what its config.json says;
    only how the leg runs may be set; a missing dataset names the command that writes it."""
    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=5"], 0, tmp_path / "runs", name="r",
                   progress=False)
    drop_checkpoint(folder)
    r = run("continue", folder, "--steps", 10, "--set", "train.threads=1", "--quiet")
    assert r.exit_code == 0, r.output
    assert [(leg["from"], leg["to"]) for leg in R.read_legs(folder)] == [(0, 5), (5, 10)]
    assert json.loads((folder / R.CONFIG).read_text())["config"]["train"]["steps"] == 10
    one_line_error(run("continue", folder, "--set", "train.lr=0.1"), "continue takes only")
    moved = tmp_path / "moved"
    record = json.loads((folder / R.CONFIG).read_text())
    (folder / R.CONFIG).write_text(json.dumps({**record, "data": str(moved / "traveling_salesman")}))
    one_line_error(run("continue", folder, "--steps", 12), "jumpbench generate for-run")
    r = run("generate", "for-run", folder, "--out", moved, "--quiet")
    assert r.exit_code == 0, r.output
    assert run("continue", folder, "--steps", 12, "--quiet").exit_code == 0
    assert R.read_legs(folder)[-1]["to"] == 12


def test_a_run_finds_its_dataset_from_any_folder(small_ts, tmp_path, monkeypatch):
    """config.json records the dataset path as given where the run trained (relative to the
    repository's root, as a rule); score, consistency and the figures find it from elsewhere,
    or name the command that writes it again."""
    import shutil

    shutil.copytree(small_ts, tmp_path / "repo" / "data" / "traveling_salesman")
    monkeypatch.chdir(tmp_path / "repo")
    folder = train("jump", "data/traveling_salesman", "smoke", FP32 + ["train.steps=5"], 0, "results/runs",
                   name="r", progress=False)
    monkeypatch.chdir(tmp_path)  # another folder
    model, record = R.load_run(Path("repo") / folder)
    assert R.run_dataset(record) == (tmp_path / "repo" / "data" / "traveling_salesman").resolve()
    shutil.rmtree(tmp_path / "repo" / "data")
    model, record = R.load_run(Path("repo") / folder)
    with pytest.raises(JumpbenchError, match="jumpbench generate for-run"):
        R.run_dataset(record)


def test_weights_further_on_than_a_local_checkpoint_win(small_ts, tmp_path):
    """A checkout that pulls (or unpacks) a newer leg beside its own older checkpoint.pt goes on
    from the newer weights: the newer leg's rows and legs are kept, not cut back."""
    import shutil

    a = train("jump", small_ts, "smoke", FP32 + ["train.steps=10"], 0, tmp_path / "a", name="r", progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = folder_of(tmp_path / "b", "r")
    drop_checkpoint(b)
    train("jump", small_ts, "smoke", FP32 + ["train.steps=20"], 0, tmp_path / "b", name="r", progress=False,
          extend=True)
    for f in ("weights.safetensors", "weights.safetensors.sha256", "metrics.jsonl", "legs.json", "status.json",
              "config.json"):  # what git carries of the newer leg; a's checkpoint.pt (step 10) stays
        shutil.copy(b / f, a / f)
    assert R.load_run(a)[1]["checkpoint_step"] == 20
    train("jump", small_ts, "smoke", FP32 + ["train.steps=30"], 0, tmp_path / "a", name="r", progress=False,
          extend=True)
    assert sorted(losses(a)) == [5, 10, 15, 20, 25, 30]
    assert [(leg["from"], leg["to"], leg["resumed"]) for leg in R.read_legs(a)] == [
        (0, 10, "start"), (10, 20, "weights"), (20, 30, "weights")]


def test_a_branch_carries_its_parents_legs(small_ts, tmp_path):
    parent = train("jump", small_ts, "smoke", FP32 + ["train.steps=10"], 0, tmp_path, name="p", progress=False)
    branch = train("jump", small_ts, "smoke", FP32 + ["train.steps=15", "train.lr=0.001"], 0, tmp_path, name="b",
                   progress=False, branch_from=parent)
    assert [(leg["from"], leg["to"], leg["resumed"]) for leg in R.read_legs(branch)] == [
        (0, 10, "start"), (10, 15, "branch")]


def test_a_minutes_leg_of_a_data_parallel_run_ends_well_and_continues(small_ts, tmp_path):
    """--minutes is a leg's normal end under --procs too (exit 0, every process agreeing why);
    `jumpbench continue` goes on with the run's own number of processes."""
    r = run("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--name", "r",
            "--quiet", "--steps", 100000, "--procs", 2, "--minutes", 0.05)
    assert r.exit_code == 0, r.output
    folder = folder_of(tmp_path, "r")
    assert json.loads((folder / R.STATUS).read_text())["why"].startswith("stopped after --minutes")
    r = run("continue", folder, "--minutes", 0.05, "--quiet")
    assert r.exit_code == 0, r.output
    legs = R.read_legs(folder)
    assert len(legs) == 2 and legs[1]["procs"] == 2 and legs[1]["from"] == legs[0]["to"] > 0


def test_the_gpu_leg_script_runs_a_leg_on_this_cpu(small_ts, tmp_path):
    """scripts/gpu_leg.py as a lent GPU would run it, at smoke size on the CPU: the dataset
    written again from config.json (the same bytes), a --minutes leg continued from the
    published weights alone (a fresh clone has no checkpoint), and the run folder packed less
    checkpoint.pt, with the new leg in legs.json."""
    import sys
    import tarfile

    from jumpbench.dataset import dataset_sha256

    folder = train("jump", small_ts, "smoke", FP32 + ["train.steps=100000"], 0, tmp_path / "runs", name="r",
                   progress=False, minutes=0.02)
    drop_checkpoint(folder)
    before = R.read_legs(folder)
    assert before[-1]["to"] > 0
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_leg.py"), str(folder), "--minutes", "0.05",
                           "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--workers", "1",
                           "--set", "train.threads=1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dataset_sha256(tmp_path / "data" / "traveling_salesman") == dataset_sha256(small_ts)
    legs = R.read_legs(folder)
    assert len(legs) == len(before) + 1 and legs[-1]["from"] == before[-1]["to"] < legs[-1]["to"]
    assert legs[-1]["device"] == "cpu" and "ms per step" in proc.stdout
    with tarfile.open(tmp_path / "out" / "leg.tar.gz") as tar:
        names = set(tar.getnames())
    assert {R.CONFIG, R.WEIGHTS, "legs.json", R.METRICS} <= names and not any("checkpoint" in n for n in names)
