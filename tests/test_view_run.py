"""`jumpbench view RUN_DIR --out samples.gif` on a smoke run: test scene 0's truth beside three
samples over time (the context frames true, the rest sampled), labelled, the same file each
time; a PNG with a row per panel; one-line errors."""
import numpy as np
import pytest
from PIL import Image

from jumpbench.benchmarks.training.train import train
from jumpbench.records import Dataset
from jumpbench.view import run_samples
from conftest import one_line_error, run


@pytest.fixture(scope="module")
def smoke_run(small_ts, tmp_path_factory):
    return train("jump", small_ts, "smoke", [], 0, tmp_path_factory.mktemp("runs"), progress=False)


def test_samples_beside_the_truth(smoke_run, small_ts):
    s = run_samples(smoke_run)
    names = [name for name, _ in s["panels"]]
    assert names == ["truth", "sample 1", "sample 2", "sample 3"] and s["seen"] == [0, 1, 2, 3, 4]
    truth = s["panels"][0][1]
    assert truth.shape == (20, 16, 16, 3) and truth.dtype == np.uint8
    whole = Dataset(small_ts).scene("test", 0).frames  # test scene 0, area-downsampled 64 -> 16
    assert np.abs(truth.astype(int) - whole.reshape(20, 16, 4, 16, 4, 3).mean((2, 4))).max() <= 1
    for _, video in s["panels"][1:]:
        assert np.array_equal(video[:5], truth[:5])  # the context, as the model saw it
        assert not np.array_equal(video[5:], truth[5:])  # the rest sampled
    assert not np.array_equal(s["panels"][1][1][5:], s["panels"][2][1][5:])  # three different draws
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(s["panels"], run_samples(smoke_run)["panels"]))


def test_view_run_writes_an_animation(smoke_run, tmp_path):
    r = run("view", smoke_run, "--out", tmp_path / "samples.gif")
    assert r.exit_code == 0, r.output
    assert "test scene 0: truth and 3 samples of jump (step 6), seeing the first 5 frames" in r.output
    with Image.open(tmp_path / "samples.gif") as gif:
        assert gif.n_frames == 20 and gif.info["loop"] == 0
        width, height = gif.size
        assert width > 4 * 16 * 8 and 16 * 8 < height < 16 * 8 + 80  # four 128-px panels in a row, labels above
        gif.seek(0)
        first = np.asarray(gif.convert("RGB")).astype(int)
        gif.seek(10)
        later = np.asarray(gif.convert("RGB")).astype(int)
    # the last sample's right border (4 px, then a 6-px white margin), beside its frame: blue, then red
    edge = (first[-80:-20, -10:-6], later[-80:-20, -10:-6])
    assert edge[0][..., 2].mean() > edge[0][..., 0].mean() + 50 and edge[1][..., 0].mean() > edge[1][..., 2].mean() + 50
    assert run("view", smoke_run, "--out", tmp_path / "again.gif").exit_code == 0
    assert (tmp_path / "again.gif").read_bytes() == (tmp_path / "samples.gif").read_bytes()  # seeded
    r = run("view", smoke_run, "--out", tmp_path / "rows.png", "--samples", 2, "--scale", 2)
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "rows.png") as png:
        assert png.size[0] > 20 * 16 * 2 and png.size[1] > 3 * 16 * 2  # 20 frames a row, 3 rows


@pytest.mark.parametrize("args, text", [
    (["--samples", 0], "--samples must be in 1..8"),
    (["--index", 99], "no index 99"),
    (["--scale", 0], "--scale must be in 1..32"),
    (["--data", "nowhere"], "no dataset at nowhere"),
])
def test_view_run_bad_input(smoke_run, tmp_path, args, text):
    one_line_error(run("view", smoke_run, "--out", tmp_path / "s.gif", *args), text)
    assert not (tmp_path / "s.gif").exists()


def test_run_options_on_a_dataset(small_ts, tmp_path):
    one_line_error(run("view", small_ts, "--out", tmp_path / "s.gif", "--samples", 2), "are for a run folder")
