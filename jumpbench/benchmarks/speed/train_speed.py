"""`jumpbench bench train`: milliseconds per training step, per model and variant.

Variants of one step (forward, backward, gradient clipping, Adam) at a preset's sizes:
  fp32            eager, fp32 (model only: one batch, with the preset's shapes, every step)
  bf16            eager, bf16 autocast (losses in fp32), where the hardware has bf16
  fp32+compile, bf16+compile   the same through torch.compile (with --compile; compiling is not timed)
  fp32+graph, bf16+graph       CUDA GPUs: forward and backward replayed from a CUDA graph, as
                  train.cuda_graph trains (training/graphs.py; capturing is not timed)
and, with --data, end to end (batch from the data path + step, both at the preset's
precision): `stream` reads and decodes the shards through a DataLoader (the path without a
cache), `cache` gathers the batch from the decoded-frame cache in the training process;
and, with --procs P (CPUs), `fp32 xP procs` (and `bf16 xP procs`): the same step data-parallel
in P processes of threads // P threads each, each with batch / P scenes and DistributedDataParallel
over gloo, as `jumpbench run --procs P` trains (the processes wait, asleep, while the other
variants are timed).

The machines this runs on are shared and noisy, so the contenders are interleaved: each
round times `steps` steps of every variant in turn, and the median over rounds is reported.
A FLOP count of one step (torch's FlopCounterMode) gives GFLOP/s, printed beside the
machine's measured convolution ceiling (a large 3x3 conv timed in the same run).
"""
from __future__ import annotations

import os
import statistics
import time

import torch

from jumpbench import cache as FC
from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks import config as C
from jumpbench.benchmarks import machine as M
from jumpbench.benchmarks.training import graphs
from jumpbench.errors import JumpbenchError

# The datasets a synthetic batch can mimic: viewpoint key, frames per scene
SHAPES = {  # dataset_info() of each dataset's default set, for synthetic batches
    "traveling_salesman": {"viewpoint_key": "timestamps", "viewpoint_dim": 1, "frames": 20},
    "color_reaction": {"viewpoint_key": "timestamps", "viewpoint_dim": 1, "frames": 12},
    "mnist_dice": {"viewpoint_key": "cameras", "viewpoint_dim": 7, "frames": 12}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stepper:
    """One model, its optimizer and a way to take a training step at a precision."""

    def __init__(self, model_name: str, cfg: dict, device: torch.device, precision: str, compiled: bool,
                 graphed: bool = False):
        from jumpbench.benchmarks.training.train import graphed_step
        from jumpbench.models import MODELS

        torch.manual_seed(0)
        self.model = MODELS[model_name][0](cfg["model"]).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg["train"].lr)
        if compiled and not self.model.compile_loss():
            raise JumpbenchError(f"--compile: {model_name} has no loss that compiles once per run")
        self.cfg, self.device, self.precision = cfg, device, precision
        self.step_no = 0
        self.graphed = graphed_step(self.model, precision, device) if graphed else None  # train.cuda_graph

    def batch(self, item: dict, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        return B.train_batch(item, self.cfg["data"], self.model.jumpy, g, self.device)

    def step(self, batch: dict) -> None:
        """The training loop's step (train.losses and train.update): its schedule, its clipping."""
        from jumpbench.benchmarks.training.train import losses, update

        tc = self.cfg["train"]
        out = losses(self.model, self.graphed, batch, self.step_no, self.precision, self.device)
        update(self.model, self.opt, None if self.graphed else out["loss"], tc.lr_at(self.step_no), tc.grad_clip)
        self.step_no += 1


def _rank(rank: int, procs: int, port: int, threads: int, name: str, cfg: dict, precision: str,
          info: dict, steps: int, go, done) -> None:
    """One process of the data-parallel variant: builds its model and batch (batch / procs
    scenes), warms up, then times `steps` steps each time `go` gives it a round; rank 0 puts
    the ms per step on `done` (every rank puts "ready" there first, once warm). Runs until `go`
    gives None."""
    import dataclasses

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(procs),
                      LOCAL_WORLD_SIZE=str(procs))
    torch.set_num_threads(threads)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=procs)
    cfg = {**cfg, "train": dataclasses.replace(cfg["train"], batch_size=B.batch_share(cfg["train"].batch_size, procs))}
    stepper = Stepper(name, cfg, torch.device("cpu"), precision, False)
    batch = stepper.batch(B.synthetic_item(info, cfg["train"].batch_size, cfg["data"].image_size, seed=rank), 0)
    stepper.model = torch.nn.parallel.DistributedDataParallel(stepper.model)
    for _ in range(2):
        stepper.step(batch)
    done.put("ready")
    while go.get() is not None:
        torch.distributed.barrier()
        t = time.perf_counter()
        for _ in range(steps):
            stepper.step(batch)
        torch.distributed.barrier()
        if rank == 0:
            done.put((time.perf_counter() - t) / steps * 1e3)
    torch.distributed.destroy_process_group()


class DataParallel:
    """The data-parallel variant's processes (see _rank): start them, time a round, stop them."""

    def __init__(self, procs: int, name: str, cfg: dict, precision: str, info: dict, steps: int):
        import multiprocessing as mp

        B.batch_share(cfg["train"].batch_size, procs)
        port = M.free_port()
        ctx = mp.get_context("spawn")
        self.go, self.done = [ctx.Queue() for _ in range(procs)], ctx.Queue()
        threads = max(1, torch.get_num_threads() // procs)
        self.procs = [ctx.Process(target=_rank, args=(r, procs, port, threads, name, cfg, precision, info,
                                                      steps, self.go[r], self.done), daemon=True)
                      for r in range(procs)]
        for p in self.procs:
            p.start()
        for _ in self.procs:  # started and warm: they must not run beside the other variants' rounds
            self._wait()

    def round(self) -> float:
        for q in self.go:
            q.put(True)
        return self._wait()

    def _wait(self):
        while True:
            try:
                return self.done.get(timeout=5)
            except Exception:  # queue.Empty: is every process still alive?
                if any(p.exitcode not in (None, 0) for p in self.procs):
                    self.close()
                    raise JumpbenchError("--procs: a data-parallel benchmark process died") from None

    def close(self) -> None:
        for q in self.go:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def step_flops(stepper: Stepper, batch: dict) -> float:
    """FLOPs of one forward + backward (the optimizer's elementwise work is negligible)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, M.autocast(stepper.precision, stepper.device):
        stepper.model(batch, 0)["loss"].backward()
    stepper.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def conv_ceiling(device: torch.device, precision: str, repeats: int = 5) -> float:
    """GFLOP/s of a large 3x3 convolution (128 -> 128 channels, 32x32, batch 32), forward only:
    about the best this device does on the models' kind of work."""
    x = torch.randn(32, 128, 32, 32, device=device)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device)
    flops = 2 * 32 * 128 * 128 * 9 * 32 * 32
    times = []
    with torch.no_grad(), M.autocast(precision, device):
        conv(x)
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            conv(x)
            _sync(device)
            times.append(time.perf_counter() - t)
    return flops / statistics.median(times) / 1e9


def _stream(scenes, cfg, seed: int):
    sampler = B.StepBatches(len(scenes), cfg["train"].batch_size, seed, 0, 10 ** 9)
    return iter(B.loader(scenes, sampler, cfg["train"].num_workers))


def _cached(scenes, cfg, seed: int, device: torch.device):
    """The frame cache's batches as training gets them (on a GPU, held there when they fit)."""
    sampler = B.StepBatches(len(scenes), cfg["train"].batch_size, seed, 0, 10 ** 9)
    return FC.FrameCache(scenes, progress=True).batches(sampler, device)


def train_speed(models: list[str], preset: str = "cpu", dataset: str = "traveling_salesman",
                device: str = "cpu", steps: int = 5, repeats: int = 3, compiled: bool = False,
                data: str | None = None, overrides: list[str] = (), procs: int = 1) -> dict:
    """ms per step of each model and variant, medians over interleaved rounds (see above)."""
    from jumpbench.models import MODELS
    from jumpbench.models.base import Model

    if steps < 1 or repeats < 1 or procs < 1:
        raise JumpbenchError("--steps, --repeats and --procs must be at least 1")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise JumpbenchError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise JumpbenchError("--device cuda: no CUDA device here")
    if dev.type == "cuda" and procs > 1:
        raise JumpbenchError("--procs: the data-parallel variant is timed on CPUs (on GPUs: one process per GPU)")
    M.setup_device(dev)
    bf16 = M.has_bf16(dev)
    scenes = None
    if data is not None:
        info = DS.dataset_info(data)
        dataset = info["name"]
    else:
        if dataset not in SHAPES:
            raise JumpbenchError(f"unknown dataset {dataset!r}; choose from {', '.join(SHAPES)}")
        info = dict(SHAPES[dataset])
    result = {"preset": preset, "dataset": dataset, "device": str(dev), "threads": torch.get_num_threads(),
              "procs": procs, "steps": steps, "repeats": repeats, "bf16_supported": bf16,
              "conv_ceiling_gflops": {"fp32": round(conv_ceiling(dev, "fp32"), 1)}, "models": {}}
    if bf16:
        result["conv_ceiling_gflops"]["bf16"] = round(conv_ceiling(dev, "bf16"), 1)
    for name in models:
        cfg = C.resolve(name, preset, dataset, info, list(overrides))
        if name in ("sssm", "sv2p", "cdna") and info["viewpoint_dim"] != 1:
            raise JumpbenchError(f"{name} is a video model: bench it on a narratives dataset")
        size, bs = cfg["data"].image_size, cfg["train"].batch_size
        item = B.synthetic_item(info, bs, size)
        variants = {"fp32": Stepper(name, cfg, dev, "fp32", False)}
        if bf16:
            variants["bf16"] = Stepper(name, cfg, dev, "bf16", False)
        if compiled and MODELS[name][0].compile_loss is not Model.compile_loss:  # models that have one
            for precision in (["fp32", "bf16"] if bf16 else ["fp32"]):  # on a GPU fp32 (TF32) can win
                variants[f"{precision}+compile"] = Stepper(name, cfg, dev, precision, True)
        if graphs.why_not(MODELS[name][0], dev, 1, False) is None:  # train.cuda_graph: CUDA, JUMP and GQN
            for precision in (["fp32", "bf16"] if bf16 else ["fp32"]):
                variants[f"{precision}+graph"] = Stepper(name, cfg, dev, precision, False, graphed=True)
        best = M.resolve_precision(cfg["train"].precision, dev)  # what an eager training run uses here
        ends = {}
        if data is not None:
            scenes = DS.Scenes(data, "train", size)
            ends = {"stream fp32": (Stepper(name, cfg, dev, "fp32", False), _stream(scenes, cfg, 0)),
                    "stream": (Stepper(name, cfg, dev, best, False), _stream(scenes, cfg, 0)),
                    "cache": (Stepper(name, cfg, dev, best, False), _cached(scenes, cfg, 0, dev))}
        batch = variants["fp32"].batch(item, 0)
        flops = step_flops(variants["fp32"], batch)
        for v in list(variants.values()) + [s for s, _ in ends.values()]:  # warm up (and compile)
            for _ in range(2):
                v.step(batch)
        parallel, precisions = {}, (["fp32", "bf16"] if bf16 else ["fp32"]) if procs > 1 else []
        times = {k: [] for k in [*variants, *(f"{p} x{procs} procs" for p in precisions),
                                 *(f"end-to-end {k}" for k in ends)]}
        try:  # the data-parallel processes are stopped whatever happens
            for p in precisions:
                parallel[f"{p} x{procs} procs"] = DataParallel(procs, name, cfg, p, info, steps)
            for r in range(repeats):
                _time_round(variants, parallel, ends, times, batch, dev, steps, r)
        finally:
            for dp in parallel.values():
                dp.close()
        ms = {k: round(statistics.median(v), 2) for k, v in times.items()}
        result["models"][name] = {
            "gflop_per_step": round(flops / 1e9, 2), "ms": ms, "all_ms": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "gflops": {k: round(flops / 1e9 / (t / 1e3), 1) for k, t in ms.items()},
            "speedup_vs_fp32": {k: round(ms["fp32"] / t, 2) for k, t in ms.items()}}
    return result


def _time_round(variants: dict, parallel: dict, ends: dict, times: dict, batch: dict, dev: torch.device,
                steps: int, r: int) -> None:
    """One round: `steps` steps of every variant in turn, ms per step appended to `times`. The
    model-only variants step on one `batch` (one composition (M, K): cuDNN's autotuner then
    measures each shape once)."""
    for k, v in variants.items():
        _sync(dev)
        t = time.perf_counter()
        for i in range(steps):
            v.step(batch)
        _sync(dev)
        times[k].append((time.perf_counter() - t) / steps * 1e3)
    for k, dp in parallel.items():
        times[k].append(dp.round())
    for k, (v, batches) in ends.items():
        _sync(dev)
        t = time.perf_counter()
        for i in range(steps):
            v.step(v.batch(next(batches), r * steps + i))
        _sync(dev)
        times[f"end-to-end {k}"].append((time.perf_counter() - t) / steps * 1e3)


def format_table(result: dict) -> str:
    ceiling = ", ".join(f"{k} {v:.0f}" for k, v in result["conv_ceiling_gflops"].items())
    lines = [f"training step, preset {result['preset']}, {result['dataset']}, {result['device']} "
             f"({result['threads']} threads), median of {result['repeats']} rounds of {result['steps']} steps",
             f"conv ceiling GFLOP/s: {ceiling}",
             f"{'model':6} {'variant':24} {'ms/step':>9} {'GFLOP/s':>8} {'x fp32':>7}"]
    for name, r in result["models"].items():
        for k, t in r["ms"].items():
            lines.append(f"{name:6} {k:24} {t:9.1f} {r['gflops'][k]:8.1f} {r['speedup_vs_fp32'][k]:7.2f}")
        lines.append(f"{name:6} {'(GFLOP per step)':24} {r['gflop_per_step']:9.2f}")
    return "\n".join(lines)
