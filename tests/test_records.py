"""jumpbench.records: the schema read back by the `tfrecord` package itself, PNG codec, atomic
shards, verify and the reader on truncated and corrupted shards."""
import json

import numpy as np
import pytest

from jumpbench import records
from jumpbench.errors import JumpbenchError


def test_palette_png_round_trip():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, (3, 16, 20)).astype(np.uint8)
    palette = bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    pngs = records.encode_png_palette(idx, palette)
    lut = np.frombuffer(palette, np.uint8).reshape(-1, 3)
    for png, frame in zip(pngs, idx):
        np.testing.assert_array_equal(records.decode_png(png), lut[frame])


def test_rgb_png_round_trip():
    frame = np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    np.testing.assert_array_equal(records.decode_png(records.encode_png(frame)), frame)


def test_example_round_trip_keeps_empty_lists():
    feats = {"frames": [b"a", b"bc"], "x": np.zeros((0, 4), np.int64), "y": np.float32(1.5),
             "z": np.arange(6).reshape(2, 3)}
    back = records.parse_example(records.serialize_example(feats))
    assert back["frames"] == [b"a", b"bc"]
    assert back["x"].shape == (0,) and back["x"].dtype == np.int64
    assert back["y"].tolist() == [1.5] and back["z"].tolist() == list(range(6))


def test_shard_names_follow_gqn_datasets():
    assert records.shard_names(3) == ["1-of-3.tfrecord", "2-of-3.tfrecord", "3-of-3.tfrecord"]
    assert records.shard_names(12)[0] == "01-of-12.tfrecord"


def test_tfrecord_package_reads_our_shards(small_ts):
    """Read back with the tfrecord package directly (its loader and its index), not our reader."""
    from tfrecord.reader import tfrecord_loader

    manifest = json.loads((small_ts / "manifest.json").read_text())
    shard = small_ts / "train" / manifest["splits"]["train"]["shards"][0]["file"]
    rows = list(tfrecord_loader(str(shard), None,
                                {"frames": "byte", "positions": "float", "kinds": "int",
                                 "timestamps": "float", "scene_index": "int"}))
    assert len(rows) == manifest["splits"]["train"]["shards"][0]["records"]
    first = rows[0]
    assert len(first["frames"]) == 20  # tfrecord >= 1.14.6 keeps the whole bytes list
    assert records.decode_png(bytes(first["frames"][3])).shape == (64, 64, 3)
    assert first["positions"].shape == (20 * 5 * 2,)
    assert first["timestamps"].tolist() == list(range(20))
    assert first["scene_index"].tolist() == [0]
    index = [tuple(map(int, line.split())) for line in records.index_path(shard).read_text().splitlines()]
    assert len(index) == len(rows) and index[0][0] == 0 and sum(n for _, n in index) == shard.stat().st_size


def test_manifest_describes_everything(small_ts):
    m = records.load_manifest(small_ts)
    assert m["generator"] == "narratives" and m["dataset"] == "traveling_salesman"
    assert m["viewpoint"] == {"key": "timestamps", "dim": 1}
    assert m["params"]["seed"] == 0 and m["params"]["counts"] == {"train": 40, "test": 10}
    assert [s["records"] for s in m["splits"]["train"]["shards"]] == [16, 16, 8]
    assert m["schema"]["positions"] == {"dtype": "float32", "shape": ["T", 5, 2]}
    assert records.verify(small_ts) == {"train": 40, "test": 10}


def test_reader_reshapes_with_schema(small_ts):
    ds = records.Dataset(small_ts)
    assert ds.num("train") == 40 and ds.num("test") == 10
    scene = ds.scene("test", 9)
    assert scene.frames.shape == (20, 64, 64, 3) and scene.frames.dtype == np.uint8
    assert scene.meta["positions"].shape == (20, 5, 2)
    assert scene.meta["color_changes"].shape == (0, 4)
    assert int(scene.meta["scene_index"]) == 9
    with pytest.raises(JumpbenchError, match="no index 10"):
        ds.scene("test", 10)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_shard_is_named(small_ts, tmp_path):
    root = _copy(small_ts, tmp_path / "ts")
    shard = root / "train" / "2-of-3.tfrecord"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(JumpbenchError, match="2-of-3.tfrecord.*truncated.*record 15"):
        records.verify(root)
    ds = records.Dataset(root)
    ds.scene("train", 16)  # the intact start of the shard still reads
    with pytest.raises(JumpbenchError, match="2-of-3.tfrecord"):
        ds.scene("train", 31)


def test_corrupted_shard_is_named(small_ts, tmp_path):
    root = _copy(small_ts, tmp_path / "ts")
    shard = root / "test" / "1-of-1.tfrecord"
    data = bytearray(shard.read_bytes())
    data[500] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(JumpbenchError, match="1-of-1.tfrecord.*CRC.*record 0"):
        records.verify(root)
    with pytest.raises(JumpbenchError, match="CRC"):
        records.Dataset(root).scene("test", 0)


def test_missing_manifest_means_incomplete(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(JumpbenchError, match="incomplete"):
        records.Dataset(tmp_path / "x")
    with pytest.raises(JumpbenchError, match="no such dataset"):
        records.Dataset(tmp_path / "y")


def test_failed_shard_write_leaves_nothing(tmp_path):
    def boom():
        yield b"ok"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        records.write_shard(tmp_path / "1-of-1.tfrecord", boom())
    assert list(tmp_path.iterdir()) == []


def test_our_example_message_is_tensorflows_on_the_wire(small_ts):
    """jumpbench's own Example definition (a private descriptor pool) writes the bytes that the
    `tfrecord` package's copy of TensorFlow's example.proto writes and parses, and the two live
    in one process (no clash in protobuf's default pool)."""
    import numpy as np
    from tfrecord import example_pb2 as theirs  # registers tensorflow.Example in the default pool

    from jumpbench.records import Dataset, parse_example, serialize_example

    ds = Dataset(small_ts)
    raw = ds.raw("train", 0)
    features = parse_example(raw)
    assert serialize_example(features) == raw
    theirs_ex = theirs.Example.FromString(raw)
    again = theirs_ex.SerializeToString(deterministic=True)
    assert again == raw
    assert set(theirs_ex.features.feature) == set(features)
    assert list(theirs_ex.features.feature["frames"].bytes_list.value) == features["frames"]
    empty = {"a": np.zeros(0, np.float32), "b": np.arange(3), "c": [b"x", b""]}
    back = parse_example(serialize_example(empty))
    assert back["a"].size == 0 and back["b"].tolist() == [0, 1, 2] and back["c"] == [b"x", b""]
