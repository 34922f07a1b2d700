"""open_dataset as a torch user expects it (transform=, slices, one-line errors for other keys)
and its numpy backend: the same items as numpy arrays, for Narratives and dice, without torch."""
import subprocess
import sys

import numpy as np
import pytest

import jumpbench


def test_transform_and_slices(small_ts):
    seen = []

    def shape_of(item):
        seen.append(item["index"])
        return item["frames"].shape

    for backend in ("torch", "numpy"):
        seen.clear()
        ds = jumpbench.open_dataset(small_ts, "test", image_size=16, transform=shape_of, backend=backend)
        assert tuple(ds[0]) == (20, 3, 16, 16) and seen == [0]
        assert [tuple(s) for s in ds[8:]] == [(20, 3, 16, 16)] * 2 and seen == [0, 8, 9]
        assert ds[::4] and seen[-3:] == [0, 4, 8] and ds[20:30] == []
        assert len(ds[-3:]) == 3 and seen[-3:] == [7, 8, 9]
        plain = jumpbench.open_dataset(small_ts, "test", backend=backend)
        assert [item["index"] for item in plain[2:5]] == [2, 3, 4]
        with pytest.raises(IndexError):
            plain[10]
        for key in (1.5, "0", True, [0, 1]):
            with pytest.raises(jumpbench.JumpbenchError, match="a scene index is an int or a slice"):
                plain[key]
    with pytest.raises(jumpbench.JumpbenchError, match="transform must be a callable"):
        jumpbench.open_dataset(small_ts, transform="crop")
    with pytest.raises(jumpbench.JumpbenchError, match="unknown backend 'jax'"):
        jumpbench.open_dataset(small_ts, backend="jax")


@pytest.fixture(scope="module")
def dice(tmp_path_factory):
    from jumpbench.generators.base import generate
    from jumpbench.generators.dice import DiceConfig, DiceGenerator

    return generate(DiceGenerator(DiceConfig(size=32)), tmp_path_factory.mktemp("dice"), {"train": 1, "test": 1},
                    shard_size=1, progress=False)


@pytest.mark.parametrize("which", ["small_ts", "dice"])
def test_numpy_items_are_the_torch_items(which, request):
    path = request.getfixturevalue(which)
    size = 16
    for dtype in ("uint8", "float32"):
        ours = jumpbench.open_dataset(path, "test", image_size=size, dtype=dtype, backend="numpy")
        torch_ds = jumpbench.open_dataset(path, "test", image_size=size, dtype=dtype)
        assert len(ours) == len(torch_ds) and ours.ragged_keys == torch_ds.ragged_keys
        for a, b in zip(ours, [torch_ds[i] for i in range(len(torch_ds))]):
            assert isinstance(a["frames"], np.ndarray) and a["frames"].dtype == np.dtype(dtype)
            assert np.array_equal(a["frames"], b["frames"].numpy())  # the same bytes, the same downsampling
            assert a["viewpoints"].dtype == np.float32 and np.array_equal(a["viewpoints"], b["viewpoints"].numpy())
            assert a["index"] == b["index"] and a["meta"].keys() == b["meta"].keys()
            assert all(np.array_equal(a["meta"][k], b["meta"][k].numpy()) for k in a["meta"])
        meta = ours.metadata(0)
        assert meta.keys() == torch_ds.metadata(0).keys() and set(ours.ragged_keys) <= set(meta)


def test_numpy_backend_never_imports_torch(small_ts):
    code = (f"import sys, jumpbench\n"
            f"ds = jumpbench.open_dataset({str(small_ts)!r}, 'test', image_size=16, backend='numpy')\n"
            f"assert ds[0]['frames'].shape == (20, 3, 16, 16) and len(ds[0:3]) == 3 and ds.metadata(1)\n"
            f"print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_numpy_backend_bad_input(small_ts):
    with pytest.raises(jumpbench.JumpbenchError, match="image_size"):
        jumpbench.open_dataset(small_ts, image_size=24, backend="numpy")
    with pytest.raises(jumpbench.JumpbenchError, match="no split"):
        jumpbench.open_dataset(small_ts, split="valid", backend="numpy")
    with pytest.raises(jumpbench.JumpbenchError, match="dtype"):
        jumpbench.open_dataset(small_ts, dtype="float16", backend="numpy")
