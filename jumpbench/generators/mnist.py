"""MNIST digits for the MNIST Dice dataset of JUMP (Kumar, Eslami et al., ICLR 2019, section 4.2).

"Each face of the cube has a random MNIST digit (out of 100 digits) engraved on it": the
pool is the first `pool` digits of the MNIST test split (LeCun, Cortes & Burges), shipped
gzip-compressed in `generators/data/` (see PROVENANCE.md there). `--mnist-dir` points at
other IDX files, e.g. the 60,000-digit training split.

IDX format (big-endian): magic = 0x00 0x00 <type 0x08 = uint8> <number of dims>, then one
uint32 per dimension, then the data. Images are 3-dimensional (N, 28, 28), labels 1-D (N,).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from jumpbench.errors import JumpbenchError

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_POOL = 100  # "out of 100 digits" (section 4.2)
FILE_PREFIXES = ("t10k", "train")  # MNIST file name prefixes looked for, in this order
IMAGES = "{}-images-idx3-ubyte"
LABELS = "{}-labels-idx1-ubyte"


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise JumpbenchError(f"{path}: MNIST file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise JumpbenchError(f"{path}: unreadable MNIST file ({e})") from None
    if len(raw) < 4 + 4 * ndim:
        raise JumpbenchError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, kind, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or kind != 0x08 or dims != ndim:
        raise JumpbenchError(f"{path}: bad IDX magic 0x{raw[:4].hex()} "
                             f"(expected 0x000008{ndim:02x}: {ndim}-D unsigned bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    size = int(np.prod(shape))
    body = raw[4 + 4 * ndim:]
    if len(body) != size:
        raise JumpbenchError(f"{path}: IDX header says {'x'.join(map(str, shape))} = {size} bytes "
                             f"of data, the file holds {len(body)}")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _find(folder: Path, pattern: str) -> Path:
    for split in FILE_PREFIXES:
        for suffix in (".gz", ""):
            path = folder / (pattern.format(split) + suffix)
            if path.is_file():
                return path
    names = " or ".join(pattern.format(s) + "[.gz]" for s in FILE_PREFIXES)
    raise JumpbenchError(f"{folder}: no MNIST file {names}")


def load_digits(mnist_dir: str | Path | None = None, pool: int = DEFAULT_POOL) -> tuple[np.ndarray, np.ndarray]:
    """The first `pool` digits: images (pool, 28, 28) uint8 (white strokes on black) and
    labels (pool,) int64, from the shipped test split or the IDX files in `mnist_dir`."""
    folder = DATA_DIR if mnist_dir is None else Path(mnist_dir)
    if not folder.is_dir():
        raise JumpbenchError(f"--mnist-dir {folder}: no such folder")
    images = read_idx(_find(folder, IMAGES), 3)
    labels = read_idx(_find(folder, LABELS), 1)
    if images.shape[1:] != (28, 28):
        raise JumpbenchError(f"{folder}: MNIST images must be 28x28, got {images.shape[1]}x{images.shape[2]}")
    if len(images) != len(labels):
        raise JumpbenchError(f"{folder}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise JumpbenchError(f"{folder}: MNIST labels must be 0-9, found {labels.max()}")
    if not 1 <= pool <= len(images):
        raise JumpbenchError(f"--digit-pool must be between 1 and {len(images)} (the digits in "
                             f"{folder}), got {pool}")
    return images[:pool].copy(), labels[:pool].astype(np.int64)
