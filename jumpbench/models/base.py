"""The interface every model of jumpbench shares, so that one training loop and one
evaluation serve them all (docs/architecture.md, "The model interface").

A batch is a dict of float tensors (frames in [0, 1]):
    context_frames      (B, M, 3, H, W)   M >= 1 context views / time steps
    context_viewpoints  (B, M, D)         D = config.viewpoint_dim (7 dice, 1 narratives)
    target_frames       (B, K, 3, H, W)   K >= 1 targets
    target_viewpoints   (B, K, D)
Narrative viewpoints are frame times (0, 1, ..., T-1) as floats; video models read them to
know which frames a context and queries are (see `frame_indices`).
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Fields every model config has; each model's dataclass extends it with its own."""

    image_size: int = 64       # H = W of the frames the model sees
    viewpoint_dim: int = 1     # 7 for dice (x, y, z, sin/cos yaw, sin/cos pitch), 1 for narratives
    frames: int = 20           # the length of a video (narratives); video models roll up to it

    def __post_init__(self):
        if self.image_size < 8 or self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 and at least 8, got {self.image_size}")
        if self.viewpoint_dim < 1:
            raise ValueError(f"viewpoint_dim must be at least 1, got {self.viewpoint_dim}")


class Model(nn.Module):
    """Base class: subclasses set `jumpy` and implement `forward` and `sample`."""

    jumpy: bool = True

    def compile_loss(self) -> bool:
        """torch.compile the part of the training loss that compiles once per run (no Python
        values that change between steps inside it); False where a model has none."""
        return False

    def step_inputs(self, step: int) -> dict[str, float] | None:
        """Every value of `step` that `forward` reads, by name: `forward` takes each from the
        batch (a 0-d tensor) when the batch has it, so that a training step replayed from a CUDA
        graph (training/graphs.py) is fed this step's schedule rather than the one it was
        captured at. None: forward uses the step in ways a replay cannot be fed (phases that
        branch in Python), so the model trains eagerly only."""
        return None

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """Training loss (`loss`, a scalar to minimise) and logged scalar terms (`nll`, `kl`,
        `mse`, ...) for a batch at training step `step` (schedules depend on it)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, context_frames: torch.Tensor, context_viewpoints: torch.Tensor,
               query_viewpoints: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Frames for the queries: (B, n_samples, K, 3, H, W) in [0, 1]. One latent draw per
        sample is shared by all K queries of that sample (JUMP); GQN draws one per query."""
        raise NotImplementedError


def pixel_var(cfg, step: int) -> float:
    """The pixel variance of an ELBO model at training step `step` (Appendix B): "linear" anneals
    from pixel_var_start to pixel_var_end over pixel_var_steps (the narratives); "piecewise"
    takes pixel_var_values[i] until pixel_var_boundaries[i] (the dice)."""
    if cfg.pixel_var_schedule == "linear":
        frac = min(max(step, 0) / cfg.pixel_var_steps, 1.0)
        return cfg.pixel_var_start + frac * (cfg.pixel_var_end - cfg.pixel_var_start)
    for boundary, value in zip(cfg.pixel_var_boundaries, cfg.pixel_var_values):
        if step < boundary:
            return value
    return cfg.pixel_var_values[-1]


def final_pixel_var(cfg) -> float:
    """The schedule's value at the end of training (used when no step is given)."""
    return cfg.pixel_var_end if cfg.pixel_var_schedule == "linear" else cfg.pixel_var_values[-1]


class ELBOModel(Model):
    """A latent-variable model with an ELBO over query views (JUMP, GQN). Subclasses implement
    `_elbo(context_frames, context_viewpoints, target_frames, target_viewpoints, pixel_var)
    -> (nll (B,), kl (B,), mean frames (B, K, 3, H, W))` in nats per scene, and their config
    has the pixel_var_* fields of Appendix B's schedules (pixel_var below)."""

    def compile_loss(self) -> bool:
        """The ELBO compiled with dynamic shapes (context and target counts vary per batch); the
        pixel variance enters as a tensor, so its annealing does not recompile."""
        self._elbo = torch.compile(self._elbo, dynamic=True)
        return True

    def step_inputs(self, step: int) -> dict[str, float]:
        """The pixel variance is the one value of the step that the ELBO reads."""
        return {"pixel_var": pixel_var(self.config, step)}

    def elbo_terms(self, context_frames, context_viewpoints, target_frames, target_viewpoints,
                   pixel_var: float | None = None) -> dict[str, torch.Tensor]:
        """Per-scene `nll` (B,) and `kl` (B,) in nats, with one posterior draw; the negative ELBO
        is nll + kl. `mean` (B, K, 3, H, W): the frames that draw renders (the posterior's
        reconstruction of the targets). `pixel_var` defaults to the schedule's final value."""
        pv = final_pixel_var(self.config) if pixel_var is None else pixel_var
        nll, kl, mean = self._elbo(context_frames, context_viewpoints, target_frames, target_viewpoints, pv)
        return {"nll": nll, "kl": kl, "mean": mean}

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """loss: negative ELBO in nats per scene (summed over the targets), averaged over the batch."""
        targets = batch["target_frames"]
        pv = batch.get("pixel_var")  # (a replayed step's, step_inputs)
        if pv is None:
            pv = torch.full((), pixel_var(self.config, step), device=targets.device)  # no host-device copy
        nll, kl, mean = self._elbo(batch["context_frames"], batch["context_viewpoints"],
                                   targets, batch["target_viewpoints"], pv)
        return {"loss": (nll + kl).mean(), "nll": nll.mean().detach(), "kl": kl.mean().detach(),
                "mse": ((mean.detach().float() - targets) ** 2).mean(), "pixel_var": pv}


def frame_indices(viewpoints: torch.Tensor) -> torch.Tensor:
    """Narrative viewpoints (B, K, 1) -> integer frame indices (B, K)."""
    return viewpoints[..., 0].round().long()


def check_prefix(context_viewpoints: torch.Tensor, query_viewpoints: torch.Tensor) -> tuple[int, int]:
    """For autoregressive video models: the context must be frames 0..m-1 of every video and
    the queries must come after it. Returns (m, the furthest query frame + 1); raises a
    ValueError naming the problem otherwise."""
    ctx, qry = frame_indices(context_viewpoints), frame_indices(query_viewpoints)
    m = ctx.shape[1]
    want = torch.arange(m, device=ctx.device).expand_as(ctx)
    if not torch.equal(ctx, want):
        raise ValueError("this model is not jumpy: its context must be the first frames of the video, "
                         f"in order (0..{m - 1}), got {ctx[0].tolist()}")
    if (qry < m).any():
        raise ValueError(f"this model is not jumpy: queries must come after the context (frame >= {m}), "
                         f"got {qry[0].tolist()}")
    return m, int(qry.max()) + 1


def sample_chunks(model: Model, context: torch.Tensor, context_viewpoints: torch.Tensor,
                  query_viewpoints: torch.Tensor, n_samples: int, chunk: int = 10):
    """Yields `n_samples` samples for the queries, `chunk` at a time to bound memory, as float
    (B, n, K, 3, H, W) on the model's device, with the model in eval mode meanwhile."""
    if n_samples < 1 or chunk < 1:
        raise ValueError(f"n_samples and chunk must be positive, got {n_samples} and {chunk}")
    B, K = query_viewpoints.shape[:2]
    was_training = model.training
    model.eval()
    try:
        done = 0
        while done < n_samples:
            n = min(chunk, n_samples - done)
            s = model.sample(context, context_viewpoints, query_viewpoints, n)   # (B, n, K, 3, H, W)
            if s.shape != (B, n, K, *context.shape[2:]):
                raise ValueError(f"{type(model).__name__}.sample returned {tuple(s.shape)}, "
                                 f"expected {(B, n, K, *context.shape[2:])}")
            yield s.float()
            done += n
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- video models (CDNA, SV2P, sSSM)

def training_video(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """A non-jumpy model's training batch -> (video (B, T, 3, H, W), m). The batch must carry
    context = frames 0..m-1 and targets = frames m..T-1 of each video, in order (the data
    pipeline provides this when `model.jumpy` is False); anything else raises a ValueError."""
    ctx, tgt = frame_indices(batch["context_viewpoints"]), frame_indices(batch["target_viewpoints"])
    m, k = ctx.shape[1], tgt.shape[1]
    want = torch.arange(m + k, device=ctx.device).expand(ctx.shape[0], -1)
    consecutive = (ctx == want[:, :m]).all() & (tgt == want[:, m:]).all()
    if ctx.device.type != "cpu":  # checked on the device, without waiting for it (a device-side assert)
        torch._assert_async(consecutive, "non-jumpy models train on consecutive frames")
    elif not consecutive:
        raise ValueError("non-jumpy models train on consecutive frames: the batch must carry context = "
                         f"frames 0..m-1 and targets = frames m..T-1, got context {ctx[0].tolist()} "
                         f"and targets {tgt[0].tolist()}")
    return torch.cat([batch["context_frames"], batch["target_frames"]], dim=1), m


def gather_frames(frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """frames (B, N, T, 3, H, W), index (B, K) into T -> (B, N, K, 3, H, W)."""
    B, N, T, C, H, W = frames.shape
    idx = index[:, None, :, None, None, None].expand(B, N, index.shape[1], C, H, W)
    return frames.gather(2, idx)


def ground_truth_fraction(step: int, k: float) -> float:
    """Scheduled sampling (Bengio et al. 2015, inverse sigmoid decay as in Finn et al.): the
    fraction of a batch fed ground truth at `step`, k / (k + exp(step / k)); k <= 0: none."""
    if k <= 0:
        return 0.0
    return k / (k + math.exp(min(step / k, 700.0)))
