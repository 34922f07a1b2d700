"""The inputs of the command line and the Python API, checked once, at the edge, by the same
code for both: the CLI's commands call the API's functions (generate, train through the sweep
launcher's run_seeds and sweep), which check their arguments here before anything is read,
written or trained. A value of the wrong type or out of range is a one-line JumpbenchError
that names it (as the CLI's option does), never a TypeError or ValueError from deeper down.
Values that depend on the data or the machine are checked where those are known
(config.fit_to_data); a run's arguments as a whole (its model, preset, seeds) by
config.run_inputs, built of these. No torch and nothing of the harness here.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from jumpbench.errors import JumpbenchError


def shown(value) -> str:
    """A value as the one line of an error (a long or multi-line repr cut short)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def whole(name: str, value, minimum: int | None = None, none_ok: bool = False) -> int | None:
    """`value` as an int (a bool, a float or a string is refused, so is one below `minimum`)."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise JumpbenchError(f"{name} must be a whole number, got {shown(value)}")
    if minimum is not None and value < minimum:
        raise JumpbenchError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def positive(name: str, value, none_ok: bool = False) -> float | None:
    """`value` as a finite number above 0 (a bool or a string is refused)."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise JumpbenchError(f"{name} must be a number above 0, got {shown(value)}")
    return float(value)


def folder(name: str, value, none_ok: bool = False) -> Path | None:
    """A path given as a str or os.PathLike, not empty (an empty one would mean the current
    folder), without NUL bytes."""
    if value is None and none_ok:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise JumpbenchError(f"{name} must be a folder (a str or Path), got {shown(value)}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise JumpbenchError(f"{name} must name a folder, got {shown(text)}")
    return Path(text)


def name(what: str, value, choices) -> str:
    """One of `choices` (a registry's names)."""
    if not isinstance(value, str) or value not in choices:
        raise JumpbenchError(f"unknown {what} {shown(value)}; choose from {', '.join(choices)}")
    return value


def overrides(value) -> list[str]:
    """`--set` items: a list (or tuple) of "key=value" strings; one string alone is refused
    rather than read as its characters."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise JumpbenchError(f"overrides must be a list of 'key=value' strings, got {shown(value)}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise JumpbenchError(f"overrides must be 'key=value' strings, got {shown(bad[0])}")
    return list(value)


def parse_override(item: str) -> tuple[str, object]:
    """A `--set key=value` item as (key, value): the value a TOML literal where it parses as one
    (numbers, booleans, lists, quoted strings), else the bare word as a string."""
    import tomllib

    if "=" not in item or not item.split("=", 1)[0].strip():
        raise JumpbenchError(f"--set expects key=value, got {item!r}")
    key, text = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word: a string
    return key, value
