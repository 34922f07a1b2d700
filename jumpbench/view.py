"""Pictures of datasets and runs: a contact sheet (PNG) or an animation (GIF) of one scene;
of a run, one test scene's truth beside samples of its model, over time (write_run_samples)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jumpbench.errors import JumpbenchError
from jumpbench.records import Dataset
from jumpbench.files import atomic_path

MAX_SCALE = 32  # a 64x64 frame becomes 2048x2048
RUN_PANEL = 128  # a run's frames are enlarged to about this many pixels (16x16 by 8, 64x64 by 2)
WHITE = (255, 255, 255)


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


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: the fixed bitmap font
        return ImageFont.load_default()


def labelled(panels: list[tuple[str, np.ndarray]], caption: str | None = None, pad: int = 6) -> np.ndarray:
    """(name, (H, W, 3) uint8) panels side by side on white, each under its name, under a
    caption line when one is given (the image is widened to fit it)."""
    from PIL import Image, ImageDraw

    h, w = panels[0][1].shape[:2]
    line = max(12, min(w, 128) // 9)
    font = _font(line)
    lines = [caption] if caption is not None else []
    top = (len(lines) + 1) * (line + pad)
    width = max([len(panels) * (w + pad) + pad] + [int(font.getlength(s)) + 2 * pad for s in lines])
    canvas = Image.new("RGB", (width, top + h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(lines):
        draw.text((pad, pad // 2 + k * (line + pad)), text, fill="black", font=font)
    for k, (name, image) in enumerate(panels):
        x = pad + k * (w + pad)
        draw.text((x, top - line - pad // 2), name, fill="black", font=font)
        canvas.paste(Image.fromarray(image), (x, top))
    return np.asarray(canvas)


def _bordered(frames: np.ndarray, colours: list, width: int) -> np.ndarray:
    """(K, H, W, 3) frames inside a border `width` pixels wide, of colours[k] for frame k."""
    k, h, w, _ = frames.shape
    out = np.empty((k, h + 2 * width, w + 2 * width, 3), np.uint8)
    out[:] = np.asarray(colours, np.uint8)[:, None, None]
    out[:, width:width + h, width:width + w] = frames
    return out


def _same_width(images: list[np.ndarray]) -> list[np.ndarray]:
    """Images padded with white on the right to the widest one's width."""
    width = max(im.shape[1] for im in images)
    return [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255) for im in images]


def run_samples(run: str | Path, index: int = 0, split: str = "test", n_samples: int = 3,
                data: str | Path | None = None) -> dict:
    """Scene `index` of a run's dataset and `n_samples` samples of its model (load_run: its
    checkpoint, or published weights), seeded: {"panels": [("truth", (T, H, W, 3) uint8),
    ("sample 1", ...), ...], "seen": the frames the model sees, "how", "title", "unit",
    "record"}. The model sees the first data.eval_context frames (dice: the scene's hidden-face
    context views, as the evaluation does, where the split has them) and samples every other
    frame; a sample's seen frames are the true ones."""
    import torch

    from jumpbench import dataset as DS
    from jumpbench.benchmarks.figures.grids import rgb
    from jumpbench.benchmarks.runs import load_run, run_dataset

    if not 1 <= n_samples <= 8:
        raise JumpbenchError(f"--samples must be in 1..8, got {n_samples}")
    model, record = load_run(run)
    data = run_dataset(record, data)
    info = DS.dataset_info(data)
    if info["name"] != record.get("dataset", info["name"]):
        raise JumpbenchError(f"{data} is {info['name']}, the run was trained on {record['dataset']}")
    size, m = record["config"]["data"]["image_size"], record["config"]["data"]["eval_context"]
    scenes = DS.Scenes(data, split, size)
    item = scenes[index]  # an index out of range: a one-line error naming it
    frames, vps = DS.to_float(item["frames"])[None], item["viewpoints"][None]
    t = frames.shape[1]
    meta = scenes.meta(index) if info["viewpoint_key"] == "cameras" else {}
    if "context_views" in meta:
        seen, how = sorted(int(v) for v in meta["context_views"][:3]), "the hidden face's context views"
    else:
        seen, how = list(range(min(m, t - 1))), f"the first {min(m, t - 1)} frames"
    query = [k for k in range(t) if k not in seen]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        samples = model.sample(frames[:, seen], vps[:, seen], vps[:, query], n_samples)  # (1, S, K, 3, H, W)
    truth = rgb(frames[0])
    panels = [("truth", truth)] + [(f"sample {j + 1}", truth.copy()) for j in range(n_samples)]
    for j in range(n_samples):
        panels[j + 1][1][query] = rgb(samples[0, j])
    return {"panels": panels, "seen": seen, "how": how, "record": record,
            "title": f"{record['model']} on {info['name']} {split} scene {index}",
            "unit": "view" if info["viewpoint_key"] == "cameras" else "frame"}


def write_run_samples(run: str | Path, out: str | Path, index: int = 0, split: str = "test", n_samples: int = 3,
                      scale: int | None = None, data: str | Path | None = None) -> str:
    """run_samples drawn as a GIF that shows the truth and the samples side by side, frame by
    frame, under their names and a caption (the frame, seen or sampled), or as a PNG with one
    row per panel. Frames the model sees are bordered in blue, sampled ones in red (as in the
    figures' grids); `scale` enlarges them (default: to about RUN_PANEL pixels). Returns what
    was drawn, in words."""
    from PIL import Image

    from jumpbench.benchmarks.figures.grids import BLUE, RED

    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise JumpbenchError(f"--out must end in .png or .gif, got {out.name}")
    if scale is not None and not 1 <= scale <= MAX_SCALE:
        raise JumpbenchError(f"--scale must be in 1..{MAX_SCALE}, got {scale}")
    s = run_samples(run, index, split, n_samples, data)
    seen, title, unit = s["seen"], s["title"], s["unit"]
    t, size = s["panels"][0][1].shape[:2]
    scale = scale or max(1, RUN_PANEL // size)
    border = max(2, scale // 2)  # around the frame, hiding none of it
    colours = [BLUE if k in seen else RED for k in range(t)]
    panels = [(name, _bordered(v.repeat(scale, 1).repeat(scale, 2), [WHITE] * t if name == "truth" else colours,
                               border)) for name, v in s["panels"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".gif":
            ims = [Image.fromarray(im) for im in _same_width(
                [labelled([(name, v[k]) for name, v in panels],
                          f"{title}: {unit} {k + 1}/{t}, {'seen' if k in seen else 'sampled'}") for k in range(t)])]
            ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=300, loop=0)
        else:
            rows = [labelled([(name, contact_sheet(v, columns=t, scale=1))], title if k == 0 else None)
                    for k, (name, v) in enumerate(panels)]
            Image.fromarray(np.concatenate(_same_width(rows))).save(tmp, format="PNG")
    return (f"{split} scene {index}: truth and {n_samples} samples of {s['record']['model']} "
            f"(step {s['record']['checkpoint_step']}), seeing {s['how']}")
