"""Every file jumpbench writes goes through here: whole files appear atomically (a temporary
name beside the target, fsync, rename; removed when the write fails), so an interrupted
command never leaves a half-written file under its final name."""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from jumpbench.errors import JumpbenchError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` (".<name>.<pid>.tmp") to write to: renamed over `path`
    when the block ends, removed when it raises. A temporary of the same file left by a process
    that was killed (SIGKILL: no cleanup ran) is removed first."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2:-4]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    """Whether a process of that id runs on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def file_lock(path: str | Path, wait: bool = True, busy: Callable[[], str] | None = None) -> Iterator:
    """An exclusive advisory lock (fcntl.flock) on the file `path` (created if missing), held
    for the block; yields the open lock file. With wait=False a lock held elsewhere raises at
    once: JumpbenchError(busy()) when `busy` is given, else BlockingIOError. flock locks die
    with their process, so a crashed holder never leaves a stale lock; two opens of the file
    exclude each other even in one process. A folder is locked itself (yields None): a lock that
    deleting a file cannot break."""
    import fcntl

    folder = Path(path).is_dir()
    f = os.open(path, os.O_RDONLY | os.O_DIRECTORY) if folder else open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            if busy is None:
                raise
            raise JumpbenchError(busy()) from None
        yield None if folder else f
    finally:
        os.close(f) if folder else f.close()  # releases the lock


def fsync(f) -> None:
    """Flush an open file to the disk."""
    f.flush()
    os.fsync(f.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        fsync(f)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line durably (a log such as metrics.jsonl): a crash can tear only this last
    line, which its readers drop (no newline after it)."""
    with open(path, "a") as f:
        f.write(line.rstrip("\n") + "\n")
        fsync(f)


def read_json(path: str | Path) -> Any:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
