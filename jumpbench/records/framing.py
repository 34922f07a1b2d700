"""The files of a shard: TFRecord framing (length, masked CRC32C), written here directly so that
each shard's sha256 is computed while it is written; gqn-datasets' shard names; writing a shard
atomically with its .tfindex (the `tfrecord` package's index) and its .tfmeta sidecar; and
reading, checking, rebuilding and describing those. A record is opaque bytes here (codec.py
makes and parses them).
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Iterator

from jumpbench.errors import JumpbenchError
from jumpbench.files import atomic_path, file_sha256, fsync, read_json, write_json_atomic, write_text_atomic


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
