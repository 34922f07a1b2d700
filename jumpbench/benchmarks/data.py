"""Shards to batches: decoded, downsampled scenes; context/target splits for training and
the fixed evaluation splits (docs/architecture.md, "The model interface", has the viewpoints).

Viewpoints: dice `(x, y, z, sin yaw, cos yaw, sin pitch, cos pitch)` (gqn-datasets order),
narratives the frame time t (a (T, 1) float). Training batches for jumpy models draw a
random number of context frames and several random targets per scene (paper, section 4.1);
non-jumpy video models get the first m frames as context and the rest as targets.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from contextlib import ExitStack
from pathlib import Path

import click
import numpy as np
import torch

from jumpbench.errors import JumpbenchError
from jumpbench.files import atomic_path, file_lock, file_sha256, fsync
from jumpbench.records import MANIFEST, Dataset, check_manifest, frames_per_scene, load_manifest


VIEWPOINT_DIMS = {"cameras": 7, "timestamps": 1}  # what `viewpoints` makes of each stored key


def viewpoints(meta: dict, key: str) -> np.ndarray:
    """A scene's viewpoints (T, D) float32 from its stored key (the one conversion)."""
    if key == "cameras":
        x, y, z, yaw, pitch = np.asarray(meta["cameras"], np.float32).T
        return np.stack([x, y, z, np.sin(yaw), np.cos(yaw), np.sin(pitch), np.cos(pitch)], 1)
    if key == "timestamps":
        return np.asarray(meta["timestamps"], np.float32)[:, None]
    raise JumpbenchError(f"unknown viewpoint key {key!r}")


MISSING_DATA = {  # the command that makes each dataset, for the one-line hint
    "traveling_salesman": "jumpbench generate narratives",
    "color_reaction": "jumpbench generate narratives --narrative color_reaction",
    "mnist_dice": "jumpbench generate dice",
}


def dataset_info(data: str | Path) -> dict:
    """What a run needs of a dataset's manifest: its name, viewpoint key and dimension, frames
    per scene and frame size; a one-line error with the command that makes it when missing."""
    data = Path(data)
    if not (data / MANIFEST).is_file() and not any(data.glob(f"*/{MANIFEST}")):  # else load_manifest says which
        hint = MISSING_DATA.get(data.name, "jumpbench generate ...")
        raise JumpbenchError(f"no dataset at {data} (make it with: {hint} --out {data.parent})")
    m = load_manifest(data)
    check_manifest(data, m)
    frames = frames_per_scene(m["params"])
    key, dim = m["viewpoint"]["key"], int(m["viewpoint"]["dim"])
    if VIEWPOINT_DIMS.get(key) != dim:
        raise JumpbenchError(f"{data / MANIFEST}: viewpoint {key!r} of dimension {dim}; jumpbench reads it as "
                             f"{VIEWPOINT_DIMS.get(key, 'unknown')} (the manifest was edited)")
    return {"name": m["dataset"], "viewpoint_key": key, "viewpoint_dim": dim, "frames": int(frames),
            "size": int(m["params"]["size"])}


def dataset_sha256(data: str | Path) -> str:
    """The dataset's fingerprint: the sha256 of its manifest (which holds every shard's)."""
    return file_sha256(Path(data) / MANIFEST)


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


class Scenes(torch.utils.data.Dataset):
    """One split of a dataset as tensors: frames (T, 3, S, S) uint8, viewpoints (T, D)."""

    def __init__(self, root: str | Path, split: str, image_size: int):
        self.ds = Dataset(root)
        self.split, self.size = split, image_size
        self.key = self.ds.manifest["viewpoint"]["key"]
        self.n = self.ds.num(split)
        self.frames = frames_per_scene(self.ds.manifest["params"])  # per scene, as the manifest says

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self._item(self.ds.scene(self.split, int(i)), int(i))

    def _item(self, scene, i: int) -> dict:
        """A decoded scene as the item: frames downsampled, (T, 3, S, S) uint8; viewpoints (T, D)."""
        frames, vps = self._arrays(scene)
        return {"frames": torch.from_numpy(frames), "viewpoints": torch.from_numpy(vps), "index": i}

    def _arrays(self, scene) -> tuple[np.ndarray, np.ndarray]:
        """A decoded scene's frames downsampled, (T, 3, S, S) uint8, and viewpoints (T, D), in numpy."""
        if len(scene.frames) != self.frames:
            raise JumpbenchError(f"{self.ds.root}: a {self.split} scene holds {len(scene.frames)} frames, the "
                                 f"manifest says {self.frames} (run jumpbench verify)")
        return (np.ascontiguousarray(downsample(scene.frames, self.size).transpose(0, 3, 1, 2)),
                viewpoints(scene.meta, self.key))

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item i's frames and viewpoints as numpy arrays (no torch: safe in a forked worker)."""
        return self._arrays(self.ds.scene(self.split, int(i)))

    def meta(self, i: int) -> dict:
        return self.ds.features(self.split, i)


class SceneDataset(Scenes):
    """jumpbench.open_dataset: one split as a `torch.utils.data.Dataset`; item i is a dict of
    frames (T, 3, S, S) uint8 (float32 in [0, 1] with dtype="float32"), viewpoints (T, D)
    float32, index (int) and meta: the scene's ground truth (every fixed-shape metadata array
    of the manifest's schema, as tensors). `metadata(i)` gives every key as numpy arrays,
    including the variable-length ones (`ragged_keys`), which a default collate cannot batch."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None,
                 dtype: str = "uint8"):
        if dtype not in ("uint8", "float32"):
            raise JumpbenchError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
        native = Dataset(root).manifest["params"]["size"]
        size = native if image_size is None else image_size
        if not isinstance(size, int) or size < 1 or native % size:
            raise JumpbenchError(f"image_size {image_size!r} must divide the dataset's frame size {native}")
        super().__init__(root, split, size)
        self.ds._split(split)  # an unknown split fails here, in one line
        self.dtype = dtype
        schema = self.ds.schema
        self.ragged_keys = sorted(k for k, s in schema.items() if k != "frames" and -1 in s["shape"])
        self.meta_keys = sorted(k for k in schema if k != "frames" and k not in self.ragged_keys)

    def __getitem__(self, i):
        if not -self.n <= int(i) < self.n:
            raise IndexError(f"{self.split} has {self.n} scenes, no index {i}")
        i = int(i) % self.n
        scene = self.ds.scene(self.split, i)
        item = self._item(scene, i)
        if self.dtype == "float32":
            item["frames"] = to_float(item["frames"])
        item["meta"] = {k: torch.as_tensor(np.asarray(scene.meta[k])) for k in self.meta_keys}
        return item

    def metadata(self, i: int) -> dict:
        """Every metadata key of scene i (numpy arrays), the variable-length ones included."""
        return {k: v for k, v in self.ds.features(self.split, int(i)).items() if k != "frames"}


def batch_share(batch: int, world: int) -> int:
    """The scenes each of `world` data-parallel processes trains per step: train.batch_size is
    the global batch, so it must split evenly among them."""
    if batch % world:
        raise JumpbenchError(f"train.batch_size {batch} does not split evenly over {world} processes "
                             "(the batch is the global one: each process trains batch_size / processes scenes)")
    return batch // world


class StepBatches(torch.utils.data.Sampler):
    """The scene indices of every training step from `start`: a pure function of (seed, step),
    so a resumed run sees exactly the batches an uninterrupted one would. `batch` is the global
    batch: under data parallelism each of `world` processes takes every world-th scene of the
    step's draw, so a step trains on the same scenes whatever the number of processes."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        batch_share(batch, world)
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop
        self.rank, self.world = rank, world

    def __len__(self):
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            rng = np.random.default_rng([self.seed, step])
            idx = rng.choice(self.n, self.batch, replace=self.n < self.batch)
            yield idx[self.rank::self.world].tolist()


def loader(scenes: Scenes, sampler: StepBatches, workers: int):
    return torch.utils.data.DataLoader(scenes, batch_sampler=sampler, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=4 if workers else None)


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
    builds, the others wait and load it. An unreadable cache is rebuilt over. Where the cache
    folder cannot be written the cache lives in memory for the run only. `nbytes` gives a
    split's size, to check it against a budget first."""

    def __init__(self, scenes: Scenes, progress: bool = True):
        fpath, vpath = self.paths(scenes)
        loaded = self._load(fpath, vpath, len(scenes))
        if loaded is None:
            with ExitStack() as stack:
                try:  # one builder per cache: a second run (a sweep's other job) waits, then loads it
                    fpath.parent.mkdir(parents=True, exist_ok=True)
                    lock = fpath.with_name(fpath.name.split(".")[0] + ".lock")
                    try:
                        stack.enter_context(file_lock(lock, wait=False))
                    except BlockingIOError:
                        if progress:
                            click.echo(f"waiting for another process to build the frame cache {fpath.parent}", err=True)
                        stack.enter_context(file_lock(lock))
                    loaded = self._load(fpath, vpath, len(scenes))  # built while we looked or waited?
                    writable = True
                except OSError:  # a read-only or full cache folder: build it in memory for this run
                    writable = False
                if loaded is None:
                    loaded = self._build(scenes, progress)
                    if writable:
                        self._save(loaded, (fpath, vpath))
        self.frames, self.viewpoints = loaded

    @staticmethod
    def _load(fpath: Path, vpath: Path, n: int):
        """(frames, viewpoints) from a built cache, read whole into memory (a memory map is re-read
        under memory pressure); None when it is missing, unreadable or not of `n` scenes (it is
        then rebuilt over)."""
        try:
            frames, vps = np.load(fpath), np.load(vpath)
        except (OSError, ValueError, EOFError):
            return None
        return (frames, vps) if len(frames) == len(vps) == n else None

    @staticmethod
    def _save(arrays, paths) -> None:
        """Write the cache's .npy files atomically; a failure (a full disk) leaves no file behind
        and only costs the next run a rebuild."""
        try:
            for arr, path in zip(arrays, paths):
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, arr)
                    fsync(f)
        except OSError:
            pass

    @staticmethod
    def paths(scenes: Scenes) -> tuple[Path, Path]:
        """The split's frames and viewpoints files in the cache folder."""
        stem, folder = f"{scenes.split}-{scenes.size}px", dataset_cache_dir(scenes.ds)
        return folder / f"{stem}.frames.npy", folder / f"{stem}.viewpoints.npy"

    @staticmethod
    def nbytes(scenes: Scenes) -> int:
        """The cache's size for a split: the built cache's, else from the split's first scene."""
        fpath, vpath = FrameCache.paths(scenes)
        if fpath.is_file() and vpath.is_file():
            try:
                return np.load(fpath, mmap_mode="r").nbytes
            except (OSError, ValueError):  # unreadable: judged from the data, rebuilt or refused later
                pass
        first = scenes[0]["frames"]
        return len(scenes) * first.numel()

    @staticmethod
    def _build(scenes: Scenes, progress: bool, workers: int | None = None):
        """Decode the split into (frames, viewpoints) arrays, `workers` processes at a time (None:
        the threads this job may use, machine.default_threads)."""
        from tqdm import tqdm

        from jumpbench.benchmarks.machine import default_threads

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
                pool = stack.enter_context(ctx.Pool(workers, initializer=_cache_worker, initargs=(scenes,)))
                decoded = pool.imap(_decode_chunk, chunks)
            for chunk, (f, v) in zip(chunks, decoded):
                frames[chunk.start:chunk.stop], vps[chunk.start:chunk.stop] = f, v
                bar.update(len(chunk))
        return frames, vps

    def batches(self, sampler: StepBatches):
        """What `loader` yields, from memory: {"frames", "viewpoints", "index"} per step."""
        for idx in sampler:
            idx = np.asarray(idx)
            yield {"frames": torch.from_numpy(self.frames[idx]), "viewpoints": torch.from_numpy(self.viewpoints[idx]),
                   "index": torch.from_numpy(idx)}


CACHE_CHUNK = 64  # scenes a cache-building worker decodes per task


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


def to_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) and idx (B, K) -> (B, K, ...), on x's device."""
    idx = idx.to(x.device)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


def random_split(frames, vps, cfg, generator: torch.Generator, device: torch.device | str | None = None) -> dict:
    """Jumpy training batch: K ~ U[targets_min, targets] random target frames and
    M ~ U[context_min, context_max] other random context frames per scene (one K and one M
    per batch, both capped so that M + K fits in the scene); on `device` (make_batch)."""
    b, t = frames.shape[:2]
    if t - cfg.context_min < cfg.targets_min:
        raise JumpbenchError(f"scenes of {t} frames cannot give {cfg.context_min} context + "
                             f"{cfg.targets_min} targets")
    k = int(torch.randint(cfg.targets_min, min(cfg.targets, t - cfg.context_min) + 1, (), generator=generator))
    m = int(torch.randint(cfg.context_min, min(cfg.context_max, t - k) + 1, (), generator=generator))
    perm = torch.stack([torch.randperm(t, generator=generator) for _ in range(b)])
    ctx, tgt = perm[:, :m], perm[:, m:m + k]
    return make_batch(frames, vps, ctx, tgt, device)


def prefix_split(frames, vps, m: int, device: torch.device | str | None = None) -> dict:
    """Forward prediction: the first m frames are the context, all later ones the targets."""
    b, t = frames.shape[:2]
    if not 1 <= m < t:
        raise JumpbenchError(f"forward prediction needs 1 <= m < {t} context frames, got {m}")
    idx = torch.arange(t).expand(b, t)
    return make_batch(frames, vps, idx[:, :m], idx[:, m:], device)


def make_batch(frames, vps, ctx_idx, tgt_idx, device: torch.device | str | None = None) -> dict:
    """Gather the context and target frames where they are (uint8, so only the frames used are
    converted), then move them to `device` (None: stay) and convert them there. To a GPU they
    travel from pinned memory without blocking the host, a quarter of the bytes of floats."""
    def move(x):
        if device is None or x.device == torch.device(device):
            return x
        return (x.pin_memory() if torch.device(device).type == "cuda" else x).to(device, non_blocking=True)

    return {"context_frames": to_float(move(_gather(frames, ctx_idx))),
            "context_viewpoints": move(_gather(vps, ctx_idx)),
            "target_frames": to_float(move(_gather(frames, tgt_idx))),
            "target_viewpoints": move(_gather(vps, tgt_idx))}


def train_batch(item: dict, cfg, jumpy: bool, generator: torch.Generator,
                device: torch.device | str = "cpu") -> dict:
    """One training batch on `device`: the split is drawn on the CPU from `generator` (so a
    batch is the same on every device) and gathered there; only the frames it uses travel
    (make_batch), so the host never waits for the device."""
    if jumpy:
        return random_split(item["frames"], item["viewpoints"], cfg, generator, device)
    return prefix_split(item["frames"], item["viewpoints"], cfg.eval_context, device)


def stack(scenes: Scenes, indices) -> dict:
    items = [scenes[i] for i in indices]
    return {"frames": torch.stack([it["frames"] for it in items]),
            "viewpoints": torch.stack([it["viewpoints"] for it in items])}


def hidden_face_batch(scenes: Scenes, indices, n_targets: int = 3) -> dict:
    """Dice test protocol: context = the views where the hidden face is invisible, targets =
    `n_targets` views where it is clearly visible (indices from the test split's metadata)."""
    items = stack(scenes, indices)
    ctx, tgt = [], []
    for i in indices:
        meta = scenes.meta(i)
        if "context_views" not in meta or "query_views" not in meta:
            raise JumpbenchError(f"{scenes.ds.root}: the {scenes.split} split has no hidden-face protocol "
                                 f"(context_views/query_views); it needs a dice test split")
        c, q = np.asarray(meta["context_views"]), np.asarray(meta["query_views"])
        if len(q) < n_targets:
            raise JumpbenchError(f"scene {i} has {len(q)} hidden-face query views, need {n_targets}")
        ctx.append(torch.as_tensor(c[:3]))
        tgt.append(torch.as_tensor(q[:n_targets]))
    return make_batch(items["frames"], items["viewpoints"], torch.stack(ctx), torch.stack(tgt))
