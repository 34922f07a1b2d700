"""TensorBoard event files of a run (`run --tensorboard`, the optional extra jumpbench[tensorboard]).

The events go into the run folder itself, so `tensorboard --logdir results/runs` shows every
run (a sweep's seeds side by side) under its dataset/model/config/seed path. Every
`train.log_every` steps: the step's loss terms as `step/<key>` (loss, nll, kl, mse, pixel_var,
...), `step/lr`, `step/grad_norm` (before clipping), `speed/steps_per_s` and
`speed/data_wait_ms` (per step, waiting for the next batch). At each evaluation: the row's
train_* and test_* values as scalars `train/<key>` and `test/<key>`, and the samples grid (the
picture of samples.png) as the image `samples`. When the run finishes: an HPARAMS entry with its
--set overrides (a sweep's grid point) and its final test metrics. A resumed run drops the
events written after the step it resumes from (SummaryWriter's purge_step), so no step
appears twice.
"""
from __future__ import annotations

import time
from pathlib import Path

HINT = "--tensorboard needs TensorBoard: pip install 'jumpbench[tensorboard]'"


def require():
    """SummaryWriter, or a one-line error saying how to install it."""
    try:
        import tensorboard  # noqa: F401  (torch's writer imports it lazily and fails late)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from jumpbench.errors import JumpbenchError

        raise JumpbenchError(HINT) from None
    return SummaryWriter


def open_writer(folder: Path, step: int):
    """A writer into the run folder. Starting (or resuming) at `step`, the events of later
    steps that an earlier attempt wrote (after its last checkpoint) are purged."""
    return require()(log_dir=str(folder), purge_step=step + 1)


def log_row(writer, row: dict, folder: Path) -> None:
    """One evaluation row's scalars and the samples grid, at the row's step."""
    import numpy as np
    from PIL import Image

    step = row["step"]
    for key, value in row.items():
        for prefix in ("train_", "test_"):
            if key.startswith(prefix) and isinstance(value, (int, float)):
                writer.add_scalar(f"{prefix[:-1]}/{key[len(prefix):]}", value, step)
    from jumpbench.benchmarks.runs import SAMPLES, Run

    png = Run(folder).path(SAMPLES)
    if png.is_file():
        with Image.open(png) as img:
            writer.add_image("samples", np.asarray(img.convert("RGB")), step, dataformats="HWC")
    writer.flush()


class Pace:
    """Steps per second and the mean wait for data per step since the last `take`. `step(t_item)`
    after each step, with the time its batch arrived."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()
        self.steps, self.wait = 0, 0.0

    def step(self, t_item: float) -> None:
        self.wait += max(0.0, t_item - self.last)
        self.last = time.perf_counter()
        self.steps += 1

    def take(self) -> tuple[float, float]:
        """(steps per second, data wait in ms per step), and start over."""
        now = time.perf_counter()
        rate = self.steps / max(now - self.t0, 1e-9)
        wait = 1e3 * self.wait / max(self.steps, 1)
        self.t0, self.steps, self.wait = now, 0, 0.0
        return rate, wait


def log_step(writer, step: int, out: dict, lr: float, grad_norm, steps_per_s: float, wait_ms: float) -> None:
    """The per-step scalars (see the module's docstring) at `step`: reads the device once."""
    for key, value in out.items():
        writer.add_scalar(f"step/{key}", float(value.detach()) if hasattr(value, "detach") else float(value), step)
    writer.add_scalar("step/lr", lr, step)
    if grad_norm is not None:
        writer.add_scalar("step/grad_norm", float(grad_norm), step)
    writer.add_scalar("speed/steps_per_s", steps_per_s, step)
    writer.add_scalar("speed/data_wait_ms", wait_ms, step)


def log_hparams(writer, run: str, overrides: list[str], row: dict) -> None:
    """The HPARAMS view's entry of a finished run: its --set overrides (a sweep's grid point;
    every run gets its model, preset and seed) beside its final test metrics."""
    from jumpbench.checks import parse_override

    params = {"run": run}
    for item in overrides:
        key, value = parse_override(item)
        params[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    metrics = {f"final/{k[len('test_'):]}": float(v) for k, v in row.items()
               if k.startswith("test_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    writer.add_hparams(params, metrics, run_name="hparams")
    writer.flush()
