"""The generator contract and the one sharded, resumable, parallel writer all generators use.

A generator is "sample, then render": `scene(split, index)` is a pure function of
(base seed, split, index) through `scene_seed`, so the bytes written do not depend on the
number of workers or the shard size. Per-process state (a renderer) is created lazily in
the worker that uses it and never pickled.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jumpbench import files, launch, records
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
    def schema(self) -> dict: ...          # {key: {"dtype", "shape"}}, see docs/records.md
    def scene(self, split: str, index: int) -> dict[str, Any]: ...


MAX_SCENES = 10_000_000  # per split: far beyond the paper's 2M frames, far below what exhausts memory


def generate(gen: Generator, out: str | Path, counts: dict[str, int], shard_size: int,
             workers: int = 1, overwrite: bool = False, progress: bool = True) -> Path:
    """Write `counts[split]` scenes per split under out/<dataset>/, resuming an interrupted
    run, checking a finished one with the same parameters and repairing what can be made again
    (`_repair_finished`), refusing other parameters unless `overwrite`. One writer at a time per dataset
    folder (a lock file; see `dataset_lock`). Returns the dataset folder."""
    _check_request(counts, shard_size, workers)
    root, params, proof = _identity(gen, out, counts, shard_size)
    root.mkdir(parents=True, exist_ok=True)
    with dataset_lock(root):
        return _generate(gen, root, params, proof, counts, shard_size, workers, overwrite, progress)


def _check_request(counts: dict[str, int], shard_size: int, workers: int) -> None:
    if shard_size < 1:
        raise JumpbenchError(f"--shard-size must be at least 1, got {shard_size}")
    if not 1 <= workers <= MAX_WORKERS:
        raise JumpbenchError(f"--workers must be in 1..{MAX_WORKERS}, got {workers}")
    for split, n in counts.items():
        if n < 1:
            raise JumpbenchError(f"the {split} split needs at least 1 scene, got {n}")
        if n > MAX_SCENES:
            raise JumpbenchError(f"the {split} split asks for {n} scenes; at most {MAX_SCENES} are supported")


def _identity(gen: Generator, out, counts: dict[str, int], shard_size: int) -> tuple[Path, dict, str]:
    """The dataset folder, the parameters the manifest records and their hash (the proof)."""
    params = {**gen.params(), "counts": dict(counts), "shard_size": shard_size}
    proof = records.dataset_proof(gen.name, gen.version, gen.dataset, params)
    return Path(out) / gen.dataset, params, proof


def _generate(gen, root: Path, params: dict, proof: str, counts: dict[str, int], shard_size: int,
              workers: int, overwrite: bool, progress: bool) -> Path:
    shards = _prepare(root, params, proof, counts, shard_size, overwrite, progress)
    if shards is None:
        _repair_finished(gen, root, proof, shard_size, workers, overwrite, progress)
        return root
    jobs = [job for job in shards if not _proven(job[1], proof)]  # still to write
    todo = sum(b - a for _, _, a, b, _ in jobs)
    total = sum(counts.values())
    if todo < total:
        _say(progress, f"{root}: resuming, {total - todo} of {total} scenes already written")

    _write_jobs(gen, jobs, workers, progress)
    return _write_manifest(gen, root, params, proof, counts, shard_size)


def _prepare(root: Path, params: dict, proof: str, counts: dict[str, int], shard_size: int, overwrite: bool,
             progress: bool) -> list[tuple] | None:
    """Claim the folder (under its lock) for these parameters; every shard's job (split, shard
    path, first index, stop index, proof), or None when the set is finished already."""
    if not _claim(root, params, overwrite):
        return None
    expected = {split: records.shard_names(math.ceil(n / shard_size)) for split, n in counts.items()}
    _check_shards(root, expected, proof, overwrite)
    files.write_json_atomic(root / PARAMS_LOCK, params)  # what an interrupted run was making
    shards = []
    for split, n in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for tmp in (root / split).glob(".*.tmp"):
            tmp.unlink()  # left by an interrupted run (we hold the lock: no other writer)
        for k, name in enumerate(expected[split]):
            shards.append((split, root / split / name, k * shard_size, min(n, (k + 1) * shard_size), proof))
    return shards


def _write_jobs(gen: Generator, jobs: list[tuple], workers: int, progress: bool) -> int:
    """Write the shards of `jobs`, `workers` processes at a time; returns the scenes written."""
    from tqdm import tqdm

    written = 0
    with tqdm(total=sum(b - a for _, _, a, b, _ in jobs), unit="scene", disable=not progress,
              dynamic_ncols=True) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                n = _write_shard(gen, *job)["records"]
                written += n
                bar.update(n)
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(gen,)) as pool:
                for info in pool.imap_unordered(_write_job, jobs):
                    written += info["records"]
                    bar.update(info["records"])
    return written


def _write_manifest(gen: Generator, root: Path, params: dict, proof: str, counts: dict[str, int],
                    shard_size: int) -> Path:
    """The manifest of a set whose shards are all written (last: the set is then complete)."""
    expected = {split: records.shard_names(math.ceil(n / shard_size)) for split, n in counts.items()}
    manifest = {
        "generator": gen.name, "version": gen.version, "dataset": gen.dataset,
        "seed": params.get("seed"), "params": params, "params_sha256": proof, "schema": gen.schema(),
        "viewpoint": gen.viewpoint, "splits": {},
    }
    for split, n in counts.items():
        shards = []
        for name in expected[split]:
            path = root / split / name
            shard, meta = records.describe_shard(path), records.read_meta(path)
            if meta is None or meta["params_sha256"] != proof or any(shard[k] != meta[k] for k in shard if k != "file"):
                raise JumpbenchError(f"{path}: changed while it was being generated (it no longer matches its "
                                     f".tfmeta); re-run with --overwrite")
            shards.append(shard)
        if sum(s["records"] for s in shards) != n:
            raise JumpbenchError(f"{root}/{split}: shard record counts do not add up to {n}; "
                                 f"re-run with --overwrite")
        manifest["splits"][split] = {"scenes": n, "shards": shards}
    files.write_json_atomic(root / records.MANIFEST, manifest)  # last: the set is complete
    (root / PARAMS_LOCK).unlink(missing_ok=True)
    return root


def generate_parts(gen: Generator, out: str | Path, counts: dict[str, int], shard_size: int, parts: int,
                   cluster: str | None = "slurm", part: int | None = None, workers: int = 1,
                   overwrite: bool = False, progress: bool = True) -> Path:
    """`generate`, with the shards (a scene range of each split, in order) split into `parts`
    contiguous parts, each written by its own submitit job (`cluster`: "slurm", or "local" and
    "debug" as in tests; None: one after another in this process) into the same dataset
    folder; then this process writes the manifest. The bytes are those of `generate`: a part
    writes the very shards `generate` would. This process holds the folder's lock throughout
    (the jobs are its workers). Shards already written are kept, so re-running the command
    re-runs only the parts that failed; `part` (1-based) runs that one part alone."""
    _check_request(counts, shard_size, workers)
    n_shards = sum(math.ceil(n / shard_size) for n in counts.values())
    if not 1 <= parts <= n_shards:
        raise JumpbenchError(f"--parts must be in 1..{n_shards} (the number of shards), got {parts}")
    if part is not None and not 1 <= part <= parts:
        raise JumpbenchError(f"--part must be in 1..{parts}, got {part}")
    root, params, proof = _identity(gen, out, counts, shard_size)
    root.mkdir(parents=True, exist_ok=True)
    with dataset_lock(root):
        shards = _prepare(root, params, proof, counts, shard_size, overwrite, progress)
        if shards is None:
            _repair_finished(gen, root, proof, shard_size, workers, overwrite, progress)
            return root
        plan = [list(p) for p in np.array_split(np.arange(len(shards)), parts)]  # shard numbers per part
        todo = {k + 1: [shards[i] for i in p if not _proven(shards[i][1], proof)] for k, p in enumerate(plan)}
        todo = {k: jobs for k, jobs in todo.items() if jobs and (part is None or k == part)}
        failed = _run_parts(gen, todo, parts, cluster, workers, progress, root.parent / ".submitit")
        if failed:
            raise JumpbenchError(f"{len(failed)} of {parts} part(s) failed ({'; '.join(failed)}); the shards "
                                 f"written are kept: re-run the same command, or one part with --part K")
        missing = [k + 1 for k, p in enumerate(plan) if not all(_proven(shards[i][1], proof) for i in p)]
        if missing:
            _say(progress, f"{root}: part {part} of {parts} written; part(s) {', '.join(map(str, missing))} "
                           f"still to write (re-run without --part to write them and the manifest)")
            return root
        return _write_manifest(gen, root, params, proof, counts, shard_size)


def _run_parts(gen: Generator, todo: dict[int, list[tuple]], parts: int, cluster: str | None, workers: int,
               progress: bool, folder: Path) -> list[str]:
    """Write each part's shards, as submitit jobs or here; "part K: why" for each that failed."""
    if cluster is None:
        for k, jobs in todo.items():
            _say(progress, f"part {k} of {parts}: {len(jobs)} shard(s)")
            _write_jobs(gen, jobs, workers, progress)
        return []
    calls = [(gen, jobs, workers, False) for jobs in todo.values()]
    submitted = launch.submit_array(_write_jobs, calls, folder, cluster, f"jumpbench-{gen.dataset}",
                                    {"timeout_min": 24 * 60, "cpus_per_task": workers})
    for k, job in zip(todo, submitted):
        _say(progress, f"part {k} of {parts}: {len(todo[k])} shard(s), job {job.job_id}")
    return [f"part {k}: {launch.job_error(e)}" for k, e in zip(todo, launch.job_outcomes(submitted)) if e is not None]


MAX_WORKERS = 1024
LOCK = ".lock"  # held (fcntl.flock) by the one process writing the dataset folder


@contextmanager
def dataset_lock(root: Path):
    """An exclusive lock on a dataset folder for one writer; a second gets a one-line refusal.
    flock locks die with their process, so a crashed writer never leaves a stale lock."""
    def busy() -> str:
        holder = (root / LOCK).read_text().strip() or "?"
        return (f"{root} is being written by another jumpbench process (pid {holder}); "
                f"wait for it to finish, or stop it, and re-run")

    with files.file_lock(root / LOCK, wait=False, busy=busy) as f:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")  # the pid left in the file is only a hint
        f.flush()
        yield


def _proven(path: Path, proof: str) -> bool:
    """Whether a shard is finished and was made with these parameters (its .tfmeta says so,
    and its size and sha256 agree). A missing or damaged index is rebuilt from the shard."""
    meta = records.read_meta(path)
    if meta is None or meta["params_sha256"] != proof or not path.is_file():
        return False
    if path.stat().st_size != meta["bytes"] or files.file_sha256(path) != meta["sha256"]:
        return False
    if not _index_ok(path, meta["index_sha256"]):
        try:
            records.repair_index(path, meta["index_sha256"])
        except JumpbenchError:
            return False  # the shard's bytes are not the recorded ones: write it again
    return True


def _index_ok(path: Path, index_sha256: str | None) -> bool:
    """Whether a shard's .tfindex is there and is the recorded one (without a record, the
    one its records make)."""
    index = records.index_path(path)
    if not index.is_file():
        return False
    if index_sha256 is None:  # a manifest of the layout before 1.1
        return index.read_text() == records.scan_index(path)
    return files.file_sha256(index) == index_sha256


def _check_shards(root: Path, expected: dict[str, list[str]], proof: str, overwrite: bool) -> None:
    """Shards already in the folder must be this generation's: refuse (or, with `overwrite`,
    delete) shards whose sidecar proves other parameters and shards of another layout."""
    foreign = []
    for split in records.SPLITS:
        for path in sorted((root / split).glob("*.tfrecord")) if (root / split).is_dir() else []:
            meta = records.read_meta(path)
            if path.name not in expected.get(split, []) or (meta is not None and meta["params_sha256"] != proof):
                foreign.append(path)
    if not foreign:
        return
    if not overwrite:
        raise JumpbenchError(f"{root} holds {len(foreign)} shard(s) made with other parameters (e.g. "
                             f"{foreign[0].relative_to(root)}) and no manifest; pass --overwrite to replace them")
    for path in foreign:
        for p in (path, records.index_path(path), records.meta_path(path)):
            p.unlink(missing_ok=True)


def _repair_finished(gen: Generator, root: Path, proof: str, shard_size: int, workers: int, overwrite: bool,
                     progress: bool) -> None:
    """A finished set asked for again: check it as `jumpbench verify` does and repair what can be
    made again. The manifest must pass its checks (`_claim`). Each shard that is missing, not of
    its recorded size or not of its recorded sha256 is written again (generation is a pure
    function of the seed, so the bytes must come out as the manifest records them: checked),
    then each index file that is missing or not the recorded one. A shard whose sha256 is the
    recorded one holds the records the manifest's proven parameters make; the first record of
    each is checked against the schema all the same (a manifest of the layout before 1.1 has no
    proof). A rewritten shard that does not match its record (a set made by an earlier writer)
    is refused; with `overwrite` the whole set is written again."""
    manifest = records.load_manifest(root)
    damaged = [(split, k, shard) for split, info in manifest["splits"].items()
               for k, shard in enumerate(info["shards"]) if _damaged(root / split / shard["file"], shard)]
    for split, k, shard in damaged:
        path = root / split / shard["file"]
        n = manifest["splits"][split]["scenes"]
        for p in (path, records.index_path(path)):
            p.unlink(missing_ok=True)
        _write_shard(gen, split, path, k * shard_size, min(n, (k + 1) * shard_size), proof)
        made = records.describe_shard(path)
        if any(made[key] != value for key, value in shard.items() if key in made):  # (older records lack some)
            for p in (path, records.index_path(path), records.meta_path(path)):
                p.unlink(missing_ok=True)  # left missing, as it was found
            if not overwrite:
                raise JumpbenchError(f"{path} was missing or damaged and, written again, differs from the manifest's "
                                     f"record (the set was made by another version of the writer); re-run with "
                                     f"--overwrite to write the whole set again")
            return _write_all_again(gen, root, manifest["params"], proof, shard_size, workers, progress)
    repaired = _repair_indexes(root, manifest)
    try:
        _check_first_records(root, manifest)
    except JumpbenchError as e:
        if not overwrite:
            raise JumpbenchError(f"{e}; the shard is the one the manifest records: re-run with --overwrite to "
                                 f"write the whole set again") from None
        return _write_all_again(gen, root, manifest["params"], proof, shard_size, workers, progress)
    done = [f"wrote {len(damaged)} missing or damaged shard(s) again, as the manifest records them"] if damaged else []
    done += [f"repaired {repaired} missing or damaged index file(s)"] if repaired else []
    _say(progress, f"{root}: already generated with these parameters; " + ("; ".join(done) or "nothing to do"))


def _write_all_again(gen: Generator, root: Path, params: dict, proof: str, shard_size: int, workers: int,
                     progress: bool) -> None:
    """--overwrite over a finished set that cannot be repaired shard by shard: all of it anew."""
    for split in records.SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
    (root / records.MANIFEST).unlink()
    _say(progress, f"{root}: writing the whole set again")
    _generate(gen, root, params, proof, params["counts"], shard_size, workers, False, progress)


def _damaged(path: Path, shard: dict) -> bool:
    """Whether a finished set's shard is gone, not of its recorded size (a record older than the
    layout's 1.1 has no size) or not of its recorded sha256."""
    return (not path.is_file() or ("bytes" in shard and path.stat().st_size != shard["bytes"])
            or files.file_sha256(path) != shard["sha256"])


def _repair_indexes(root: Path, manifest: dict) -> int:
    """Rewrite the missing or damaged .tfindex files of a finished dataset (whose shards are the
    recorded ones); returns how many."""
    repaired = 0
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            path = root / split / shard["file"]
            if not _index_ok(path, shard.get("index_sha256")):
                records.repair_index(path, shard.get("index_sha256"))
                repaired += 1
    return repaired


def _check_first_records(root: Path, manifest: dict) -> None:
    """The first record of each shard of a finished set, checked against the manifest as
    `jumpbench verify` checks every record (`check_record`, its frames decoded)."""
    size, fmt = manifest["params"]["size"], records.frame_format(manifest)
    for split, info in manifest["splits"].items():
        start = 0
        for shard in info["shards"]:
            path = root / split / shard["file"]
            with open(path, "rb") as f:
                data = records.read_record(f, path)
            where = f"{path}: record 0 (scene {start} of {split})"
            try:
                raw = records.parse_example(data)
            except Exception as e:  # protobuf's DecodeError and kin
                raise JumpbenchError(f"{where} does not parse ({e})") from None
            records.decode_frames(records.check_record(raw, manifest, split, start, where)["frames"], where, size, fmt)
            start += shard["records"]


def _claim(root: Path, params: dict, overwrite: bool) -> bool:
    """Decide what to do with an existing folder; False when it is already finished."""
    manifest = root / records.MANIFEST
    lock = root / PARAMS_LOCK
    previous = None
    if manifest.is_file():
        try:  # what verify checks of the manifest; a manifest that fails is written again only with --overwrite
            found = records.load_manifest(root)
            records.check_manifest(root, found)
            previous = found["params"]
        except JumpbenchError as e:
            if not overwrite:
                raise JumpbenchError(f"{e}; pass --overwrite to write the set again") from None
            previous = {}  # other parameters than any asked for: replaced below
    elif lock.is_file():
        previous = files.read_json(lock)
    if previous is not None and previous != params:
        if not overwrite:
            diff = records.params_diff(previous, params)
            raise JumpbenchError(f"{root} holds a dataset with other parameters ({diff}); "
                                 f"pass --overwrite to replace it")
        for split in records.SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
        manifest.unlink(missing_ok=True)
    elif previous is not None and manifest.is_file():
        return False
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


def _write_shard(gen: Generator, split: str, path: Path, start: int, stop: int, proof: str) -> dict:
    records.meta_path(path).unlink(missing_ok=True)  # a shard being rewritten proves nothing
    return records.write_shard(path, (records.serialize_example(gen.scene(split, i))
                                      for i in range(start, stop)), proof)
