"""Does a video run overfit its training videos? The same forward-prediction protocol on the
first N videos of the train split and of the test split, at the run's published weights or
checkpoint: the posterior's MSE (one latent from the posterior of the true continuation), the
KL, and the prior's min-MSE over S samples, beside repeat-last.

    python3 scripts/fit_gap.py results/runs/color_reaction/jump/flagship-anneal/seed-0 --n 128 --samples 10

The training loop's train_* terms come from random context/target splits, so they cannot be
set beside the test_* terms of forward prediction; this puts both splits on one protocol.
Equal numbers on both: the run underfits (more data would not help; fitting would); train
clearly lower: it overfits.
"""
from __future__ import annotations

import argparse
import time

import torch

from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks import machine as M
from jumpbench.benchmarks.evaluation.evaluate import baseline_mse, min_mse
from jumpbench.benchmarks.runs import Run, run_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="A video run folder (traveling_salesman or color_reaction).")
    ap.add_argument("--n", type=int, default=128, help="Videos of each split.")
    ap.add_argument("--samples", type=int, default=10, help="Prior samples per video for min-MSE.")
    ap.add_argument("--seeds", type=int, default=1,
                    help="Draw the prior's samples under this many seeds: the min-MSE's spread from sampling alone.")
    ap.add_argument("--splits", default="train,test", help="Which splits (comma-separated).")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, record = Run(args.run).load()
    model.eval()
    data, size, m = run_dataset(record), record["config"]["data"]["image_size"], record["config"]["data"]["eval_context"]
    precision = M.resolve_precision("auto", torch.device("cpu"))
    print(f"{args.run}: {args.n} videos per split, context {m} frames, {args.samples} samples, {precision}")
    for split in args.splits.split(","):
        t = time.time()
        items = B.stack(DS.Scenes(data, split, size), range(args.n))
        frames = DS.to_float(items["frames"])
        with torch.no_grad(), M.autocast(precision, torch.device("cpu")):
            torch.manual_seed(0)
            out = model(B.prefix_split(items["frames"], items["viewpoints"], m), 10 ** 9)
            priors = []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                priors.append(float(min_mse(model, frames, m, args.samples).mean()))
        spread = f" (seeds: {', '.join(f'{p:.5f}' for p in priors)})" if args.seeds > 1 else ""
        print(f"{split:5s}  posterior MSE {float(out['mse']):.5f}  KL {float(out['kl']):6.2f}  "
              f"prior min-MSE {sum(priors) / len(priors):.5f}{spread}  "
              f"repeat-last {baseline_mse(frames, m)['repeat_last']:.5f}  ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
