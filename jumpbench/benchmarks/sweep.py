"""Seed and hyperparameter sweeps (Kumar, Eslami et al., ICLR 2019, section 4.1: "We swept over
model size, learning rate, and stochasticity parameters ... selected the best hyperparameter
configuration ... over 15 random seeds").

Every run is a `runs.RunSpec` trained by the same `train_run(spec)` call. Seed sweeps skip runs already done (or diverged),
resume interrupted ones from their checkpoint, and go on when one diverges or fails (its
status.json says why; a diverged run counts as failed, so `jumpbench run` exits non-zero).
Launchers:
- `local`, jobs = 1: the runs one after another in this process;
- `local`, jobs = J > 1: J runs at a time, each in a fresh Python process with
  cores // J torch threads, or its own GPU (CUDA_VISIBLE_DEVICES) when there are GPUs;
- `local`, procs = P > 1: each run trains data-parallel in P processes on this machine
  (DistributedDataParallel over gloo on CPUs, one GPU each on GPUs), with cores // (J * P)
  threads each. On a 2-core CPU two 1-thread processes beat one 2-thread process for the
  video models (many small operations, which a second thread does not speed up);
  `jumpbench bench train --procs 2` measures it;
- `slurm`: the same calls submitted through submitit as one job array (`cluster="local"` or
  `"debug"` run submitit's own executors, as the tests do). Slurm parameters come from the
  environment variable JUMPBENCH_SLURM, e.g. "slurm_partition=gpu,timeout_min=4320";
  submitit's logs go to <out>/.submitit/.

A grid sweep (`sweep`) trains one seed per point of the cross product of `--grid key=v1,v2`
lists (any key `--set` accepts), ranks the points by the last evaluation's value of a test
metric (lower is better: every metric jumpbench logs is a loss or an error), and writes
<out>/<dataset>/<model>/best.json; `run --config best` then trains the seeds with it.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import json
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from jumpbench import checks
from jumpbench.benchmarks import config as C
from jumpbench.benchmarks import runs
from jumpbench.benchmarks.data import dataset_info
from jumpbench.benchmarks.machine import free_port, usable_cores
from jumpbench.benchmarks.runs import RunSpec, read_status
from jumpbench.benchmarks.train import MINUTES_STOP, PEER_LOST, check_model_fits, train_run
from jumpbench.errors import JumpbenchError, error_line
from jumpbench.launch import slurm_params

LAUNCHERS = ("local", "slurm")


def run_tasks(tasks: list[RunSpec], jobs: int = 1, launcher: str = "local", progress: bool = True,
              cluster: str | None = None) -> list[tuple[RunSpec, str]]:
    """Train each run unless it is done or diverged already; returns [(spec, why)] for those
    that failed or diverged (now or before). `cluster` picks submitit's executor for the
    slurm launcher ("slurm" by default; "local" and "debug" for tests)."""
    if jobs < 1:
        raise JumpbenchError(f"--jobs must be at least 1, got {jobs}")
    if launcher not in LAUNCHERS:
        raise JumpbenchError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    procs = max([t.procs for t in tasks], default=1)
    if procs > 1:
        if launcher != "local":
            raise JumpbenchError("--procs: data-parallel processes are started by the local launcher only "
                                 "(on a cluster, start the processes with torchrun)")
        if os.environ.get("WORLD_SIZE"):
            raise JumpbenchError("--procs: this process is already one of a data-parallel group (torchrun)")
    todo, failed = [], []
    for t in tasks:  # a finished run under another config (or a batch its processes cannot split) is refused here
        folder, status = runs.pending(t)
        if status:
            click.echo(f"{folder}: {status['status']} already ({status['why']}); skipped")
            if status["status"] == "diverged":  # a failed run, re-run or not
                failed.append((t, f"diverged ({status['why']})"))
        else:
            todo.append((t, folder))
    if not todo:
        return failed
    if launcher == "slurm":
        return failed + _submitit(todo, jobs, cluster or "slurm")
    if jobs == 1 and procs == 1:
        for t, folder in todo:
            try:
                train_run(t, progress)
            except Exception as e:  # this run's own (a corrupt checkpoint; status.json says why): the others go on
                if len(todo) == 1 and isinstance(e, (JumpbenchError, OSError)):
                    raise
                failed.append((t, error_line(e)))
                continue
            why = _report(folder)
            if why and (read_status(folder) or {}).get("status") == "diverged":  # a failed run too
                failed.append((t, why))
        return failed
    return failed + _processes(todo, jobs, procs, progress)


def _report(folder: Path) -> str | None:
    """Say how a run ended; None when it is done, else why it is not (a diverged run failed)."""
    status = read_status(folder)
    click.echo(f"{folder}: {status['status']} ({status['why']})" if status else f"{folder}: no status")
    if status and status["status"] == "diverged":
        return f"diverged ({status['why']})"
    if status and status["status"] == "interrupted" and status["why"].startswith(MINUTES_STOP):
        return None  # a leg of --minutes ended as asked
    return None if status and status["status"] == "done" else (status or {}).get("why", "no status")


def _slots(jobs: int, procs: int = 1) -> list[dict]:
    """The environment of each of `jobs` parallel runs of `procs` processes each: their GPUs, or
    their share of cores."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if procs > 1 and len(gpus) < jobs * procs:
            raise JumpbenchError(f"--jobs {jobs} --procs {procs} needs {jobs * procs} GPUs, this machine "
                                 f"shows {len(gpus)}")
    threads = max(1, usable_cores() // (jobs * procs))
    slots = []
    for i in range(jobs):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "JUMPBENCH_THREADS": str(threads)}
        if gpus:  # a run of P processes gets P GPUs; each process takes the one of its LOCAL_RANK
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[(i * procs + r) % len(gpus)] for r in range(procs))
        slots.append(env)
    return slots


class _Children:
    """The processes a local sweep or a data-parallel run starts. They run in sessions of their
    own, so a Ctrl-C at the terminal reaches this process alone; it (and a SIGTERM or SIGHUP) is
    passed on as one SIGTERM to each child, which checkpoints between two steps, marks its run
    interrupted and exits; this process waits for them and then stops as interrupted. A second
    Ctrl-C is passed on as SIGINT: the children stop at once. A child stops too when this
    process dies (PR_SET_PDEATHSIG, _main)."""

    def __init__(self):
        self.live, self.lock, self.stopping, self.forced = set(), threading.RLock(), False, False

    def start(self, argv: list[str], env: dict, **kw) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise KeyboardInterrupt
            proc = subprocess.Popen(argv, env=env, start_new_session=True, **kw)
            self.live.add(proc)
            return proc

    def finished(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.live.discard(proc)

    def stop(self, signum=None, frame=None) -> None:
        with self.lock:
            force = self.stopping and signum == signal.SIGINT and not self.forced
            if self.stopping and not force:
                return
            self.forced |= force
            self.stopping = True
            for proc in self.live:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT if force else signal.SIGTERM)

    @contextlib.contextmanager
    def forwarding_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if self.stopping:
            raise KeyboardInterrupt


def _run_processes(children: _Children, task: RunSpec, env: dict, show: bool) -> tuple[int, str | None, list[int]]:
    """Train `task` in its `procs` processes (ranks of one data-parallel run when more than one)
    and wait for them: (exit status, why they failed or None, their pids). `show`: rank 0 writes
    to this terminal (its progress bar). When one process fails, the others are given a minute
    to notice (their gradients' all-reduce fails), then stopped."""
    argv = [sys.executable, "-m", "jumpbench.benchmarks.sweep", task.to_json()] + (["--progress"] if show else [])
    group = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(task.procs),
             "LOCAL_WORLD_SIZE": str(task.procs)} if task.procs > 1 else {}
    procs, order = [], []  # order: the ranks in the order they exited with an error
    with tempfile.TemporaryDirectory(prefix="jumpbench-run-") as tmp:
        errors = [Path(tmp) / f"rank-{r}.error" for r in range(task.procs)]
        try:
            for r in range(task.procs):
                rank = {"RANK": str(r), "LOCAL_RANK": str(r)} if task.procs > 1 else {}
                out = None if show and r == 0 else subprocess.DEVNULL
                procs.append(children.start(argv, {**os.environ, **env, **group, **rank,
                                                   "JUMPBENCH_ERROR_FILE": str(errors[r])}, stdout=out, stderr=out))
            deadline = None
            while any(p.poll() is None for p in procs):
                order += [r for r, p in enumerate(procs) if p.returncode and r not in order]
                if deadline is None and order:
                    deadline = time.monotonic() + 60
                if deadline is not None and time.monotonic() > deadline:
                    for p in procs:
                        with contextlib.suppress(ProcessLookupError):
                            p.kill()
                time.sleep(0.2)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                children.finished(p)
        order += [r for r, p in enumerate(procs) if p.returncode and r not in order]
        said = {r: e.read_text().strip() for r, e in enumerate(errors) if e.is_file()}
    code = max((p.returncode for p in procs), key=abs)
    return code, _why_failed(order, said, [p.returncode for p in procs]), [p.pid for p in procs]


def _why_failed(order: list[int], said: dict[int, str], codes: list[int]) -> str | None:
    """One line for a failed run's processes: the error of the first that failed of its own
    accord (not one that only lost a peer), else how the first was stopped."""
    if not order:
        return None
    where = (lambda r: f" (process {r} of {len(codes)})") if len(codes) > 1 else (lambda r: "")
    own = [r for r in order if r in said and not said[r].startswith(PEER_LOST)]
    if own:
        return said[own[0]] + where(own[0])
    killed = [r for r in order if codes[r] < 0]
    if killed:
        r = killed[0]
        return (f"killed by signal {-codes[r]}{where(r)}" +
                (", perhaps for want of memory" if -codes[r] == signal.SIGKILL else ""))
    r = order[0]
    return said.get(r, f"exit status {codes[r]}") + where(r)


def _processes(todo: list[tuple[RunSpec, Path]], jobs: int, procs: int = 1,
               progress: bool = False) -> list[tuple[RunSpec, str]]:
    """Run the tasks `jobs` at a time, each in its own `python -m jumpbench.benchmarks.sweep`
    (`procs` of them for a data-parallel run). With one job at a time and `progress`, the
    training's progress bar shows."""
    free = queue.Queue()
    for env in _slots(jobs, procs):
        free.put(env)
    children = _Children()

    def one(t: RunSpec, folder: Path) -> str | None:
        env = free.get()
        try:
            code, why, pids = _run_processes(children, t, env, show=progress and jobs == 1)
        finally:
            free.put(env)
        status = read_status(folder)
        if why is None or children.stopping:
            return _report(folder)
        if status and status.get("pid") in pids and status["status"] != "running" and \
                not status["why"].startswith(PEER_LOST):
            return _report(folder)  # the run's status.json says why, from this launch
        if runs.Run(folder).exists():  # else: a stale status, "running", or only a lost peer
            runs.Run(folder).mark("failed", why)
            return _report(folder)
        click.echo(f"{folder}: failed ({why})")  # before the run had a folder
        return why

    failed = []
    with children.forwarding_signals(), cf.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(one, t, folder): t for t, folder in todo}
        for fut in cf.as_completed(futures):
            try:
                why = fut.result()
            except KeyboardInterrupt:  # a task not started: the sweep is being stopped
                continue
            if why:
                failed.append((futures[fut], why))
    return failed


def _train_task(task: RunSpec, threads: int | None = None, progress: bool = False) -> str:
    """One run in a worker process (subprocess or submitit job); returns its final status."""
    import torch

    threads = threads or int(os.environ.get("JUMPBENCH_THREADS", "0"))
    if threads:  # train() takes its threads from here
        os.environ["JUMPBENCH_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    folder = train_run(task, progress)
    return (read_status(folder) or {}).get("status", "unknown")


def _submitit(todo: list[tuple[RunSpec, Path]], jobs: int, cluster: str) -> list[tuple[RunSpec, str]]:
    """Submit the tasks through submitit as one array (at most `jobs` at a time) and wait."""
    import submitit

    folder = Path(todo[0][0].out) / ".submitit"
    params = slurm_params() if cluster == "slurm" else {"timeout_min": 60 * 24}
    if cluster == "slurm":
        params.setdefault("slurm_array_parallelism", jobs)
    threads = max(1, usable_cores() // jobs) if cluster != "slurm" else None
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        executor.update_parameters(name="jumpbench", **params)
        with executor.batch():
            submitted = [(executor.submit(_train_task, t, threads), t, f) for t, f in todo]
    except (RuntimeError, ValueError, TypeError, OSError) as e:  # no slurm here, a bad JUMPBENCH_SLURM
        raise JumpbenchError(f"--launcher slurm: {' '.join(str(e).split())}") from None
    failed = []
    for job, t, f in submitted:
        click.echo(f"{f}: submitted as job {job.job_id}")
    for job, t, f in submitted:
        try:
            job.result()
        except Exception as e:  # submitit re-raises the job's error; the status says why
            failed.append((t, (read_status(f) or {}).get("why") or f"{type(e).__name__}: {str(e)[-300:]}"))
            continue
        why = _report(f)
        if why:
            failed.append((t, why))
    return failed


def run_seeds(model: str, data, preset: str, overrides: list[str], seeds: list[int], out, name=None,
              progress: bool = True, jobs: int = 1, launcher: str = "local",
              cluster: str | None = None, tensorboard: bool = False, extend: bool = False,
              branch_from: str | None = None, procs: int = 1, minutes: float | None = None) -> list[tuple[int, str]]:
    """Train each seed (see run_tasks); returns [(seed, why)] for the seeds that failed.
    `tensorboard`, `extend`, `branch_from`, `minutes`: train()'s keywords (a config folder as
    `branch_from` gives each seed its own parent)."""
    C.run_inputs(model, data, preset, overrides, seeds, out, name, branch_from, minutes)
    info = dataset_info(data)
    check_model_fits(model, info)
    C.resolve(model, preset, info["name"], info, overrides)  # bad config: fail before any seed
    name = name or C.config_name(preset, overrides)
    if tensorboard:
        from jumpbench.benchmarks.board import require

        require()  # the one-line hint before any seed starts
    if branch_from is not None:  # every seed's parent before any seed trains
        from jumpbench.benchmarks.runs import branch_parent

        for s in seeds:
            branch_parent(branch_from, s)
    tasks = [RunSpec(model, data, preset, tuple(overrides), s, out, name, tensorboard, extend, branch_from, procs,
                     minutes) for s in seeds]
    return [(t.seed, why) for t, why in run_tasks(tasks, jobs, launcher, progress, cluster)]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["lr=1e-4,3e-4", "lstm_sizes=[8,8],[16,16]"] -> {"lr": ["1e-4", "3e-4"], ...}: commas
    outside brackets separate values (TOML literals, as `--set` takes them)."""
    grid = {}
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or not text.strip():
            raise JumpbenchError(f"--grid expects key=v1,v2,..., got {item!r}")
        values, depth, cur = [], 0, ""
        for ch in text:
            depth += (ch in "[{") - (ch in "]}")
            if ch == "," and depth == 0:
                values.append(cur.strip())
                cur = ""
            else:
                cur += ch
        values.append(cur.strip())
        if any(not v for v in values):
            raise JumpbenchError(f"--grid {item!r}: an empty value")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise JumpbenchError(f"--grid {key}: {repeated[0]} given twice; give each value once")
        if key in grid:
            raise JumpbenchError(f"--grid {key} given twice")
        grid[key] = values
    if not grid:
        raise JumpbenchError("give at least one --grid key=v1,v2,...")
    return grid


def default_metric(info: dict) -> str:
    return "test_min_mse" if info["viewpoint_key"] == "timestamps" else "test_loss"


def logged_metrics(model: str, cfg: dict, info: dict) -> set[str]:
    """The metrics a run of `model` under `cfg` logs: train_<term> and test_<term> for each term
    of its loss (one forward pass on a random batch of two, at the config's sizes), and the
    evaluation's own: test_min_mse and test_time_variation on videos. (test_baseline_* and,
    at a run's end, test_score_* come on top.)"""
    import torch

    from jumpbench.benchmarks import data as D
    from jumpbench.benchmarks.train_speed import synthetic_item
    from jumpbench.models import MODELS

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = MODELS[model][0](cfg["model"])
    with torch.no_grad():
        terms = net(D.train_batch(synthetic_item(info, 2, cfg["data"].image_size), cfg["data"], net.jumpy, g), 0)
    video = ["test_min_mse", "test_time_variation"] if info["viewpoint_key"] == "timestamps" else []
    return {f"{split}_{k}" for k in terms for split in ("train", "test")} | set(video)


def sweep(model: str, data, preset: str, grid_items: list[str], out, metric: str | None = None,
          base_overrides: list[str] = (), seed: int = 0, jobs: int = 1, launcher: str = "local",
          progress: bool = True, cluster: str | None = None, procs: int = 1) -> dict:
    """Train one seed per grid point, rank the points by `metric` (lower is better; diverged or
    failed points last) and write <out>/<dataset>/<model>/best.json. Returns its content."""
    C.run_inputs(model, data, preset, base_overrides, [seed], out)
    grid = parse_grid(checks.overrides(grid_items))
    info = dataset_info(data)
    check_model_fits(model, info)
    metric = metric or default_metric(info)
    points = [list(base_overrides) + [f"{k}={v}" for k, v in zip(grid, combo)]
              for combo in itertools.product(*grid.values())]
    seen = {}
    for p in points:  # every point must be a valid config before anything trains, and each its own
        cfg = C.resolve(model, preset, info["name"], info, p)
        key = json.dumps(C.to_dict(cfg), sort_keys=True)
        if key in seen:
            raise JumpbenchError(f"--grid: {' '.join(seen[key])} and {' '.join(p)} are the same config; "
                                 "give each value once")
        seen[key] = p
    try:  # and the metric one its runs log (a typo: before hours of training)
        known = logged_metrics(model, cfg, info)
    except (RuntimeError, ValueError) as e:  # a config that does not run fails here, not in every point
        raise JumpbenchError(f"{model} under this config fails a forward pass: {error_line(e)}") from None
    if metric not in known and not metric.startswith(("test_baseline_", "test_score_")):
        raise JumpbenchError(f"unknown metric {metric!r}; {model} on {info['name']} logs {', '.join(sorted(known))}")
    tasks = [RunSpec(model, data, preset, tuple(p), seed, out, procs=procs) for p in points]
    failed = {t.name: why for t, why in run_tasks(tasks, jobs, launcher, progress, cluster)}
    ranking = []
    for t in tasks:
        folder = t.folder(info["name"])
        value, step = runs.last_value(folder, metric)
        status = (read_status(folder) or {}).get("status", "missing")
        ok = status == "done" and value is not None and math.isfinite(value)
        ranking.append({"overrides": list(t.overrides), "name": t.name, "value": value, "step": step,
                        "status": status, "why": failed.get(t.name), "ok": ok})
    if not any(r["value"] is not None for r in ranking):
        raise JumpbenchError(f"metric {metric!r} is in no run's metrics.jsonl; see the keys there "
                             f"(e.g. {default_metric(info)})")
    ranking.sort(key=lambda r: (not r["ok"], r["value"] if r["ok"] else math.inf))
    if not ranking[0]["ok"]:
        raise JumpbenchError(f"no grid point finished; see the status.json files under {Path(out) / info['name']}")
    best = {"model": model, "dataset": info["name"], "data": str(data), "preset": preset, "metric": metric,
            "lower_is_better": True, "seed": seed, "procs": procs, "grid": grid, "base_overrides": list(base_overrides),
            "best": {k: ranking[0][k] for k in ("overrides", "name", "value")}, "ranking": ranking}
    runs.write_best(Path(out) / info["name"] / model / runs.BEST, best)
    return best


def load_best(out, data, model: str, which: str = "best") -> tuple[str, list[str], int]:
    """(preset, overrides, processes per run) of a sweep's winner: `which` is "best"
    (<out>/<dataset>/<model>/best.json) or the path of such a file. Its seed's run is the
    sweep's own point, so `run --config best` trains in as many processes as the sweep did."""
    path = Path(which)
    if which == "best":
        path = Path(out) / dataset_info(data)["name"] / model / runs.BEST
    if path.is_dir():
        raise JumpbenchError(f"--config {which}: a folder; give 'best' or the path of a sweep's best.json")
    if not path.is_file():
        raise JumpbenchError(f"no {path} (make it with: jumpbench sweep --model {model} --grid KEY=V1,V2)")
    best = runs.read_best(path)
    return best["preset"], list(best["best"]["overrides"]), best.get("procs", 1)


def _main(argv: list[str]) -> int:
    """One run (or one process of it) for the local launcher: TASK_JSON [--progress]. An error is
    one line on stderr and in $JUMPBENCH_ERROR_FILE, which the launcher reports. A SIGTERM
    before the training loop takes over the signals (while the model is built) stops it as
    interrupted, as does the launcher's death."""
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(OSError, AttributeError):  # Linux: SIGTERM when the launcher dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    try:
        _train_task(RunSpec.from_json(argv[0]), progress="--progress" in argv[1:])
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        line = error_line(e)
        print(line, file=sys.stderr)
        if os.environ.get("JUMPBENCH_ERROR_FILE"):
            with contextlib.suppress(OSError):
                Path(os.environ["JUMPBENCH_ERROR_FILE"]).write_text(line)
        return 1
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":  # one run of a parallel local sweep: python -m jumpbench.benchmarks.sweep TASK_JSON
    sys.exit(_main(sys.argv[1:]))
