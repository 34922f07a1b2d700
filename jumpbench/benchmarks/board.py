"""TensorBoard event files of a run (`run --tensorboard`, the optional extra jumpbench[tensorboard]).

The events go into the run folder itself, so `tensorboard --logdir results/runs` shows every
run (a sweep's seeds side by side) under its dataset/model/config/seed path. At each
evaluation: the row's train_* and test_* values as scalars `train/<key>` and `test/<key>`, and
the samples grid (the picture of samples.png) as the image `samples`. A resumed run drops the
events written after the step it resumes from (SummaryWriter's purge_step), so no step
appears twice.
"""
from __future__ import annotations

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
    png = Path(folder) / "samples.png"
    if png.is_file():
        with Image.open(png) as img:
            writer.add_image("samples", np.asarray(img.convert("RGB")), step, dataformats="HWC")
    writer.flush()
