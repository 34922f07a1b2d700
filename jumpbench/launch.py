"""Launching jobs: submitit job arrays on a cluster (with their slurm parameters) and the local
process supervisor, shared by sweeps of training runs (benchmarks/training/sweep.py) and generation
split into parts (generators/base.py), so that neither reaches into the other's package. What a
job or a child process runs is the caller's; this module only starts, watches and stops them.
No torch here.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from jumpbench.checks import parse_override
from jumpbench.errors import JumpbenchError

ERROR_FILE = "JUMPBENCH_ERROR_FILE"  # where a child process writes the one line that says why it failed


def slurm_params(defaults: dict | None = None) -> dict:
    """submitit's slurm parameters: `defaults` (a training run's by default), then the
    environment variable JUMPBENCH_SLURM ("key=value,key=value", values as in --set)."""
    params = dict(defaults or {"timeout_min": 3 * 24 * 60, "gpus_per_node": 1, "cpus_per_task": 4})  # 3 days a run
    for item in filter(None, os.environ.get("JUMPBENCH_SLURM", "").split(",")):
        key, value = parse_override(item)
        params[key] = value
    return params


def submit_array(fn: Callable, calls: list[tuple], folder: Path, cluster: str, name: str,
                 defaults: dict | None = None, parallelism: int | None = None) -> list:
    """Submit `fn(*args)` for each `args` of `calls` through submitit as one job array and
    return its jobs (not waiting). `cluster`: "slurm", or submitit's own "local" and "debug"
    executors (the tests'); submitit's logs go to `folder`/<job id>/. On slurm the parameters
    are `slurm_params(defaults)`, with at most `parallelism` jobs at a time unless
    JUMPBENCH_SLURM says otherwise."""
    import submitit

    params = slurm_params(defaults) if cluster == "slurm" else {"timeout_min": 24 * 60}
    if cluster == "slurm" and parallelism is not None:
        params.setdefault("slurm_array_parallelism", parallelism)
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        executor.update_parameters(name=name, **params)
        with executor.batch():
            jobs = [executor.submit(fn, *args) for args in calls]
    except (RuntimeError, ValueError, TypeError, OSError) as e:  # no slurm here, a bad JUMPBENCH_SLURM
        raise JumpbenchError(f"--launcher slurm: {' '.join(str(e).split())}") from None
    return jobs


def job_outcomes(jobs: list) -> Iterator[Exception | None]:
    """Wait for each job in turn: None when it finished, else its error (submitit re-raises the
    job's error, its traceback as text; see `job_error`)."""
    for job in jobs:
        try:
            job.result()
        except Exception as e:
            yield e
            continue
        yield None


def job_error(e: Exception) -> str:
    """The last "SomeError: why" line of a failed job's traceback text (else its first line)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln)]
    line = errors[-1] if errors else (lines[0] if lines else type(e).__name__)
    return line[:200]


class Children:
    """The processes a local sweep or a data-parallel run starts. They run in sessions of their
    own, so a Ctrl-C at the terminal reaches this process alone; it (and a SIGTERM or SIGHUP) is
    passed on as one SIGTERM to each child, which (a training run) checkpoints between two
    steps, marks its run interrupted and exits; this process waits for them and then stops as
    interrupted. A second Ctrl-C is passed on as SIGINT: the children stop at once. A child
    stops too when this process dies (PR_SET_PDEATHSIG, `as_child`)."""

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


def in_slots(children: Children, items: list, slots: list[dict], run: Callable, after: Callable) -> list[tuple]:
    """`run(item, slot)` for each item, in threads, as many at a time as there are `slots` (the
    environment of one task's processes: its GPUs or its share of cores), each call holding a
    slot of its own; then `after(item, what run returned)` once the slot is free again.
    Signals are forwarded to `children` meanwhile; an item not started when one comes is left
    out. Returns [(item, what after returned)] in the order the items finished."""
    free = queue.Queue()
    for slot in slots:
        free.put(slot)

    def one(item):
        slot = free.get()
        try:
            out = run(item, slot)
        finally:
            free.put(slot)
        return after(item, out)

    done = []
    with children.forwarding_signals(), cf.ThreadPoolExecutor(len(slots)) as pool:
        futures = {pool.submit(one, item): item for item in items}
        for fut in cf.as_completed(futures):
            try:
                done.append((futures[fut], fut.result()))
            except KeyboardInterrupt:  # a task not started: the whole is being stopped
                continue
    return done


def run_group(children: Children, argv: list[str], envs: list[dict], show: bool,
              aside: str | None = None) -> tuple[int, str | None, list[int]]:
    """Run `argv` in one process per environment of `envs` (added to this process's: the ranks of
    one data-parallel run when more than one) and wait for them: (exit status, why they failed
    or None, their pids). `show`: the first writes to this terminal (its progress bar). When one
    process fails, the others are given a minute to notice, then stopped. Each child may write
    why it failed to $JUMPBENCH_ERROR_FILE (`tell_why`); `aside`: see `why_failed`."""
    procs, order = [], []  # order: the ranks in the order they exited with an error
    with tempfile.TemporaryDirectory(prefix="jumpbench-run-") as tmp:
        errors = [Path(tmp) / f"rank-{r}.error" for r in range(len(envs))]
        try:
            for r, env in enumerate(envs):
                out = None if show and r == 0 else subprocess.DEVNULL
                procs.append(children.start(argv, {**os.environ, **env, ERROR_FILE: str(errors[r])},
                                            stdout=out, stderr=out))
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
    return code, why_failed(order, said, [p.returncode for p in procs], aside), [p.pid for p in procs]


def why_failed(order: list[int], said: dict[int, str], codes: list[int], aside: str | None = None) -> str | None:
    """One line for a failed group of processes: the error of the first that failed of its own
    accord (not one whose error starts with `aside`: it only lost a peer), else how the first
    was stopped."""
    if not order:
        return None
    where = (lambda r: f" (process {r} of {len(codes)})") if len(codes) > 1 else (lambda r: "")
    own = [r for r in order if r in said and not (aside and said[r].startswith(aside))]
    if own:
        return said[own[0]] + where(own[0])
    killed = [r for r in order if codes[r] < 0]
    if killed:
        r = killed[0]
        return (f"killed by signal {-codes[r]}{where(r)}" +
                (", perhaps for want of memory" if -codes[r] == signal.SIGKILL else ""))
    r = order[0]
    return said.get(r, f"exit status {codes[r]}") + where(r)


def as_child() -> None:
    """In a child process of `run_group`: a SIGTERM (the supervisor passing a stop on) before
    the child's own handlers take over raises KeyboardInterrupt, and so does the supervisor's
    death (Linux's PR_SET_PDEATHSIG sends a SIGTERM)."""
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(OSError, AttributeError):  # Linux: SIGTERM when the launcher dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tell_why(line: str) -> None:
    """In a child process of `run_group`, failing: its one line, on stderr and in
    $JUMPBENCH_ERROR_FILE, which the supervisor reports."""
    print(line, file=sys.stderr)
    if os.environ.get(ERROR_FILE):
        with contextlib.suppress(OSError):
            Path(os.environ[ERROR_FILE]).write_text(line)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
