"""The one exception type the CLI turns into a one-line error and a non-zero exit, and the
wording of the one-line errors."""
import errno


class JumpbenchError(Exception):
    """A user-facing error: bad input, a missing or corrupt dataset, a refused overwrite."""


def one_line(message: str) -> str:
    """A message as one line. An error re-raised from a DataLoader worker carries the worker's
    traceback in its text: its last line (without the exception's class) says what went wrong."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback (most recent call last)" in message:
        last = lines[-1]
        head, sep, rest = last.partition(": ")
        return rest if sep and head.replace(".", "").replace("_", "").isalnum() and " " not in head else last
    return " ".join(lines)


def os_error_line(e: OSError) -> str:
    """What went wrong with a file, and what the user can do: a full disk leaves the finished
    work and a re-run resumes; a folder that cannot be written wants another one."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full{where}; finished work is kept: free some space and re-run to resume"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{e.strerror}{where}: cannot write there; give a folder you can write to"
    return one_line(f"{e.strerror or e}{where}")


def error_line(e: BaseException) -> str:
    """The one line an error is shown as: a JumpbenchError's message, an OSError's
    `os_error_line`, anything else (a bug) its type and message."""
    if isinstance(e, JumpbenchError):
        return one_line(str(e))
    if isinstance(e, OSError):
        return os_error_line(e)
    return one_line(f"{type(e).__name__}: {e}")
