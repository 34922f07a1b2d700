"""The one training loop, for every model in the registry (docs/architecture.md).

A run (runs.RunSpec) writes its folder through runs.py: config.json, metrics.jsonl (one line
per evaluation), status.json (running|interrupted|done|diverged|failed, and why), samples.png and
checkpoint.pt. A run resumes from its checkpoint exactly: the batches and the noise of step
s are pure functions of (seed, s). Started under `torchrun`, it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); rank 0 writes the files.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np
import torch

from jumpbench.benchmarks import board
from jumpbench.benchmarks import config as C
from jumpbench.benchmarks import data as D
from jumpbench.benchmarks import evaluate as E
from jumpbench.benchmarks import machine as M
from jumpbench.benchmarks import runs
from jumpbench.errors import JumpbenchError, error_line
from jumpbench.files import read_json

RESTART_WARMUP = 200  # steps of learning-rate ramp for a run continued from weights without Adam's moments
PEER_LOST = "another process of this data-parallel run stopped"


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
    info = D.dataset_info(spec.data)
    check_model_fits(spec.model, info)
    C.resolve(spec.model, spec.preset, info["name"], info, list(spec.overrides))  # a bad config leaves no folder
    with runs.run_lock(spec.folder(info["name"])):
        return _train_run(spec, progress, info)


def _train_run(spec: runs.RunSpec, progress: bool, info: dict) -> Path:
    from jumpbench.models import MODELS

    if spec.tensorboard:
        board.require()
    cfg = C.resolve(spec.model, spec.preset, info["name"], info, list(spec.overrides))
    tc, dc = cfg["train"], cfg["data"]
    if info["size"] % dc.image_size:
        raise JumpbenchError(f"data.image_size {dc.image_size} must divide the dataset's {info['size']}")
    folder = spec.folder(info["name"])
    rank, world = _dist()
    D.batch_share(tc.batch_size, world)
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    M.setup_device(device)
    if device.type == "cpu":
        torch.set_num_threads(tc.threads or M.default_threads())
    precision = M.resolve_precision(tc.precision, device, compiled=tc.compile)
    ckpt_path = folder / runs.CHECKPOINT
    record = runs.record(spec, world, info, cfg)
    if cfg["warnings"]:  # values clamped to what the data and the machine allow: recorded, and the
        record["warnings"] = cfg["warnings"]  # user's own (--set) said; a preset's on a small set only recorded
        given = {C.parse_override(o)[0] for o in spec.overrides}
        for line in cfg["warnings"] if rank == 0 else []:
            if line.split("=")[0] in given or line.split("=")[0].split(".")[1] in given:
                click.echo(f"warning: {line}", err=True)
    branch = _branch(spec, folder, info, tc.steps, ckpt_path.is_file() or (folder / runs.WEIGHTS).is_file())

    # Model, optimizer, and the checkpoint to resume from (a branch's is checked to fit before
    # anything of the branch is written).
    seed = spec.seed
    torch.manual_seed(seed)
    model = MODELS[spec.model][0](cfg["model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    optimizer = "new"  # how Adam's state began this leg: new, restored, or new with a warm-up
    if branch is not None:
        optimizer = _restore(branch[0], branch[1], model, opt)
        record["branched_from"] = branch[2]
    # config.json is written once; a resume under another config or dataset is refused. Every
    # process decides on the folder as found, and the state it goes on from is loaded and
    # checked, before rank 0 writes anything (a refused --extend leaves config.json as it was).
    if world > 1:
        runs.check_global_batch(folder)
    extended = runs.open_run(folder, record, write=False, extend=spec.extend)
    status = runs.read_status(folder)
    if status and (status["status"] == "diverged" or (status["status"] == "done" and not extended)):
        return folder
    step, wall, resumed, ckpt, source = 0, 0.0, ({}, 0), None, "start"
    if branch is not None:
        ckpt, source = branch[1], "branch"
    else:
        try:  # checkpoint.pt (exact), else the published weights (a run from git); a checksummed
            # load: a bad file names itself and marks the run failed
            ckpt, path, _ = runs.training_state(folder, map_location=device, with_sha=True)
            if ckpt is not None:
                source = ckpt["source"]
                optimizer = _restore(path, ckpt, model, opt)
                runs.check_metrics(folder, ckpt["step"], tc.eval_every, path.name)
        except JumpbenchError as e:
            if rank == 0:
                runs.write_status(folder, "failed", str(e))
            raise
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        runs.open_run(folder, record, write=True, extend=spec.extend)
        if branch is not None:
            runs.start_branch(folder, branch[0], ckpt["step"])
    if ckpt is not None:
        step, wall = ckpt["step"], ckpt["wall"]
        if "rng" in ckpt:  # (every step seeds its own noise; kept for checkpoints' exactness)
            torch.set_rng_state(ckpt["rng"].cpu())  # map_location moved it to the device
        resumed = (ckpt.get("sums", {}), ckpt.get("count", 0))  # the train_* sums since the last evaluation
        if tc.precision == "auto":  # go on in the precision the run (or its parent) trained in
            precision = M.resumed_precision(ckpt.get("precision"), ckpt.get("device_type"), precision, device)
    # every parameter gets a gradient at every step (tests/test_models.py checks each model's
    # phases), so DDP need not search the graph for unused ones
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if rank == 0:
        runs.truncate_metrics(folder / runs.METRICS, step)
        runs.write_status(folder, "running", f"step {step} of {tc.steps}")

    # Data: per-step batches from the train split; a fixed test subset for evaluation. A failure
    # or a stop here (a corrupt shard met while the frame cache is built) is marked too.
    try:
        with _sigterm_interrupts():
            train_set, test_set = (D.Scenes(spec.data, s, dc.image_size) for s in ("train", "test"))
            sampler = D.StepBatches(len(train_set), tc.batch_size, seed, step, tc.steps, rank, world)
            if tc.cache and D.FrameCache.nbytes(train_set) <= tc.cache_gb * 1e9:
                batches = D.FrameCache(train_set, progress and rank == 0, warn=rank == 0).batches(sampler)
            else:
                batches = D.loader(train_set, sampler, tc.num_workers)
            evaluator = E.Evaluator(model, test_set, tc, dc, info, precision)
            if tc.compile and not model.compile_loss():
                raise JumpbenchError(f"train.compile: {spec.model} has no loss that compiles once per run; "
                                     "set train.compile=false")
    except BaseException as e:
        if rank == 0:
            if isinstance(e, Exception):
                runs.write_status(folder, "failed", str(e) if isinstance(e, JumpbenchError) else f"{type(e).__name__}: {e}")
            else:  # Ctrl-C or SIGTERM before the first step: nothing to checkpoint
                _mark_interrupted(folder, step, tc.steps)
        raise

    from tqdm import tqdm

    writer = board.open_writer(folder, step) if spec.tensorboard and rank == 0 else None
    leg = runs.Leg(folder, step, machine=M.describe(device), device=device.type, precision=precision,
                   threads=torch.get_num_threads(), procs=world, resumed=source, optimizer=optimizer)
    leg_wall, start_step = wall, step
    warmup = RESTART_WARMUP if optimizer == "new, warm-up" else 0
    deadline = time.monotonic() + spec.minutes * 60 if spec.minutes else None

    def save(step: int, wall: float, sums: dict | None = None, count: int = 0) -> None:  # rank 0
        runs.save_training_state(ckpt_path, model, opt, step, wall, sums, count, precision=precision,
                                 device_type=device.type)
        runs.publish_weights(folder, model, opt, step, wall, sums, count, precision, device.type)
        leg.update(step, wall - leg_wall)
    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank > 0, dynamic_ncols=True,
               desc=f"{spec.model} seed {seed}")
    stats, t0 = _StepStats(*resumed, device, world), time.perf_counter()
    pace = board.Pace()  # steps per second and the time spent waiting for data, for TensorBoard
    sync_every = _sync_every(device)
    stop = _StopRequest()

    def diverged() -> bool:  # reads the device (a sync); marks the run when a loss was not finite
        bad = stats.first_nonfinite()
        if bad is not None and rank == 0:
            runs.write_status(folder, "diverged", f"loss became {bad[1]} at step {bad[0]}")
        return bad is not None

    try:
        for item in batches:
            timed_out = deadline is not None and time.monotonic() > deadline
            stop.requested |= timed_out
            if stop.now(world, device, step % sync_every == 0):  # Ctrl-C, SIGTERM or --minutes: checkpoint
                if diverged():  # between two steps, then stop (GPUs: a NaN not read yet is marked, nothing saved)
                    raise KeyboardInterrupt
                sums = stats.host()  # every process
                if rank == 0:
                    save(step, wall + time.perf_counter() - t0, *sums)
                    _mark_interrupted(folder, step, tc.steps, f"stopped after --minutes {spec.minutes:g}" if timed_out else "")
                if timed_out:
                    return folder
                raise KeyboardInterrupt
            # One step: its own noise, the scheduled learning rate, clipped gradients.
            t_item = time.perf_counter()
            torch.manual_seed(_seed(seed, step, rank, 0))
            g = torch.Generator().manual_seed(_seed(seed, step, rank, 1))
            batch = D.train_batch(item, dc, model.jumpy, g, device)
            lr = tc.lr_at(step) * (min(1.0, (step - start_step + 1) / warmup) if warmup else 1.0)
            out = forward(net, batch, step, precision, device)
            loss = out["loss"]
            finite = torch.isfinite(loss.detach()).float()
            if world > 1:  # every rank stops together
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            stats.add(out, finite, step)
            if sync_every == 1 and diverged():  # CPUs: before the update, as reading costs nothing
                return folder
            grad_norm = update(model, opt, loss, lr, tc.grad_clip)
            step += 1
            bar.update(1)
            if writer is not None:
                pace.step(t_item)
                if step % tc.log_every == 0:
                    board.log_step(writer, step, out, lr, grad_norm, *pace.take())
            evaluate = step % tc.eval_every == 0 or step == tc.steps
            if step % sync_every == 0 or evaluate:
                # GPUs: every sync_every steps (CPUs read before the update); a non-finite loss
                # leaves non-finite weights, so it is still seen here, and nothing after it was
                # checkpointed
                if sync_every > 1 and diverged():
                    return folder
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}")

            # Evaluate, write samples and metrics, checkpoint (rank 0).
            if evaluate:
                wall += time.perf_counter() - t0
                t0 = time.perf_counter()
                sums, count = stats.host()  # every process
                if rank == 0:
                    with _evaluation_threads(device, world):
                        scores = evaluator(step, folder)
                    row = {"step": step, "wall": round(wall, 2), "lr": tc.lr_at(step),
                           **{f"train_{k}": v / count for k, v in sums.items()}, **scores}
                    runs.append_metrics(folder, row)
                    if writer is not None:
                        board.log_row(writer, row, folder)
                    save(step, wall)
                    runs.write_status(folder, "running", f"step {step} of {tc.steps}")
                stats.reset()
    except Exception as e:
        if world > 1 and ("by peer" in str(e) or isinstance(e, torch.distributed.DistError)):  # a peer died
            # (gloo: "Connection closed/reset by peer", with a path of the machine that built torch)
            e = JumpbenchError(f"{PEER_LOST} (killed, or failed: `run --procs` says why); re-run the same "
                               "command to resume from the last checkpoint")
        if rank == 0 and not _diverged_before(diverged):
            runs.write_status(folder, "failed", error_line(e))
        if isinstance(e, JumpbenchError):
            raise e from None
        raise
    finally:
        stop.restore()
        bar.close()
        if writer is not None:
            writer.close()
    if rank == 0:
        runs.write_status(folder, "done", f"{tc.steps} steps in {wall:.0f} s")
    return folder


def forward(net, batch: dict, step: int, precision: str, device: torch.device) -> dict:
    """The model's losses on one batch at `step`, under the run's precision (autocast)."""
    with M.autocast(precision, device):
        return net(batch, step)


def update(model, opt, loss: torch.Tensor, lr: float, grad_clip: float) -> torch.Tensor | None:
    """One optimizer step on `loss`: the learning rate `lr`, gradients clipped to the norm
    `grad_clip` (0: not clipped). Returns the gradient norm before clipping (on the device), or
    None when not clipped. The training loop and `bench train` both step through forward and
    this, so the benchmark times what training runs."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip else None
    opt.step()
    return norm


def _branch(spec: runs.RunSpec, folder: Path, info: dict, steps: int, own_checkpoint: bool) -> tuple | None:
    """runs.branch_source for a branch that has no checkpoint of its own yet; None when the run
    is not a branch or resumes its own checkpoint. A folder that already holds another run, a
    branch of another parent, or a branch asked to start without --from, is refused rather than
    trained (or skipped) from the wrong weights."""
    old = read_json(folder / runs.CONFIG)
    before = old.get("branched_from") if isinstance(old, dict) else None
    if spec.branch_from is None:
        if before and not own_checkpoint:
            raise JumpbenchError(f"{folder} is a branch of {before['name']}/seed-{before['seed']} at step "
                                 f"{before['step']} with no checkpoint of its own yet: give --from that run")
        return None
    runs.check_branch_folder(spec, folder)
    if own_checkpoint:  # resume the branch's own checkpoint
        return None
    branch = runs.branch_source(spec.branch_from, spec, info, steps)
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
            v = v.detach().double()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
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


def _mark_interrupted(folder: Path, step: int, steps: int, how: str = "") -> None:
    runs.write_status(folder, "interrupted", f"{how or 'interrupted'} at step {step} of {steps}; run the same "
                                             "command to resume")


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
    saves a checkpoint of a whole step (never of a half-applied update) and resumes exactly."""

    def __init__(self):
        self.requested, self.old = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)

    def now(self, world: int, device: torch.device, check: bool = True) -> bool:
        """Whether to stop before this step. Under data parallelism a request in any process
        stops every process at the same step (one that stopped alone would leave the others
        waiting for its gradients); they agree at the steps where `check` (every step on CPUs,
        where agreeing costs nothing, every sync_every steps on GPUs)."""
        if world == 1:
            return self.requested
        if not check:
            return False
        flag = torch.tensor([float(self.requested)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C stops at once; a second
            raise KeyboardInterrupt                     # SIGTERM (a scheduler signals every process
        self.requested = True                           # of a job, and the launcher passes its own on) waits

    def restore(self):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (Python's hash() is salted per process for strings)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))
