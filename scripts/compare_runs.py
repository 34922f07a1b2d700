"""Overlay the curves of a few run folders: one panel per metric, one line per run.

    python scripts/compare_runs.py RUN_DIR [RUN_DIR ...] --metric train_loss --metric test_mse --out fig.png

Used to check that bf16 training tracks fp32 within seed-to-seed noise (docs/lab-log.md):
give an fp32 run, a bf16 run of the same seed and an fp32 run of another seed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--metric", action="append", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.metric), figsize=(5 * len(args.metric), 3.8), squeeze=False)
    for run in args.runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        label = f"{run.parent.name}/{run.name}"
        for ax, metric in zip(axes[0], args.metric):
            pts = [(r["step"], r[metric]) for r in rows if metric in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    for ax, metric in zip(axes[0], args.metric):
        ax.set(xlabel="training steps", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
