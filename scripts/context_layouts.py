"""Where a jumpy model (JUMP, GQN) fails on a Narrative: its prior, or its renderer.

    python scripts/context_layouts.py results/runs/traveling_salesman/jump/cpu/seed-0 --scenes 32

The same test videos are predicted under three context layouts of frames (one-based):
forward (1..m, the evaluation's), forward plus the last frame, and every other frame. For
each it prints the min-MSE over the samples (as the evaluation), the MSE of the samples' mean,
the posterior reconstruction MSE (the posterior sees the targets too, so this is the
renderer's own floor), the same with the targets shown to the posterior one at a time (a
latent for one frame: no frame's content has to share it with the others), the MSE of
copying the context frame nearest in time, and of the static-scene oracle (each pixel's
median over the whole video: the still shapes drawn, what moves erased). If the
interleaved layout, where every target lies between two context frames, scores no better than
forward prediction, and both sit near the posterior floor, the prior is not what limits the
model: its renderer cannot draw the frames. On Color Reaction, with a probe trained for the
run's image size (`jumpbench probe train`), it also gives the reaction's checks (scores.py:
touch, before, after, changed, mover, and all of them) of the prior's samples and of the
posterior's reconstruction (one draw per video) under each layout: a check that the
posterior passes and the prior fails is the prior's to learn (which shape reacts, which
colour), one that both fail is the renderer's. Writes RUN/context_layouts.json (--out).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def layouts(frames: int, m: int) -> dict[str, tuple[list[int], list[int]]]:
    t = list(range(frames))
    inter = t[::2]
    return {
        f"forward: 1-{m} -> {m + 1}-{frames}": (t[:m], t[m:]),
        f"forward + last: 1-{m},{frames} -> {m + 1}-{frames - 1}": (t[:m] + [frames - 1], t[m:frames - 1]),
        "every other frame: odd -> even": (inter, [i for i in t if i not in inter]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--scenes", type=int, default=32, help="Test videos (the first N).")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--data", default=None, help="The run's dataset folder [config.json's data].")
    ap.add_argument("--out", type=Path, default=None, help="[RUN/context_layouts.json]")
    args = ap.parse_args()

    import torch

    import jumpbench
    from jumpbench import dataset as DS
    from jumpbench.benchmarks.evaluation import probes as P
    from jumpbench.benchmarks.evaluation.evaluate import static_scene
    from jumpbench.benchmarks.evaluation.scores import Scorer
    from jumpbench.errors import JumpbenchError
    from jumpbench.files import write_json_atomic
    from jumpbench.models.base import sample_chunks

    torch.manual_seed(0)
    model, rec = jumpbench.load_run(args.run)
    if rec["config"]["model"].get("viewpoint_dim") != 1 or not hasattr(model, "elbo_terms"):
        raise SystemExit(f"{args.run}: a jumpy model (JUMP, GQN) on a Narrative is needed")
    size, m = rec["config"]["data"]["image_size"], rec["config"]["data"]["eval_context"]
    data = args.data or rec["data"]
    test = jumpbench.open_dataset(data, split="test", image_size=size, dtype="float32")
    n = min(args.scenes, len(test))
    F = torch.stack([test[i]["frames"] for i in range(n)])
    V = torch.stack([test[i]["viewpoints"] for i in range(n)])
    out = {"run": f"{rec['dataset']}/{rec['model']}/{args.run.parent.name}/{args.run.name}",
           "step": rec["checkpoint_step"], "scenes": n, "samples": args.samples, "layouts": {}}
    static = static_scene(F)
    probe = None
    if rec["dataset"] == "color_reaction":
        try:
            probe = P.load_probe(data, size)
        except JumpbenchError as e:
            print(f"no reaction checks: {e}")
    scenes = DS.Scenes(data, "test", size) if probe else None
    checks = {}
    print(f"{'layout':42s} {'min-MSE':>8s} {'mean':>8s} {'posterior':>9s} {'post 1x1':>8s} {'nearest':>8s} "
          f"{'static':>8s}")
    for name, (ctx, tgt) in layouts(F.shape[1], m).items():
        cf, cv, tf, tv = F[:, ctx], V[:, ctx], F[:, tgt], V[:, tgt]
        with torch.no_grad():
            s = torch.cat(list(sample_chunks(model, cf, cv, tv, args.samples)), 1)    # (n, S, K, 3, H, W)
            per = ((s - tf[:, None]) ** 2).mean((2, 3, 4, 5))                         # (n, S)
            recon = model.elbo_terms(cf, cv, tf, tv)["mean"].float()                     # (n, K, 3, H, W)
            post = ((recon - tf) ** 2).mean().item()
            single = sum(((model.elbo_terms(cf, cv, tf[:, k:k + 1], tv[:, k:k + 1])["mean"].float()
                           - tf[:, k:k + 1]) ** 2).mean().item() for k in range(len(tgt))) / len(tgt)
        near = torch.tensor([min(ctx, key=lambda c: (abs(c - q), c)) for q in tgt])
        row = {"context": [c + 1 for c in ctx], "min_mse": per.min(1).values.mean().item(),
               "mean_mse": ((s.mean(1) - tf) ** 2).mean().item(), "posterior_mse": post,
               "posterior_one_target_mse": single,
               "nearest_context_mse": ((F[:, near] - tf) ** 2).mean().item(),
               "static_oracle_mse": ((static - tf) ** 2).mean().item()}
        if probe:
            row["checks"] = checks[name] = {}
            for who, frames in (("prior", s), ("posterior", recon[:, None])):
                scorer = Scorer(probe, scenes, range(n), m, query=tgt)
                scorer.add(frames)
                rates = scorer.result()
                row["checks"][who] = {k.removeprefix("reaction_forward_") if k != "reaction_forward" else "all": v
                                      for k, v in rates.items()}
        out["layouts"][name] = row
        print(f"{name:42s} {row['min_mse']:8.5f} {row['mean_mse']:8.5f} {row['posterior_mse']:9.5f} "
              f"{row['posterior_one_target_mse']:8.5f} {row['nearest_context_mse']:8.5f} "
              f"{row['static_oracle_mse']:8.5f}")
    if checks:
        names = list(next(iter(checks.values()))["prior"])
        print(f"\nreaction checks, pass rates (prior's {args.samples} samples / the posterior's reconstruction)")
        print(f"{'layout':42s} " + " ".join(f"{k:>11s}" for k in names))
        for name, c in checks.items():
            print(f"{name:42s} " + " ".join(f"{c['prior'][k]:5.2f}/{c['posterior'][k]:5.2f}" for k in names))
    write_json_atomic(args.out or args.run / "context_layouts.json", out)


if __name__ == "__main__":
    main()
