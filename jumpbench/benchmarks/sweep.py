"""Seed sweeps: the same `train(...)` for each seed, skipping seeds already done and going on
when one diverges or fails (its status.json says why)."""
from __future__ import annotations

import click

from jumpbench.benchmarks import config as C
from jumpbench.benchmarks.train import dataset_info, read_status, run_dir, train
from jumpbench.errors import JumpbenchError


def run_seeds(model: str, data, preset: str, overrides: list[str], seeds: list[int], out, name=None,
              progress: bool = True) -> list[tuple[int, str]]:
    """Train each seed in turn; returns [(seed, why)] for the seeds that failed."""
    info = dataset_info(data)
    C.resolve(model, preset, info["name"], info, overrides)  # bad config: fail before any seed
    name = name or C.config_name(preset, overrides)
    failed = []
    for seed in seeds:
        folder = run_dir(out, info["name"], model, name, seed)
        status = read_status(folder)
        if status and status["status"] in ("done", "diverged"):
            click.echo(f"{folder}: {status['status']} already ({status['why']}); skipped")
            continue
        try:
            train(model, data, preset, overrides, seed, out, name, progress)
        except JumpbenchError:
            raise
        except Exception as e:  # recorded in status.json by train(); the sweep goes on
            failed.append((seed, f"{type(e).__name__}: {e}"))
            continue
        status = read_status(folder)
        click.echo(f"{folder}: {status['status']} ({status['why']})")
    return failed
