"""Records: one scene = one tf.train.Example, in gqn-datasets' sharded TFRecord layout.

    <root>/<dataset>/<split>/<i>-of-<N>.tfrecord   (+ .tfindex, the `tfrecord` package's index)
    <root>/<dataset>/manifest.json                 (written last, atomically)

`frames` is a bytes list of PNG-encoded RGB frames; every other key is a flat int64 or
float list whose shape the manifest's schema gives (a shape may name the frame count "T").
The schema is documented in docs/records.md, with what is checked: a manifest against itself
when it is loaded (`manifest_problem`, `check_manifest`), and every record against the
manifest as `verify` or a reader reads it (`check_record`, `decode_frames`). TFRecord framing
(length, masked CRC32C) is written here directly so that each shard's sha256 is computed while
it is written; the Example message is jumpbench's own definition of TensorFlow's (the same
bytes; see `_example_pb2`), built when records are first read or written.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from jumpbench.errors import JumpbenchError
from jumpbench.files import atomic_path, file_sha256, fsync, read_json, write_json_atomic, write_text_atomic

SPLITS = ("train", "test")
MANIFEST = "manifest.json"


# ---------------------------------------------------------------- PNG codec

def encode_png_palette(index: np.ndarray, palette: bytes, level: int = 1) -> list[bytes]:
    """Encode (T, H, W) uint8 palette-index frames as 8-bit palette PNGs, one per frame.

    Flat-coloured frames (the Narratives) compress to a fraction of an RGB PNG and encode
    several times faster than PIL's RGB path. Decoders (PIL, TensorFlow) expand them to RGB.
    """
    t, h, w = index.shape
    raw = np.zeros((t, h, w + 1), np.uint8)  # a leading 0 per row: PNG filter type "None"
    raw[:, :, 1:] = index
    head = png_head(w, h, palette)
    tail = _png_chunk(b"IEND", b"")
    return [head + _png_chunk(b"IDAT", zlib.compress(raw[i].tobytes(), level)) + tail for i in range(t)]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_head(width: int, height: int, palette: bytes | None) -> bytes:
    """The bytes a frame starts with: the PNG signature and header (8 bits, no interlace; palette
    colour followed by the palette, or RGB colour without one), as our encoders and PIL write them."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3 if palette else 2, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + (_png_chunk(b"PLTE", palette) if palette else b"")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(frame: np.ndarray, level: int = 1) -> bytes:
    """Encode an (H, W, 3) uint8 RGB frame as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame), "RGB").save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG (RGB or palette) bytes to an (H, W, 3) uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- tf.train.Example

_EXAMPLE = None


def _example_pb2():
    """The tf.train.Example message classes (Example, Features, Feature, BytesList, FloatList,
    Int64List), jumpbench's own: the same fields and numbers as TensorFlow's example.proto, so
    the same bytes on the wire, built into a private descriptor pool under the package name
    `jumpbench.example`. So nothing is loaded from inside another package, nothing clashes with
    TensorFlow's or `tfrecord`'s registration of `tensorflow.Example` in protobuf's default
    pool, and all three can live in one process (tests/test_records.py checks the bytes against
    `tfrecord`'s classes)."""
    global _EXAMPLE
    if _EXAMPLE is None:
        from types import SimpleNamespace

        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        F = descriptor_pb2.FieldDescriptorProto
        f = descriptor_pb2.FileDescriptorProto(name="jumpbench/example.proto", package="jumpbench.example",
                                               syntax="proto3")

        def message(name: str, *fields, parent=None, oneof: str | None = None):
            m = (parent.nested_type if parent is not None else f.message_type).add(name=name)
            if oneof:
                m.oneof_decl.add(name=oneof)
            for field_name, number, kind, label, type_name in fields:
                fd = m.field.add(name=field_name, number=number, type=kind, label=label)
                if type_name:
                    fd.type_name = type_name
                if oneof:
                    fd.oneof_index = 0
            return m

        rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
        message("BytesList", ("value", 1, F.TYPE_BYTES, rep, None))
        message("FloatList", ("value", 1, F.TYPE_FLOAT, rep, None))  # packed: proto3's default, as TF's
        message("Int64List", ("value", 1, F.TYPE_INT64, rep, None))
        message("Feature", ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".jumpbench.example.BytesList"),
                ("float_list", 2, F.TYPE_MESSAGE, opt, ".jumpbench.example.FloatList"),
                ("int64_list", 3, F.TYPE_MESSAGE, opt, ".jumpbench.example.Int64List"), oneof="kind")
        features = message("Features", ("feature", 1, F.TYPE_MESSAGE, rep, ".jumpbench.example.Features.FeatureEntry"))
        entry = message("FeatureEntry", ("key", 1, F.TYPE_STRING, opt, None),
                        ("value", 2, F.TYPE_MESSAGE, opt, ".jumpbench.example.Feature"), parent=features)
        entry.options.map_entry = True
        message("Example", ("features", 1, F.TYPE_MESSAGE, opt, ".jumpbench.example.Features"))
        pool = descriptor_pool.DescriptorPool()
        pool.Add(f)
        _EXAMPLE = SimpleNamespace(**{name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"jumpbench.example.{name}"))
            for name in ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List")})
    return _EXAMPLE


def serialize_example(features: dict[str, Any]) -> bytes:
    """Serialize {key: list of bytes | int array | float array} to a tf.train.Example."""
    pb = _example_pb2()
    example = pb.Example()
    for key, value in features.items():
        feat = example.features.feature[key]
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes):
            feat.bytes_list.value.extend(value)
            continue
        arr = np.asarray(value)
        if arr.size == 0:  # keep the key: an empty list must still parse back as empty
            (feat.float_list if arr.dtype.kind == "f" else feat.int64_list).SetInParent()
        if arr.dtype.kind in "iub":
            feat.int64_list.value.extend(arr.astype(np.int64).ravel().tolist())
        elif arr.dtype.kind == "f":
            feat.float_list.value.extend(arr.astype(np.float32).ravel().tolist())
        else:
            raise TypeError(f"feature {key!r}: unsupported dtype {arr.dtype}")
    # deterministic=True writes the features map in key order: without it the order follows
    # the per-process string hash, and the same scene gives other bytes in another process.
    return example.SerializeToString(deterministic=True)


def parse_example(data: bytes) -> dict[str, Any]:
    """Parse a tf.train.Example into {key: list of bytes | int64 array | float32 array}."""
    pb = _example_pb2()
    example = pb.Example.FromString(data)
    out: dict[str, Any] = {}
    for key, feat in example.features.feature.items():
        kind = feat.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = list(feat.bytes_list.value)
        elif kind == "int64_list":
            out[key] = np.asarray(feat.int64_list.value, np.int64)
        elif kind == "float_list":
            out[key] = np.asarray(feat.float_list.value, np.float32)
    return out


# ---------------------------------------------------------------- TFRecord framing

def _masked_crc(data: bytes) -> int:
    import crc32c

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", _masked_crc(length)), data,
                     struct.pack("<I", _masked_crc(data))))


def read_record(f, path: Path, check_crc: bool = True) -> bytes | None:
    """Read one framed record from an open file; None at a clean end of file."""
    head = f.read(12)
    if not head:
        return None
    if len(head) < 12:
        raise JumpbenchError(f"{path}: truncated record header at byte {f.tell() - len(head)}")
    (length,) = struct.unpack("<Q", head[:8])
    if check_crc and struct.unpack("<I", head[8:])[0] != _masked_crc(head[:8]):
        raise JumpbenchError(f"{path}: corrupt record length at byte {f.tell() - 12}")
    data = f.read(length)
    tail = f.read(4)
    if len(data) < length or len(tail) < 4:
        raise JumpbenchError(f"{path}: truncated record at byte {f.tell() - len(data) - len(tail) - 12}")
    if check_crc and struct.unpack("<I", tail)[0] != _masked_crc(data):
        raise JumpbenchError(f"{path}: corrupt record data (CRC mismatch)")
    return data


def shard_names(n_shards: int) -> list[str]:
    """gqn-datasets naming: both numbers zero-padded to len(str(N)), counted from 1."""
    w = len(str(n_shards))
    return [f"{i:0{w}d}-of-{n_shards:0{w}d}.tfrecord" for i in range(1, n_shards + 1)]


def index_path(shard: Path) -> Path:
    return shard.with_suffix(".tfindex")


def write_shard(path: Path, records: Iterator[bytes], params_sha256: str | None = None) -> dict:
    """Write serialized Examples to `path` atomically (temp name, fsync, rename), with its
    .tfindex; returns {"file", "records", "sha256", "bytes", "index_sha256"}. A failure leaves
    no partial file. With `params_sha256` the shard's .tfmeta sidecar is written last: the
    proof of the parameters the shard was made with (see `read_meta`)."""
    path = Path(path)
    sha, count, offset, index_lines = hashlib.sha256(), 0, 0, []
    with atomic_path(path) as tmp:  # the shard's final name appears only once it is complete
        with open(tmp, "wb") as f:
            for data in records:
                rec = frame_record(data)
                f.write(rec)
                sha.update(rec)
                index_lines.append(f"{offset} {len(rec)}\n")
                offset += len(rec)
                count += 1
            fsync(f)
        index_text = "".join(index_lines)
        write_text_atomic(index_path(path), index_text)  # the index first
    info = {"file": path.name, "records": count, "sha256": sha.hexdigest(), "bytes": offset,
            "index_sha256": hashlib.sha256(index_text.encode()).hexdigest()}
    if params_sha256 is not None:
        write_json_atomic(meta_path(path), {**info, "params_sha256": params_sha256})
    return info


def meta_path(shard: Path) -> Path:
    """The shard's sidecar: {"file", "records", "sha256", "bytes", "index_sha256", "params_sha256"}."""
    return shard.with_suffix(".tfmeta")


def read_meta(shard: Path) -> dict | None:
    """The shard's sidecar, or None when it is missing or not a sidecar."""
    meta = read_json(meta_path(shard))
    keys = ("records", "sha256", "bytes", "index_sha256", "params_sha256")
    return meta if isinstance(meta, dict) and all(k in meta for k in keys) else None


def params_sha256(params: dict) -> str:
    """The hash of a dataset's parameters that each shard's sidecar and the manifest carry."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def dataset_proof(generator: str | None, version: str | None, dataset: str, params: dict) -> str:
    """A dataset's `params_sha256`: the hash of its generator, version, name and parameters."""
    return params_sha256({"generator": generator, "version": version, "dataset": dataset, **params})


def frames_per_scene(params: dict) -> int | None:
    """Frames of each scene, from a manifest's parameters: a video's `frames`, a scene's `views`."""
    return params.get("frames") or params.get("views")


def params_diff(old: dict, new: dict) -> str:
    """"key: old -> new" for every key whose value differs, comma-separated."""
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k))


def scan_index(path: Path) -> str:
    """The .tfindex text of a shard, from its records (each CRC-checked)."""
    lines, offset = [], 0
    with open(path, "rb") as f:
        while (data := read_record(f, path)) is not None:
            lines.append(f"{offset} {len(data) + 16}\n")
            offset += len(data) + 16
    return "".join(lines)


def repair_index(path: Path, expected_sha256: str | None) -> None:
    """Rewrite a missing .tfindex from its shard; refuses when the result is not the index the
    manifest (or the sidecar) recorded."""
    text = scan_index(path)
    if expected_sha256 and hashlib.sha256(text.encode()).hexdigest() != expected_sha256:
        raise JumpbenchError(f"{path}: the shard does not match its recorded index (shard changed?); "
                             f"re-run with --overwrite")
    write_text_atomic(index_path(path), text)


def describe_shard(path: Path) -> dict:
    """{"file", "records", "sha256", "bytes", "index_sha256"} of a finished shard (from its
    index and bytes)."""
    text = index_path(path).read_text()
    return {"file": path.name, "records": sum(1 for line in text.splitlines() if line.strip()),
            "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "index_sha256": hashlib.sha256(text.encode()).hexdigest()}


# ---------------------------------------------------------------- reading

def load_manifest(root: Path) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise JumpbenchError(f"{root}: no such dataset folder")
    if not path.is_file():
        inside = sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}"))
        if inside:
            raise JumpbenchError(f"{root} is not a dataset folder; it holds the dataset(s) "
                                 f"{', '.join(inside)}: give one of them, e.g. {root / inside[0]}")
        raise JumpbenchError(f"{root}: no manifest.json (the dataset is incomplete: re-run its "
                             f"'jumpbench generate' command to finish it)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JumpbenchError(f"{path}: unreadable manifest ({e})") from None
    problem = manifest_problem(manifest)
    if problem:
        raise JumpbenchError(f"{path}: not a jumpbench manifest ({problem})")
    return manifest


def manifest_problem(m: Any) -> str | None:
    """What makes `m` not a manifest (docs/records.md), or None."""
    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if not isinstance(m, dict):
        return f"a JSON {type(m).__name__}, not an object"
    for key, kind in (("dataset", str), ("params", dict), ("schema", dict), ("viewpoint", dict), ("splits", dict)):
        if not isinstance(m.get(key), kind):
            return f"'{key}' missing or not a{'n object' if kind is dict else ' string'}"
    if Path(m["dataset"]).name != m["dataset"] or m["dataset"] in ("", ".", ".."):
        return f"dataset {m['dataset']!r} is not a plain folder name"
    if not m["splits"]:
        return "no splits"
    for key, spec in m["schema"].items():
        if not (isinstance(spec, dict) and set(spec) == {"dtype", "shape"} and isinstance(spec["shape"], list)
                and all(d == "T" or (isinstance(d, int) and not isinstance(d, bool) and d >= -1)
                        for d in spec["shape"])):
            return f"schema of {key!r} is not {{'dtype', 'shape'}}"
        if spec["dtype"] not in DTYPES or (spec["dtype"] == "png") != (key == "frames"):
            return f"schema of {key!r}: dtype {spec['dtype']!r} (known: png for frames, int64 and float32 for the rest)"
    if not isinstance(m["viewpoint"].get("key"), str):
        return "'viewpoint' has no 'key'"
    for split, info in m["splits"].items():
        if not (isinstance(info, dict) and isinstance(info.get("shards"), list)):
            return f"split {split!r} has no list of shards"
        for shard in info["shards"]:
            if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and is_int(shard.get("records"))
                    and isinstance(shard.get("sha256"), str)):
                return f"split {split!r}: a shard is not {{'file', 'records', 'sha256'}}"
            if Path(shard["file"]).name != shard["file"] or shard["file"] in ("", ".", ".."):
                return f"split {split!r}: shard file {shard['file']!r} is not a plain file name"
        if "scenes" in info and info["scenes"] != sum(s["records"] for s in info["shards"]):
            return f"split {split!r}: 'scenes' is not the sum of its shards' records"
    return meaning_problem(m)


DTYPES = ("png", "int64", "float32")  # a schema's dtypes: PNG frames (a bytes list), int64 and float32 lists
VIEWPOINT_DIMS = {"cameras": 7, "timestamps": 1}  # the dimension the loader makes of each viewpoint key
VIEWPOINT_SHAPES = {"cameras": ["T", 5], "timestamps": ["T"]}  # and the stored shape it reads


def meaning_problem(m: dict) -> str | None:
    """What in a well-formed manifest disagrees with itself or with what jumpbench reads, or None:
    a layout other than the two known ones (before 1.1: no params_sha256 and no shard sizes;
    since: both), a frame count, frame size or seed that is not an integer, a duplicated field
    that disagrees (`seed` and `params.seed`, `dataset` and `params.narrative`), a viewpoint key
    or dimension the loader does not read, and, for a known generator, a schema or viewpoint
    other than the one it writes for these parameters (`generator_layout`)."""
    params, schema, vp = m["params"], m["schema"], m["viewpoint"]
    shards = [s for info in m["splits"].values() for s in info["shards"]]
    sized = [isinstance(s.get("bytes"), int) and isinstance(s.get("index_sha256"), str) for s in shards]
    unsized = [not ({"bytes", "index_sha256"} & set(s)) for s in shards]
    if not (all(sized) and "params_sha256" in m or all(unsized) and "params_sha256" not in m):
        if all(sized):
            return "its shards record their sizes (the layout since 1.1) but it has no params_sha256: it was edited"
        return "not a known layout (since 1.1: params_sha256 and each shard's 'bytes' and 'index_sha256'; before: none)"
    if "params_sha256" in m and not isinstance(m["params_sha256"], str):
        return "'params_sha256' is not a string"
    for key, value, least in (("size", params.get("size"), 1), ("seed", params.get("seed"), 0),
                              ("frames" if "frames" in params else "views", frames_per_scene(params), 1)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            return f"params.{key} {value!r} is not an integer of at least {least}"
    if "seed" in m and m["seed"] != params["seed"]:
        return f"its seed {m['seed']!r} is not its params.seed {params['seed']!r}"
    if "narrative" in params and params["narrative"] != m["dataset"]:
        return f"its dataset {m['dataset']!r} is not its params.narrative {params['narrative']!r}"
    if schema.get("frames") != {"dtype": "png", "shape": ["T"]}:
        return "its schema has no 'frames' of dtype png and shape ['T']"
    key, dim = vp["key"], vp.get("dim")
    if key not in VIEWPOINT_DIMS:
        return f"viewpoint key {key!r}; jumpbench reads {' or '.join(VIEWPOINT_DIMS)}"
    if not (isinstance(dim, int) and not isinstance(dim, bool)) or dim != VIEWPOINT_DIMS[key]:
        return f"viewpoint {key!r} of dimension {dim!r}; jumpbench reads it as {VIEWPOINT_DIMS[key]}"
    if schema.get(key) != {"dtype": "float32", "shape": VIEWPOINT_SHAPES[key]}:
        return f"viewpoint {key!r} is not in its schema as float32 of shape {VIEWPOINT_SHAPES[key]}"
    layout = generator_layout(m)
    if isinstance(layout, str):
        return layout
    if layout:
        name = m["generator"]
        if m["dataset"] != layout["dataset"]:
            return f"dataset {m['dataset']!r}; the {name} generator writes {layout['dataset']!r} for its parameters"
        for k in sorted(set(schema) | set(layout["schema"])):
            if schema.get(k) != layout["schema"].get(k):
                return f"schema of {k!r} is {schema.get(k)}; the {name} generator writes {layout['schema'].get(k)}"
        if vp != layout["viewpoint"]:
            return f"viewpoint {vp}; the {name} generator writes {layout['viewpoint']}"
    return None


def generator_layout(m: dict) -> dict | str | None:
    """What the manifest's generator writes for its parameters: {"dataset", "schema",
    "viewpoint", "palette"} (`palette`: the frames are palette PNGs with it; None: RGB PNGs);
    None for a generator jumpbench does not know (the generic checks alone then apply); a
    string: why the parameters are not ones the generator takes."""
    params = m["params"]
    if m.get("generator") == "narratives":
        from jumpbench.generators import narratives

        if params.get("narrative") not in narratives.NARRATIVES:
            return f"params.narrative {params.get('narrative')!r} is not one of {', '.join(narratives.NARRATIVES)}"
        return {"dataset": params["narrative"], "schema": narratives.schema(params["narrative"]),
                "viewpoint": narratives.NarrativesGenerator.viewpoint, "palette": narratives.PALETTE}
    if m.get("generator") == "dice":
        from jumpbench.generators import dice

        return {"dataset": dice.DiceGenerator.dataset, "schema": dice.SCHEMA,
                "viewpoint": dice.DiceGenerator.viewpoint, "palette": None}
    return None


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


def read_index(path: Path) -> list[tuple[int, int]]:
    """(offset, length) per record from a shard's .tfindex."""
    try:
        text = index_path(path).read_text()
    except FileNotFoundError:
        raise JumpbenchError(f"{index_path(path)}: missing index (re-run the dataset's 'jumpbench generate' "
                             f"command to repair it)") from None
    try:
        return [(int(a), int(b)) for a, b in (line.split() for line in text.splitlines() if line.strip())]
    except ValueError:
        raise JumpbenchError(f"{index_path(path)}: not an index (lines of 'offset length')") from None


def check_index(path: Path, shard: dict, check_size: bool = True) -> list[tuple[int, int]]:
    """A shard's index, checked against the manifest's entry: its sha256 (when recorded),
    record count, contiguity and (`check_size`) the shard's size. Cheap: no shard byte is
    read. The reader skips the size check so that the intact start of a truncated shard
    still reads (each record is CRC-checked and checked against its index as it is read)."""
    rows = read_index(path)
    idx = index_path(path)
    if "index_sha256" in shard and hashlib.sha256(idx.read_bytes()).hexdigest() != shard["index_sha256"]:
        raise JumpbenchError(f"{path}: its index {idx.name} is not the one the manifest recorded: the shard "
                             f"or its index was replaced or edited (jumpbench verify tells which)")
    if len(rows) != shard["records"]:
        raise JumpbenchError(f"{idx}: {len(rows)} records, manifest says {shard['records']}")
    offset = 0
    for a, b in rows:
        if a != offset or b < 16:
            raise JumpbenchError(f"{idx}: record offsets are not contiguous (edited or swapped index)")
        offset += b
    if not check_size:
        return rows
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise JumpbenchError(f"{path}: missing shard") from None
    if size != shard.get("bytes", offset) or size != offset:
        raise JumpbenchError(f"{path}: {size} bytes, its index and the manifest say "
                             f"{shard.get('bytes', offset)}: the shard does not match the manifest")
    return rows


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


def check_manifest(root: Path, manifest: dict) -> None:
    """The manifest agrees with itself and with the folder: its parameters hash to its
    params_sha256 (which every shard's sidecar carries; without one, to the sidecars' own:
    `check_sidecars`), its splits and shard lists are the ones those parameters make, and no
    shard file lies in the folder that it does not list."""
    path = Path(root) / MANIFEST
    params = manifest["params"]
    proof = dataset_proof(manifest.get("generator"), manifest.get("version"), manifest["dataset"], params)
    if "params_sha256" in manifest:  # manifests of the layout before 1.1 have no hash (manifest_problem)
        if proof != manifest["params_sha256"]:
            raise JumpbenchError(f"{path}: its parameters do not hash to its params_sha256 (the manifest was edited)")
    else:  # unless its shards' sidecars carry the proof: then it must hash to theirs
        check_sidecars(root, manifest, proof)
    counts, shard_size = params.get("counts"), params.get("shard_size")
    if not (isinstance(counts, dict) and isinstance(shard_size, int) and shard_size > 0
            and all(isinstance(n, int) for n in counts.values())):
        return  # not made by `jumpbench generate`: no layout to check against
    if set(manifest["splits"]) != set(counts):
        raise JumpbenchError(f"{path}: splits {sorted(manifest['splits'])}, its parameters ask for {sorted(counts)}")
    for split, info in manifest["splits"].items():
        names = shard_names(-(-counts[split] // shard_size))
        listed = [shard["file"] for shard in info["shards"]]
        if listed != names or not info["scenes"] == counts[split] == sum(s["records"] for s in info["shards"]):
            raise JumpbenchError(f"{path}: the {split} split lists {len(listed)} shard(s) of {info['scenes']} "
                                 f"scenes; its parameters make {len(names)} of {counts[split]} (the manifest was edited)")
        stray = sorted(set(p.name for p in (Path(root) / split).glob("*.tfrecord")) - set(names))
        if stray:
            raise JumpbenchError(f"{Path(root) / split / stray[0]}: a shard that the manifest does not list")


def check_sidecars(root: Path, manifest: dict, proof: str) -> None:
    """For a manifest without params_sha256 (the layout before 1.1): each listed shard's .tfmeta
    sidecar that records a params_sha256 (the current generator writes one beside every shard)
    must record `proof`, the hash of the manifest's generator, version, name and parameters. A
    current manifest stripped to the old layout thus still answers for the fields its records do
    not cover; a truly old set, without such sidecars, has no proof to check."""
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            meta = read_json(meta_path(Path(root) / split / shard["file"]))
            if isinstance(meta, dict) and "params_sha256" in meta and meta["params_sha256"] != proof:
                raise JumpbenchError(f"{meta_path(Path(root) / split / shard['file'])}: its params_sha256 is not the "
                                     f"proof of the manifest's generator, version, name and parameters (the manifest "
                                     f"was edited, or the shard is of another set)")


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
