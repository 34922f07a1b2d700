"""The MNIST Dice 3D scenes of JUMP (Kumar, Eslami et al., ICLR 2019, section 4.2, Figure 6).

"Each scene consists of a cube in a room. Each face of the cube has a random MNIST digit (out
of 100 digits) engraved on it. In each scene, the cube is randomly positioned and oriented,
the color and textures of the walls are randomly selected, and the lighting source (which
creates shadows) is randomly positioned."

Three parts, as a scene/renderer split: dice_scene.py is the geometry both sides share (the
room, the die and its faces, the camera model, face visibility); this module samples a cheap
scene spec from a numpy Generator (`sample_scene`) and is the records generator; dice_render.py
renders a spec with pyrender, one renderer per process (kept there, not on the generator, so
pickling a generator never carries an OpenGL context).

Test-split protocol (negative ELBO and KL1/KL3 of section 4.2): `hidden_face` is a side face,
`context_views` the views where it is invisible (visibility 0; at least 3, the first three
chosen to see most of the other side faces), `query_views` those where it is clearly visible
(>= CLEAR; at least 3, clearest first).
Test cameras are resampled deterministically until this holds; the train split stores
hidden_face -1 and empty lists.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from jumpbench import records
from jumpbench.errors import JumpbenchError
from jumpbench.generators.base import scene_seed
from jumpbench.generators.dice_scene import DIE, PATTERNS, ROOM, SIDE_ANGLES, face_visibility
from jumpbench.generators.mnist import DEFAULT_POOL, load_digits

VERSION = "1.1"  # 1.1: a fixed draw order (exact frames, see docs/records.md)
CLEAR = 0.5               # face_visibility of a "clearly visible" face
MIN_CONTEXT = MIN_QUERY = 3
MIN_VIEWS = MIN_CONTEXT + MIN_QUERY
DEFAULT_VIEWS = 12        # a context of up to 6 and as many targets, the protocol's 3 + 3 and more
MIN_SIZE = 16
MAX_SIZE = 1024  # frames are rendered whole in memory
MAX_VIEWS = 1000


@dataclass
class DiceConfig:
    views: int = DEFAULT_VIEWS
    size: int = 64
    seed: int = 0
    digit_pool: int = DEFAULT_POOL  # "out of 100 digits"
    mnist_dir: str | None = None    # None: the shipped MNIST test split

    def __post_init__(self):
        if self.views < MIN_VIEWS:
            raise JumpbenchError(f"--views {self.views} is too few: the test protocol needs {MIN_CONTEXT} "
                                 f"context and {MIN_QUERY} query views, so at least {MIN_VIEWS}")
        if self.size < MIN_SIZE:
            raise JumpbenchError(f"--size {self.size} is too small to read a digit; use at least {MIN_SIZE}")
        if self.size > MAX_SIZE or self.views > MAX_VIEWS:
            raise JumpbenchError(f"--size {self.size} / --views {self.views}: at most {MAX_SIZE} / {MAX_VIEWS}")
        if self.seed < 0:
            raise JumpbenchError(f"--seed must be non-negative, got {self.seed}")
        if self.mnist_dir is not None:
            self.mnist_dir = str(self.mnist_dir)


# ---------------------------------------------------------------- sample

def _hsv(rng: np.random.Generator, n: int, s: tuple, v: tuple) -> np.ndarray:
    """n random RGB colours in [0, 1] with saturation in s and value in v."""
    h, s, v = rng.uniform(0, 1, n), rng.uniform(*s, n), rng.uniform(*v, n)
    k = (np.array([5.0, 3.0, 1.0])[None] + h[:, None] * 6) % 6
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def sample_cameras(rng: np.random.Generator, centre: np.ndarray, headings: np.ndarray,
                   heights: tuple = (0.5, 2.2)) -> np.ndarray:
    """Cameras (len(headings), 5) around the die at the given headings (from the die to the
    camera), at varied distances and heights, looking at the die with a small jitter."""
    cams = []
    for phi in headings:
        d = np.array([np.cos(phi), np.sin(phi)])
        room = min((ROOM - 0.3 - np.sign(c) * p) / abs(c) for c, p in zip(d, centre[:2]) if abs(c) > 1e-9)
        r = rng.uniform(1.9, min(3.0, room))
        pos = np.array([*(centre[:2] + r * d), rng.uniform(*heights)])
        aim = centre + rng.uniform(-0.2, 0.2, 3)
        dx, dy, dz = aim - pos
        cams.append([*pos, np.arctan2(dy, dx), np.arctan2(dz, np.hypot(dx, dy))])
    return np.asarray(cams).reshape(-1, 5)


def protocol(vis: np.ndarray, face: int) -> tuple[np.ndarray, np.ndarray]:
    """The views where `face` is invisible (context) and clearly visible (query). Context is
    ordered so that its first three together see most of the other side faces (greedily),
    queries clearest first: the first 3 of each are the protocol's views."""
    context = list(np.flatnonzero(vis[:, face] == 0))
    others = [f for f in range(4) if f != face]
    seen = np.zeros(len(others))
    ordered = []
    for _ in range(min(MIN_CONTEXT, len(context))):
        gain = [np.maximum(vis[v, others], seen).sum() for v in context]
        best = context.pop(int(np.argmax(gain)))
        seen = np.maximum(seen, vis[best, others])
        ordered.append(best)
    query = np.flatnonzero(vis[:, face] >= CLEAR)
    query = query[np.argsort(-vis[query, face], kind="stable")]
    return np.asarray(ordered + context, np.int64), query.astype(np.int64)


def sample_scene(rng: np.random.Generator, n_digits: int, views: int, split: str) -> dict:
    """A scene spec: the room, the die, the light and the cameras (see the module docstring)."""
    spec = {
        "wall_colors": _hsv(rng, 4, (0.25, 0.8), (0.45, 0.9)),
        "floor_color": _hsv(rng, 1, (0.1, 0.6), (0.4, 0.8))[0],
        "room_patterns": rng.integers(0, len(PATTERNS), 5),  # walls x+, x-, y+, y-, then the floor
        "room_seed": int(rng.integers(0, 2**62)),
        "die_position": np.array([*rng.uniform(-1.5, 1.5, 2), DIE / 2]),  # the die's centre
        "die_yaw": float(rng.uniform(0, 2 * np.pi)),
        "digit_indices": rng.choice(n_digits, 6, replace=n_digits < 6),
        "light_position": np.array([*rng.uniform(-ROOM + 0.5, ROOM - 0.5, 2), rng.uniform(2.0, 2.8)]),
    }
    centre, yaw = spec["die_position"], spec["die_yaw"]
    hidden = -1
    if split == "test":
        hidden = int(rng.integers(0, 4))
    while True:
        if hidden < 0:
            cams = sample_cameras(rng, centre, rng.uniform(0, 2 * np.pi, views))
        else:  # 3 behind the hidden face (spread over the other sides), 3 facing it, the rest anywhere
            facing = yaw + SIDE_ANGLES[hidden]
            behind = facing + np.pi + np.radians(rng.uniform([-70, -20, 25], [-25, 20, 70]))
            ahead = facing + np.radians(rng.uniform(-35, 35, MIN_QUERY))
            cams = np.concatenate([
                sample_cameras(rng, centre, behind),
                sample_cameras(rng, centre, ahead, heights=(0.5, 1.6)),
                sample_cameras(rng, centre, rng.uniform(0, 2 * np.pi, views - MIN_VIEWS)),
            ])[rng.permutation(views)]
        vis = face_visibility(cams, centre, yaw)
        context, query = protocol(vis, hidden) if hidden >= 0 else (np.zeros(0, int), np.zeros(0, int))
        if hidden < 0 or (len(context) >= MIN_CONTEXT and len(query) >= MIN_QUERY):
            break  # else resample the cameras, deterministically from the same rng
    return {**spec, "cameras": cams, "face_visibility": vis, "hidden_face": hidden,
            "context_views": context, "query_views": query}


# ---------------------------------------------------------------- the generator

SCHEMA = {  # the manifest's `schema` (docs/records.md), whatever the parameters
    "frames": {"dtype": "png", "shape": ["T"]},
    "cameras": {"dtype": "float32", "shape": ["T", 5]},
    "face_visibility": {"dtype": "float32", "shape": ["T", 6]},
    "digit_labels": {"dtype": "int64", "shape": [6]},
    "digit_indices": {"dtype": "int64", "shape": [6]},
    "die_position": {"dtype": "float32", "shape": [3]},
    "die_yaw": {"dtype": "float32", "shape": []},
    "light_position": {"dtype": "float32", "shape": [3]},
    "wall_colors": {"dtype": "float32", "shape": [4, 3]},
    "floor_color": {"dtype": "float32", "shape": [3]},
    "room_patterns": {"dtype": "int64", "shape": [5]},
    "hidden_face": {"dtype": "int64", "shape": []},
    "context_views": {"dtype": "int64", "shape": [-1]},
    "query_views": {"dtype": "int64", "shape": [-1]},
    "scene_seed": {"dtype": "int64", "shape": []},
    "scene_index": {"dtype": "int64", "shape": []},
}


class DiceGenerator:
    """A records generator (see generators/base.py) for the MNIST Dice scenes."""

    name = "dice"
    version = VERSION
    dataset = "mnist_dice"
    viewpoint = {"key": "cameras", "dim": 7}  # the loader's (x, y, z, sin/cos yaw, sin/cos pitch)

    def __init__(self, config: DiceConfig):
        self.config = config
        self.images, self.labels = load_digits(config.mnist_dir, config.digit_pool)

    def params(self) -> dict:
        digest = hashlib.sha256(self.images.tobytes() + self.labels.tobytes()).hexdigest()
        return {**asdict(self.config), "digits_sha256": digest}

    def schema(self) -> dict:
        return copy.deepcopy(SCHEMA)

    def spec(self, split: str, index: int) -> dict:
        seed = scene_seed(self.config.seed, split, index)
        spec = sample_scene(np.random.default_rng(seed), len(self.images), self.config.views, split)
        return {**spec, "scene_seed": seed, "scene_index": index}

    def renderer(self):
        """This process's renderer (dice_render.renderer): opened on first use, never pickled."""
        from jumpbench.generators import dice_render

        return dice_render.renderer(self.config.size)

    def scene(self, split: str, index: int) -> dict:
        spec = self.spec(split, index)
        frames = self.renderer().render(spec, self.images[spec["digit_indices"]])  # (T, H, W, 3)
        f32 = np.float32
        return {
            "frames": [records.encode_png(frame) for frame in frames],
            "cameras": spec["cameras"].astype(f32),
            "face_visibility": spec["face_visibility"].astype(f32),
            "digit_labels": self.labels[spec["digit_indices"]],
            "digit_indices": spec["digit_indices"],
            **{k: np.asarray(spec[k], f32) for k in ("die_position", "die_yaw", "light_position",
                                                     "wall_colors", "floor_color")},
            "room_patterns": spec["room_patterns"],
            "hidden_face": np.int64(spec["hidden_face"]),
            "context_views": spec["context_views"],
            "query_views": spec["query_views"],
            "scene_seed": np.int64(spec["scene_seed"]),
            "scene_index": np.int64(index),
        }
