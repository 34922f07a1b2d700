"""Records: one scene = one tf.train.Example, in gqn-datasets' sharded TFRecord layout.

    <root>/<dataset>/<split>/<i>-of-<N>.tfrecord   (+ .tfindex, the `tfrecord` package's index)
    <root>/<dataset>/manifest.json                 (written last, atomically)

`frames` is a bytes list of PNG-encoded RGB frames; every other key is a flat int64 or
float list whose shape the manifest's schema gives (a shape may name the frame count "T").
The schema is documented in docs/records.md, with what is checked: a manifest against itself
when it is loaded (`manifest_problem`, `check_manifest`), and every record against the
manifest as `verify` or a reader reads it (`check_record`, `decode_frames`).

Four modules, one job each; each imports only those above it in this list, so none imports
one that imports it back:

    codec.py      a record's bytes: PNG frames and the tf.train.Example message
    framing.py    a shard's files: TFRecord framing, shard names, the .tfindex, the .tfmeta sidecar
    manifest.py   manifest.json: its form, meaning and proof, and its agreement with the folder
    reader.py     records read and checked against their manifest: Dataset, verify

    reader ---> manifest ---> framing
      |                         ^
      +-------------------------+
      |
      +-------> codec

Only manifest.py and reader.py import the generator modules, inside the functions that check
a manifest or a record against what its generator writes (docs/architecture.md).

Callers import the names below from `jumpbench.records`. A test or script that replaces one of
them must patch the module that defines it (`jumpbench.records.framing.frame_record`): the name
here is a copy that the other modules do not read.
"""
from __future__ import annotations

from jumpbench.records.codec import (PNG_SIGNATURE, decode_png, encode_png, encode_png_palette, parse_example,
                                     png_head, serialize_example)
from jumpbench.records.framing import (check_index, describe_shard, frame_record, index_path, meta_path,
                                       read_index, read_meta, read_record, repair_index, scan_index, shard_names,
                                       write_shard)
from jumpbench.records.manifest import (DTYPES, MANIFEST, SPLITS, VIEWPOINT_DIMS, VIEWPOINT_SHAPES, check_manifest,
                                        check_sidecars, dataset_proof, frames_per_scene, generator_layout,
                                        load_manifest, manifest_problem, meaning_problem, params_diff,
                                        params_sha256)
from jumpbench.records.reader import Dataset, Scene, check_record, decode_frames, frame_format, verify

__all__ = [
    # codec
    "PNG_SIGNATURE", "decode_png", "encode_png", "encode_png_palette", "parse_example", "png_head",
    "serialize_example",
    # framing
    "check_index", "describe_shard", "frame_record", "index_path", "meta_path", "read_index", "read_meta",
    "read_record", "repair_index", "scan_index", "shard_names", "write_shard",
    # manifest
    "DTYPES", "MANIFEST", "SPLITS", "VIEWPOINT_DIMS", "VIEWPOINT_SHAPES", "check_manifest", "check_sidecars",
    "dataset_proof", "frames_per_scene", "generator_layout", "load_manifest", "manifest_problem",
    "meaning_problem", "params_diff", "params_sha256",
    # reader
    "Dataset", "Scene", "check_record", "decode_frames", "frame_format", "verify",
]
