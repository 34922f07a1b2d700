"""Launching jobs on a cluster: submitit job arrays and their slurm parameters, shared by sweeps
of training runs (benchmarks/sweep.py) and generation split into parts (generators/base.py), so
that neither reaches into the other's package. What a job runs is the caller's. No torch here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterator

from jumpbench.checks import parse_override
from jumpbench.errors import JumpbenchError


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
