"""The IDX parser and the digit pool of the MNIST Dice dataset (JUMP, ICLR 2019, section 4.2)."""
import gzip
import struct

import numpy as np
import pytest

from jumpbench.errors import JumpbenchError
from jumpbench.generators.mnist import load_digits, read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_pair(folder, prefix, n=7, gz=False, labels=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8) if labels is None else labels
    for name, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


def test_shipped_test_split():
    images, labels = load_digits()
    assert images.shape == (100, 28, 28) and images.dtype == np.uint8
    assert labels.tolist()[:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the published first labels
    images, labels = load_digits(pool=10000)
    assert len(images) == 10000 and np.bincount(labels).tolist()[:3] == [980, 1135, 1032]


@pytest.mark.parametrize("pool", [0, 10001])
def test_pool_out_of_range(pool):
    with pytest.raises(JumpbenchError, match="--digit-pool"):
        load_digits(pool=pool)


@pytest.mark.parametrize("gz", [False, True])
def test_other_idx_files(tmp_path, gz):
    images, labels = write_pair(tmp_path, "train", gz=gz)
    got_images, got_labels = load_digits(tmp_path, pool=5)
    assert np.array_equal(got_images, images[:5]) and got_labels.tolist() == labels[:5].tolist()


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a", 3), arr)


@pytest.mark.parametrize("data, match", [
    (b"\x00\x00", "not an IDX file"),
    (b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 28, 28) + bytes(784), "bad IDX magic"),  # floats
    (b"\x00\x00\x08\x01" + struct.pack(">I", 16) + bytes(16), "bad IDX magic"),  # 1-D, 3-D expected
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 28, 28) + bytes(784), "holds 784"),  # truncated
])
def test_malformed(tmp_path, data, match):
    (tmp_path / "x").write_bytes(data)
    with pytest.raises(JumpbenchError, match=match):
        read_idx(tmp_path / "x", 3)


def test_missing_and_not_gzip(tmp_path):
    with pytest.raises(JumpbenchError, match="not found"):
        read_idx(tmp_path / "nope.gz", 3)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(JumpbenchError, match="unreadable"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 3)
    with pytest.raises(JumpbenchError, match="no such folder"):
        load_digits(tmp_path / "missing")


def test_folder_without_files_and_mismatch(tmp_path):
    with pytest.raises(JumpbenchError, match="no MNIST file"):
        load_digits(tmp_path)
    write_pair(tmp_path, "t10k", n=4, labels=np.zeros(3, np.uint8))
    with pytest.raises(JumpbenchError, match="4 images but 3 labels"):
        load_digits(tmp_path, pool=2)
