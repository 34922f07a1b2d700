"""DeepMind's gqn-datasets reader (data_reader.py) on jumpbench's shards, without TensorFlow:
the registry entries docs/records.md gives are the generators' defaults, the reader's file
template names exactly the shards a set holds, and every record parses under the reader's
feature spec (its key names and fixed lengths) through the `tfrecord` package: `frames` and
`cameras` for MNIST Dice, `frames` and `timestamps` (in place of `cameras`) for the Narratives."""
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tfrecord.reader import tfrecord_loader

from jumpbench.api import GENERATORS
from jumpbench.files import read_json
from jumpbench.generators.dice import DiceConfig
from jumpbench.generators.narratives import NarrativesConfig
from jumpbench.records import Dataset

DOC = Path(__file__).resolve().parent.parent / "docs" / "records.md"
RAW_CAMERA_PARAMS = 5  # the reader's (x, y, z, yaw, pitch)


def entry(name: str, train_files: int, test_files: int, frame_size: int, sequence_size: int) -> str:
    """A `_DATASETS` entry as docs/records.md writes it."""
    return (f"{name}=DatasetInfo(basepath='{name}', train_size={train_files}, test_size={test_files}, "
            f"frame_size={frame_size}, sequence_size={sequence_size})")


def registry(root: Path) -> dict:
    """The DatasetInfo fields of a generated set, from its manifest (as docs/records.md says)."""
    m = read_json(root / "manifest.json")
    p = m["params"]
    return {"basepath": root.name, "train_size": len(m["splits"]["train"]["shards"]),
            "test_size": len(m["splits"]["test"]["shards"]), "frame_size": p["size"],
            "sequence_size": p.get("frames", p.get("views"))}


def reader_files(info: dict, mode: str, root: Path) -> list[Path]:
    """The shard paths DeepMind's reader opens under its `root` (the dataset's parent folder):
    root/basepath/mode/{i}-of-{N}.tfrecord, N files, both numbers padded to len(str(N))."""
    n = info[f"{mode}_size"]
    w = len(str(n))
    return [root / info["basepath"] / mode / f"{i:0{w}d}-of-{n:0{w}d}.tfrecord" for i in range(1, n + 1)]


def parse_as_reader(root: Path, viewpoint: str) -> dict:
    """Every record of both splits under the reader's spec, checked as tf.parse_example checks a
    FixedLenFeature (the key present, exactly its length); {split: [(frames, viewpoints)]}."""
    info = registry(root)
    t = info["sequence_size"]
    length = t * RAW_CAMERA_PARAMS if viewpoint == "cameras" else t
    out = {}
    for mode in ("train", "test"):
        files = reader_files(info, mode, root.parent)
        assert sorted(files) == sorted((root / mode).glob("*.tfrecord"))  # the reader's names are the shards
        out[mode] = []
        for path in files:
            for rec in tfrecord_loader(str(path), None, {"frames": "byte", viewpoint: "float"}):
                frames, vps = rec["frames"], rec[viewpoint]
                assert len(frames) == t and vps.dtype == np.float32 and vps.shape == (length,)
                images = [Image.open(io.BytesIO(png)) for png in frames]
                assert all(im.size == (info["frame_size"],) * 2 for im in images)
                assert all("transparency" not in im.info for im in images)  # decoded to 3 channels
                out[mode].append((np.stack([np.asarray(im.convert("RGB")) for im in images]), vps))
    return out


def test_docs_give_each_dataset_its_entry():
    """The entries for README.md's commands, from the generators' own defaults."""
    text = DOC.read_text()
    narratives, dice = GENERATORS["narratives"], GENERATORS["dice"]
    for name, n, (_, test_n, shard), size, t in (
            ("traveling_salesman", 98000, narratives, NarrativesConfig().size, NarrativesConfig().frames),
            ("color_reaction", 20000, narratives, NarrativesConfig("color_reaction").size,
             NarrativesConfig("color_reaction").frames),
            ("mnist_dice", 20000, dice, DiceConfig.size, DiceConfig.views)):
        assert entry(name, math.ceil(n / shard), math.ceil(test_n / shard), size, t) in text, name


@pytest.mark.parametrize("fixture", ["small_ts", "small_cr"])
def test_narratives_parse_with_timestamps_for_cameras(fixture, request):
    root = Path(request.getfixturevalue(fixture))
    info = registry(root)
    assert info["train_size"] == 3 and info["test_size"] == 1  # 40 and 10 scenes, 16 a shard
    with pytest.raises(KeyError, match="cameras"):  # DeepMind's spec unchanged: no `cameras` key
        next(iter(tfrecord_loader(str(reader_files(info, "test", root.parent)[0]), None, {"cameras": "float"})))
    parsed, ds = parse_as_reader(root, "timestamps"), Dataset(root)
    for split, records in parsed.items():
        assert len(records) == ds.num(split)
        for i, (frames, times) in enumerate(records):
            assert np.array_equal(times, np.arange(info["sequence_size"], dtype=np.float32))
            assert np.array_equal(frames, ds.scene(split, i).frames)


@pytest.fixture(scope="module")
def tiny_dice(tmp_path_factory):
    """Two train shards of one scene each (the reader's "1-of-2" names), one test scene."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from jumpbench.generators.base import generate
    from jumpbench.generators.dice import DiceGenerator

    return generate(DiceGenerator(DiceConfig(size=32)), tmp_path_factory.mktemp("dice"), {"train": 2, "test": 1},
                    shard_size=1, progress=False)


def test_dice_parses_with_the_reader_spec_unchanged(tiny_dice):
    from jumpbench.scenes import viewpoints

    root = Path(tiny_dice)
    info = registry(root)
    assert (info["train_size"], info["test_size"], info["frame_size"], info["sequence_size"]) == (2, 1, 32, 12)
    parsed, ds = parse_as_reader(root, "cameras"), Dataset(root)
    for split, records in parsed.items():
        assert len(records) == ds.num(split)
        for i, (frames, cameras) in enumerate(records):
            scene = ds.scene(split, i)
            assert np.array_equal(frames, scene.frames)
            raw = cameras.reshape(info["sequence_size"], RAW_CAMERA_PARAMS)  # the reader's reshape
            pos, yaw, pitch = raw[:, :3], raw[:, 3:4], raw[:, 4:5]
            reader_vps = np.concatenate([pos, np.sin(yaw), np.cos(yaw), np.sin(pitch), np.cos(pitch)], 1)
            assert np.allclose(reader_vps, viewpoints(scene.meta, "cameras"), atol=1e-6)
