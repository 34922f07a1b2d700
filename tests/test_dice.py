"""The MNIST Dice generator (JUMP, ICLR 2019, section 4.2): specs, renders, records, CLI.

Renders on the CPU (EGL on Mesa llvmpipe); a few small scenes, so the file runs in seconds.
"""
import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from jumpbench.cli import cli
from jumpbench.errors import JumpbenchError
from jumpbench.generators import dice
from jumpbench.generators.dice import DiceConfig, DiceGenerator, sample_scene
from jumpbench.generators.dice_scene import ROOM, camera_pose, die_faces
from jumpbench.records import Dataset

SIZE, VIEWS = 48, 8
ARGS = ["generate", "dice", "--n", "3", "--test-n", "3", "--views", str(VIEWS), "--size", str(SIZE),
        "--shard-size", "2", "--seed", "3", "--quiet"]


def generate(out, workers):
    result = CliRunner().invoke(cli, ARGS + ["--out", str(out), "--workers", str(workers)])
    assert result.exit_code == 0, result.output
    return out / "mnist_dice"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("one"), workers=1)


def facing(cameras, position, yaw):
    """(T, 6) cosine between each face's outward normal and the direction to the camera."""
    corners, normals = die_faces(position, yaw)
    to_cam = cameras[:, None, :3] - corners.mean(axis=1)[None]
    return np.einsum("tfk,fk->tf", to_cam, normals) / np.linalg.norm(to_cam, axis=-1)


@pytest.mark.parametrize("split", ["train", "test"])
def test_spec_cameras_and_visibility(split):
    for seed in range(20):
        s = sample_scene(np.random.default_rng(seed), 100, VIEWS, split)
        cams, vis = s["cameras"], s["face_visibility"]
        assert cams.shape == (VIEWS, 5) and vis.shape == (VIEWS, 6)
        assert (np.abs(cams[:, :2]) < ROOM).all() and (cams[:, 2] > 0).all()
        assert (vis >= 0).all() and (vis <= 1).all()
        assert (vis[facing(cams, s["die_position"], s["die_yaw"]) <= 0] == 0).all()  # turned away: 0
        assert (vis[:, 5] == 0).all()  # the bottom face lies on the floor
        for cam in cams:  # each camera looks roughly at the die
            fwd = -camera_pose(cam)[:3, 2]
            to_die = s["die_position"] - cam[:3]
            assert fwd @ to_die / np.linalg.norm(to_die) > np.cos(np.radians(12))


def test_test_split_protocol():
    for seed in range(30):
        s = sample_scene(np.random.default_rng(seed), 100, dice.MIN_VIEWS, "test")
        h = s["hidden_face"]
        assert 0 <= h < 4
        assert len(s["context_views"]) >= 3 and (s["face_visibility"][s["context_views"], h] == 0).all()
        assert len(s["query_views"]) >= 3 and (s["face_visibility"][s["query_views"], h] >= dice.CLEAR).all()
        others = [f for f in range(4) if f != h]  # the first three context views see the other sides
        assert (s["face_visibility"][s["context_views"][:3]][:, others].max(axis=0) > 0).sum() >= 2
    train = sample_scene(np.random.default_rng(0), 100, VIEWS, "train")
    assert train["hidden_face"] == -1 and len(train["context_views"]) == len(train["query_views"]) == 0


@pytest.mark.parametrize("kwargs, match", [({"views": 5}, "at least 6"), ({"size": 8}, "too small"),
                                           ({"seed": -1}, "non-negative"), ({"digit_pool": 10001}, "digit-pool")])
def test_bad_config(kwargs, match):
    with pytest.raises(JumpbenchError, match=match):
        DiceGenerator(DiceConfig(**kwargs))


def test_records(dataset):
    ds = Dataset(dataset)
    assert ds.num("train") == 3 and ds.num("test") == 3
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["viewpoint"] == {"key": "cameras", "dim": 7} and manifest["params"]["views"] == VIEWS
    for split in ("train", "test"):
        for i in range(3):
            scene = ds.scene(split, i)
            f, m = scene.frames, scene.meta
            assert f.shape == (VIEWS, SIZE, SIZE, 3) and f.dtype == np.uint8
            assert (f.reshape(VIEWS, -1, 3).std(axis=1) > 10).all()  # not blank
            assert all(np.abs(f[a].astype(int) - f[b]).mean() > 3 for a in range(VIEWS) for b in range(a))
            assert m["cameras"].shape == (VIEWS, 5) and m["face_visibility"].shape == (VIEWS, 6)
            assert (np.abs(m["cameras"][:, 3]) <= np.pi).all() and (np.abs(m["cameras"][:, 4]) < np.pi / 2).all()
            cos = facing(m["cameras"].astype(float), m["die_position"].astype(float), float(m["die_yaw"]))
            assert (m["face_visibility"][cos <= 0] == 0).all()
            assert m["digit_labels"].shape == m["digit_indices"].shape == (6,)
            assert m["wall_colors"].shape == (4, 3) and m["light_position"].shape == (3,)
            assert int(m["scene_index"]) == i
            if split == "test":
                h = int(m["hidden_face"])
                assert (m["face_visibility"][m["context_views"], h] == 0).all() and len(m["context_views"]) >= 3
                assert (m["face_visibility"][m["query_views"], h] >= dice.CLEAR).all() and len(m["query_views"]) >= 3


def test_visibility_agrees_with_face_id_render():
    gen = DiceGenerator(DiceConfig(views=VIEWS, size=SIZE))
    for i in range(3):
        spec = gen.spec("test", i)
        ids = gen.renderer().face_ids(spec)  # (T, H, W)
        pixels = np.stack([(ids == f).sum(axis=(1, 2)) for f in range(6)], axis=1)  # (T, 6)
        vis = spec["face_visibility"]
        assert (pixels[vis == 0] == 0).all()  # invisible faces cover no pixel
        assert (pixels[vis > 0.05] > 0).all()
        big = vis > 0.3  # more visible, more pixels (per view: the ranks agree on clear faces)
        for t in range(VIEWS):
            order = np.argsort(vis[t][big[t]])
            assert (np.diff(pixels[t][big[t]][order]) >= -0.35 * pixels[t].max()).all()


def test_same_bytes_for_any_workers(dataset, tmp_path):
    two = generate(tmp_path, workers=2)
    for split in ("train", "test"):
        a = sorted((dataset / split).glob("*.tfrecord"))
        b = sorted((two / split).glob("*.tfrecord"))
        assert [p.name for p in a] == [p.name for p in b]
        assert [hashlib.sha256(p.read_bytes()).digest() for p in a] == \
               [hashlib.sha256(p.read_bytes()).digest() for p in b]


@pytest.mark.parametrize("extra, match", [
    (["--views", "3"], "at least 6"),
    (["--digit-pool", "20000"], "--digit-pool must be between 1 and 10000"),
    (["--mnist-dir", "/nonexistent/mnist"], "no such folder"),
])
def test_cli_bad_input(tmp_path, extra, match):
    result = CliRunner().invoke(cli, ARGS + ["--out", str(tmp_path)] + extra)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0]
    assert not (tmp_path / "mnist_dice").exists()


def test_cli_without_opengl(tmp_path, monkeypatch):
    from jumpbench.generators import dice_render

    def broken():
        raise ImportError("libEGL.so.1: cannot open shared object file\nNo such file or directory")

    monkeypatch.setattr(dice_render, "_import_pyrender", broken)
    result = CliRunner().invoke(cli, ARGS + ["--out", str(tmp_path)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri" in lines[0]
    assert not (tmp_path / "mnist_dice").exists()
