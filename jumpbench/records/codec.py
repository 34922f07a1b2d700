"""The bytes of one record: frames as PNGs (RGB through PIL; palette PNGs written here directly)
and a scene as a tf.train.Example, whose message jumpbench defines itself (the same bytes as
TensorFlow's; see `_example_pb2`), built when records are first read or written. Nothing here
knows of files, shards or manifests.
"""
from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np


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
