"""Throughput of the MNIST Dice generator (JUMP, Kumar, Eslami et al., ICLR 2019, sec. 4.2).

Frames per second end to end (sample, render with spot-light shadows, PNG-encode, write
shards) at 64x64, in one process and with --workers 2, and the resident memory of the
one-process run sampled while it renders a few thousand frames (it should stay flat).

    .venv/bin/python scripts/bench_dice.py [--scenes 300] [--workers 1 2] [--size 64]
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time

from jumpbench.generators.base import generate
from jumpbench.generators.dice import DiceConfig, DiceGenerator


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Samples this process's resident memory every `every` seconds while it runs."""

    def __init__(self, every: float = 0.25):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    def run(self):
        t0 = time.perf_counter()
        while not self.stop.wait(self.every):
            self.samples.append((time.perf_counter() - t0, rss_mb()))


def run(scenes: int, workers: int, size: int, views: int) -> None:
    gen = DiceGenerator(DiceConfig(views=views, size=size))
    if workers == 1:
        gen.scene("train", 0)  # open this process's renderer (about 0.2-2 s) before timing
    sampler = RssSampler()
    with tempfile.TemporaryDirectory() as out:
        sampler.start()
        t0, c0 = time.perf_counter(), time.process_time()
        generate(gen, out, {"train": scenes}, shard_size=25, workers=workers, progress=False)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        sampler.stop.set()
    frames = scenes * views
    print(f"workers={workers}: {scenes} scenes x {views} views = {frames} frames in {dt:.1f} s: "
          f"{frames / dt:.0f} frames/s ({frames / dt / workers:.0f} per process)"
          + (f"; {frames / cpu:.0f} frames per CPU-second of this process (all its threads)"
             if workers == 1 else ", renderer start-up in each worker included"))
    if workers == 1 and sampler.samples:
        s = sampler.samples
        marks = [s[min(len(s) - 1, int(q * len(s)))] for q in (0.1, 0.25, 0.5, 0.75, 1.0)]
        print("  RSS MB at " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in marks)
              + f"; peak {max(m for _, m in s):.0f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--views", type=int, default=12)
    args = ap.parse_args()
    for w in args.workers:
        run(args.scenes, w, args.size, args.views)


if __name__ == "__main__":
    main()
