"""Sample grids of "Consistent Generative Query Networks" (Kumar, Eslami et al., ICLR 2019),
drawn fresh from trained checkpoints so that every model sees the same test scene and the
same context (a run's samples.png shows each run's own evaluation scenes instead):

- fig3 (Color Reaction, Fig. 3): the true video, then JUMP rolled forwards (sees frames 1-2),
  backwards (sees the last two) and both ways (sees two middle frames), two samples each;
  seen frames are framed in blue, sampled ones in red;
- fig4 (Traveling Salesman, Fig. 4): the context and the true continuation, then two sampled
  continuations per model (jumpy or not, from the same first frames);
- fig6 (MNIST Dice, Fig. 6): the three context views, the true views of the hidden face,
  then two samples each from JUMP and GQN.

Per model the seed with the best final metric among its finished runs is used (the figure
says which). Test scene 0 by default; the noise is seeded, so the grids are reproducible.
"""
from __future__ import annotations

import numpy as np
import torch

from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.figures.results import RunResult, count_text, primary_metric
from jumpbench.benchmarks.runs import Run, run_dataset

HINTS = {
    "fig3": "jumpbench generate narratives --narrative color_reaction, then jumpbench run --model jump "
            "--data data/color_reaction",
    "fig4": "jumpbench run --model M --data data/traveling_salesman (M = jump, gqn, sssm, sv2p, cdna)",
    "fig6": "jumpbench generate dice, then jumpbench run --model jump --data data/mnist_dice (and --model gqn)",
}
BLUE, RED = (40, 90, 230), (220, 40, 40)


def best_run(runs: list[RunResult]) -> RunResult | None:
    """The finished or stopped run (a run continued in legs stops between them) with weights to
    load (a checkpoint, or published weights: a run from git) and the lowest final metric."""
    metric = primary_metric(runs)
    ok = [r for r in runs if r.status in ("done", "interrupted") and Run(r.path).has_weights()]
    return min(ok, key=lambda r: (r.final(metric) is None, r.final(metric) or 0.0, r.seed)) if ok else None


def rgb(x) -> np.ndarray:
    """(K, 3, H, W) float in [0, 1] -> (K, H, W, 3) uint8."""
    return (np.clip(np.asarray(x), 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def framed(frames: np.ndarray, color) -> np.ndarray:
    """A one-pixel coloured border on each (K, H, W, 3) frame."""
    f = frames.copy()
    f[:, [0, -1], :] = color
    f[:, :, [0, -1]] = color
    return f


def _draw(rows: list[tuple[str, np.ndarray]], title: str):
    """One labelled image row per (name, (K, H, W, 3)) entry."""
    from jumpbench.benchmarks.figures.common import plt as pyplot
    from jumpbench.view import contact_sheet

    plt = pyplot()
    width = max(len(f) for _, f in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4, 0.6 * width), 0.75 * len(rows) + 0.8), squeeze=False)
    for ax, (name, frames) in zip(axes[:, 0], rows):
        blank = np.full((width - len(frames), *frames.shape[1:]), 255, np.uint8)
        ax.imshow(contact_sheet(np.concatenate([frames, blank]), columns=width), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def _scene(cfg: dict, index: int = 0) -> dict:
    scenes = DS.Scenes(run_dataset(cfg), "test", cfg["config"]["data"]["image_size"])
    item = scenes[index]
    return {"frames": DS.to_float(item["frames"])[None], "viewpoints": item["viewpoints"][None], "scenes": scenes}


@torch.no_grad()
def fig3(models: dict, dataset: str, preset: str):
    run = best_run(models.get("jump", []))
    if run is None:
        return None
    model, cfg = Run(run.path).load()
    s = _scene(cfg)
    frames, vps = s["frames"], s["viewpoints"]                       # (1, T, 3, H, W), (1, T, 1)
    t = frames.shape[1]
    truth = rgb(frames[0])
    rows = [("truth", truth)]
    for name, seen in (("forwards", [0, 1]), ("backwards", [t - 2, t - 1]), ("both ways", [t // 2 - 1, t // 2])):
        query = [i for i in range(t) if i not in seen]
        torch.manual_seed(0)
        samples = model.sample(frames[:, seen], vps[:, seen], vps[:, query], 2)  # (1, 2, K, 3, H, W)
        for j in range(2):
            row = np.empty_like(truth)
            row[seen] = framed(truth[seen], BLUE)
            row[query] = framed(rgb(samples[0, j]), RED)
            rows.append((f"{name} {j + 1}", row))
    title = (f"Fig. 3: JUMP on {dataset} test scene 0 (blue = seen, red = sampled); config {run.config}, "
             f"seed {run.seed} of {count_text(models['jump'])}")
    return _draw(rows, title), {"run": str(run.path), "seed": run.seed}


def _sample_rows(models: dict, chosen: dict, scene) -> tuple[list, dict, str]:
    """Fig. 4 and 6's rows: the first model's scene rows, then two samples of each chosen model
    in turn (`scene(cfg)` -> (scene rows, context frames, context viewpoints, query viewpoints)
    of test scene 0), the runs drawn, and their line of the title."""
    rows, info = None, {}
    for model_name, run in chosen.items():
        model, cfg = Run(run.path).load()
        scene_rows, frames, vps, queries = scene(cfg)
        rows = rows or scene_rows
        torch.manual_seed(0)
        samples = model.sample(frames, vps, queries, 2)  # (1, 2, K, 3, H, W)
        rows += [(f"{model_name} {j + 1}", rgb(samples[0, j])) for j in range(2)]
        info[model_name] = {"run": str(run.path), "seed": run.seed, "runs": count_text(models[model_name]),
                            "config": run.config}
    seeds = ", ".join(f"{m} [{v['config']}] seed {v['seed']} of {v['runs']}" for m, v in info.items())
    return rows, info, seeds


@torch.no_grad()
def fig4(models: dict, dataset: str, preset: str):
    chosen = {m: best_run(rs) for m, rs in models.items()}
    chosen = {m: r for m, r in chosen.items() if r is not None}
    if not chosen:
        return None
    from jumpbench.benchmarks.figures.common import ordered

    def scene(cfg):  # continuations from the first eval_context frames
        s, m = _scene(cfg), cfg["config"]["data"]["eval_context"]
        frames, vps = s["frames"], s["viewpoints"]
        return ([("context", rgb(frames[0, :m])), ("truth", rgb(frames[0, m:]))], frames[:, :m], vps[:, :m],
                vps[:, m:])

    rows, info, seeds = _sample_rows(models, {m: chosen[m] for m in ordered(chosen)}, scene)
    title = f"Fig. 4: {dataset} test scene 0, continuations from the first frames; preset {preset}\n{seeds}"
    return _draw(rows, title), info


@torch.no_grad()
def fig6(models: dict, dataset: str, preset: str):
    chosen = {m: best_run(models.get(m, [])) for m in ("jump", "gqn")}
    chosen = {m: r for m, r in chosen.items() if r is not None}
    if not chosen:
        return None

    def scene(cfg):  # the hidden face's views from the context views
        scenes = DS.Scenes(run_dataset(cfg), "test", cfg["config"]["data"]["image_size"])
        b = B.hidden_face_batch(scenes, [0])
        return ([("context", rgb(b["context_frames"][0])), ("hidden face", rgb(b["target_frames"][0]))],
                b["context_frames"], b["context_viewpoints"], b["target_viewpoints"])

    rows, info, seeds = _sample_rows(models, chosen, scene)
    title = f"Fig. 6: {dataset} test scene 0, samples of the unseen face; preset {preset}\n{seeds}"
    return _draw(rows, title), info


def sample_grids(main: dict, out) -> list[str]:
    """Every grid whose runs, checkpoints and test data exist; a line per output or skip."""
    from jumpbench.benchmarks.figures.common import save

    lines = []
    for name, dataset, make in (("fig3", "color_reaction", fig3), ("fig4", "traveling_salesman", fig4),
                                ("fig6", "mnist_dice", fig6)):
        made = False
        for (ds, preset), models in main.items():
            if ds != dataset:
                continue
            try:
                result = make(models, ds, preset)
            except Exception as e:  # a missing dataset or an old checkpoint: say so, draw the rest
                why = " ".join(str(e).split())[:200]
                lines.append(f"skipped {name} ({ds}, {preset}): {type(e).__name__}: {why} (a checkpoint from "
                             f"older model code needs a fresh run)" if "state_dict" in why else
                             f"skipped {name} ({ds}, {preset}): {type(e).__name__}: {why}")
                made = True
                continue
            if result:
                path = save(result[0], out, f"{name}_{ds}_{preset}", result[1])
                lines.append(f"wrote {path} (+ .pdf, .json)")
                made = True
        if not made:
            lines.append(f"skipped {name}: no finished {dataset} run with weights (a checkpoint or published); "
                         f"make one with: {HINTS[name]}")
    return lines
