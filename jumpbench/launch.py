"""Launching jobs on a cluster: the slurm parameters of submitit jobs, shared by sweeps of
training runs (benchmarks/sweep.py) and generation split into parts (generators/base.py), so
that neither reaches into the other's package. No torch here.
"""
from __future__ import annotations

import os

from jumpbench.checks import parse_override


def slurm_params(defaults: dict | None = None) -> dict:
    """submitit's slurm parameters: `defaults` (a training run's by default), then the
    environment variable JUMPBENCH_SLURM ("key=value,key=value", values as in --set)."""
    params = dict(defaults or {"timeout_min": 3 * 24 * 60, "gpus_per_node": 1, "cpus_per_task": 4})  # 3 days a run
    for item in filter(None, os.environ.get("JUMPBENCH_SLURM", "").split(",")):
        key, value = parse_override(item)
        params[key] = value
    return params
