"""How well a run continued from its published weights joins the uninterrupted run.

    python scripts/continuation.py --data data/color_reaction --steps 1000 --out /tmp/continuation

Trains one run straight to --steps, and the same run to half of it, then continues that half
(with `jumpbench run --extend`, its checkpoint.pt deleted, as on a fresh clone) two ways: from
weights.safetensors with Adam's moments in bf16 (what training publishes), and from weights
alone (`jumpbench publish --weights-only`: a new Adam with a learning-rate warm-up). The
batches and noise of a step are functions of (seed, step), so every difference between the
curves is the carried state's. Prints the train loss of every evaluation after the join, each
continuation's relative difference from the straight run, and the mean and largest of them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def jumpbench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "jumpbench.cli", *args], check=True)


def losses(folder: Path, after: int) -> dict[int, float]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["train_loss"] for r in rows if r["step"] > after}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/color_reaction")
    ap.add_argument("--model", default="jump")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--out", default="/tmp/jumpbench-continuation")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    out, half = Path(args.out), args.steps // 2
    shutil.rmtree(out, ignore_errors=True)
    sets = [f"train.eval_every={args.eval_every}", "train.eval_scenes=4", "train.eval_samples=2", *args.overrides]
    common = ["--model", args.model, "--data", args.data, "--preset", args.preset, "--quiet", "--name", "c"]
    for o in sets:
        common += ["--set", o]

    def folder(variant: str) -> Path:
        return next((out / variant).glob("*/*/c/seed-0"))

    jumpbench("run", *common, "--steps", str(args.steps), "--out", str(out / "straight"))
    jumpbench("run", *common, "--steps", str(half), "--out", str(out / "moments"))
    shutil.copytree(out / "moments", out / "weights-only")
    jumpbench("publish", "--weights-only", str(folder("weights-only")))
    for variant in ("moments", "weights-only"):
        for f in folder(variant).glob("checkpoint.pt*"):
            f.unlink()
        jumpbench("run", *common, "--steps", str(args.steps), "--extend", "--out", str(out / variant))

    straight = losses(folder("straight"), half)
    cont = {v: losses(folder(v), half) for v in ("moments", "weights-only")}
    print(f"\n{args.model} {args.preset} on {Path(args.data).name}: train loss after a join at step {half}")
    print(f"{'step':>6} {'straight':>12} {'moments (bf16)':>16} {'weights only':>16}")
    rel = {v: [] for v in cont}
    for step, loss in sorted(straight.items()):
        cells = []
        for v in cont:
            r = cont[v][step] / loss - 1
            rel[v].append(abs(r))
            cells.append(f"{cont[v][step]:>10.2f} {r:+.2%}")
        print(f"{step:>6} {loss:>12.2f} {cells[0]:>16} {cells[1]:>16}")
    for v, r in rel.items():
        print(f"{v}: |relative difference| mean {sum(r) / len(r):.2%}, largest {max(r):.2%} over {len(r)} evaluations")


if __name__ == "__main__":
    main()
