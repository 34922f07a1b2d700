"""The one training loop, for every model in the registry (DESIGN.md, "Training and runs").

results/runs/<dataset>/<model>/<config-name>/seed-<k>/ holds config.json, metrics.jsonl (one
line per evaluation), status.json (running|done|diverged|failed, and why), samples.png and
checkpoint.pt. A run resumes from its checkpoint exactly: the batches and the noise of step
s are pure functions of (seed, s). Started under `torchrun`, it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); rank 0 writes the files.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from jumpbench.benchmarks import board
from jumpbench.benchmarks import config as C
from jumpbench.benchmarks import data as D
from jumpbench.benchmarks import machine as M
from jumpbench.benchmarks import runs
from jumpbench.errors import JumpbenchError
from jumpbench.records import load_manifest, read_json

MISSING_DATA = {  # the command that makes each dataset, for the one-line hint
    "traveling_salesman": "jumpbench generate narratives",
    "color_reaction": "jumpbench generate narratives --narrative color_reaction",
    "mnist_dice": "jumpbench generate dice",
}


def dataset_info(data: str | Path) -> dict:
    data = Path(data)
    if not (data / "manifest.json").is_file():
        hint = MISSING_DATA.get(data.name, "jumpbench generate ...")
        raise JumpbenchError(f"no dataset at {data} (make it with: {hint} --out {data.parent})")
    m = load_manifest(data)
    key = m["viewpoint"]["key"]
    frames = m["params"].get("frames") or m["params"].get("views")
    return {"name": m["dataset"], "viewpoint_key": key, "viewpoint_dim": D.VIEWPOINT_DIMS[key],
            "frames": int(frames), "size": int(m["params"]["size"])}


def run_dir(out: str | Path, dataset: str, model: str, name: str, seed: int) -> Path:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise JumpbenchError(f"--name {name!r}: give a plain folder name (no path separators, not '.' or '..')")
    return Path(out) / dataset / model / name / f"seed-{seed}"


def check_model_fits(model_name: str, info: dict) -> None:
    """Video-only models (not jumpy: they roll frames forward in time) need a video dataset."""
    from jumpbench.models import MODELS

    if not MODELS[model_name][0].jumpy and info["viewpoint_key"] != "timestamps":
        raise JumpbenchError(f"{model_name} is a video model: it needs a video dataset (traveling_salesman or "
                             f"color_reaction), not {info['name']}; on {info['name']} use jump or gqn")


def read_status(path: Path) -> dict | None:
    return read_json(Path(path) / "status.json")


def _dist() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return (torch.distributed.get_rank() if world > 1 else 0), world


def _record(model_name: str, data, preset: str, overrides: list[str], seed: int, world: int,
            info: dict, cfg: dict) -> dict:
    """config.json's content: what a resume must match (runs.IDENTITY) and how the run was asked for."""
    return {"model": model_name, "data": str(data), "dataset": info["name"], "dataset_sha256": runs.dataset_sha256(data),
            "preset": preset, "overrides": list(overrides), "seed": seed, "world_size": world,
            "config": C.to_dict(cfg)}


def pending(model_name: str, data, preset: str, overrides: list[str], seed: int, out, name: str,
            extend: bool = False) -> tuple[Path, dict | None]:
    """(run folder, its status if the run is finished under this very config, else None). A
    finished run under another config is refused naming the keys, unless `extend` asks for more
    steps of it (then None: it has work to do)."""
    info = dataset_info(data)
    cfg = C.resolve(model_name, preset, info["name"], info, list(overrides))
    folder = run_dir(out, info["name"], model_name, name, seed)
    if extend and not (folder / runs.CONFIG).is_file():
        raise JumpbenchError(f"--extend: no run to continue at {folder}")
    status = read_status(folder)
    if not status or status["status"] not in ("done", "diverged"):
        return folder, None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    extended = runs.open_run(folder, _record(model_name, data, preset, overrides, seed, world, info, cfg),
                             write=False, extend=extend)
    return folder, None if extended and status["status"] == "done" else status


def train(model_name: str, data: str | Path, preset: str = "cpu", overrides: list[str] = (), seed: int = 0,
          out: str | Path = "results/runs", name: str | None = None, progress: bool = True,
          tensorboard: bool = False, extend: bool = False) -> Path:
    """Train one seed of one model; returns its run folder. Resumes a checkpoint if present;
    does nothing for a run already done. `tensorboard`: also write TensorBoard events into the
    run folder (board.py; not part of the config). `extend`: continue a run (done or not) to a
    larger train.steps, everything else unchanged (runs.open_run)."""
    from jumpbench.models import MODELS

    info = dataset_info(data)
    check_model_fits(model_name, info)
    if tensorboard:
        board.require()
    cfg = C.resolve(model_name, preset, info["name"], info, list(overrides))
    tc, dc = cfg["train"], cfg["data"]
    if info["size"] % dc.image_size:
        raise JumpbenchError(f"data.image_size {dc.image_size} must divide the dataset's {info['size']}")
    folder = run_dir(out, info["name"], model_name, name or C.config_name(preset, list(overrides)), seed)
    if extend and not (folder / runs.CONFIG).is_file():
        raise JumpbenchError(f"--extend: no run to continue at {folder}")
    rank, world = _dist()
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    M.setup_device(device)
    if device.type == "cpu":
        torch.set_num_threads(tc.threads or M.default_threads())
    precision = M.resolve_precision(tc.precision, device)
    # config.json is written once; a resume under another config or dataset is refused
    extended = runs.open_run(folder, _record(model_name, data, preset, overrides, seed, world, info, cfg),
                             write=rank == 0, extend=extend)
    status = read_status(folder)
    if status and (status["status"] == "diverged" or (status["status"] == "done" and not extended)):
        return folder

    # Model, optimizer, and the checkpoint to resume from.
    torch.manual_seed(seed)
    model = MODELS[model_name][0](cfg["model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    step, wall, resumed = 0, 0.0, ({}, 0)
    ckpt_path = folder / "checkpoint.pt"
    if ckpt_path.is_file():
        try:  # a checksummed load; a bad checkpoint names its file and marks the run failed
            ckpt = runs.load_checkpoint(ckpt_path, map_location=device)
            runs.load_state(ckpt_path, model, ckpt["model"])
            runs.load_state(ckpt_path, opt, ckpt["optimizer"], "optimizer state")
        except JumpbenchError as e:
            if rank == 0:
                _status(folder, "failed", str(e))
            raise
        step, wall = ckpt["step"], ckpt["wall"]
        torch.set_rng_state(ckpt["rng"])
        resumed = (ckpt.get("sums", {}), ckpt.get("count", 0))  # the train_* sums since the last evaluation
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    if rank == 0:
        _truncate_metrics(folder / "metrics.jsonl", step)
        _status(folder, "running", f"step {step} of {tc.steps}")

    # Data: per-step batches from the train split; a fixed test subset for evaluation.
    train_set, test_set = (D.Scenes(data, s, dc.image_size) for s in ("train", "test"))
    sampler = D.StepBatches(len(train_set), tc.batch_size, seed, step, tc.steps, rank, world)
    if tc.cache and D.FrameCache.nbytes(train_set) <= tc.cache_gb * 1e9:
        batches = D.FrameCache(train_set, progress and rank == 0).batches(sampler)
    else:
        batches = D.loader(train_set, sampler, tc.num_workers)
    evaluator = Evaluator(model, test_set, tc, dc, info, precision)
    if tc.compile and not model.compile_loss():
        raise JumpbenchError(f"train.compile: {model_name} has no loss that compiles once per run; "
                             "set train.compile=false")

    from tqdm import tqdm

    writer = board.open_writer(folder, step) if tensorboard and rank == 0 else None
    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank > 0, dynamic_ncols=True,
               desc=f"{model_name} seed {seed}")
    (sums, count), t0 = resumed, time.perf_counter()
    stop = _StopRequest()
    try:
        for item in batches:
            if stop.requested:  # Ctrl-C or SIGTERM: checkpoint between two steps, then stop
                if rank == 0:
                    _checkpoint(ckpt_path, model, opt, step, wall + time.perf_counter() - t0, sums, count)
                    _status(folder, "running", f"interrupted at step {step} of {tc.steps}; "
                                               "run the same command to resume")
                raise KeyboardInterrupt
            # One step: its own noise, the scheduled learning rate, clipped gradients.
            torch.manual_seed(_seed(seed, step, rank, 0))
            g = torch.Generator().manual_seed(_seed(seed, step, rank, 1))
            batch = {k: v.to(device) for k, v in D.train_batch(item, dc, model.jumpy, g).items()}
            for group in opt.param_groups:
                group["lr"] = tc.lr_at(step)
            with M.autocast(precision, device):
                out = net(batch, step)
            loss = out["loss"]
            finite = torch.isfinite(loss.detach()).float()
            if world > 1:  # every rank stops together
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            if not finite:
                if rank == 0:
                    _status(folder, "diverged", f"loss became {loss.item()} at step {step}")
                return folder
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            step += 1
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}")

            # Evaluate, write samples and metrics, checkpoint (rank 0).
            if step % tc.eval_every == 0 or step == tc.steps:
                wall += time.perf_counter() - t0
                t0 = time.perf_counter()
                if rank == 0:
                    row = {"step": step, "wall": round(wall, 2), "lr": tc.lr_at(step),
                           **{f"train_{k}": v / count for k, v in sums.items()}, **evaluator(step, folder)}
                    with open(folder / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                    if writer is not None:
                        board.log_row(writer, row, folder)
                    _checkpoint(ckpt_path, model, opt, step, wall)
                    _status(folder, "running", f"step {step} of {tc.steps}")
                sums, count = {}, 0
    except Exception as e:
        if rank == 0:
            _status(folder, "failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        stop.restore()
        bar.close()
        if writer is not None:
            writer.close()
    if rank == 0:
        _status(folder, "done", f"{tc.steps} steps in {wall:.0f} s")
    return folder


class Evaluator:
    """Test metrics on a fixed subset with fixed noise: `test_loss` for every model,
    `test_min_mse` (30 samples, forward prediction) on videos, `test_nelbo` on dice."""

    def __init__(self, model, scenes: D.Scenes, tc, dc, info, precision: str = "fp32"):
        self.model, self.tc, self.dc, self.precision = model, tc, dc, precision
        n = min(tc.eval_scenes, len(scenes))
        self.scenes, self.n = scenes, n
        self.video = info["viewpoint_key"] == "timestamps"
        device = next(model.parameters()).device
        from jumpbench.benchmarks.evaluate import baseline_mse, baseline_view_mse

        if self.video:
            items = D.stack(scenes, range(n))
            self.frames = D.to_float(items["frames"]).to(device)
            self.batch = {k: v.to(device) for k, v in D.prefix_split(items["frames"], items["viewpoints"],
                                                                     dc.eval_context).items()}
            base = baseline_mse(self.frames, dc.eval_context)
        else:
            self.batch = {k: v.to(device) for k, v in D.hidden_face_batch(scenes, range(n)).items()}
            base = baseline_view_mse(self.batch["context_frames"], self.batch["target_frames"])
        # the trivial predictors on the same test scenes, in every row (plot reads them from here)
        self.baselines = {f"test_baseline_{k}": v for k, v in base.items()}

    @torch.no_grad()
    def __call__(self, step: int, folder: Path) -> dict:
        from jumpbench.benchmarks.evaluate import min_mse
        from jumpbench.benchmarks.scores import for_evaluator
        from jumpbench.view import write_samples

        state = torch.get_rng_state()
        torch.manual_seed(0)
        self.model.eval()
        device = next(self.model.parameters()).device
        try:
            with M.autocast(self.precision, device):
                out = self.model(self.batch, step)
                row = {f"test_{k}": float(v) for k, v in out.items()} | self.baselines
                # the ground-truth scores at the end of a run, where a probe is trained (scores.py)
                scores = for_evaluator(self.scenes, self.n, self.dc.image_size, self.dc.eval_context,
                                       self.tc.eval_samples) if step == self.tc.steps else None
                if self.video:
                    row["test_min_mse"] = float(min_mse(self.model, self.frames, self.dc.eval_context,
                                                        self.tc.eval_samples,
                                                        visit=scores.visit if scores else None).mean())
                if scores:
                    row.update(scores.finish(self.model))
                k = min(self.tc.sample_scenes, self.batch["context_frames"].shape[0])
                b = {key: v[:k] for key, v in self.batch.items()}
                samples = self.model.sample(b["context_frames"], b["context_viewpoints"],
                                            b["target_viewpoints"], 2).float()
            write_samples(folder / "samples.png", b["context_frames"], b["target_frames"], samples)
        finally:
            self.model.train()
            torch.set_rng_state(state)
        return row


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop reads between steps, so that an interrupted run
    saves a checkpoint of a whole step (never of a half-applied update) and resumes exactly."""

    def __init__(self):
        self.requested, self.old = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def restore(self):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _checkpoint(path: Path, model, opt, step: int, wall: float, sums: dict | None = None, count: int = 0) -> None:
    """sums/count: the running train_* sums since the last evaluation (none right after one)."""
    runs.save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                "wall": wall, "rng": torch.get_rng_state(), "sums": dict(sums or {}),
                                "count": count})


def _status(folder: Path, status: str, why: str) -> None:
    runs.write_status(folder, status, why)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop evaluations written after the checkpoint we resume from, and a torn last line."""
    runs.truncate_metrics(path, step)


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (Python's hash() is salted per process for strings)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))
