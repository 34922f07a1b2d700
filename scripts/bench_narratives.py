"""Throughput of the Narratives generator, end to end (sample, draw, PNG-encode, serialize,
write shards), in one process, beside a naive PIL reference loop (a frame at a time: 5
polygons drawn, PNG level 1) run in the same process so that the ratio is meaningful on a noisy machine.

    python scripts/bench_narratives.py [--n 2000] [--frames 20] [--narrative traveling_salesman]
Prints frames per second, the naive loop's rate, their ratio, and peak RSS.
"""
import argparse
import io
import resource
import shutil
import tempfile
import time

import numpy as np


def naive_fps(n: int) -> float:
    """The naive reference: PIL draws 5 polygons per 64x64 frame, PNG level 1, one frame at a time."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(n):
        im = Image.new("RGB", (64, 64))
        d = ImageDraw.Draw(im)
        for k in range(5):
            x, y = rng.uniform(8, 56, 2)
            d.regular_polygon((float(x), float(y), float(rng.integers(3, 8))), 3 + k % 4,
                              fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        im.save(io.BytesIO(), format="PNG", compress_level=1)
    return n / (time.perf_counter() - t)


def main():
    from jumpbench.generators.base import generate
    from jumpbench.generators.narratives import NarrativesConfig, NarrativesGenerator

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="videos")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--narrative", default="traveling_salesman")
    ap.add_argument("--naive", type=int, default=4000, help="frames for the reference loop (0: skip)")
    args = ap.parse_args()
    gen = NarrativesGenerator(NarrativesConfig(args.narrative, args.frames, 64, 0))
    gen.scene("train", 0)  # warm caches (shape masks, protobuf import)
    out = tempfile.mkdtemp(prefix="jb-bench-")
    try:
        t = time.perf_counter()
        generate(gen, out, {"train": args.n, "test": 1}, shard_size=1000, workers=1, progress=False)
        dt = time.perf_counter() - t
    finally:
        shutil.rmtree(out)
    fps = (args.n + 1) * args.frames / dt
    print(f"narratives {args.narrative}, 64x64, {args.frames} frames, 1 process: {fps:,.0f} frames/s "
          f"({(args.n + 1) / dt:,.0f} videos/s)")
    if args.naive:
        ref = naive_fps(args.naive)
        print(f"naive PIL loop: {ref:,.0f} frames/s; ratio {fps / ref:.2f}x")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
