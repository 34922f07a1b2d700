"""Jumpy sampling speed (Kumar, Eslami et al., ICLR 2019, section 1: "in a 40-frame video, our
model can sample the final frame 12 times faster than an autoregressive model like SV2P").

For each model, with random weights at its paper-scale config for 64x64 frames (each config
dataclass's defaults: Appendix B for JUMP and GQN, the baselines' own papers for sSSM, SV2P
and CDNA), time `model.sample` for one query, frame t, from the same context (frames
0..context-1): the median over `repeats` timed calls after `warmup` untimed ones. A jumpy
model renders frame t directly; an autoregressive one rolls forward through every frame
before it (sSSM in its latent state, decoding only frame t).
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from jumpbench.models import MODELS



def build(name: str, frames: int, image_size: int = 64, overrides: dict | None = None):
    """A model from the registry with random weights at its default (paper) config for
    narratives (viewpoint = frame time), updated with `overrides`."""
    cls, cfg_cls = MODELS[name]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    kw = {k: v for k, v in dict(image_size=image_size, viewpoint_dim=1, frames=frames).items() if k in names}
    kw.update(overrides or {})
    config = cfg_cls(**kw)
    return cls(config), config


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def jumpy_speed(models=None, frames: int = 40, ts=(4, 9, 19, 29, 39), context: int = 3, batch: int = 1,
                device: str = "cpu", repeats: int = 5, warmup: int = 1, image_size: int = 64,
                config_overrides: dict | None = None, seed: int = 0) -> dict:
    """Seconds to sample frame t (0-based: t = 39 is the 40th, last frame of a 40-frame video)
    for each model and each t in `ts`, from context frames 0..context-1, `batch` videos, one
    sample each. `models`: registry names (default: all registered, JUMP first).
    `config_overrides`: {name: {field: value}} (tests use tiny configs). Returns a
    JSON-serialisable dict; `ratios` holds <model>/jump at the last t when JUMP was timed."""
    models = list(models) if models is not None else list(MODELS)
    missing = [n for n in models if n not in MODELS]
    if missing:
        raise ValueError(f"unknown models {missing}; registered: {sorted(MODELS)}")
    ts = sorted(int(t) for t in ts)
    if not ts or ts[0] < context or ts[-1] >= frames or context < 1:
        raise ValueError(f"need 1 <= context <= t < frames for every t, got context={context}, ts={ts}, "
                         f"frames={frames}")
    if repeats < 1 or warmup < 0 or batch < 1:
        raise ValueError("repeats and batch must be positive and warmup >= 0")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    ctx = torch.rand(batch, context, 3, image_size, image_size, generator=gen).to(dev)  # (B, m, 3, H, W)
    ctx_vp = torch.arange(context, dtype=torch.float32, device=dev).view(1, context, 1).expand(batch, -1, -1)
    result = {"frames": frames, "context": context, "batch": batch, "image_size": image_size,
              "device": str(dev), "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup,
              "ts": ts, "seconds": {}, "configs": {}, "ratios": {}}
    for name in models:
        torch.manual_seed(seed)
        model, config = build(name, frames, image_size, (config_overrides or {}).get(name))
        model.to(dev).eval()
        result["configs"][name] = dataclasses.asdict(config)
        secs = []
        for t in ts:
            query = torch.full((batch, 1, 1), float(t), device=dev)          # (B, 1, 1): frame t
            for _ in range(warmup):
                model.sample(ctx, ctx_vp, query, 1)
            times = []
            for _ in range(repeats):
                _sync(dev)
                start = time.perf_counter()
                model.sample(ctx, ctx_vp, query, 1)                         # (B, 1, 1, 3, H, W)
                _sync(dev)
                times.append(time.perf_counter() - start)
            secs.append(statistics.median(times))
        result["seconds"][name] = secs
        del model
    if "jump" in result["seconds"]:
        base = result["seconds"]["jump"][-1]
        result["ratios"] = {f"{n}/jump": s[-1] / base for n, s in result["seconds"].items() if n != "jump"}
    return result


def format_table(result: dict) -> str:
    """A plain-text table: milliseconds per model (rows) and frame t (columns), then ratios."""
    ts = result["ts"]
    head = f"{'model':<8}" + "".join(f"{'t=' + str(t):>11}" for t in ts)
    lines = [f"time to sample frame t from {result['context']} context frames, {result['frames']}-frame "
             f"video, batch {result['batch']}, {result['image_size']}x{result['image_size']}, "
             f"{result['device']} ({result['threads']} threads), median of {result['repeats']}, in ms",
             head, "-" * len(head)]
    for name, secs in result["seconds"].items():
        lines.append(f"{name:<8}" + "".join(f"{1000 * s:>11.1f}" for s in secs))
    if result["ratios"]:
        lines.append(f"at t={ts[-1]}: " + ", ".join(f"{k} = {v:.1f}x" for k, v in result["ratios"].items()))
    return "\n".join(lines)
