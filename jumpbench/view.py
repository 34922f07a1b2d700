"""Pictures of datasets: a contact sheet (PNG) or an animation (GIF) of one scene."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jumpbench.errors import JumpbenchError
from jumpbench.records import Dataset
from jumpbench.files import atomic_path

MAX_SCALE = 32  # a 64x64 frame becomes 2048x2048


def contact_sheet(frames: np.ndarray, columns: int | None = None, pad: int = 2,
                  scale: int = 1) -> np.ndarray:
    """(T, H, W, 3) uint8 -> one (rows*(H+pad), cols*(W+pad), 3) image, frames in reading order."""
    t, h, w, _ = frames.shape
    cols = columns or (t if t <= 12 else 10)
    rows = -(-t // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = f
    return sheet.repeat(scale, 0).repeat(scale, 1) if scale > 1 else sheet


def write_scene(dataset: str | Path, split: str, index: int, out: str | Path, scale: int = 2) -> None:
    from PIL import Image

    if not 1 <= scale <= MAX_SCALE:
        raise JumpbenchError(f"--scale must be in 1..{MAX_SCALE}, got {scale}")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise JumpbenchError(f"--out must end in .png or .gif, got {out.name}")
    frames = Dataset(dataset).scene(split, index).frames
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".gif":
            ims = [Image.fromarray(f.repeat(scale, 0).repeat(scale, 1)) for f in frames]
            ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=200, loop=0)
        else:
            Image.fromarray(contact_sheet(frames, scale=scale)).save(tmp, format="PNG")
