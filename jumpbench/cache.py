"""The decoded-frame cache: a split's frames decoded and downsampled once, kept as .npy files
under cache_root() and proven against the dataset whenever they are opened, so that a training
step gathers its batch by indexing instead of decoding PNGs (FrameCache has the whole story).
Nothing of the harness here: the training loop hands it the sampler of its steps
(benchmarks/batches.StepBatches).
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from contextlib import ExitStack, suppress
from pathlib import Path

import click
import numpy as np
import torch

from jumpbench.dataset import Scenes, dataset_sha256, to_device
from jumpbench.files import atomic_path, file_lock, fsync, read_json, write_json_atomic
from jumpbench.records import VIEWPOINT_DIMS, Dataset
from jumpbench.workers import default_threads, quiet_workers


def cache_root() -> Path:
    """Where decoded-frame caches live: $JUMPBENCH_CACHE, else ~/.cache/jumpbench. Safe to
    delete at any time."""
    env = os.environ.get("JUMPBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jumpbench"


def dataset_cache_dir(ds: Dataset) -> Path:
    """A dataset's folder under `cache_root()`, named by the dataset and its manifest's sha256
    (a regenerated dataset gets a new folder; the dataset folder itself is never written)."""
    return cache_root() / f"{ds.name}-{dataset_sha256(ds.root)[:16]}"


class FrameCache:
    """A split's decoded, downsampled frames in one uint8 array (N, T, 3, S, S) and its
    viewpoints (N, T, D), so that a training step gathers its batch by indexing instead of
    parsing records and decoding PNGs (about half of a small model's step otherwise).

    Built once with a progress bar and kept as .npy files under `cache_root()`, in a folder
    named by the dataset and its manifest's sha256 (a regenerated dataset gets a new cache;
    the dataset folder itself is never written), then read whole into memory on later runs
    (a memory map is re-read from disk whenever the page cache is squeezed). Runs started
    together on one dataset (a sweep's jobs) build it once: the first holds a lock while it
    builds, the others wait and load it. Where the cache folder cannot be written the cache
    lives in memory for the run only. `nbytes` gives a split's size (from the dataset, never
    from the cache), to check it against a budget first.

    A cache proves itself, so that a run's result never depends on what the cache folder
    holds: beside its arrays it keeps <stem>.index.npy (each scene's frames' sha256) and, written
    last, <stem>.proof.json (the dataset it was built from: its manifest's sha256 and
    params_sha256; its arrays' shapes and dtypes; the viewpoints' and the index's sha256).
    Opening checks all of it, the shapes against the manifest, that every viewpoint is finite,
    and the frames of SPOT_CHECK random scenes against the index (about 20 ms for the cpu
    preset's 20,000 videos, scripts/cache_check_cost.py); every other scene is checked the
    first time a batch uses it (a sha256 of 37 KB per scene, once). A cache that fails when
    opened (edited, cut, NaN, unreadable, from another dataset or an older jumpbench) is
    rebuilt with one line saying why; a scene that fails later is decoded again from the
    shards for this run, with one line, and the cache is rebuilt by the next."""

    def __init__(self, scenes: Scenes, progress: bool = True, warn: bool = True):
        self.scenes, self.warn, self.warned = scenes, warn, False
        loaded, why = self._open(scenes)
        if loaded is None:
            proof = self.proof_paths(scenes)[1]
            with ExitStack() as stack:
                try:  # one builder per cache: a second run (a sweep's other job) waits, then loads it
                    proof.parent.mkdir(parents=True, exist_ok=True)
                    lock = proof.with_name(proof.name.split(".")[0] + ".lock")
                    try:
                        stack.enter_context(file_lock(lock, wait=False))
                    except BlockingIOError:
                        if progress:
                            click.echo(f"waiting for another process to build the frame cache {proof.parent}", err=True)
                        stack.enter_context(file_lock(lock))
                    loaded, why = self._open(scenes)  # built while we looked or waited?
                    writable = True
                except OSError:  # a read-only or full cache folder: build it in memory for this run
                    writable = False
                if loaded is None:
                    if why and warn:  # (as found under the lock: not a build another process was finishing)
                        click.echo(f"frame cache {self._name(scenes)}: {why}; rebuilding it", err=True)
                    frames, vps = self._build(scenes, progress)
                    index = scene_hashes(frames)
                    if writable:
                        self._save((frames, vps), scenes, index)
                    loaded = frames, vps, index, np.ones(len(frames), bool)  # decoded here: proven
        self.frames, self.viewpoints, self.index, self.checked = loaded

    @staticmethod
    def _name(scenes: Scenes) -> str:
        return str(dataset_cache_dir(scenes.ds) / f"{scenes.split}-{scenes.size}px")

    @staticmethod
    def _open(scenes: Scenes) -> tuple[tuple | None, str | None]:
        """((frames, viewpoints, index, checked), None) from a built cache that proves itself
        (`checked`: the scenes whose frames were checked against the index), read whole into
        memory (a memory map is re-read under memory pressure); (None, why) when it does not,
        why None when there is no cache at all."""
        proof_path = FrameCache.proof_paths(scenes)[1]
        if not proof_path.is_file():
            there = any(p.exists() for p in (*FrameCache.paths(scenes), FrameCache.proof_paths(scenes)[0]))
            return None, ("it has no proof of what it holds (an older jumpbench, or a build cut short)"
                          if there else None)
        try:
            return FrameCache._check(scenes, read_json(proof_path)), None
        except _Unproven as e:
            return None, str(e)

    @staticmethod
    def _check(scenes: Scenes, proof) -> tuple:
        """The cache's arrays after checking them against `proof` and the dataset (see the class);
        _Unproven(why) at the first thing that does not hold."""
        (fpath, vpath), (ipath, _) = FrameCache.paths(scenes), FrameCache.proof_paths(scenes)
        want = FrameCache._proof(scenes)
        if not isinstance(proof, dict) or proof.get("format") != CACHE_FORMAT:
            raise _Unproven("its proof is unreadable or of another format")
        for key in ("dataset_sha256", "params_sha256", "frames", "viewpoints"):
            if proof.get(key) != want[key]:
                raise _Unproven(f"its proof records {key} {_shape_or_hash(proof.get(key))}, the dataset "
                                f"needs {_shape_or_hash(want[key])}")
        arrays = []
        for path, key in ((fpath, "frames"), (vpath, "viewpoints"), (ipath, "index")):
            shape, dtype = (want[key]["shape"], want[key]["dtype"]) if key != "index" else ([len(scenes), 32], "uint8")
            try:  # the header first: a file cut short or of another shape is not read whole
                head = np.load(path, mmap_mode="r")
                if list(head.shape) != shape or str(head.dtype) != dtype:
                    raise _Unproven(f"{path.name} holds {str(head.dtype)} {list(head.shape)}, the dataset "
                                    f"needs {dtype} {shape}")
                del head
                arrays.append(np.ascontiguousarray(np.load(path)))
            except (OSError, ValueError, EOFError):
                raise _Unproven(f"{path.name} is unreadable") from None
        frames, vps, index = arrays
        if not np.isfinite(vps).all():
            raise _Unproven(f"{vpath.name} holds values that are not finite")
        for arr, path, key in ((vps, vpath, "viewpoints_sha256"), (index, ipath, "index_sha256")):
            if hashlib.sha256(arr).hexdigest() != proof.get(key):
                raise _Unproven(f"{path.name} is not the file it was built with (its sha256 differs)")
        checked = np.zeros(len(frames), bool)
        spot = np.random.default_rng().choice(len(frames), min(SPOT_CHECK, len(frames)), replace=False)
        for i in np.sort(spot):
            if _sha(frames[i]) != index[i].tobytes():
                raise _Unproven(f"scene {i}'s frames are not those it was built with")
        checked[spot] = True
        return frames, vps, index, checked

    @staticmethod
    def _proof(scenes: Scenes) -> dict:
        """What a proof records of the dataset and of the arrays a split's cache must hold."""
        n, t, s = len(scenes), scenes.frames, scenes.size
        return {"format": CACHE_FORMAT, "dataset_sha256": dataset_sha256(scenes.ds.root),
                "params_sha256": scenes.ds.manifest.get("params_sha256"),
                "frames": {"shape": [n, t, 3, s, s], "dtype": "uint8"},
                "viewpoints": {"shape": [n, t, VIEWPOINT_DIMS.get(scenes.key, 0)], "dtype": "float32"}}

    @staticmethod
    def _save(arrays, scenes: Scenes, index: np.ndarray | None = None) -> None:
        """Write the cache's .npy files and its index atomically, then its proof (last: a cache
        without one is rebuilt); a failure (a full disk) leaves no file behind and only costs the
        next run a rebuild. `index`: scene_hashes of the frames, computed when not given."""
        frames, vps = arrays
        index = scene_hashes(frames) if index is None else index
        (fpath, vpath), (ipath, ppath) = FrameCache.paths(scenes), FrameCache.proof_paths(scenes)
        proof = {**FrameCache._proof(scenes),
                 "viewpoints_sha256": hashlib.sha256(np.ascontiguousarray(vps)).hexdigest(),
                 "index": "sha256 of each scene's frames (C order)", "index_sha256": hashlib.sha256(index).hexdigest()}
        try:
            ppath.unlink(missing_ok=True)  # the old proof must not vouch for new files
            for arr, path in ((frames, fpath), (vps, vpath), (index, ipath)):
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, arr)
                    fsync(f)
            write_json_atomic(ppath, proof)
        except OSError:
            pass

    @staticmethod
    def paths(scenes: Scenes) -> tuple[Path, Path]:
        """The split's frames and viewpoints files in the cache folder."""
        stem, folder = f"{scenes.split}-{scenes.size}px", dataset_cache_dir(scenes.ds)
        return folder / f"{stem}.frames.npy", folder / f"{stem}.viewpoints.npy"

    @staticmethod
    def proof_paths(scenes: Scenes) -> tuple[Path, Path]:
        """The split's index (each scene's sha256) and proof files in the cache folder."""
        stem, folder = f"{scenes.split}-{scenes.size}px", dataset_cache_dir(scenes.ds)
        return folder / f"{stem}.index.npy", folder / f"{stem}.proof.json"

    @staticmethod
    def nbytes(scenes: Scenes) -> int:
        """The cache's size for a split, from the dataset's shapes: whether a run caches or
        streams never depends on what the cache folder holds."""
        return len(scenes) * scenes.frames * 3 * scenes.size * scenes.size

    @staticmethod
    def _build(scenes: Scenes, progress: bool, workers: int | None = None):
        """Decode the split into (frames, viewpoints) arrays, `workers` processes at a time (None:
        the threads this job may use, workers.default_threads)."""
        from tqdm import tqdm

        workers = max(1, min(workers or default_threads(), len(scenes) // CACHE_CHUNK))
        first = scenes.arrays(0)
        frames = np.empty((len(scenes), *first[0].shape), np.uint8)
        vps = np.empty((len(scenes), *first[1].shape), np.float32)
        chunks = [range(a, min(a + CACHE_CHUNK, len(scenes))) for a in range(0, len(scenes), CACHE_CHUNK)]
        with tqdm(total=len(scenes), desc=f"caching {scenes.split} frames", disable=not progress,
                  dynamic_ncols=True, mininterval=2) as bar, ExitStack() as stack:
            if workers == 1:
                decoded = (_decode_chunk(c, scenes) for c in chunks)
            else:  # forked workers decode with numpy and PIL only, never torch; each gets the split
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")  # once
                stack.enter_context(quiet_workers())  # a killed parent leaves no worker to complain
                pool = stack.enter_context(ctx.Pool(workers, initializer=_cache_worker, initargs=(scenes,)))
                decoded = pool.imap(_decode_chunk, chunks)
            for chunk, (f, v) in zip(chunks, decoded):
                frames[chunk.start:chunk.stop], vps[chunk.start:chunk.stop] = f, v
                bar.update(len(chunk))
        return frames, vps

    def batches(self, sampler: torch.utils.data.Sampler, device: torch.device | str | None = None):
        """What benchmarks/batches.loader yields for `sampler` (its StepBatches), from memory:
        {"frames", "viewpoints", "index"} per step. `device` a CUDA GPU with room for the frames
        (at most GPU_SHARE of its free memory): they move there once, every scene checked against
        the index first, and each step's scenes are gathered there (on_device)."""
        if device is not None and torch.device(device).type == "cuda" and \
                self.frames.nbytes <= GPU_SHARE * torch.cuda.mem_get_info(torch.device(device))[0]:
            yield from self.on_device(sampler, torch.device(device))
            return
        for idx in sampler:
            idx = np.asarray(idx)
            self._verify(idx)
            yield {"frames": torch.from_numpy(self.frames[idx]), "viewpoints": torch.from_numpy(self.viewpoints[idx]),
                   "index": torch.from_numpy(idx)}

    def on_device(self, sampler: torch.utils.data.Sampler, device: torch.device):
        """batches() with the frames and viewpoints held on `device`: a step moves only its
        scene indices there, not its frames."""
        self._verify(np.arange(len(self.frames)))
        frames, vps = torch.from_numpy(self.frames).to(device), torch.from_numpy(self.viewpoints).to(device)
        for idx in sampler:
            index = torch.as_tensor(np.asarray(idx))
            at = to_device(index, device)
            yield {"frames": frames[at], "viewpoints": vps[at], "index": index}

    def _verify(self, idx: np.ndarray) -> None:
        """Check the scenes of a batch that were not checked yet against the index; a scene that
        fails is decoded again from the shards (this run trains on the shards' frames), and the
        cache's proof removed, so that the next run rebuilds it. One line says so, once."""
        todo = np.unique(idx[~self.checked[idx]])
        for i in todo:
            if _sha(self.frames[i]) != self.index[i].tobytes():
                self.frames[i] = self.scenes.arrays(int(i))[0]
                with suppress(OSError):  # (a cache folder that cannot be written: rebuilt in memory next time)
                    self.proof_paths(self.scenes)[1].unlink(missing_ok=True)
                if self.warn and not self.warned:
                    click.echo(f"frame cache {self._name(self.scenes)}: scene {i}'s frames are not those it was "
                               "built with; this run decodes such scenes from the shards, the next rebuilds it",
                               err=True)
                self.warned = True
        self.checked[todo] = True


CACHE_FORMAT = 1  # of a frame cache's proof.json
SPOT_CHECK = 256  # scenes whose frames are checked against the index when a cache is opened
CACHE_CHUNK = 64  # scenes a cache-building worker decodes per task
GPU_SHARE = 0.25  # a GPU holds the frames of a training run when they take at most this share of its free memory


class _Unproven(Exception):
    """A frame cache that does not prove itself, and why (FrameCache._check)."""


def _sha(a: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(a)).digest()


def scene_hashes(frames: np.ndarray) -> np.ndarray:
    """Each scene's frames' sha256, (N, 32) uint8: a frame cache's index."""
    index = np.empty((len(frames), 32), np.uint8)
    for i in range(len(frames)):
        index[i] = np.frombuffer(_sha(frames[i]), np.uint8)
    return index


def _shape_or_hash(v) -> str:
    if isinstance(v, dict):
        return f"{v.get('dtype')} {v.get('shape')}"
    return repr(v)[:20]


_WORKER_SCENES: Scenes | None = None  # the split a cache-building worker process decodes


def _cache_worker(scenes: Scenes) -> None:
    global _WORKER_SCENES
    _WORKER_SCENES = scenes


def _decode_chunk(chunk: range, scenes: Scenes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The frames and viewpoints of a range of a split's scenes (this worker's split unless
    given), stacked (FrameCache._build)."""
    scenes = scenes if scenes is not None else _WORKER_SCENES
    items = [scenes.arrays(i) for i in chunk]
    return np.stack([f for f, _ in items]), np.stack([v for _, v in items])
