"""The Narratives video datasets of JUMP (Kumar, Eslami et al., ICLR 2019, section 4.1).

Each shape draws a colour (12), a size (4) and a kind (4) independently, so five shapes
make 192**5 (about 2.6e11) instances ignoring position, as the paper counts.

- Traveling Salesman: 5 shapes at random non-overlapping positions; shape 0 (the salesman)
  moves to, and stops touching, each of the other four in a uniformly random order.
- Color Reaction: shape 0 moves to shape 1 over the first half of the video (frames 1-6 of
  12); shape 1 then takes a new colour, drawn from the other 11, for the second half.

Sample, then render: `sample_*` draw a cheap spec (kinds, colours, sizes, per-frame
positions) from a numpy Generator; `render` stamps precomputed shape masks into palette
frames, encoded as palette PNGs (records.encode_png_palette).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from jumpbench import records
from jumpbench.errors import JumpbenchError
from jumpbench.generators.base import scene_seed

VERSION = "1.0"
KINDS = ("square", "circle", "triangle", "cross")
SIZES = (4.0, 5.5, 7.0, 8.5)  # shape radius in pixels at 64x64; scaled with the frame size
COLORS = (  # RGB; palette index = colour id + 1, index 0 is the black background
    (230, 25, 25), (40, 190, 40), (40, 90, 245), (245, 220, 30), (40, 220, 220), (225, 40, 225),
    (245, 130, 20), (135, 60, 210), (245, 245, 245), (125, 125, 125), (250, 160, 190), (140, 85, 35),
)
PALETTE = bytes(3) + bytes(c for rgb in COLORS for c in rgb)
MIN_SIZE = 24  # below this the four kinds and sizes are no longer told apart
MAX_SIZE = 1024  # frames are built whole in memory
MAX_FRAMES = 1000
GAP = 2.0      # minimum free pixels between two shapes at 64x64


@dataclass(frozen=True)
class Narrative:
    name: str
    n_shapes: int
    default_frames: int
    min_frames: int


NARRATIVES = {
    "traveling_salesman": Narrative("traveling_salesman", 5, 20, 5),
    "color_reaction": Narrative("color_reaction", 2, 12, 2),
}


@dataclass
class NarrativesConfig:
    narrative: str = "traveling_salesman"
    frames: int | None = None  # None: the narrative's default (20 or 12)
    size: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.narrative not in NARRATIVES:
            raise JumpbenchError(f"unknown narrative {self.narrative!r}; choose from {', '.join(NARRATIVES)}")
        spec = NARRATIVES[self.narrative]
        if self.frames is None:
            self.frames = spec.default_frames
        if self.frames < spec.min_frames:
            raise JumpbenchError(f"{self.narrative} needs at least {spec.min_frames} frames, got {self.frames}")
        if self.frames > MAX_FRAMES:
            raise JumpbenchError(f"--frames {self.frames} is too many; at most {MAX_FRAMES}")
        if self.size > MAX_SIZE:
            raise JumpbenchError(f"--size {self.size} is too large; at most {MAX_SIZE}")
        if self.size < MIN_SIZE:
            raise JumpbenchError(f"--size {self.size} is too small to draw {spec.n_shapes} distinguishable "
                                 f"shapes; use at least {MIN_SIZE}")
        if self.seed < 0:
            raise JumpbenchError(f"--seed must be non-negative, got {self.seed}")


# ---------------------------------------------------------------- sample

def sample_shapes(rng: np.random.Generator, n: int, size: int) -> dict:
    """Kinds, colours, sizes and non-overlapping centres (x, y) in pixels of n shapes."""
    kinds = rng.integers(0, len(KINDS), n)
    colors = rng.integers(0, len(COLORS), n)
    sizes = rng.integers(0, len(SIZES), n)
    radii = np.asarray(SIZES)[sizes] * size / 64
    gap = GAP * size / 64
    while True:  # rejection sampling; a fresh layout when one gets stuck
        centres = []
        for r in radii:
            for _ in range(200):
                c = rng.uniform(r + 1, size - r - 1, 2)
                if all(np.hypot(*(c - c2)) >= r + r2 + gap for c2, r2 in zip(centres, radii)):
                    centres.append(c)
                    break
            else:
                break
        if len(centres) == n:
            return {"kinds": kinds, "colors": colors, "sizes": sizes, "radii": radii,
                    "start": np.asarray(centres)}


def _approach(frm: np.ndarray, target: np.ndarray, distance: float) -> np.ndarray:
    """The point at `distance` from `target` on the segment towards `frm`."""
    d = frm - target
    return target + d * (distance / max(np.hypot(*d), 1e-6))


def _move(positions: np.ndarray, shape: int, t0: int, t1: int, end: np.ndarray) -> None:
    """Move `shape` linearly from its position at frame t0 to `end` at frame t1, and keep it there."""
    start = positions[t0, shape].copy()
    for t in range(t0 + 1, len(positions)):
        a = min(1.0, (t - t0) / (t1 - t0))
        positions[t, shape] = start + a * (end - start)


def visit_frames(frames: int) -> list[int]:
    """Traveling Salesman: the frames at which the salesman touches its 1st..4th shape."""
    return [round((k + 1) * (frames - 1) / 4) for k in range(4)]


def reaction_frames(frames: int) -> tuple[int, int]:
    """Color Reaction: (the frame shape 0 reaches shape 1, the first frame of shape 1's new colour)."""
    half = frames // 2
    return max(half - 1, 1), half


def sample_traveling_salesman(rng: np.random.Generator, frames: int, size: int) -> dict:
    spec = sample_shapes(rng, 5, size)
    order = rng.permutation(4) + 1  # the salesman, shape 0, visits these in turn
    positions = np.repeat(spec["start"][None], frames, axis=0)  # (T, 5, 2)
    ends = visit_frames(frames)
    t0 = 0
    for target, t1 in zip(order, ends):
        touch = spec["radii"][0] + spec["radii"][target] + 1
        _move(positions, 0, t0, t1, _approach(positions[t0, 0], positions[t0, target], touch))
        t0 = t1
    colors = np.repeat(spec["colors"][None], frames, axis=0)  # (T, 5)
    return {**spec, "positions": positions, "order": order, "frame_colors": colors,
            "color_changes": np.zeros((0, 4), np.int64)}


def sample_color_reaction(rng: np.random.Generator, frames: int, size: int) -> dict:
    spec = sample_shapes(rng, 2, size)
    positions = np.repeat(spec["start"][None], frames, axis=0)  # (T, 2, 2)
    arrive, half = reaction_frames(frames)  # frames 1-6 of 12: the move; 7-12: the new colour
    touch = spec["radii"][0] + spec["radii"][1] + 1
    _move(positions, 0, 0, arrive, _approach(positions[0, 0], positions[0, 1], touch))
    old = int(spec["colors"][1])
    new = int(rng.choice([c for c in range(len(COLORS)) if c != old]))
    colors = np.repeat(spec["colors"][None], frames, axis=0)
    colors[half:, 1] = new
    return {**spec, "positions": positions, "order": np.asarray([1]), "frame_colors": colors,
            "color_changes": np.asarray([[1, half, old, new]], np.int64)}


SAMPLERS = {"traveling_salesman": sample_traveling_salesman, "color_reaction": sample_color_reaction}


# ---------------------------------------------------------------- render

@lru_cache(maxsize=None)
def shape_mask(kind: int, size_id: int, frame_size: int) -> np.ndarray:
    """A boolean (2R+1, 2R+1) mask of a shape centred in its box."""
    from PIL import Image, ImageDraw

    r = SIZES[size_id] * frame_size / 64
    box = int(np.ceil(r)) * 2 + 1
    ss = 4  # supersample, then threshold: symmetric, well-rounded small shapes
    im = Image.new("L", (box * ss, box * ss), 0)
    d = ImageDraw.Draw(im)
    c, R = box * ss / 2, r * ss
    name = KINDS[kind]
    if name == "square":
        h = R * 0.85
        d.rectangle((c - h, c - h, c + h, c + h), fill=255)
    elif name == "circle":
        d.ellipse((c - R, c - R, c + R, c + R), fill=255)
    elif name == "triangle":
        d.polygon([(c, c - R), (c + R * 0.95, c + R * 0.75), (c - R * 0.95, c + R * 0.75)], fill=255)
    else:  # cross
        w = R * 0.38
        d.rectangle((c - R, c - w, c + R, c + w), fill=255)
        d.rectangle((c - w, c - R, c + w, c + R), fill=255)
    mask = np.asarray(im.resize((box, box), Image.BILINEAR)) >= 128
    return mask


def stamp(canvas: np.ndarray, mask: np.ndarray, centre: np.ndarray, value: int) -> None:
    """Paint `value` where `mask`, centred at `centre` (x, y), clipped to the canvas (..., H, W)."""
    h, w = canvas.shape[-2:]
    k = mask.shape[0] // 2
    x, y = int(round(centre[0])) - k, int(round(centre[1])) - k
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mask.shape[1], w), min(y + mask.shape[0], h)
    if x0 < x1 and y0 < y1:
        region = canvas[..., y0:y1, x0:x1]
        region[..., mask[y0 - y:y1 - y, x0 - x:x1 - x]] = value


def render(spec: dict, size: int) -> np.ndarray:
    """(T, H, W) palette-index frames. Shapes that never move or change colour are drawn once
    into a background shared by all frames; the rest are stamped frame by frame, on top."""
    pos, colors = spec["positions"], spec["frame_colors"]
    frames = len(pos)
    static = np.zeros((size, size), np.uint8)
    moving = []
    for s in range(pos.shape[1]):
        mask = shape_mask(int(spec["kinds"][s]), int(spec["sizes"][s]), size)
        if (pos[:, s] == pos[0, s]).all() and (colors[:, s] == colors[0, s]).all():
            stamp(static, mask, pos[0, s], int(colors[0, s]) + 1)
        else:
            moving.append((s, mask))
    out = np.repeat(static[None], frames, axis=0)
    for s, mask in moving:
        for t in range(frames):
            stamp(out[t], mask, pos[t, s], int(colors[t, s]) + 1)
    return out


# ---------------------------------------------------------------- the generator

def schema(narrative: str) -> dict:
    """The schema of a narrative's records (the manifest's `schema`; docs/records.md)."""
    n = NARRATIVES[narrative].n_shapes
    return {
        "frames": {"dtype": "png", "shape": ["T"]},
        "timestamps": {"dtype": "float32", "shape": ["T"]},
        "kinds": {"dtype": "int64", "shape": [n]},
        "colors": {"dtype": "int64", "shape": [n]},
        "sizes": {"dtype": "int64", "shape": [n]},
        "positions": {"dtype": "float32", "shape": ["T", n, 2]},
        "frame_colors": {"dtype": "int64", "shape": ["T", n]},
        "order": {"dtype": "int64", "shape": [-1]},
        "color_changes": {"dtype": "int64", "shape": [-1, 4]},
        "scene_seed": {"dtype": "int64", "shape": []},
        "scene_index": {"dtype": "int64", "shape": []},
    }


class NarrativesGenerator:
    """A records generator (see generators/base.py) for one narrative."""

    name = "narratives"
    version = VERSION
    viewpoint = {"key": "timestamps", "dim": 1}

    def __init__(self, config: NarrativesConfig):
        self.config = config
        self.dataset = config.narrative

    def params(self) -> dict:
        return asdict(self.config)

    def schema(self) -> dict:
        return schema(self.config.narrative)

    def spec(self, split: str, index: int) -> dict:
        c = self.config
        seed = scene_seed(c.seed, split, index)
        spec = SAMPLERS[c.narrative](np.random.default_rng(seed), c.frames, c.size)
        return {**spec, "scene_seed": seed, "scene_index": index}

    def scene(self, split: str, index: int) -> dict:
        spec = self.spec(split, index)
        frames = render(spec, self.config.size)
        return {
            "frames": records.encode_png_palette(frames, PALETTE),
            "timestamps": np.arange(len(frames), dtype=np.float32),
            **{k: spec[k] for k in ("kinds", "colors", "sizes", "order", "frame_colors", "color_changes")},
            "positions": spec["positions"].astype(np.float32),
            "scene_seed": np.int64(spec["scene_seed"]),
            "scene_index": np.int64(index),
        }
