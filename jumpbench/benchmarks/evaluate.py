"""Evaluation as in "Consistent Generative Query Networks" (Kumar, Eslami et al., ICLR 2019).

Forward prediction (section 4.1, Fig. 5a): for each test video, take n_samples = 30 sampled
continuations from the first m frames and score the video by the minimum over samples of
the MSE to the true continuation. A model that collapses onto one mode rarely draws a
sample near the truth and scores badly (the metric is similar to SV2P's, Babaeizadeh et al.
2018). One function serves all five models, jumpy or not, through `Model.sample`.
"""
from __future__ import annotations

import torch

from jumpbench.models.base import Model

# Traveling Salesman (20 frames): the salesman finishes its visits at frames 5, 10, 14 and 19
# (generators/narratives.py). Five context frames (0-4) show it on its way to the first
# shape, which fixes that shape but leaves the order of the other three open (3! = 6
# futures), so the continuation is genuinely stochastic and 30 samples can cover it.
DEFAULT_CONTEXT = 5


def _device(model: torch.nn.Module, fallback: torch.device) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else fallback


# The trivial predictors every score is read against (results/summary.md, Fig. 5a): their
# names, as written into metrics.jsonl after "test_baseline_".
BASELINES = {"repeat_last": "repeat the last context frame", "black": "black frames",
             "mean_context": "the mean context view"}


@torch.no_grad()
def baseline_mse(frames: torch.Tensor, m: int) -> dict[str, float]:
    """Forward prediction's trivial predictors on videos (B, T, 3, H, W) with m context frames:
    the MSE over frames m..T-1 of repeating frame m-1, and of black frames, averaged over
    videos (deterministic, so their min-MSE over samples is their MSE)."""
    truth = frames[:, m:]
    return {"repeat_last": float(((truth - frames[:, m - 1:m]) ** 2).mean()),
            "black": float((truth ** 2).mean())}


@torch.no_grad()
def baseline_view_mse(context: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Scenes (dice): the MSE of the query views to the mean context view, and to black."""
    mean = context.mean(1, keepdim=True)
    return {"mean_context": float(((targets - mean) ** 2).mean()), "black": float((targets ** 2).mean())}


@torch.no_grad()
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


@torch.no_grad()
def min_mse(model: Model, frames: torch.Tensor, m: int = DEFAULT_CONTEXT, n_samples: int = 30,
            chunk: int = 10, visit=None) -> torch.Tensor:
    """Minimum over `n_samples` sampled continuations of the MSE to the true one, per video.

    frames: (B, T, 3, H, W) float in [0, 1]. The context is frames 0..m-1 (viewpoints, i.e.
    frame times, 0..m-1); the queries are frames m..T-1. The paper does not state m; the
    default m = 5 of 20 for Traveling Salesman is explained at DEFAULT_CONTEXT above. The
    MSE of one sample is the mean over its frames, channels and pixels. Samples are drawn
    `chunk` at a time to bound memory; `visit(chunk)`, when given, sees each chunk (B, n, T-m,
    3, H, W) too (the ground-truth scores read the same samples, scores.py). Returns (B,) on
    the frames' device.
    """
    B, T = frames.shape[:2]
    if not 1 <= m < T:
        raise ValueError(f"m must be in [1, T-1] = [1, {T - 1}], got {m}")
    device = _device(model, frames.device)
    x = frames.to(device)
    times = torch.arange(T, dtype=x.dtype, device=device).view(1, T, 1).expand(B, T, 1)  # (B, T, 1)
    context, truth = x[:, :m], x[:, m:]                                  # (B, m, ...), (B, T-m, ...)
    best = torch.full((B,), float("inf"), device=device)
    for s in sample_chunks(model, context, times[:, :m], times[:, m:], n_samples, chunk):
        best = torch.minimum(best, ((s - truth[:, None]) ** 2).flatten(2).mean(2).min(1).values)
        if visit is not None:
            visit(s)
    return best.to(frames.device)
