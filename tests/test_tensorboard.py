"""run --tensorboard: the event file of a smoke run holds the scalars and sample grids of every
evaluation; a resume purges what came after its checkpoint; without TensorBoard, one line."""
import sys

import pytest
from click.testing import CliRunner

from jumpbench.benchmarks import runs
from jumpbench.benchmarks.training.train import train
from jumpbench.cli import cli


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_of_a_smoke_run(small_ts, tmp_path):
    pytest.importorskip("tensorboard")
    folder = train("jump", small_ts, "smoke", ["train.log_every=2"], 0, tmp_path, progress=False, tensorboard=True)
    rows = runs.read_metrics(folder / "metrics.jsonl")
    acc = _events(folder)
    every = set(acc.Tags()["scalars"])
    tags = {t for t in every if t.startswith(("train/", "test/"))}  # the evaluations'
    assert {"train/loss", "train/kl", "test/loss", "test/min_mse", "test/baseline_repeat_last"} <= tags
    expected = {f"{p}/{k[len(p) + 1:]}" for r in rows for k in r for p in ("train", "test")
                if k.startswith(p + "_")}
    assert tags == expected
    for tag in tags:
        assert [e.step for e in acc.Scalars(tag)] == [3, 6]
    per_step = every - tags  # every train.log_every steps
    assert {"step/loss", "step/kl", "step/pixel_var", "step/lr", "step/grad_norm", "speed/steps_per_s",
            "speed/data_wait_ms"} <= per_step
    for tag in per_step:
        assert [e.step for e in acc.Scalars(tag)] == [2, 4, 6], tag
    lr = [e.value for e in acc.Scalars("step/lr")]  # the smoke preset anneals 5e-4 -> 5e-5 over 6 steps
    assert lr == pytest.approx([4.25e-4, 2.75e-4, 1.25e-4], rel=1e-5)  # the rate steps 1, 3, 5 took
    loss = acc.Scalars("test/min_mse")
    assert [e.value for e in loss] == pytest.approx([r["test_min_mse"] for r in rows], rel=1e-6)
    images = acc.Images("samples")
    assert [e.step for e in images] == [3, 6]
    from PIL import Image

    png = Image.open(folder / "samples.png")
    assert (images[-1].width, images[-1].height) == png.size

    # Rewind the checkpoint to step 3 (as if the run had died after writing the events of
    # step 6 but before its checkpoint) and resume: step 6 is written again, once.
    ckpt = runs.load_checkpoint(folder / "checkpoint.pt")
    ckpt["step"] = 3
    runs.save_checkpoint(folder / "checkpoint.pt", ckpt)
    runs.write_status(folder, "running", "rewound by the test")
    train("jump", small_ts, "smoke", ["train.log_every=2"], 0, tmp_path, progress=False, tensorboard=True)
    acc = _events(folder)
    for tag in tags:
        assert [e.step for e in acc.Scalars(tag)] == [3, 6], tag
    for tag in per_step:
        assert [e.step for e in acc.Scalars(tag)] == [2, 4, 6], tag
    assert [e.step for e in acc.Images("samples")] == [3, 6]
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2


def test_without_tensorboard_the_flag_gives_a_hint(small_ts, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    r = CliRunner().invoke(cli, ["run", "--model", "jump", "--data", str(small_ts), "--preset", "smoke",
                                 "--out", str(tmp_path), "--quiet", "--tensorboard"])
    assert r.exit_code == 1
    assert r.output.strip() == "error: --tensorboard needs TensorBoard: pip install 'jumpbench[tensorboard]'"
    assert not any(tmp_path.iterdir())  # refused before any run folder


def test_a_finished_run_has_an_hparams_entry(small_ts, tmp_path):
    """Each finished run (a sweep's grid point) writes its --set overrides and final test
    metrics for TensorBoard's HPARAMS view."""
    pytest.importorskip("tensorboard")
    folder = train("jump", small_ts, "smoke", ["train.lr=0.001"], 0, tmp_path, progress=False, tensorboard=True)
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = _events(folder / "hparams")
    tags = set(acc.Tags()["scalars"])
    assert "final/min_mse" in tags and "final/loss" in tags, tags
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["train.lr"].number_value == pytest.approx(0.001)
    assert info.hparams["run"].string_value.startswith("jump ")

