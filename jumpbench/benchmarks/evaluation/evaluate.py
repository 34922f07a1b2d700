"""Evaluation as in "Consistent Generative Query Networks" (Kumar, Eslami et al., ICLR 2019).

Forward prediction (section 4.1, Fig. 5a): for each test video, take n_samples = 30 sampled
continuations from the first m frames and score the video by the minimum over samples of
the MSE to the true continuation. A model that collapses onto one mode rarely draws a
sample near the truth and scores badly (the metric is similar to SV2P's, Babaeizadeh et al.
2018). One function serves all five models, jumpy or not, through `Model.sample`. `Evaluator` is
the training loop's periodic evaluation; `write_samples` draws its samples.png; `score_run`
scores a trained run's samples with the ground-truth probes (scores.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks import machine as M
from jumpbench.benchmarks.evaluation import scores as S
from jumpbench.benchmarks.evaluation.probes import load_probe
from jumpbench.benchmarks.runs import SAMPLES, Run, load_run, run_dataset
from jumpbench.errors import JumpbenchError
from jumpbench.files import atomic_path
from jumpbench.models.base import Model, sample_chunks
from jumpbench.view import contact_sheet

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
             "mean_context": "the mean context view",
             "static_oracle": "oracle: the static scene (each pixel's median over the whole video)"}


def static_scene(frames: torch.Tensor) -> torch.Tensor:
    """Videos (B, T, 3, H, W) -> each pixel's median over the T frames, (B, 1, 3, H, W): the
    still part of each video, with whatever moves erased (the `static_oracle` baseline)."""
    return frames.median(1, keepdim=True).values


@torch.no_grad()
def baseline_mse(frames: torch.Tensor, m: int) -> dict[str, float]:
    """Forward prediction's trivial predictors on videos (B, T, 3, H, W) with m context frames:
    the MSE over frames m..T-1 of repeating frame m-1, of black frames, and of an oracle that
    sees the whole video and draws its static part (each pixel's median over all T frames: the
    still shapes, with whatever moves erased), averaged over videos (deterministic, so their
    min-MSE over samples is their MSE). A model at the oracle's level has learnt to keep the
    still scene and to drop what moves; one below it draws some of the motion right."""
    truth = frames[:, m:]
    static = static_scene(frames)
    return {"repeat_last": float(((truth - frames[:, m - 1:m]) ** 2).mean()),
            "black": float((truth ** 2).mean()),
            "static_oracle": float(((truth - static) ** 2).mean())}


@torch.no_grad()
def baseline_view_mse(context: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Scenes (dice): the MSE of the query views to the mean context view, and to black."""
    mean = context.mean(1, keepdim=True)
    return {"mean_context": float(((targets - mean) ** 2).mean()), "black": float((targets ** 2).mean())}


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


class TimeVariation:
    """How much sampled continuations change from one query time to the next, relative to the
    truth: the per-pixel variance across the query frames, averaged over samples and pixels,
    divided by the same of the true continuations. 1: the samples change as much as the truth;
    0: one frame drawn at every query time, the failure of a renderer that ignores time (a
    time-averaged frame can still score a fair min-MSE). `visit` sees the sample chunks of
    min_mse (B, n, K, 3, H, W)."""

    def __init__(self, truth: torch.Tensor):
        self.truth = float(truth.float().var(dim=1).mean())    # truth (B, K, 3, H, W)
        self.total, self.count = 0.0, 0

    def visit(self, samples: torch.Tensor) -> None:
        self.total += float(samples.float().var(dim=2).mean(dim=(2, 3, 4)).sum())
        self.count += samples.shape[0] * samples.shape[1]

    def value(self) -> float:
        return self.total / max(self.count, 1) / self.truth if self.truth > 0 else float("nan")


def sample_metrics(model: Model, frames: torch.Tensor | None, m: int, n_samples: int,
                   scores: "S.RunScores | None" = None) -> dict:
    """On videos (`frames` given; None for scenes) `test_min_mse` and `test_time_variation`
    (TimeVariation) and, with `scores`, the ground-truth scores of the very same samples
    (test_score_*)."""
    row = {}
    if frames is not None:
        tv = TimeVariation(frames[:, m:])

        def visit(s):
            tv.visit(s)
            if scores:
                scores.visit(s)
        row["test_min_mse"] = float(min_mse(model, frames, m, n_samples, visit=visit).mean())
        row["test_time_variation"] = tv.value()
    if scores:
        row.update(scores.finish(model))
    return row


class Evaluator:
    """The training loop's evaluation: on a fixed subset of the test split with fixed noise,
    every loss term of the model as `test_<term>` (`test_loss`, and e.g. `test_kl`, `test_mse`),
    `test_min_mse` (30 samples, forward prediction) on videos, the sanity baselines as
    `test_baseline_<name>`, and samples.png."""

    def __init__(self, model, scenes: DS.Scenes, tc, dc, info, precision: str = "fp32"):
        self.model, self.tc, self.dc, self.precision = model, tc, dc, precision
        n = min(tc.eval_scenes, len(scenes))
        self.scenes, self.n = scenes, n
        self.video = info["viewpoint_key"] == "timestamps"
        device = next(model.parameters()).device
        if self.video:
            items = B.stack(scenes, range(n))
            self.frames = DS.to_float(items["frames"]).to(device)
            self.batch = B.prefix_split(items["frames"], items["viewpoints"], dc.eval_context, device)
            base = baseline_mse(self.frames, dc.eval_context)
        else:
            self.batch = {k: v.to(device) for k, v in B.hidden_face_batch(scenes, range(n)).items()}
            base = baseline_view_mse(self.batch["context_frames"], self.batch["target_frames"])
        # the trivial predictors on the same test scenes, in every row (plot reads them from here)
        self.baselines = {f"test_baseline_{k}": v for k, v in base.items()}

    @torch.no_grad()
    def __call__(self, step: int, folder: Path) -> dict:
        state = torch.get_rng_state()
        torch.manual_seed(0)
        self.model.eval()
        device = next(self.model.parameters()).device
        try:
            with M.autocast(self.precision, device):
                out = self.model(self.batch, step)
                row = {f"test_{k}": float(v) for k, v in out.items()} | self.baselines
                # the ground-truth scores at the end of a run, where a probe is trained (scores.py)
                scores = S.for_evaluator(self.scenes, self.n, self.dc.image_size, self.dc.eval_context,
                                         self.tc.eval_samples) if step == self.tc.steps else None
                row |= sample_metrics(self.model, self.frames if self.video else None, self.dc.eval_context,
                                      self.tc.eval_samples, scores)
                k = min(self.tc.sample_scenes, self.batch["context_frames"].shape[0])
                b = {key: v[:k] for key, v in self.batch.items()}
                samples = self.model.sample(b["context_frames"], b["context_viewpoints"],
                                            b["target_viewpoints"], 2).float()
            write_samples(Run(folder).path(SAMPLES), b["context_frames"], b["target_frames"], samples)
        finally:
            self.model.train()
            torch.set_rng_state(state)
        return row


def write_samples(path: str | Path, context, truth, samples) -> None:
    """A grid per scene: its context frames, then the true targets, then each sample's
    targets, one row each, each row labelled on the left (context, truth, sample k). context (B, M, 3, H, W), truth (B, K, 3, H, W) and samples
    (B, S, K, 3, H, W): tensors or arrays in [0, 1]."""
    from PIL import Image

    def rgb(x):
        x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)

    from PIL import ImageDraw

    b, s, k = samples.shape[:3]
    h, w = truth.shape[-2:]
    blank = np.full((1, h, w, 3), 255, np.uint8)
    rows, labels = [], []
    for i in range(b):
        ctx = rgb(context[i])
        width = max(len(ctx), k)
        pad = lambda f: np.concatenate([f] + [blank] * (width - len(f)))  # noqa: E731
        rows += [pad(ctx), pad(rgb(truth[i]))] + [pad(rgb(samples[i, j])) for j in range(s)]
        labels += ["context", "truth"] + [f"sample {j + 1}" for j in range(s)]
        rows.append(np.repeat(blank, width, 0))  # a gap between scenes
        labels.append("")
    scale, pad_px = 2, 2  # contact_sheet's
    sheet = contact_sheet(np.concatenate(rows[:-1]), columns=width, scale=scale)
    margin = 64  # a column of row labels on the left: which row is context, truth or a sample
    img = Image.new("RGB", (sheet.shape[1] + margin, sheet.shape[0]), "white")
    img.paste(Image.fromarray(sheet), (margin, 0))
    draw, row_h = ImageDraw.Draw(img), (h + pad_px) * scale
    for r, label in enumerate(labels[:-1]):
        draw.text((4, pad_px * scale + r * row_h + row_h // 2 - 6), label, fill=(60, 60, 60))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


# ---------------------------------------------------------------- `jumpbench score RUN_DIR`

def score_run(run: str | Path, out: str | Path | None = None, data: str | Path | None = None,
              n_scenes: int | None = None, n_samples: int | None = None, progress: bool = False) -> dict:
    """Score a trained run on its test split (the first n_scenes scenes, the run's evaluation
    subset by default) with n_samples samples per scene (the run's eval_samples); writes
    scores.json into `out` (the run folder by default). `progress`: a bar over the samples
    drawn, on stderr, where that is a terminal."""
    from tqdm import tqdm

    run = Path(run)
    model, record = load_run(run)
    step = record["checkpoint_step"]  # the checkpoint scored (a run may go on)
    cfg = record["config"]
    data = run_dataset(record, data)
    info = DS.dataset_info(data)
    if info["name"] != record.get("dataset", info["name"]):
        raise JumpbenchError(f"{data} is {info['name']}, the run was trained on {record['dataset']}")
    size, m = cfg["data"]["image_size"], cfg["data"]["eval_context"]
    probe = load_probe(data, size)
    scenes = DS.Scenes(data, "test", size)
    n = min(n_scenes or cfg["train"]["eval_scenes"], len(scenes))
    n_samples = n_samples or cfg["train"]["eval_samples"]
    if n < 1 or not 1 <= n_samples <= 1000:
        raise JumpbenchError(f"need at least one test scene and 1..1000 samples, got {n} and {n_samples}")
    device = torch.device("cpu")
    precision = M.resolve_precision(cfg["train"].get("precision", "auto"), device)
    scorer = S.RunScores(probe, scenes, range(n), m, n_samples)
    torch.manual_seed(0)
    video = info["viewpoint_key"] == "timestamps"
    with torch.no_grad(), M.autocast(precision, device), \
            tqdm(total=scorer.draws(model), desc="score", unit="sample", disable=None if progress else True) as bar:
        scorer.progress = bar.update
        row = sample_metrics(model, DS.to_float(B.stack(scenes, range(n))["frames"]) if video else None, m,
                             n_samples, scorer)
    result = {"model": record["model"], "dataset": info["name"], "run": str(run), "step": step, "data": str(data),
              "image_size": size, "context": m, "n_scenes": n, "n_samples": n_samples, "precision": precision,
              "probe": {k: probe.report.get(k) for k in ("clean", "degraded")}, **row}
    Run(out or run).write_scores(result)
    return result
