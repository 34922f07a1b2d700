"""A stored scene as the arrays every reader gives: frames area-downsampled to the size asked
for, viewpoints as the (T, D) float32 vectors the models take, and what an index of a split
means (an int, from the end when negative, or a slice). The one place of these, without
torch: the torch Dataset that training reads too (dataset.py) and the numpy reader
(api.NumpyScenes) use them alike, so they give the same bytes.
"""
from __future__ import annotations

import operator

import numpy as np

from jumpbench.errors import JumpbenchError


def viewpoints(meta: dict, key: str) -> np.ndarray:
    """A scene's viewpoints (T, D) float32 from its stored key (the one conversion)."""
    if key == "cameras":
        x, y, z, yaw, pitch = np.asarray(meta["cameras"], np.float32).T
        return np.stack([x, y, z, np.sin(yaw), np.cos(yaw), np.sin(pitch), np.cos(pitch)], 1)
    if key == "timestamps":
        return np.asarray(meta["timestamps"], np.float32)[:, None]
    raise JumpbenchError(f"unknown viewpoint key {key!r}")


def downsample(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) by area averaging (H a multiple of size)."""
    t, h, w, c = frames.shape
    if h == size and w == size:
        return frames
    if h % size or w % size:
        raise JumpbenchError(f"frames of {h}x{w} cannot be area-downsampled to {size}x{size}")
    k, l = h // size, w // size
    acc = np.zeros((t, size, size, c), np.uint32)
    for i in range(k):  # strided slices: about 9x faster than a mean over reshaped axes
        for j in range(l):
            acc += frames[:, i::k, j::l]
    # the mean, rounded half to even: the same bytes as rint(mean) in float32 (sums below 2^24
    # are exact; a quotient is either exact or at least 1/(2kl) away from a tie)
    return np.rint(acc / (k * l)).astype(np.uint8)


def scene_index(i, n: int, split: str) -> int | range:
    """An item's index for a split of n scenes (negative from the end), or the range a slice
    takes; an index out of range is an IndexError (which ends iteration), any other key a
    one-line error."""
    if isinstance(i, slice):
        return range(*i.indices(n))
    try:
        k = operator.index(i)  # ints, numpy and 0-d torch integers; not floats
    except TypeError:
        k = None
    if k is None or isinstance(i, bool):
        from jumpbench.checks import shown

        raise JumpbenchError(f"a scene index is an int or a slice, got {shown(i)}")
    if not -n <= k < n:
        raise IndexError(f"{split} has {n} scenes, no index {k}")
    return k % n
