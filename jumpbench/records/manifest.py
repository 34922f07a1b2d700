"""A dataset's manifest.json: loading it, what makes it a manifest (`manifest_problem`) and what
it means (`meaning_problem`, against what a known generator writes: `generator_layout`), the
proof of its generator and parameters (`dataset_proof`), and its agreement with the folder it
describes (`check_manifest`, `check_sidecars`). The schema and these checks: docs/records.md.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from jumpbench.errors import JumpbenchError
from jumpbench.files import read_json
from jumpbench.records.framing import meta_path, shard_names

SPLITS = ("train", "test")
MANIFEST = "manifest.json"


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
