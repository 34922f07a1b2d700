"""Scenes to batches, by the harness's rules: the scenes of each training step (StepBatches:
a pure function of seed and step, shared among data-parallel processes), the context/target
splits of training and the fixed evaluation splits (forward prediction, the dice hidden-face
protocol), gathered where the frames are and moved to the device (docs/architecture.md, "The
model interface", has the batch).

Training batches for jumpy models draw a random number of context frames and several random
targets per scene (paper, section 4.1); non-jumpy video models get the first m frames as
context and the rest as targets.
"""
from __future__ import annotations

import numpy as np
import torch

from jumpbench.dataset import Scenes, to_device, to_float
from jumpbench.errors import JumpbenchError
from jumpbench.scenes import viewpoints


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


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) and idx (B, K) -> (B, K, ...), on x's device."""
    idx = to_device(idx, x.device)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


def split_shapes(t: int, cfg) -> list[tuple[int, int]]:
    """Every (M context frames, K targets) that random_split draws for scenes of `t` frames."""
    return [(m, k) for k in range(cfg.targets_min, min(cfg.targets, t - cfg.context_min) + 1)
            for m in range(cfg.context_min, min(cfg.context_max, t - k) + 1)]


def random_split(frames, vps, cfg, generator: torch.Generator, device: torch.device | str | None = None) -> dict:
    """Jumpy training batch: K ~ U[targets_min, targets] random target frames and
    M ~ U[context_min, context_max] other random context frames per scene (one K and one M
    per batch, both capped so that M + K fits in the scene: split_shapes); on `device`
    (make_batch)."""
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
    return {"context_frames": to_float(to_device(_gather(frames, ctx_idx), device)),
            "context_viewpoints": to_device(_gather(vps, ctx_idx), device),
            "target_frames": to_float(to_device(_gather(frames, tgt_idx), device)),
            "target_viewpoints": to_device(_gather(vps, tgt_idx), device)}


def shape_batches(item: dict, cfg, device: torch.device | str | None = None) -> list[dict]:
    """A jumpy batch of every shape random_split draws (split_shapes), from `item`'s scenes
    (first the M context frames, then the K targets): what a step captured in a CUDA graph
    per shape is captured on (training/graphs.py)."""
    frames, vps = item["frames"], item["viewpoints"]
    b, t = frames.shape[:2]
    order = torch.arange(t).expand(b, t)
    return [make_batch(frames, vps, order[:, :m], order[:, m:m + k], device) for m, k in split_shapes(t, cfg)]


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


def synthetic_item(info: dict, batch: int, size: int, seed: int = 0) -> dict:
    """What the data path yields for one step of a dataset with `info`'s shapes (dataset_info(),
    or speed.train_speed.SHAPES): random uint8 frames and real-looking viewpoints, for timing a
    step (bench train) and for checking a model's loss terms before a sweep (sweep.py)."""
    key, t = info["viewpoint_key"], info["frames"]
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, t, 3, size, size), dtype=torch.uint8, generator=g)
    if key == "timestamps":
        vps = torch.arange(t, dtype=torch.float32).view(1, t, 1).expand(batch, t, 1).contiguous()
    else:
        cams = np.random.default_rng(seed).normal(size=(batch * t, 5)).astype(np.float32)
        vps = torch.from_numpy(viewpoints({"cameras": cams}, "cameras")).view(batch, t, 7)
    return {"frames": frames, "viewpoints": vps}
