"""One leg of a run on a machine lent for minutes (a GPU): continue it from its published weights.

    python3 scripts/gpu_leg.py results/runs/color_reaction/jump/flagship-anneal/seed-0 --minutes 9

In one command, from a fresh checkout with nothing but the repository:
1. makes jumpbench importable (`--wheels DIR`: first installs the wheels there, for packages the
   machine lacks and cannot fetch; `scripts/gpu_leg.py --fetch-wheels DIR` downloads them on a
   machine that reaches PyPI);
2. writes the run's dataset again from what its config.json records, with every core;
3. continues the run (`jumpbench continue`: its own model, preset, overrides, seed and name; from
   its checkpoint.pt if there is one, else from weights.safetensors) for --minutes of training,
   on the GPU when there is one, each step replayed from a CUDA graph (train.cuda_graph=true,
   unless --set train.cuda_graph=false) with the frames held on the GPU; the leg is recorded in
   legs.json like any other;
4. packs the run folder, less checkpoint.pt (never committed), as $OUT/leg.tar.gz (or --out):
   unpack it over the run folder of the checkout to commit the leg;
5. on a GPU (unless --no-bench), times the run's training step eager and replayed
   (`jumpbench bench train`, synthetic batches of the run's sizes), into $OUT/train_speed.json.

Prints the step it reached, the leg's mean time per step (evaluations included), and the
benchmark's milliseconds per step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what jumpbench imports that an image with PyTorch, numpy, pillow, matplotlib, tqdm, click and
# safetensors may lack (pyrender and trimesh only render dice: a leg regenerates dice only with them)
WHEELS = ("crc32c", "submitit", "cloudpickle", "typing-extensions")
BUILT = ("tfrecord>=1.14.6",)  # pure Python, published as a source archive only from 1.14.6 (needed: docs/records.md)
SETUP_MINUTES = 1.0  # a second `continue` (the eager fallback) starts in about this long


def fetch_wheels(folder: Path, python: str = "3.12") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
                        "--platform", "manylinux2014_x86_64", "--platform", "any", "-d", str(folder), name], check=True)
    for name in BUILT:  # a wheel built here from the source archive (no compiled code: runs anywhere)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), name], check=True)
    print(f"wheels in {folder}: {', '.join(sorted(p.name for p in folder.glob('*.whl')))}")


def environment(wheels: Path | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [str(ROOT)]
    if wheels is not None:
        site = Path("/tmp/jumpbench-site")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))], check=True)
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", help="The run folder (results/runs/<dataset>/<model>/<name>/seed-<k>).")
    ap.add_argument("--minutes", type=float, default=9.0, help="Minutes of training (the set-up comes before).")
    ap.add_argument("--wheels", type=Path, default=None, help="Install the wheels in this folder first.")
    ap.add_argument("--fetch-wheels", type=Path, default=None, metavar="DIR",
                    help="Only download the wheels a GPU image may lack into DIR (here, with PyPI), then stop.")
    ap.add_argument("--python", default="3.12", help="--fetch-wheels: for this Python (the GPU image's: 3.12).")
    ap.add_argument("--data", default=str(ROOT / "data"), help="Where to write the dataset again.")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/jumpbench-leg")))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="How this leg runs (train.threads, num_workers, cache, cache_gb, log_every, compile, "
                         "cuda_graph).")
    ap.add_argument("--no-bench", dest="bench", action="store_false",
                    help="Skip timing the step after the leg (a GPU's: about a minute).")
    args = ap.parse_args()
    if args.fetch_wheels:
        fetch_wheels(args.fetch_wheels, args.python)
        return
    if not args.run:
        ap.error("give the run folder")
    run = Path(args.run).resolve()
    env = environment(args.wheels)
    t0 = time.time()

    sys.path[:0] = env["PYTHONPATH"].split(os.pathsep)
    from jumpbench.api import generate_for_run

    data = generate_for_run(run, args.data, workers=args.workers, progress=False)
    print(f"dataset {data} written again in {time.time() - t0:.0f} s", flush=True)

    import torch

    gpu = torch.cuda.is_available()
    overrides = list(args.overrides)
    graphed = gpu and _graphable(run) and not any(o.split("=")[0].strip() == "train.cuda_graph" for o in overrides)
    before, t_leg = _legs(run), time.time()
    proc = subprocess.run(_continue(run, data, args.minutes, overrides + ["train.cuda_graph=true"] * graphed), env=env)
    left = args.minutes - (time.time() - t_leg) / 60 - SETUP_MINUTES
    status = _status(run)
    if graphed and proc.returncode not in (0, 130) and status == "failed" and left >= 1:
        # the leg failed with graphs on this machine (a capture, its check, memory): the rest eagerly
        print(f"the leg with CUDA graphs failed (exit {proc.returncode}); {left:.1f} minutes left, eagerly", flush=True)
        proc = subprocess.run(_continue(run, data, left, overrides + ["train.cuda_graph=false"]), env=env)
    legs = _legs(run)
    if len(legs) > len(before) and legs[-1].get("to", 0) > legs[-1].get("from", 0):
        leg = legs[-1]
        steps = leg["to"] - leg["from"]
        print(f"leg: steps {leg['from']} -> {leg['to']} on {leg['machine']} ({leg['device']}, {leg['precision']}); "
              f"{leg['wall_s']:.0f} s, {1000 * leg['wall_s'] / steps:.1f} ms per step (evaluations included)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.out / "leg.tar.gz", "w:gz") as tar:
        for f in sorted(run.iterdir()):
            if f.is_file() and not f.name.startswith("checkpoint"):
                tar.add(f, arcname=f.name)
    where = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run
    print(f"wrote {args.out / 'leg.tar.gz'}: unpack it over {where} and commit it", flush=True)
    if gpu and args.bench:
        bench(run, env, args.out / "train_speed.json")
    sys.exit(proc.returncode)


def bench(run: Path, env: dict, out: Path) -> None:
    """`jumpbench bench train` at the run's model, preset and settings (its overrides that say
    what the run is), on the GPU: the eager and the replayed step side by side."""
    from jumpbench.benchmarks.runs import EXECUTION

    record = json.loads((run / "config.json").read_text())
    execution = {k.removeprefix("config.") for k in EXECUTION}
    cmd = [sys.executable, "-m", "jumpbench.cli", "bench", "train", "--device", "cuda", "--models", record["model"],
           "--preset", record["preset"], "--dataset", record["dataset"], "--steps", "20", "--out", str(out)]
    for o in record.get("overrides", []):
        if o.split("=")[0].strip() not in execution:
            cmd += ["--set", o]
    subprocess.run(cmd, env=env)


def _continue(run: Path, data: Path, minutes: float, overrides: list) -> list:
    cmd = [sys.executable, "-m", "jumpbench.cli", "continue", str(run), "--data", str(data),
           "--minutes", f"{minutes:.2f}", "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def _graphable(run: Path) -> bool:
    """Whether the run's steps can be replayed from CUDA graphs here (training/graphs.why_not)."""
    import torch

    from jumpbench.benchmarks.training.graphs import why_not
    from jumpbench.models import MODELS

    record = json.loads((run / "config.json").read_text())
    return why_not(MODELS[record["model"]][0], torch.device("cuda"), record.get("world_size", 1),
                   record["config"]["train"].get("compile", False)) is None


def _status(run: Path) -> str | None:
    try:
        return json.loads((run / "status.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _legs(run: Path) -> list:
    try:
        return json.loads((run / "legs.json").read_text())
    except (OSError, ValueError):
        return []


if __name__ == "__main__":
    main()
