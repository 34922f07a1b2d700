"""Consistency and likelihood on MNIST Dice (JUMP paper, section 4.2, Fig. 5b).

On the test split's hidden-face protocol (3 context views where one side face is invisible,
3 query views where it is clearly visible):
- nelbo: the test negative ELBO of the 3 hidden-face views given the context, in nats per
  scene (JUMP: one joint latent; GQN: its factored sum over the 3 views);
- kl1, kl3: KL(posterior || prior) in nats per scene, the posterior conditioned on 1 or on 3
  hidden-face views. A consistent model has kl3 ~ kl1 (the paper: 4.19 vs 4.25 for JUMP);
  a factored model gives kl3 = 3 x kl1.
Each figure averages `draws` posterior draws (conv-DRAW's KL is computed along a sampled
trajectory) over `n_scenes` test scenes, at the model's final pixel variance.
"""
from __future__ import annotations

from pathlib import Path

import torch

from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.runs import Run, load_run, run_dataset
from jumpbench.errors import JumpbenchError

PAPER_KL = {"kl1": 4.19, "kl3": 4.25}  # the paper's (section 4.2): the mean over 12 JUMP runs



@torch.no_grad()
def consistency(run: str | Path, data: str | Path | None = None, n_scenes: int = 100, draws: int = 4,
                batch: int = 25, progress: bool = False) -> dict:
    run = Path(run)
    model, cfg = load_run(run)
    if not hasattr(model, "elbo_terms"):
        raise JumpbenchError(f"{cfg['model']} has no ELBO over query views; consistency needs jump or gqn")
    data = run_dataset(cfg, data)
    info = DS.dataset_info(data)
    if info["viewpoint_key"] != "cameras":
        raise JumpbenchError(f"{data} is {info['name']}; consistency needs an MNIST Dice set (--data DIR/mnist_dice)")
    scenes = DS.Scenes(data, "test", cfg["config"]["data"]["image_size"])
    n = min(n_scenes, len(scenes))
    if n < 1 or not 1 <= draws <= 1000:
        raise JumpbenchError(f"need at least one test scene and 1..1000 draws, got {n} and {draws}")
    torch.manual_seed(0)
    per_scene = {"kl1": [], "kl3": [], "nelbo": []}
    from tqdm import tqdm

    for start in tqdm(range(0, n, batch), desc="consistency", unit="batch", disable=None if progress else True):
        b = B.hidden_face_batch(scenes, range(start, min(n, start + batch)), n_targets=3)
        ctx = (b["context_frames"], b["context_viewpoints"])
        sums = {k: 0.0 for k in per_scene}
        for _ in range(draws):
            one = model.elbo_terms(*ctx, b["target_frames"][:, :1], b["target_viewpoints"][:, :1])
            three = model.elbo_terms(*ctx, b["target_frames"], b["target_viewpoints"])
            sums["kl1"] = sums["kl1"] + one["kl"]
            sums["kl3"] = sums["kl3"] + three["kl"]
            sums["nelbo"] = sums["nelbo"] + three["nll"] + three["kl"]
        for k in per_scene:
            per_scene[k] += (sums[k] / draws).tolist()
    result = {k: sum(v) / n for k, v in per_scene.items()}
    result.update(n_scenes=n, draws=draws, units="nats per scene", model=cfg["model"], data=str(data),
                  step=cfg["checkpoint_step"],  # the weights measured (results.collect checks them against the run's)
                  kl3_over_kl1=result["kl3"] / result["kl1"] if result["kl1"] > 0 else None,
                  per_scene=per_scene)
    Run(run).write_consistency(result)
    return result


def format_table(result: dict) -> str:
    r = result
    lines = [f"{r['model']} on {r['data']}: {r['n_scenes']} test scenes, {r['draws']} posterior draws, "
             f"{r['units']}",
             f"{'':<28}{'this run':>10}{'paper (JUMP)':>14}",
             f"{'KL1 (1 hidden-face view)':<28}{r['kl1']:>10.3f}{PAPER_KL['kl1']:>14.2f}",
             f"{'KL3 (3 hidden-face views)':<28}{r['kl3']:>10.3f}{PAPER_KL['kl3']:>14.2f}",
             f"{'KL3 / KL1':<28}{(r['kl3_over_kl1'] or float('nan')):>10.2f}{PAPER_KL['kl3'] / PAPER_KL['kl1']:>14.2f}",
             f"{'test -ELBO (3 views)':<28}{r['nelbo']:>10.1f}{'-':>14}"]
    return "\n".join(lines)
