"""How much of the context a trained JUMP's latent can carry: the signal-to-noise ratio of its prior.

    python scripts/latent_snr.py results/runs/mnist_dice/jump/cpu/seed-0 --scenes 32

JUMP's renderer sees only the latent z and the query viewpoint, so everything it draws about a
scene, even what every context frame shows (a room's colours), must pass through z ~ P(z | r).
For each latent unit (channel x grid cell x DRAW step) this compares how much the prior's mean
varies across test scenes (the signal) with the prior's own standard deviation (the noise): a
unit with a ratio well below 1 is mostly noise to the renderer. Also printed: the posterior's
and the prior's standard deviations and how far their means are apart, and whether the renderer
reads the latent at all: the query frames' MSE when each scene's posterior latent is rendered,
another scene's (shuffled), or zeros, and how well the mean brightness of a rendered frame
follows the truth's across scenes, and its tint (each colour channel's mean minus the mean of
the three; correlations). Test scenes as the
evaluation's: narratives forward from the first `eval_context` frames, dice the hidden-face
protocol. Writes RUN/latent_snr.json (--out).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--scenes", type=int, default=32, help="Test scenes (the first N).")
    ap.add_argument("--data", default=None, help="The run's dataset folder [config.json's data].")
    ap.add_argument("--out", type=Path, default=None, help="[RUN/latent_snr.json]")
    args = ap.parse_args()

    import torch

    import jumpbench
    from jumpbench import dataset as DS
    from jumpbench.benchmarks import batches as B
    from jumpbench.files import write_json_atomic

    torch.manual_seed(0)
    model, rec = jumpbench.load_run(args.run)
    if rec["model"] != "jump":
        raise SystemExit(f"{args.run}: a JUMP run is needed (its renderer sees only the latent)")
    size, m = rec["config"]["data"]["image_size"], rec["config"]["data"]["eval_context"]
    data = args.data or rec["data"]
    scenes = DS.Scenes(data, "test", size)
    idx = list(range(min(args.scenes, len(scenes))))
    if rec["config"]["model"]["viewpoint_dim"] == 1:   # as the evaluator: forward from the first m frames
        items = B.stack(scenes, idx)
        b = B.prefix_split(items["frames"], items["viewpoints"], m)
    else:
        b = B.hidden_face_batch(scenes, idx, 3)
    trace: list[dict] = []
    with torch.no_grad():
        r = model.represent_sum(b["context_frames"], b["context_viewpoints"])
        r_targets = model.represent_sum(b["target_frames"], b["target_viewpoints"])
        _, z, _ = model.latent(r, r_targets, trace=trace)
        tf, tv = b["target_frames"], b["target_viewpoints"]
        renders = {"own": model.render(z, tv), "shuffled": model.render(z.roll(1, 0), tv),
                   "zero": model.render(torch.zeros_like(z), tv)}
    t = {k: torch.stack([step[k] for step in trace]) for k in trace[0]}   # (nt, N, nf_z, G, G)
    sigma_p, sigma_q = (0.5 * t["logvar_p"]).exp(), (0.5 * t["logvar_q"]).exp()
    snr = t["mu_p"].std(1) / sigma_p.mean(1)                               # per unit
    row = {"run": f"{rec['dataset']}/{rec['model']}/{args.run.parent.name}/{args.run.name}",
           "step": rec.get("checkpoint_step"), "scenes": int(r.shape[0]), "units": snr.numel(),
           "sigma_prior_median": sigma_p.median().item(), "sigma_posterior_median": sigma_q.median().item(),
           "mu_prior_std_across_scenes": t["mu_p"].std(1).mean().item(),
           "mu_posterior_minus_prior_abs": (t["mu_q"] - t["mu_p"]).abs().mean().item(),
           "snr_median": snr.median().item(), "snr_p90": snr.flatten().quantile(0.9).item(),
           "units_snr_above_1": (snr > 1).float().mean().item()}
    for name, x in renders.items():
        row[f"render_mse_{name}_latent"] = ((x.clamp(0, 1) - tf) ** 2).mean().item()
    bright = torch.stack([tf.mean((2, 3, 4)).flatten(), renders["own"].mean((2, 3, 4)).flatten()])
    row["brightness_correlation"] = torch.corrcoef(bright)[0, 1].item()
    tint = lambda x: x.mean((3, 4)) - x.mean((2, 3, 4))[..., None]   # (N, K, 3): each channel's departure from grey
    row["tint_correlation"] = torch.corrcoef(torch.stack([tint(tf).flatten(), tint(renders["own"]).flatten()]))[0, 1].item()
    for k, v in row.items():
        print(f"{k:32s} {v:.4g}" if isinstance(v, float) else f"{k:32s} {v}")
    write_json_atomic(args.out or args.run / "latent_snr.json", row)


if __name__ == "__main__":
    main()
