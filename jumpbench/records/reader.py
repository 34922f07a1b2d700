"""Reading a finished dataset's records against its manifest: each record checked against the
schema (`check_record`) and its frames against the format the dataset's frames have
(`frame_format`, `decode_frames`); scenes read one at a time (`Dataset`) or every shard and
record of the dataset checked in full (`verify`).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jumpbench.errors import JumpbenchError
from jumpbench.files import file_sha256
from jumpbench.records.codec import PNG_SIGNATURE, decode_png, parse_example, png_head
from jumpbench.records.framing import check_index, index_path, read_index, read_record
from jumpbench.records.manifest import check_manifest, frames_per_scene, generator_layout, load_manifest


def check_record(raw: dict[str, Any], manifest: dict, split: str, i: int, where: str) -> dict[str, Any]:
    """A parsed Example (`parse_example`) checked against the manifest and reshaped with its
    schema ("T": the manifest's frame count, -1: any length, []: a scalar): exactly the
    schema's keys, each of its dtype and shape, every float finite, and its scene_index and
    scene_seed those of scene `i` of `split` (see Determinism in docs/records.md). `frames`
    stay PNG bytes, checked as they are decoded (`decode_frames`). Cheap: nothing is decoded."""
    schema, params = manifest["schema"], manifest["params"]
    t = frames_per_scene(params)
    missing, extra = sorted(set(schema) - set(raw)), sorted(set(raw) - set(schema))
    if missing:
        raise JumpbenchError(f"{where}: no {missing[0]!r}, which the manifest's schema declares")
    if extra:
        raise JumpbenchError(f"{where}: holds {extra[0]!r}, which the manifest's schema does not declare")
    out = {}
    for key, spec in schema.items():
        value, dtype = raw[key], spec["dtype"]
        kind = "bytes" if isinstance(value, list) else str(value.dtype)
        if kind != ("bytes" if dtype == "png" else dtype):
            raise JumpbenchError(f"{where}: {key!r} holds {kind}; the manifest's schema says {dtype}")
        if dtype == "png":
            if len(value) != t:
                raise JumpbenchError(f"{where}: holds {len(value)} frames; the manifest says {t} of "
                                     f"{params['size']}x{params['size']}")
            out[key] = value
            continue
        try:
            value = value.reshape([t if d == "T" else d for d in spec["shape"]])
        except ValueError:  # a record of another dataset, or an edited schema
            raise JumpbenchError(f"{where}: {key!r} holds {value.size} values, not the shape {spec['shape']} "
                                 f"(T = {t}) of the manifest's schema; the record is not of this dataset") from None
        if dtype == "float32" and not np.isfinite(value).all():
            raise JumpbenchError(f"{where}: {key!r} holds NaN or infinite values")
        out[key] = value
    if "scene_index" in out and out["scene_index"].shape == () and int(out["scene_index"]) != i:
        raise JumpbenchError(f"{where}: holds scene {int(out['scene_index'])} of its split, not scene {i} "
                             f"(records moved, or of another dataset)")
    if "scene_seed" in out and out["scene_seed"].shape == ():
        from jumpbench.generators.base import SPLIT_IDS, scene_seed

        if split in SPLIT_IDS and int(out["scene_seed"]) != scene_seed(params["seed"], split, i):
            raise JumpbenchError(f"{where}: its scene_seed is not the one seed {params['seed']} gives scene {i} of "
                                 f"{split} (the manifest's seed was edited, or the record is of another dataset)")
    return out


def frame_format(manifest: dict) -> tuple[bytes, str]:
    """(the bytes each frame of the dataset starts with, what that is in words): the PNG header
    of the manifest's frame size and, for a known generator, its colour type and palette."""
    size = manifest["params"]["size"]
    layout = generator_layout(manifest)
    if not isinstance(layout, dict):
        return PNG_SIGNATURE, f"PNGs of {size}x{size}"
    palette = layout["palette"]
    return (png_head(size, size, palette),
            f"{'8-bit palette PNGs' if palette else 'RGB PNGs'} of {size}x{size} (what the {manifest['generator']} "
            f"generator writes)")


@dataclass
class Scene:
    """One scene: frames (T, H, W, 3) uint8 and its metadata arrays."""

    frames: np.ndarray
    meta: dict[str, Any]


class Dataset:
    """A finished dataset: random access to the scenes of a split through the .tfindex files.

    ds = Dataset("data/traveling_salesman"); ds.num("test"); scene = ds.scene("test", 0)
    Safe to use from several DataLoader workers: file handles are opened per process.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        check_manifest(self.root, self.manifest)
        self.name = self.manifest["dataset"]
        self.schema = self.manifest["schema"]
        self.size = self.manifest["params"]["size"]
        self.frame_format = frame_format(self.manifest)
        self._offsets: dict[str, list[tuple[int, int, int]]] = {}
        self._files: dict[tuple[int, str], Any] = {}

    def num(self, split: str) -> int:
        return sum(s["records"] for s in self._split(split)["shards"])

    def _split(self, split: str) -> dict:
        if split not in self.manifest["splits"]:
            raise JumpbenchError(f"{self.root}: no split {split!r} (has {sorted(self.manifest['splits'])})")
        return self.manifest["splits"][split]

    def _index(self, split: str) -> list[tuple[int, int, int]]:
        """(shard number, byte offset, length) per record of a split."""
        if split not in self._offsets:
            rows = []
            for k, shard in enumerate(self._split(split)["shards"]):
                path = self.root / split / shard["file"]
                rows += [(k, a, b) for a, b in check_index(path, shard, check_size=False)]
            self._offsets[split] = rows
        return self._offsets[split]

    def raw(self, split: str, i: int) -> bytes:
        rows = self._index(split)
        if not 0 <= i < len(rows):
            raise JumpbenchError(f"{self.root}: {split} has {len(rows)} scenes, no index {i}")
        k, offset, length = rows[i]
        path = self.root / split / self._split(split)["shards"][k]["file"]
        key = (os.getpid(), str(path))
        if key not in self._files:
            try:
                self._files[key] = open(path, "rb")
            except FileNotFoundError:
                raise JumpbenchError(f"{path}: missing shard") from None
        f = self._files[key]
        f.seek(offset)
        data = read_record(f, path)
        if data is None or f.tell() != offset + length:
            raise JumpbenchError(f"{path}: record {i} does not match its index (truncated shard?)")
        return data

    def features(self, split: str, i: int) -> dict[str, Any]:
        """Parsed, checked and reshaped features (`check_record`); `frames` left as PNG bytes."""
        try:
            raw = parse_example(self.raw(split, i))
        except JumpbenchError:
            raise
        except Exception as e:  # protobuf DecodeError and kin
            raise JumpbenchError(f"{self.root}/{split}: record {i} does not parse ({e})") from None
        return check_record(raw, self.manifest, split, i, self._where(split, i))

    def _where(self, split: str, i: int) -> str:
        shard = self._split(split)["shards"][self._index(split)[i][0]]["file"]
        return f"{self.root / split / shard}: scene {i} of {split}"

    def scene(self, split: str, i: int) -> Scene:
        feats = self.features(split, i)
        frames = decode_frames(feats.pop("frames"), self._where(split, i), self.size, self.frame_format)
        return Scene(frames, feats)

    def __getstate__(self):  # DataLoader workers reopen their own files
        state = self.__dict__.copy()
        state["_files"] = {}
        return state


def decode_frames(pngs: list[bytes], where: str, size: int | None = None,
                  fmt: tuple[bytes, str] = (PNG_SIGNATURE, "PNGs")) -> np.ndarray:
    """A record's frames decoded to (T, H, W, 3) uint8. Each must start with the bytes of `fmt`
    (`frame_format`: the PNG header, colour type and palette the dataset's frames have) and
    decode to size x size (when given)."""
    head, what = fmt
    for k, png in enumerate(pngs):
        if not png.startswith(head):
            if png.startswith(PNG_SIGNATURE + b"\x00\x00\x00\rIHDR") and len(png) >= 26:
                w, h, depth, colour = struct.unpack(">IIBB", png[16:26])
                found = f"a {w}x{h} PNG of {depth}-bit colour type {colour}"
            else:
                found = "not a PNG"
            raise JumpbenchError(f"{where}: frame {k} is {found}; the manifest's frames are {what}")
    try:
        frames = np.stack([decode_png(b) for b in pngs])
    except Exception as e:
        raise JumpbenchError(f"{where}: a frame does not decode ({e})") from None
    if size is not None and frames.shape[1:3] != (size, size):
        raise JumpbenchError(f"{where}: frames of {frames.shape[2]}x{frames.shape[1]}; the manifest says "
                             f"{len(frames)} of {size}x{size}")
    return frames


def verify(root: str | Path, progress=None) -> dict[str, int]:
    """Check the manifest (`load_manifest`, `check_manifest`), then re-read every shard: sha256,
    size and record counts against the manifest, every record's CRC and index line, every
    record against the schema (`check_record`) and every frame decoded (`decode_frames`).
    Returns records per split; raises JumpbenchError naming the bad shard and record."""
    root = Path(root)
    manifest = load_manifest(root)
    check_manifest(root, manifest)
    size, fmt = manifest["params"]["size"], frame_format(manifest)
    counts = {}
    for split, info in manifest["splits"].items():
        total = 0
        for shard in info["shards"]:
            path = root / split / shard["file"]
            if not path.is_file():
                raise JumpbenchError(f"{path}: missing shard")
            bad_sha = file_sha256(path) != shard["sha256"]
            index = read_index(path)
            n = 0
            with open(path, "rb") as f:
                while True:
                    offset = f.tell()
                    try:
                        data = read_record(f, path)
                    except JumpbenchError as e:
                        raise JumpbenchError(f"{e} (record {n})") from None
                    if data is None:
                        break
                    if n >= len(index) or index[n] != (offset, f.tell() - offset):
                        raise JumpbenchError(f"{index_path(path)}: line {n + 1} does not match record {n} "
                                             f"of the shard (edited or swapped index)")
                    try:
                        raw = parse_example(data)
                    except Exception as e:
                        raise JumpbenchError(f"{path}: record {n} does not parse ({e})") from None
                    where = f"{path}: record {n} (scene {total + n} of {split})"
                    decode_frames(check_record(raw, manifest, split, total + n, where)["frames"], where, size, fmt)
                    n += 1
                    if progress:
                        progress(1)
            if n != shard["records"]:
                raise JumpbenchError(f"{path}: {n} records, manifest says {shard['records']}")
            if bad_sha:
                raise JumpbenchError(f"{path}: sha256 differs from the manifest (shard changed or corrupt)")
            check_index(path, shard)
            total += n
        counts[split] = total
    return counts
