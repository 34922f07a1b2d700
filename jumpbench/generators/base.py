"""The generator contract and the one sharded, resumable, parallel writer all generators use.

A generator is "sample, then render": `scene(split, index)` is a pure function of
(base seed, split, index) through `scene_seed`, so the bytes written do not depend on the
number of workers or the shard size. Per-process state (a renderer) is created lazily in
the worker that uses it and never pickled.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jumpbench import records
from jumpbench.errors import JumpbenchError

SPLIT_IDS = {"train": 0, "test": 1}  # train and test never share a seed
PARAMS_LOCK = ".generating.json"     # the parameters of an unfinished generation


def scene_seed(seed: int, split: str, index: int) -> int:
    """The seed of scene `index` of `split` (stored in each record as `scene_seed`):
    `np.random.default_rng(scene_seed(...))` alone regenerates the scene."""
    ss = np.random.SeedSequence(seed, spawn_key=(SPLIT_IDS[split], index))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))  # 63 bits: fits int64


class Generator(Protocol):
    name: str                 # the generator, e.g. "narratives"
    version: str
    dataset: str              # the dataset folder, e.g. "traveling_salesman"
    viewpoint: dict           # {"key": "timestamps", "dim": 1}

    def params(self) -> dict: ...          # every parameter that changes the bytes
    def schema(self) -> dict: ...          # {key: {"dtype", "shape"}}, see records.py
    def scene(self, split: str, index: int) -> dict[str, Any]: ...


def generate(gen: Generator, out: str | Path, counts: dict[str, int], shard_size: int,
             workers: int = 1, overwrite: bool = False, progress: bool = True) -> Path:
    """Write `counts[split]` scenes per split under out/<dataset>/, resuming an interrupted
    run, doing nothing over a finished one with the same parameters, refusing other
    parameters unless `overwrite`. Returns the dataset folder."""
    if shard_size < 1:
        raise JumpbenchError(f"--shard-size must be at least 1, got {shard_size}")
    if workers < 1:
        raise JumpbenchError(f"--workers must be at least 1, got {workers}")
    for split, n in counts.items():
        if n < 1:
            raise JumpbenchError(f"the {split} split needs at least 1 scene, got {n}")
    root = Path(out) / gen.dataset
    params = {**gen.params(), "counts": dict(counts), "shard_size": shard_size}
    if not _claim(root, params, overwrite):
        _say(progress, f"{root}: already generated with these parameters; nothing to do")
        return root

    jobs = []  # (split, shard path, first index, stop index) still to write
    for split, n in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for tmp in (root / split).glob(".*.tmp"):
            tmp.unlink()  # left by an interrupted run
        names = records.shard_names(math.ceil(n / shard_size))
        for k, name in enumerate(names):
            path = root / split / name
            if not (path.is_file() and records.index_path(path).is_file()):
                jobs.append((split, path, k * shard_size, min(n, (k + 1) * shard_size)))
    todo = sum(b - a for _, _, a, b in jobs)
    total = sum(counts.values())
    if todo < total:
        _say(progress, f"{root}: resuming, {total - todo} of {total} scenes already written")

    from tqdm import tqdm

    with tqdm(total=todo, unit="scene", disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                bar.update(_write_shard(gen, *job)["records"])
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(gen,)) as pool:
                for info in pool.imap_unordered(_write_job, jobs):
                    bar.update(info["records"])

    manifest = {
        "generator": gen.name, "version": gen.version, "dataset": gen.dataset,
        "seed": params.get("seed"), "params": params, "schema": gen.schema(),
        "viewpoint": gen.viewpoint, "splits": {},
    }
    for split, n in counts.items():
        names = records.shard_names(math.ceil(n / shard_size))
        shards = [records.describe_shard(root / split / name) for name in names]
        if sum(s["records"] for s in shards) != n:
            raise JumpbenchError(f"{root}/{split}: shard record counts do not add up to {n}; "
                                 f"re-run with --overwrite")
        manifest["splits"][split] = {"scenes": n, "shards": shards}
    records.write_json_atomic(root / records.MANIFEST, manifest)  # last: the set is complete
    (root / PARAMS_LOCK).unlink(missing_ok=True)
    return root


def _claim(root: Path, params: dict, overwrite: bool) -> bool:
    """Decide what to do with an existing folder; False when it is already finished."""
    manifest = root / records.MANIFEST
    lock = root / PARAMS_LOCK
    previous = None
    if manifest.is_file():
        previous = records.load_manifest(root).get("params")
    elif lock.is_file():
        previous = records.read_json(lock)
    if previous is not None and previous != params:
        if not overwrite:
            diff = ", ".join(f"{k}: {previous.get(k)!r} -> {params.get(k)!r}"
                             for k in sorted(set(previous) | set(params)) if previous.get(k) != params.get(k))
            raise JumpbenchError(f"{root} holds a dataset with other parameters ({diff}); "
                                 f"pass --overwrite to replace it")
        for split in records.SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
        manifest.unlink(missing_ok=True)
    elif previous is not None and manifest.is_file():
        return False
    root.mkdir(parents=True, exist_ok=True)
    records.write_json_atomic(lock, params)
    return True


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line)


_GEN: Generator | None = None


def _init_worker(gen: Generator) -> None:
    global _GEN
    _GEN = gen


def _write_job(job) -> dict:
    return _write_shard(_GEN, *job)


def _write_shard(gen: Generator, split: str, path: Path, start: int, stop: int) -> dict:
    return records.write_shard(path, (records.serialize_example(gen.scene(split, i))
                                      for i in range(start, stop)))
