"""The one training loop, for every model in the registry (docs/architecture.md).

A run (runs.RunSpec) writes its folder through runs.Run: config.json, metrics.jsonl (one line
per evaluation), status.json (running|interrupted|done|diverged|failed, and why), samples.png,
checkpoint.pt, weights.safetensors and legs.json. A run resumes from its checkpoint exactly: the batches and the noise of step
s are pure functions of (seed, s). Started under `torchrun`, it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); rank 0 writes the files.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from jumpbench import cache as FC
from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.training import board, graphs
from jumpbench.benchmarks import config as C
from jumpbench.benchmarks.evaluation import evaluate as E
from jumpbench.benchmarks import machine as M
from jumpbench.benchmarks import runs
from jumpbench.errors import JumpbenchError, error_line
from jumpbench.workers import default_threads

RESTART_WARMUP = 200  # steps of learning-rate ramp for a run continued from weights without Adam's moments
PEER_LOST = "another process of this data-parallel run stopped"
MINUTES_STOP = "stopped after --minutes"  # how status.json begins the why of a leg that ended on time


def check_model_fits(model_name: str, info: dict) -> None:
    """Video-only models (not jumpy: they roll frames forward in time) need a video dataset."""
    from jumpbench.models import MODELS

    if not MODELS[model_name][0].jumpy and info["viewpoint_key"] != "timestamps":
        raise JumpbenchError(f"{model_name} is a video model: it needs a video dataset (traveling_salesman or "
                             f"color_reaction), not {info['name']}; on {info['name']} use jump or gqn")


def _dist() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return (torch.distributed.get_rank() if world > 1 else 0), world


def train(model_name: str, data: str | Path, preset: str = "cpu", overrides: list[str] = (), seed: int = 0,
          out: str | Path = "results/runs", name: str | None = None, progress: bool = True,
          tensorboard: bool = False, extend: bool = False, branch_from: str | Path | None = None,
          minutes: float | None = None) -> Path:
    """Train one seed of one model; returns its run folder (train_run of the RunSpec), whose
    status.json says how it ended (done, or diverged). Bad arguments: a one-line JumpbenchError
    before anything is written (config.run_inputs, as the CLI's)."""
    C.run_inputs(model_name, data, preset, overrides, [seed], out, name, branch_from, minutes)
    return train_run(runs.RunSpec(model_name, data, preset, tuple(overrides), seed, out, name, tensorboard, extend,
                                  branch_from, minutes=minutes), progress)


def train_run(spec: runs.RunSpec, progress: bool = True) -> Path:
    """Train one run; returns its folder. Resumes a checkpoint if present; does nothing for a
    run already done. `spec.tensorboard`: also write TensorBoard events into the run folder
    (board.py); `spec.extend`: continue a run (done or not) to a larger train.steps,
    everything else unchanged (runs.open_run); `spec.branch_from`: start from another run's
    checkpoint (runs.branch_source); `spec.minutes`: stop (checkpointed, published, marked
    interrupted: the same command goes on) after that many minutes of training."""
    info = DS.dataset_info(spec.data)
    check_model_fits(spec.model, info)
    if spec.tensorboard:
        board.require()
    cfg = C.resolve(spec.model, spec.preset, info["name"], info, list(spec.overrides))  # once; a bad one: no folder
    if info["size"] % cfg["data"].image_size:
        raise JumpbenchError(f"data.image_size {cfg['data'].image_size} must divide the dataset's {info['size']}")
    with runs.run_lock(spec.folder(info["name"])):
        plan = _setup(spec, info, cfg)
        start = _start(plan)
        if start is None:  # done (and not extended), or diverged: nothing to do
            return plan.run.folder
        return _Loop(plan, start, *_data(plan, start, progress), progress).train()


@dataclass
class _Plan:
    """One run as resolved once: what it is (spec, dataset facts, resolved config and its
    config.json record), its folder (as this process's rank sees it), and where it trains."""
    spec: runs.RunSpec
    info: dict
    cfg: dict
    run: runs.Run
    world: int
    device: torch.device
    precision: str
    record: dict

    @property
    def tc(self) -> C.TrainConfig:
        return self.cfg["train"]


@dataclass
class _Start:
    """What a leg starts from: the model and its Adam, loaded; the step, wall and train_* sums
    to go on from; how it began ("start", "checkpoint", "weights" or "branch") and how Adam did."""
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    step: int = 0
    wall: float = 0.0
    sums: tuple = ({}, 0)
    source: str = "start"
    optimizer: str = "new"


def _setup(spec: runs.RunSpec, info: dict, cfg: dict) -> _Plan:
    """The device, its threads and precision, the process's rank, and config.json's record (with
    the values clamped to what the data and the machine allow: printed when the user set them)."""
    from jumpbench.models import MODELS

    rank, world = _dist()
    B.batch_share(cfg["train"].batch_size, world)
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    M.setup_device(device)
    if device.type == "cpu":
        torch.set_num_threads(cfg["train"].threads or default_threads())
    graphs.check(cfg["train"], MODELS[spec.model][0], device, world)
    precision = M.resolve_precision(cfg["train"].precision, device, compiled=cfg["train"].compile)
    record = runs.record(spec, world, info, cfg)
    if cfg["warnings"]:  # a preset's own value clamped on a small set is only recorded
        record["warnings"] = cfg["warnings"]
        given = {C.parse_override(o)[0] for o in spec.overrides}
        for line in cfg["warnings"] if rank == 0 else []:
            if line.split("=")[0] in given or line.split("=")[0].split(".")[1] in given:
                click.echo(f"warning: {line}", err=True)
    return _Plan(spec, info, cfg, runs.Run(spec.folder(info["name"]), rank), world, device, precision, record)


def _start(plan: _Plan) -> _Start | None:
    """The model, its optimizer and the state this leg goes on from: a branch's parent, else the
    folder's checkpoint.pt (exact), else its published weights (a run from git), else nothing.
    config.json is written once; a resume under another config or dataset is refused. Every
    process decides on the folder as found, and the state is loaded and checked, before rank 0
    writes anything (a refused --extend leaves config.json as it was). None: nothing to train."""
    from jumpbench.models import MODELS

    spec, run, tc = plan.spec, plan.run, plan.tc
    branch = _branch(spec, run, plan.info, tc.steps, C.to_dict(plan.cfg))
    torch.manual_seed(spec.seed)
    model = MODELS[spec.model][0](plan.cfg["model"]).to(plan.device)
    start = _Start(model, torch.optim.Adam(model.parameters(), lr=tc.lr))
    if branch is not None:  # the parent's state is checked to fit before anything is written
        start.optimizer = _restore(branch[0], branch[1], model, start.opt)
        plan.record["branched_from"] = branch[2]
    if plan.world > 1:
        runs.check_global_batch(run.folder)
    extended = run.open(plan.record, spec.extend, write=False)
    status = run.status()
    if status and (status["status"] == "diverged" or (status["status"] == "done" and not extended)):
        return None
    state = branch[1] if branch is not None else None
    if branch is None:
        try:  # a checksummed load: a bad file names itself and marks the run failed
            state, path, _ = run.training_state(map_location=plan.device, with_sha=True)
            if state is not None:
                start.optimizer = _restore(path, state, model, start.opt)
                run.check_metrics(state["step"], tc.eval_every, path.name)
        except JumpbenchError as e:
            run.mark("failed", str(e))
            raise
    if plan.world > 1:
        torch.distributed.barrier()
    if run.writes:
        run.open(plan.record, spec.extend)
    if branch is not None:
        run.start_branch(branch[0], state["step"])
    if state is not None:
        start.step, start.wall = state["step"], state["wall"]
        start.source = "branch" if branch is not None else state["source"]
        if "rng" in state:  # (every step seeds its own noise; kept for checkpoints' exactness)
            torch.set_rng_state(state["rng"].cpu())  # map_location moved it to the device
        start.sums = (state.get("sums", {}), state.get("count", 0))  # the train_* sums since the last evaluation
        if tc.precision == "auto":  # go on in the precision the run (or its parent) trained in
            plan.precision = M.resumed_precision(state.get("precision"), state.get("device_type"), plan.precision,
                                                 plan.device)
    run.truncate(start.step)
    run.mark("running", f"step {start.step} of {tc.steps}")
    return start


def _data(plan: _Plan, start: _Start, progress: bool) -> tuple:
    """(batches, evaluator): per-step batches from the train split (the frame cache, or streamed
    from the shards), and the evaluator on a fixed test subset. A failure or a stop here (a
    corrupt shard met while the frame cache is built) marks the run too."""
    tc, dc = plan.tc, plan.cfg["data"]
    try:
        with _sigterm_interrupts():
            train_set, test_set = (DS.Scenes(plan.spec.data, s, dc.image_size) for s in ("train", "test"))
            sampler = B.StepBatches(len(train_set), tc.batch_size, plan.spec.seed, start.step, tc.steps, plan.run.rank,
                                    plan.world)
            if tc.cache and FC.FrameCache.nbytes(train_set) <= tc.cache_gb * 1e9:
                batches = FC.FrameCache(train_set, progress and plan.run.writes,
                                        warn=plan.run.writes).batches(sampler, plan.device)
            else:
                batches = B.loader(train_set, sampler, tc.num_workers)
            evaluator = E.Evaluator(start.model, test_set, tc, dc, plan.info, plan.precision)
            if tc.compile and not start.model.compile_loss():
                raise JumpbenchError(f"train.compile: {plan.spec.model} has no loss that compiles once per run; "
                                     "set train.compile=false")
    except BaseException as e:
        if isinstance(e, Exception):
            plan.run.mark("failed", str(e) if isinstance(e, JumpbenchError) else f"{type(e).__name__}: {e}")
        else:  # Ctrl-C or SIGTERM before the first step: nothing to checkpoint
            _mark_interrupted(plan.run, start.step, tc.steps)
        raise
    return batches, evaluator


class _Loop:
    """The training loop of one leg: `train()` reads top to bottom; a step, an evaluation, a
    stop and the divergence check are its methods. Rank 0 writes the files."""

    def __init__(self, plan: _Plan, start: _Start, batches, evaluator, progress: bool):
        from tqdm import tqdm

        self.plan, self.run, self.tc = plan, plan.run, plan.tc
        self.batches, self.evaluator = batches, evaluator
        self.model, self.opt, self.step, self.wall = start.model, start.opt, start.step, start.wall
        # every parameter gets a gradient at every step (tests/test_models.py checks each
        # model's phases), so DDP need not search the graph for unused ones
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if plan.world > 1 else self.model
        self.writer = board.open_writer(self.run.folder, self.step) if plan.spec.tensorboard and self.run.writes \
            else None
        self.leg = self.run.leg(self.step, machine=M.describe(plan.device), device=plan.device.type,
                                precision=plan.precision, threads=torch.get_num_threads(), procs=plan.world,
                                resumed=start.source, optimizer=start.optimizer)
        self.leg_wall, self.start_step = self.wall, self.step
        self.warmup = RESTART_WARMUP if start.optimizer == "new, warm-up" else 0
        self.deadline = time.monotonic() + plan.spec.minutes * 60 if plan.spec.minutes else None
        self.bar = tqdm(total=self.tc.steps, initial=self.step, disable=not progress or self.run.rank > 0,
                        dynamic_ncols=True, desc=f"{plan.spec.model} seed {plan.spec.seed}")
        self.stats, self.t0 = _StepStats(*start.sums, plan.device, plan.world), time.perf_counter()
        self.pace = board.Pace()  # steps per second and the wait for data, for TensorBoard
        self.sync_every = _sync_every(plan.device)
        self.graphed = graphed_step(self.model, plan.precision, plan.device) if self.tc.cuda_graph else None
        self.stop = _StopRequest()
        self.last_row = None  # the last evaluation's metrics row (rank 0)

    def train(self) -> Path:
        plan, tc = self.plan, self.tc
        try:
            if self.graphed is not None:
                self.capture()
            for item in self.batches:
                self.stop.timed_out |= self.deadline is not None and time.monotonic() > self.deadline
                why = self.stop.now(plan.world, plan.device, self.step % self.sync_every == 0)
                if why:  # Ctrl-C, SIGTERM or --minutes: between two steps
                    return self.stopped(why == _StopRequest.DEADLINE)
                if not self.take_step(item):
                    return self.run.folder  # diverged (marked)
                if self.step % tc.eval_every == 0 or self.step == tc.steps:
                    self.evaluate()
            if self.writer is not None and self.last_row:  # finished: its HPARAMS entry
                board.log_hparams(self.writer, f"{plan.spec.model} {plan.spec.name} seed {plan.spec.seed}",
                                  list(plan.spec.overrides), self.last_row)
        except Exception as e:
            self.failed(e)
        finally:
            self.stop.restore()
            self.bar.close()
            if self.writer is not None:
                self.writer.close()
        self.run.mark("done", f"{tc.steps} steps in {self.wall:.0f} s")
        return self.run.folder

    def capture(self) -> None:
        """train.cuda_graph: the graph of every batch shape the run draws, before the first step
        (a capture that fails fails here, marked like any error of the loop)."""
        t = time.perf_counter()
        dc = self.plan.cfg["data"]
        item = B.synthetic_item(self.plan.info, B.batch_share(self.tc.batch_size, self.plan.world), dc.image_size)
        n = self.graphed.capture(B.shape_batches(item, dc, self.plan.device), self.step)
        if self.run.writes:
            click.echo(f"captured {n} CUDA graphs (one per batch shape) in {time.perf_counter() - t:.1f} s", err=True)

    def take_step(self, item: dict) -> bool:
        """One step: its own noise, the scheduled learning rate (ramped up over a warm-up when
        Adam starts anew on published weights), clipped gradients. False when the loss was not
        finite (CPUs: seen before the update; GPUs: within sync_every steps, nothing saved)."""
        plan, step, t_item = self.plan, self.step, time.perf_counter()
        torch.manual_seed(_seed(plan.spec.seed, step, self.run.rank, 0))
        g = torch.Generator().manual_seed(_seed(plan.spec.seed, step, self.run.rank, 1))
        batch = B.train_batch(item, plan.cfg["data"], self.model.jumpy, g, plan.device)
        lr = self.tc.lr_at(step) * (min(1.0, (step - self.start_step + 1) / self.warmup) if self.warmup else 1.0)
        out = losses(self.net, self.graphed, batch, step, plan.precision, plan.device)
        finite = torch.isfinite(out["loss"].detach()).float()
        if plan.world > 1:  # every rank stops together
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        self.stats.add(out, finite, step)
        if self.sync_every == 1 and self.diverged():  # CPUs: before the update, as reading costs nothing
            return False
        grad_norm = update(self.model, self.opt, None if self.graphed else out["loss"], lr, self.tc.grad_clip)
        self.step += 1
        self.bar.update(1)
        if self.writer is not None:
            self.pace.step(t_item)
            if self.step % self.tc.log_every == 0:
                board.log_step(self.writer, self.step, out, lr, grad_norm, *self.pace.take())
        if self.step % self.sync_every == 0 or self.step % self.tc.eval_every == 0 or self.step == self.tc.steps:
            # a non-finite loss leaves non-finite weights, so it is still seen here
            if self.sync_every > 1 and self.diverged():
                return False
            self.bar.set_postfix(loss=f"{float(out['loss'].detach()):.4g}")
        return True

    def evaluate(self) -> None:
        """Test metrics, samples.png and a metrics row, then the checkpoint and published weights
        (rank 0; every process reduces its train_* sums)."""
        run = self.run
        self.wall += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        sums, count = self.stats.host()
        if run.writes:
            with _evaluation_threads(self.plan.device, self.plan.world):
                scores = self.evaluator(self.step, run.folder)
            row = {"step": self.step, "wall": round(self.wall, 2), "lr": self.tc.lr_at(self.step),
                   **{f"train_{k}": v / count for k, v in sums.items()}, **scores}
            run.append(row)
            self.last_row = row
            if self.writer is not None:
                board.log_row(self.writer, row, run.folder)
            self.save(self.wall)
            run.mark("running", f"step {self.step} of {self.tc.steps}")
        self.stats.reset()

    def save(self, wall: float, sums: dict | None = None, count: int = 0) -> None:
        """checkpoint.pt, weights.safetensors and this leg in legs.json, at the current step (rank 0)."""
        plan = self.plan
        self.run.checkpoint(self.model, self.opt, self.step, wall, sums, count, plan.precision, plan.device.type)
        self.leg.update(self.step, wall - self.leg_wall)

    def stopped(self, timed_out: bool) -> Path:
        """A stop between two steps: checkpointed (with the train_* sums so far) and marked
        interrupted. A --minutes stop returns (a leg's normal end); a signal raises
        KeyboardInterrupt (the command exits 130)."""
        if self.diverged():  # (GPUs: a NaN not read yet) marked, nothing saved; still a stop
            raise KeyboardInterrupt
        sums = self.stats.host()  # every process
        if self.run.writes:
            self.save(self.wall + time.perf_counter() - self.t0, *sums)
            _mark_interrupted(self.run, self.step, self.tc.steps,
                              f"{MINUTES_STOP} {self.plan.spec.minutes:g}" if timed_out else "")
        if timed_out:
            return self.run.folder
        raise KeyboardInterrupt

    def diverged(self) -> bool:
        """Whether a loss was not finite (reads the device: a sync); marks the run diverged."""
        bad = self.stats.first_nonfinite()
        if bad is not None:
            self.run.mark("diverged", f"loss became {bad[1]} at step {bad[0]}")
        return bad is not None

    def failed(self, e: Exception) -> None:
        """An error that stopped the loop: marked failed (diverged when a non-finite loss not read
        yet came first), re-raised as one line where it is jumpbench's own."""
        if self.plan.world > 1 and ("by peer" in str(e) or isinstance(e, torch.distributed.DistError)):
            # a peer died (gloo: "Connection closed/reset by peer", with a path of torch's build machine)
            e = JumpbenchError(f"{PEER_LOST} (killed, or failed: `run --procs` says why); re-run the same "
                               "command to resume from the last checkpoint")
        if self.run.writes and not _diverged_before(self.diverged):
            self.run.mark("failed", error_line(e))
        if isinstance(e, JumpbenchError):
            raise e from None
        raise e


def forward(net, batch: dict, step: int, precision: str, device: torch.device, cache: bool = True) -> dict:
    """The model's losses on one batch at `step`, under the run's precision (autocast; `cache`:
    machine.autocast's)."""
    with M.autocast(precision, device, cache):
        return net(batch, step)


def graphed_step(model, precision: str, device: torch.device) -> graphs.GraphedStep:
    """train.cuda_graph's step: forward (autocast without its cache, as a capture needs) and
    backward, replayed from CUDA graphs."""
    return graphs.GraphedStep(model, lambda batch, step: forward(model, batch, step, precision, device, cache=False),
                              device)


def losses(net, graphed: graphs.GraphedStep | None, batch: dict, step: int, precision: str,
           device: torch.device) -> dict:
    """A step's losses: forward (update then runs the backward), or with `graphed` forward and
    backward replayed from a CUDA graph (the gradients already in .grad: update(loss=None))."""
    if graphed is not None:
        return graphed(batch, step)
    return forward(net, batch, step, precision, device)


def update(model, opt, loss: torch.Tensor | None, lr: float, grad_clip: float) -> torch.Tensor | None:
    """One optimizer step on `loss`: the learning rate `lr`, gradients clipped to the norm
    `grad_clip` (0: not clipped). Returns the gradient norm before clipping (on the device), or
    None when not clipped. `loss` None: the gradients are in .grad already (a step replayed
    from a CUDA graph, graphs.py). The training loop and `bench train` both step through
    forward (or the graphs) and this, so the benchmark times what training runs."""
    for group in opt.param_groups:
        group["lr"] = lr
    if loss is not None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else None
    opt.step()
    return norm


def _branch(spec: runs.RunSpec, run: runs.Run, info: dict, steps: int, config: dict) -> tuple | None:
    """runs.branch_source for a branch that has no checkpoint of its own yet; None when the run
    is not a branch or resumes its own checkpoint. A folder that already holds another run, a
    branch of another parent, or a branch asked to start without --from, is refused rather than
    trained (or skipped) from the wrong weights."""
    folder, own_checkpoint = run.folder, run.has_weights()
    before = (run.record() or {}).get("branched_from")
    if spec.branch_from is None:
        if before and not own_checkpoint:
            raise JumpbenchError(f"{folder} is a branch of {before['name']}/seed-{before['seed']} at step "
                                 f"{before['step']} with no checkpoint of its own yet: give --from that run")
        return None
    runs.check_branch_folder(spec, folder)
    if own_checkpoint:  # resume the branch's own checkpoint
        return None
    branch = runs.branch_source(spec.branch_from, spec, info, steps, config)
    if before and before != branch[2]:
        raise JumpbenchError(f"{folder} is a branch of {before['name']}/seed-{before['seed']} at step "
                             f"{before['step']}, not of {spec.branch_from} at step {branch[2]['step']}")
    return branch


def _diverged_before(diverged) -> bool:
    """Whether an error that stopped the loop came after a non-finite loss not read yet (GPUs):
    `diverged()` then marks the run diverged, not failed (a sweep would resume a failed run into
    the same NaN). False when the device cannot even be read."""
    try:
        return diverged()
    except Exception:
        return False


def _sync_every(device: torch.device) -> int:
    """Steps between the loop's reads of the device: 1 on CPUs, where a read costs nothing, so a
    non-finite loss is caught before its update; 50 on GPUs, where each read would stall the
    queue of kernels (a small model's step is bound by launching them)."""
    return 1 if device.type == "cpu" else 50


class _StepStats:
    """The train_* sums since the last evaluation (float64, summed in step order, so the same
    numbers as summing on the host) and the first step whose loss was not finite, all kept on
    the device: adding a step queues a few tiny kernels and waits for nothing."""

    def __init__(self, sums: dict, count: int, device: torch.device, world: int = 1):
        # resumed sums: under data parallelism already over every process, so kept apart from
        # this process's own (a single process adds to them, in step order, as before)
        self.base = {k: float(v) for k, v in sums.items()} if world > 1 else {}
        self.sums = {} if world > 1 else {k: torch.tensor(float(v), dtype=torch.float64, device=device)
                                          for k, v in sums.items()}
        self.count, self.world = count, world
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, out: dict, finite: torch.Tensor, step: int) -> None:
        for k, v in out.items():
            v = v.detach().double()  # (a copy, never the step's own tensor: a replayed graph overwrites that)
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1
        first = (finite == 0) & (self.bad_step < 0)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, out["loss"].detach().float(), self.bad_loss)

    def first_nonfinite(self) -> tuple[int, float] | None:
        """(step, loss) of the first non-finite loss, or None: one read of the device."""
        step = int(self.bad_step)
        return None if step < 0 else (step, float(self.bad_loss))

    def host(self) -> tuple[dict, int]:
        """The sums as Python floats, and the number of steps they sum. Under data parallelism
        each term is the mean over the processes (each saw its share of the batch): a collective,
        called by every process at the same step."""
        own = self.sums
        if self.world > 1 and own:
            keys = sorted(own)
            total = torch.stack([own[k] for k in keys])
            torch.distributed.all_reduce(total)
            own = dict(zip(keys, (total / self.world).tolist()))
        sums = dict(self.base)
        for k, v in own.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        return sums, self.count

    def reset(self) -> None:
        self.sums, self.base, self.count = {}, {}, 0


@contextmanager
def _evaluation_threads(device: torch.device, world: int):
    """Rank 0 evaluates with the threads of every process of its data-parallel run on this
    machine: the others wait, asleep, for its gradients meanwhile."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = torch.get_num_threads()
    if device.type != "cpu" or local <= 1:
        yield
        return
    torch.set_num_threads(threads * local)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mark_interrupted(run: runs.Run, step: int, steps: int, how: str = "") -> None:
    run.mark("interrupted", f"{how or 'interrupted'} at step {step} of {steps}; run the same command to resume")


def _restore(path: Path, state: dict, model, opt) -> str:
    """Load a training state (runs.training_state) into the model and its Adam. Returns how the
    optimizer begins: "restored" (a checkpoint's, or published moments), or "new, warm-up" for
    published weights without moments (a fresh Adam's first steps would be full-size
    sign steps: the learning rate is ramped up over RESTART_WARMUP steps instead)."""
    runs.load_state(path, model, state["model"])
    if state.get("source") == "weights":
        return "restored" if runs.load_moments(path, opt, model, state) else "new, warm-up"
    runs.load_state(path, opt, state["optimizer"], "optimizer state")
    return "restored"


@contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, for the block (the main thread only):
    a run stopped before its loop (a scheduler's stop while the frame cache is built) is then
    marked interrupted rather than killed with its status left "running"."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop reads between steps, so that an interrupted run
    saves a checkpoint of a whole step (never of a half-applied update) and resumes exactly;
    a --minutes deadline asks for the same stop, as a leg's normal end."""
    NONE, DEADLINE, SIGNAL = 0, 1, 2

    def __init__(self):
        self.signalled, self.timed_out, self.old = False, False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)

    def now(self, world: int, device: torch.device, check: bool = True) -> int:
        """Why to stop before this step: NONE, DEADLINE or SIGNAL (a signal outranks the
        deadline). Under data parallelism every process stops at the same step for the same
        reason (one that stopped alone would leave the others waiting for its gradients); they
        agree at the steps where `check` (every step on CPUs, where agreeing costs nothing,
        every sync_every steps on GPUs)."""
        mine = self.SIGNAL if self.signalled else self.DEADLINE if self.timed_out else self.NONE
        if world == 1:
            return mine
        if not check:
            return self.NONE
        flag = torch.tensor([float(mine)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def _handle(self, signum, frame):
        if self.signalled and signum == signal.SIGINT:  # a second Ctrl-C stops at once; a second
            raise KeyboardInterrupt                      # SIGTERM (a scheduler signals every process
        self.signalled = True                            # of a job, and the launcher passes its own on) waits

    def restore(self):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (Python's hash() is salted per process for strings)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))
