"""Inject the faults of issue 11 on small data and check that nothing is lost or mislabelled.

    python scripts/fault_injection.py [--keep DIR]

Each fault is set up on a small Traveling Salesman set (or a smoke run on it), injected, and
then judged: it "survived with nothing lost" when jumpbench either refused with one line (and
left the data as it was) or repaired it, and the data read back afterwards is the right one.
Prints one line per fault and, last, `faults injected N, survived with nothing lost M`.
Takes about a minute on one core.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from click.testing import CliRunner  # noqa: E402

from jumpbench.cli import cli  # noqa: E402

GEN = ["generate", "narratives", "--n", "12", "--test-n", "4", "--shard-size", "4", "--quiet"]
RUN = ["run", "--model", "jump", "--preset", "smoke", "--quiet", "--name", "r"]


def cli_run(*args) -> tuple[int, str]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    return r.exit_code, r.output.strip()


def one_line_refusal(code: int, out: str, text: str = "") -> bool:
    return code != 0 and "Traceback" not in out and len(out.splitlines()) == 1 and text in out


def tree_hash(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def scene_bytes(root: Path) -> list[bytes]:
    from jumpbench.records import Dataset

    ds = Dataset(root)
    return [ds.raw(s, i) for s in ("train", "test") for i in range(ds.num(s))]


def dataset(tmp: Path, name: str, *extra) -> Path:
    code, out = cli_run(*GEN, "--out", tmp / name, *extra)
    assert code == 0, out
    return tmp / name / "traveling_salesman"


def interrupted_run(tmp: Path, data: Path, name: str) -> Path:
    """A smoke run stopped by a crash in step 4 (its checkpoint is the one of step 3)."""
    from jumpbench.benchmarks.train import train
    from jumpbench.models.jump import JUMP

    real = JUMP.forward

    def forward(self, batch, step):
        if step == 4:
            raise KeyboardInterrupt
        return real(self, batch, step)

    JUMP.forward = forward
    try:
        train("jump", data, "smoke", [], 0, tmp / name, name="r", progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        JUMP.forward = real
    return tmp / name / "traveling_salesman" / "jump" / "r" / "seed-0"


# ---------------------------------------------------------------- the faults

def rebuilt_manifest_other_params(tmp, ref):
    root = dataset(tmp, "f1")
    before = tree_hash(root)
    (root / "manifest.json").unlink()
    code, out = cli_run(*GEN, "--out", tmp / "f1", "--seed", "7", "--size", "32")
    refused = one_line_refusal(code, out, "other parameters")
    code2, _ = cli_run(*GEN, "--out", tmp / "f1")  # the right parameters bring it back
    return refused and code2 == 0 and tree_hash(root) == before


def bytes_across_processes(tmp, ref):
    roots = []
    for k in ("a", "b"):
        cmd = [sys.executable, "-m", "jumpbench.cli", *GEN, "--out", str(tmp / f"f2{k}")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "random"})
        if proc.returncode:
            return False
        roots.append(tmp / f"f2{k}" / "traveling_salesman")
    return tree_hash(roots[0]) == tree_hash(roots[1]) == tree_hash(ref)


def swapped_index(tmp, ref):
    root = shutil.copytree(ref, tmp / "f3" / "traveling_salesman")
    index = root / "train" / "1-of-3.tfindex"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join([lines[1], lines[0]] + lines[2:]))
    code, out = cli_run("verify", "--quiet", root)
    try:
        scene_bytes(root)
        reader_refuses = False
    except Exception as e:
        reader_refuses = "1-of-3" in str(e)
    return one_line_refusal(code, out, "1-of-3.tfindex") and reader_refuses


def deleted_index(tmp, ref):
    root = shutil.copytree(ref, tmp / "f4" / "traveling_salesman")
    (root / "test" / "1-of-1.tfindex").unlink()
    code, out = cli_run("verify", "--quiet", root)
    caught = one_line_refusal(code, out, "1-of-1.tfindex")
    code2, out2 = cli_run(*GEN[:-1], "--out", tmp / "f4")
    return caught and code2 == 0 and "repaired 1" in out2 and tree_hash(root) == tree_hash(ref)


def _resume_with(tmp, ref, name, setting, differs):
    """A crashed run re-run with `--set setting`: refused naming `differs`, config.json kept."""
    folder = interrupted_run(tmp, ref, name)
    config = (folder / "config.json").read_bytes()
    code, out = cli_run(*RUN, "--data", ref, "--out", tmp / name, "--set", setting)
    return one_line_refusal(code, out, differs) and (folder / "config.json").read_bytes() == config


def resume_other_config(tmp, ref):
    return _resume_with(tmp, ref, "f5", "lr=0.01", "train.lr")


def resume_other_model_size(tmp, ref):
    return _resume_with(tmp, ref, "f7", "model.nf_z=5", "model.nf_z")


def resume_other_data(tmp, ref):
    folder = interrupted_run(tmp, ref, "f6")
    other = dataset(tmp, "f6data", "--seed", "3")
    code, out = cli_run(*RUN, "--data", other, "--out", tmp / "f6")
    return one_line_refusal(code, out, "dataset_sha256") and json.loads(
        (folder / "config.json").read_text())["data"] == str(ref)


def corrupted_checkpoint(tmp, ref):
    folder = interrupted_run(tmp, ref, "f8")
    ckpt = folder / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    at = int(len(data) * 0.3)
    data[at:at + 64] = bytes(64)
    ckpt.write_bytes(bytes(data))
    code, out = cli_run(*RUN, "--data", ref, "--out", tmp / "f8")
    status = json.loads((folder / "status.json").read_text())
    return one_line_refusal(code, out, "checkpoint.pt") and status["status"] == "failed"


def two_writers(tmp, ref):
    out = tmp / "f9"
    cmd = [sys.executable, "-m", "jumpbench.cli", "generate", "narratives", "--n", "400", "--test-n", "4",
           "--shard-size", "50", "--quiet", "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = out / "traveling_salesman"
    deadline = time.time() + 60
    while not (root / ".generating.json").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True)
    first.wait()
    refused = one_line_refusal(second.returncode, second.stderr.strip(), "being written by another")
    code, _ = cli_run("verify", "--quiet", root)
    return refused and first.returncode == 0 and code == 0


def kill9_generate(tmp, ref):
    out = tmp / "f10"
    cmd = [sys.executable, "-m", "jumpbench.cli", "generate", "narratives", "--n", "400", "--test-n", "4",
           "--shard-size", "50", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = out / "traveling_salesman"
    deadline = time.time() + 60
    while not list((root / "train").glob("*.tfmeta")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    mid_run = proc.poll() is None
    if mid_run:
        os.kill(proc.pid, signal.SIGKILL)  # holding the lock, mid-shard
    proc.wait()
    again = subprocess.run(cmd, capture_output=True, text=True)  # the dead writer's lock is taken over
    code, _ = cli_run("verify", "--quiet", root)
    fresh = subprocess.run(cmd[:-1] + [str(tmp / "f10ref")], capture_output=True, text=True)
    return mid_run and again.returncode == 0 and code == 0 and fresh.returncode == 0 and \
        tree_hash(root) == tree_hash(tmp / "f10ref" / "traveling_salesman")


def foreign_shard(tmp, ref):
    root = shutil.copytree(ref, tmp / "f11" / "traveling_salesman")
    other = dataset(tmp, "f11other", "--narrative", "color_reaction")
    other = other.parent / "color_reaction"
    for ext in ("tfrecord", "tfindex"):
        shutil.copy(other / "test" / f"1-of-1.{ext}", root / "test" / f"1-of-1.{ext}")
    code, out = cli_run(*RUN, "--data", root, "--out", tmp / "f11runs")
    code2, out2 = cli_run("verify", "--quiet", root)
    return one_line_refusal(code, out, "1-of-1.tfrecord") and one_line_refusal(code2, out2, "1-of-1.tfrecord")


def corrupted_shard(tmp, ref):
    root = shutil.copytree(ref, tmp / "f12" / "traveling_salesman")
    shard = root / "train" / "2-of-3.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, out = cli_run("verify", "--quiet", root)
    return one_line_refusal(code, out, "2-of-3.tfrecord")


def torn_metrics(tmp, ref):
    folder = interrupted_run(tmp, ref, "f13")
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "wall": 0.1, "train_lo')
    code, out = cli_run(*RUN, "--data", ref, "--out", tmp / "f13")
    rows = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines()]
    return code == 0 and [r["step"] for r in rows] == [3, 6]


def full_disk(tmp, ref):
    from jumpbench import records

    real, calls = records.frame_record, {"n": 0}

    def full(data):
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(28, "No space left on device")
        return real(data)

    records.frame_record = full
    try:
        code, out = cli_run(*GEN, "--out", tmp / "f14")
    finally:
        records.frame_record = real
    refused = one_line_refusal(code, out, "disk full")
    code2, _ = cli_run(*GEN, "--out", tmp / "f14")
    root = tmp / "f14" / "traveling_salesman"
    return refused and code2 == 0 and tree_hash(root) == tree_hash(ref)


def bad_manifest(tmp, ref):
    ok = True
    for bad in ({}, [1], "many"):
        root = shutil.copytree(ref, tmp / f"f15{len(str(bad))}" / "traveling_salesman")
        m = json.loads((root / "manifest.json").read_text())
        if bad == "many":
            m["splits"]["train"]["shards"][0]["records"] = "many"
        else:
            m = bad
        (root / "manifest.json").write_text(json.dumps(m))
        for args in (["verify", root], ["view", root, "--out", tmp / "v.png"], [*RUN, "--data", root, "--out",
                                                                                 tmp / "f15runs"]):
            ok &= one_line_refusal(*cli_run(*args), "manifest")
    return ok


FAULTS = [rebuilt_manifest_other_params, bytes_across_processes, swapped_index, deleted_index,
          resume_other_config, resume_other_data, resume_other_model_size, corrupted_checkpoint, two_writers,
          kill9_generate, foreign_shard, corrupted_shard, torn_metrics, full_disk, bad_manifest]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="Work in this folder and keep it.")
    args = ap.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="jumpbench-faults-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        ref = dataset(tmp, "reference")
        ok = 0
        for fault in FAULTS:
            t = time.perf_counter()
            try:
                survived = bool(fault(tmp, ref))
            except Exception as e:  # a fault that broke the harness counts as lost
                survived, why = False, f" ({type(e).__name__}: {e})"
            else:
                why = ""
            ok += survived
            print(f"{'ok  ' if survived else 'LOST'} {fault.__name__} ({time.perf_counter() - t:.1f} s){why}",
                  flush=True)
        print(f"faults injected {len(FAULTS)}, survived with nothing lost {ok}")
        return 0 if ok == len(FAULTS) else 1
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
