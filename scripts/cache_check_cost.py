"""What a frame cache's proof costs a run (cache.FrameCache): opening checks, and the per-scene
check of the scenes that batches use. Works on a copy; the cache it copies is only read.

    python scripts/cache_check_cost.py --data data/color_reaction --size 32 [--repeats 5]

Copies the split's cache (from $JUMPBENCH_CACHE or ~/.cache/jumpbench; one is built in the
temporary folder when there is none) into a temporary cache folder, gives the copy a proof
when it has none (an older jumpbench's), then times, after a warm-up read: reading the arrays
alone (what opening cost before caches proved themselves), opening with every check, and
checking every scene against the index once (what batches add over a whole run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/color_reaction")
    ap.add_argument("--split", default="train")
    ap.add_argument("--size", type=int, default=32, help="data.image_size (the cpu preset's 32)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from jumpbench import cache as FC
    from jumpbench import dataset as DS

    scenes = DS.Scenes(args.data, args.split, args.size)
    originals, original_proof = FC.FrameCache.paths(scenes), FC.FrameCache.proof_paths(scenes)
    tmp = Path(tempfile.mkdtemp(prefix="jumpbench-cache-cost-"))
    os.environ["JUMPBENCH_CACHE"] = str(tmp)
    try:
        copies = FC.FrameCache.paths(scenes)
        copies[0].parent.mkdir(parents=True)
        if all(p.is_file() for p in originals):
            for a, b in zip(originals, copies):
                shutil.copyfile(a, b)
            print(f"copied {originals[0].parent} ({sum(p.stat().st_size for p in copies) / 1e6:.0f} MB)")
            if all(p.is_file() for p in original_proof):
                for a, b in zip(original_proof, FC.FrameCache.proof_paths(scenes)):
                    shutil.copyfile(a, b)
            else:  # an older jumpbench's cache: prove the copy as it is, for the timing
                t = time.perf_counter()
                FC.FrameCache._save((np.load(copies[0]), np.load(copies[1])), scenes)
                print(f"gave the copy a proof ({time.perf_counter() - t:.1f} s: hashing every scene, writing)")
        else:
            FC.FrameCache(scenes)
        n = len(scenes)
        np.load(copies[0]), np.load(copies[1])  # warm-up: the files in the page cache

        def timed(fn) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        def checks_alone():  # what _check does besides reading the arrays whole
            import hashlib

            from jumpbench.files import read_json

            proof_path = FC.FrameCache.proof_paths(scenes)
            proof, want = read_json(proof_path[1]), FC.FrameCache._proof(scenes)
            assert all(proof[k] == want[k] for k in ("dataset_sha256", "params_sha256", "frames", "viewpoints"))
            for path in (*copies, proof_path[0]):
                np.load(path, mmap_mode="r").shape
            assert np.isfinite(vps).all() and hashlib.sha256(vps).hexdigest() == proof["viewpoints_sha256"]
            assert hashlib.sha256(index).hexdigest() == proof["index_sha256"]
            for i in np.random.default_rng().choice(n, min(FC.SPOT_CHECK, n), replace=False):
                assert FC._sha(frames[i]) == index[i].tobytes()

        frames, vps, index = np.load(copies[0]), np.load(copies[1]), np.load(FC.FrameCache.proof_paths(scenes)[0])
        read, opened, alone = [], [], []
        for _ in range(args.repeats):  # interleaved: the machine's load falls on both alike
            read.append(timed(lambda: (np.load(copies[0]), np.load(copies[1]))))
            opened.append(timed(lambda: FC.FrameCache._open(scenes)[0] or sys.exit("the copy does not prove itself")))
            alone.append(timed(checks_alone))
        read, opened, alone = (statistics.median(x) for x in (read, opened, alone))
        cache = FC.FrameCache(scenes, progress=False)
        cache.checked[:] = False
        t = time.perf_counter()
        for a in range(0, n, 16):
            cache._verify(np.arange(a, min(a + 16, n)))
        every = time.perf_counter() - t
        print(f"{n} scenes of {scenes.frames} frames at {args.size}x{args.size}, "
              f"{os.path.getsize(copies[0]) / 1e6:.0f} MB of frames; median of {args.repeats}:")
        print(f"  read the arrays alone:         {read * 1e3:8.1f} ms")
        print(f"  open with every check:         {opened * 1e3:8.1f} ms")
        print(f"  the opening checks alone:      {alone * 1e3:8.1f} ms "
              f"(proof, shapes, finite viewpoints, index, {min(FC.SPOT_CHECK, n)} scenes' hashes)")
        print(f"  every scene checked once:      {every * 1e3:8.1f} ms over a run "
              f"({every / n * 16 * 1e3:.2f} ms per batch of 16 new scenes)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
