"""A job's workers: how many threads or processes it may run (default_threads, its share of
this machine's cores: torch's threads in training, the frame cache's decoders), and forked
worker processes that end quietly with their parent: a process pool opened inside
`quiet_workers()` (generation's shard writers, the frame cache's decoders) leaves no orphan
when its parent is killed, which would otherwise write a BrokenPipe traceback to the terminal
when it hands back its next result; and a Ctrl-C or SIGTERM is the parent's to handle (it
stops its pool), not a KeyboardInterrupt traceback from every worker.

Each child forked inside the block (os.register_at_fork; subprocesses, which exec, are not
touched) ignores SIGINT, takes the default SIGTERM (the pool's terminate ends it silently, even
where the parent turned SIGTERM into KeyboardInterrupt) and is sent SIGKILL when its parent
dies (Linux's PR_SET_PDEATHSIG). A worker holds nothing a re-run does not redo: a shard half
written is a temporary file the next run removes.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(jobs: int = 1) -> int:
    """Threads for one of `jobs` jobs sharing this machine: JUMPBENCH_THREADS if set, else the
    usable cores divided among the jobs and among the processes of a data-parallel run on this
    machine (LOCAL_WORLD_SIZE, set by torchrun and by `run --procs`), at least 1."""
    env = os.environ.get("JUMPBENCH_THREADS")
    if env:
        return max(1, int(env))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, usable_cores() // (max(1, jobs) * max(1, local)))


_lock = threading.Lock()
_active: dict[int, int] = {}  # the pid whose forks are quieted -> open blocks
_registered = False


def _after_fork_in_child() -> None:
    parent = next((pid for pid, n in _active.items() if n), None)  # the parent's, forked in the block
    if parent is None:
        return
    _active.clear()  # the child's own forks are its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


@contextlib.contextmanager
def quiet_workers():
    """The block in which this process forks its pool's workers (see the module)."""
    global _registered
    with _lock:
        if not _registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _registered = True
        pid = os.getpid()
        _active[pid] = _active.get(pid, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _active[pid] -= 1
