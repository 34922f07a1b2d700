"""Train several runs side by side on one GPU within a wall-clock budget.

    python scripts/gpu_burst.py --minutes 7 --run jump:data/color_reaction --run cdna:data/traveling_salesman \
        --run "jump:data/color_reaction:0:train.lr=1e-3"

Each --run MODEL:DATA[:SEED[:KEY=V;KEY=V]] becomes its own `jumpbench run` process (the cpu
preset unless --preset says otherwise; --set overrides apply to all runs, the run's own
after them, and a run with its own overrides gets them in its folder name). Small models leave a GPU mostly idle
waiting for kernel launches, so several processes fill it better than one. The frame caches
of the datasets are built first, once. At the deadline every run still going gets SIGTERM,
which checkpoints it at the next step boundary (it resumes with the same command later);
its metrics.jsonl keeps the evaluations made so far. Prints each run's final status.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="MODEL:DATA[:SEED[:K=V;K=V]]")
    ap.add_argument("--minutes", type=float, required=True, help="Wall-clock budget for the runs.")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--name", default=None, help="The runs' config name (folder) [the preset's].")
    ap.add_argument("--out", default="results/runs")
    ap.add_argument("--logs", default="results/logs")
    args = ap.parse_args()

    from jumpbench import cache as FC
    from jumpbench import dataset as DS
    from jumpbench.benchmarks import config as C
    from jumpbench.dataset import dataset_info

    runs = []
    for spec in args.run:
        parts = spec.split(":", 3)
        if len(parts) < 2:
            sys.exit(f"--run expects MODEL:DATA[:SEED[:K=V;K=V]], got {spec!r}")
        own = [o for o in parts[3].split(";") if o] if len(parts) == 4 else []
        runs.append((parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 0, own))
    for data in sorted({r[1] for r in runs}):  # one cache build per dataset and size
        info = dataset_info(data)
        sizes = {C.resolve(m, args.preset, info["name"], info, args.overrides + own)["data"].image_size
                 for m, d, _, own in runs if d == data}
        for size in sizes:
            FC.FrameCache(DS.Scenes(data, "train", size), progress=False)
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.minutes * 60
    procs = []
    for model, data, seed, own in runs:
        cmd = [sys.executable, "-m", "jumpbench.cli", "run", "--model", model, "--data", data, "--seed", str(seed),
               "--preset", args.preset, "--out", args.out, "--quiet"]
        for o in args.overrides + own:
            cmd += ["--set", o]
        name = args.name or args.preset
        if own:
            name = C.config_name(name, own)
        cmd += ["--name", name]
        log = open(Path(args.logs) / f"{model}-{Path(data).name}-{name}-{seed}.log", "w")
        procs.append(((model, data, seed, name), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    while any(p.poll() is None for _, p, _ in procs) and time.time() < deadline:
        time.sleep(5)
    for _, p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for name, p, log in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
        print(name, "exit", p.returncode, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
