"""Probes: small readers of frames, trained on ground truth only (issue 13), that the
consistency scores (scores.py) apply to model samples.

- Narratives (Traveling Salesman, Color Reaction): one fully convolutional network reads a
  frame plus a mask of where the scene's static shapes stand (known from the truth) and gives
  every pixel's colour class (background or one of the 12 colours) and a heatmap of the moving
  shape's (the salesman's) centre. Exact geometry does the rest: the shape it touches is the
  one whose known centre lies at the touching distance (radii sum + 1, as the generator
  places it) within TOUCH_TOL, and a shape's colour is the commonest class over its pixels.
- MNIST Dice: the known camera and die project a face onto the frame; its quad is sampled
  into a PATCH x PATCH square, perspective-correct, and a small classifier reads the digit
  (trained on the faces of the training split's true views).

Each probe reads frames at one image size (a run's data.image_size: frames area-downsampled as
the models see them) and is trained with blur, colour and noise augmentation, so that blurred
model samples stay readable. `jumpbench probe train DATASET --size S` trains one (minutes on one
CPU thread) into the dataset's cache folder (cache.dataset_cache_dir: named by the dataset and
its manifest's sha256, never the dataset folder), with its accuracy on held-out test frames,
clean and degraded, in probe-<S>px.json beside it.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from jumpbench import cache as FC
from jumpbench import dataset as DS
from jumpbench.errors import JumpbenchError
from jumpbench.generators import dice, dice_scene, narratives as N
from jumpbench.files import atomic_path, write_json_atomic
from jumpbench.records import Dataset
from jumpbench.scenes import downsample

VERSION = 1
TOUCH_TOL = 2.0     # native pixels (64x64): |distance - touching distance| of a touch
PATCH = 16          # a dice face is read from a PATCH x PATCH square
NONE = 10           # the dice probe's reading of a square that shows no digit
CLEAR = dice.CLEAR  # faces at least this visible are the digit accuracy's population
DEGRADED = {"blur": 1.0, "noise": 0.05, "gain": 0.85}  # the fixed degradation of the report
CLASS_WEIGHTS = torch.tensor([0.1] + [1.0] * len(N.COLORS))
KINDS = {"traveling_salesman": "narratives", "color_reaction": "narratives", "mnist_dice": "dice"}


# ---------------------------------------------------------------- augmentation

def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W) with a per-item sigma (pixels; 0 leaves it), 7 taps."""
    b, c, h, w = x.shape
    r = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-r[None] ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)                                     # (B, 7)
    k = k.repeat_interleave(c, 0)                                      # (B*C, 7)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="replicate"), k[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random blur (sigma up to 1.2 px), brightness, small colour gain/offset, desaturation and
    pixel noise, so
    that a probe trained on true frames reads the blurred, off-colour frames models draw."""
    b = x.shape[0]

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(b, *shape, generator=g)

    x = _blur(x, u(0.0, 1.2) * (torch.rand(b, generator=g) < 0.8))
    # brightness and hue changes kept small: grey and white differ in brightness only, and
    # orange/brown, magenta/purple in hue by little
    x = x * u(0.85, 1.1, 1, 1, 1) * u(0.95, 1.05, 3, 1, 1) + u(-0.03, 0.03, 3, 1, 1)
    grey = x.mean(1, keepdim=True)
    a = u(0.0, 0.2, 1, 1, 1)
    x = (1 - a) * x + a * grey
    x = x + u(0.0, 0.06, 1, 1, 1) * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def degrade(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The report's fixed degradation: blur sigma 1 px, gain 0.85, noise sigma 0.05."""
    g = torch.Generator().manual_seed(seed)
    y = _blur(x, torch.full((x.shape[0],), DEGRADED["blur"])) * DEGRADED["gain"]
    return (y + DEGRADED["noise"] * torch.randn(y.shape, generator=g)).clamp(0, 1)


# ---------------------------------------------------------------- narratives: geometry from the truth

def radii(meta: dict, native: int) -> np.ndarray:
    return np.asarray(N.SIZES)[np.asarray(meta["sizes"])] * native / 64


def coverage(meta: dict, shape: int, centre, native: int, size: int) -> np.ndarray:
    """(size, size) fraction of each pixel that `shape`, centred at `centre` (native pixels),
    covers: its mask stamped at the native size, then area-downsampled as the frames are."""
    canvas = np.zeros((native, native), np.float32)
    N.stamp(canvas, N.shape_mask(int(meta["kinds"][shape]), int(meta["sizes"][shape]), native), centre, 1.0)
    f = native // size
    return canvas.reshape(size, f, size, f).mean((1, 3))


def static_mask(meta: dict, native: int, size: int) -> np.ndarray:
    """(size, size) coverage of every shape but shape 0 at frame 0 (they never move)."""
    pos = np.asarray(meta["positions"])
    return np.clip(sum(coverage(meta, k, pos[0, k], native, size) for k in range(1, pos.shape[1])), 0, 1)


def static_frame(meta: dict, native: int, size: int) -> np.ndarray:
    """(3, size, size) float in [0, 1]: frame 0 without shape 0, drawn and downsampled as the
    frames are (what stays put; the probe finds the moving shape against it)."""
    keep = np.arange(1, len(meta["kinds"]))
    idx = N.render({"positions": np.asarray(meta["positions"])[:1, keep],
                    "frame_colors": np.asarray(meta["frame_colors"])[:1, keep],
                    "kinds": np.asarray(meta["kinds"])[keep], "sizes": np.asarray(meta["sizes"])[keep]}, native)
    rgb = np.frombuffer(N.PALETTE, np.uint8).reshape(-1, 3)[idx]                      # (1, H, W, 3)
    return downsample(rgb, size)[0].transpose(2, 0, 1).astype(np.float32) / 255


def color_labels(meta: dict, native: int, size: int) -> np.ndarray:
    """(T, size, size) int64: each pixel's commonest palette index (0 background, 1 + colour)
    over the native pixels it averages; ties go to a shape."""
    idx = N.render({k: np.asarray(meta[k]) for k in ("positions", "frame_colors", "kinds", "sizes")}, native)
    f = native // size
    t = idx.shape[0]
    counts = np.eye(len(N.COLORS) + 1, dtype=np.float32)[idx].reshape(t, size, f, size, f, -1).sum((2, 4))
    counts[..., 0] -= 0.5
    return counts.argmax(-1)


def to_pixels(xy, native: int, size: int):
    """Native coordinates (pixel centres at integers) -> coordinates at `size`."""
    return (np.asarray(xy, np.float64) + 0.5) * size / native - 0.5


def to_native(xy, native: int, size: int):
    return (np.asarray(xy, np.float64) + 0.5) * native / size - 0.5


class NarrativeNet(nn.Module):
    """(B, 6, S, S) frame + static frame -> (B, 14, S, S): 13 colour-class logits per pixel,
    from its 3x3 neighbourhood's RGB (blur darkens a colour but keeps its hue), and the moving
    shape's centre heatmap logit (dilated convolutions, receptive field 17)."""

    def __init__(self, width: int = 16, classes: int = len(N.COLORS) + 1):
        super().__init__()
        layers, c = [], 6
        for d in (1, 2, 4, 1):
            layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d), nn.ReLU()]
            c = width
        self.heat = nn.Sequential(*layers, nn.Conv2d(width, 1, 1))
        self.colour = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(),
                                    nn.Conv2d(32, classes, 1))

    def forward(self, x):
        return torch.cat([self.colour(x[:, :3]), self.heat(x)], 1)


def locate(heat: torch.Tensor) -> torch.Tensor:
    """(B, S, S) heatmap logits -> (B, 2) (x, y) in pixels: the softmax-weighted mean over the
    5x5 window around the maximum."""
    b, s, _ = heat.shape
    flat = heat.reshape(b, -1).argmax(1)
    cy, cx = (flat // s).clamp(2, s - 3), (flat % s).clamp(2, s - 3)
    r = torch.arange(-2, 3)
    ys = (cy[:, None, None] + r[None, :, None]).expand(b, 5, 5)
    xs = (cx[:, None, None] + r[None, None, :]).expand(b, 5, 5)
    win = heat[torch.arange(b)[:, None, None], ys, xs].reshape(b, -1).softmax(1)
    return torch.stack([(win * xs.reshape(b, -1)).sum(1), (win * ys.reshape(b, -1)).sum(1)], 1).float()


# ---------------------------------------------------------------- dice: a face's quad to a square

def face_grids(cameras: np.ndarray, position, yaw: float, faces) -> np.ndarray:
    """(K, PATCH, PATCH, 2) grid_sample coordinates (x right, y down, in [-1, 1]) of face
    faces[k] seen from cameras[k] (K, 5): the face's upright square, perspective-correct."""
    corners, _ = dice_scene.die_faces(np.asarray(position, float), float(yaw))
    u = (np.arange(PATCH) + 0.5) / PATCH
    v = 1 - u                                                        # row 0 is the digit's top
    faces = np.asarray(faces)
    c = corners[faces]                                               # (K, 4, 3): bl, br, tr, tl
    pts = (c[:, None, None, 0] + u[None, None, :, None] * (c[:, None, None, 1] - c[:, None, None, 0])
           + v[None, :, None, None] * (c[:, None, None, 3] - c[:, None, None, 0]))   # (K, P, P, 3)
    f = 1.0 / np.tan(dice_scene.YFOV / 2)
    out = np.empty((len(faces), PATCH, PATCH, 2))
    for k, cam in enumerate(np.asarray(cameras, float)):
        view = np.linalg.inv(dice_scene.camera_pose(cam))
        p = pts[k] @ view[:3, :3].T + view[:3, 3]
        w = np.maximum(-p[..., 2], 1e-6)
        out[k, ..., 0], out[k, ..., 1] = f * p[..., 0] / w, -f * p[..., 1] / w
    return out.astype(np.float32)


def warp(frames: torch.Tensor, grids) -> torch.Tensor:
    """(K, 3, S, S) frames, (K, P, P, 2) grids -> (K, 3, P, P) face squares."""
    return F.grid_sample(frames.float(), torch.as_tensor(grids), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


class DigitNet(nn.Module):
    """(B, 3, PATCH, PATCH) face square -> 11 logits: the digits 0-9 and NONE (no digit there: a
    face turned away, a flat frame, a face blurred past reading); each square is standardised
    first (lighting varies)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * (PATCH // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, NONE + 1))

    def forward(self, x):
        mu = x.mean((1, 2, 3), keepdim=True)
        sd = x.std((1, 2, 3), keepdim=True).clamp(min=0.02)
        return self.body((x - mu) / sd)


# ---------------------------------------------------------------- the probe of a dataset

class Probe:
    """A trained probe of one dataset at one image size; `kind` is "narratives" or "dice"."""

    def __init__(self, kind: str, size: int, native: int, net: nn.Module, report: dict | None = None):
        self.kind, self.size, self.native, self.net, self.report = kind, size, native, net.eval(), report or {}

    # narratives --------------------------------------------------------------
    @torch.no_grad()
    @torch.autocast("cpu", enabled=False)  # a probe reads in fp32, inside a bf16 evaluation too
    def read_pixels(self, frames: torch.Tensor, meta: dict, chunk: int = 512):
        """frames (K, 3, S, S) in [0, 1] of one scene -> colour classes (K, S, S) int64 and the
        moving shape's centre (K, 2) in native pixels."""
        ref = torch.as_tensor(static_frame(meta, self.native, self.size))[None]
        classes, centres = [], []
        for a in range(0, len(frames), chunk):
            x = frames[a:a + chunk].float()
            out = self.net(torch.cat([x, ref.expand(len(x), -1, -1, -1)], 1))
            classes.append(out[:, :-1].argmax(1))
            centres.append(locate(out[:, -1]))
        return torch.cat(classes).numpy(), to_native(torch.cat(centres).numpy(), self.native, self.size)

    def read_video(self, frames: torch.Tensor, meta: dict) -> dict:
        """frames (..., 3, S, S) of one narrative scene -> per frame (shape ...): `centre` of
        the moving shape (native pixels, ..., 2), `present` (its pixels are not background),
        `touch` (..., n_shapes) bool (the shapes it touches) and `colors` (..., n_shapes): the colour id each
        shape shows (-1: background, i.e. absent)."""
        lead, s = frames.shape[:-3], self.size
        smask = static_mask(meta, self.native, s)
        classes, centre = self.read_pixels(frames.reshape(-1, 3, s, s), meta)
        k = len(classes)
        flat = classes.reshape(k, -1)
        pos, r = np.asarray(meta["positions"])[0], radii(meta, self.native)
        n = len(r)
        # static shapes: their pixels (mostly covered, by no other shape) at the true place
        colors = np.full((k, n), -1)
        for j in range(1, n):
            cov = coverage(meta, j, pos[j], self.native, s)
            core = (cov >= 0.6) & (smask - cov <= 0)
            pix = np.flatnonzero(core) if core.any() else [int(cov.argmax())]
            colors[:, j] = _mode(flat[:, pix]) - 1
        # the moving shape: the pixels within 0.6 of its radius of the centre read
        px = to_pixels(centre, self.native, s)
        rad = max(0.6 * r[0] * s / self.native, 0.5)
        off = [(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4) if dx * dx + dy * dy <= rad * rad] or [(0, 0)]
        ix = np.clip(np.rint(px[:, None, 0] + [o[0] for o in off]), 0, s - 1).astype(int)
        iy = np.clip(np.rint(px[:, None, 1] + [o[1] for o in off]), 0, s - 1).astype(int)
        around = classes[np.arange(k)[:, None], iy, ix]
        present = (around > 0).mean(1) >= 0.5
        colors[:, 0] = np.where(present, _mode(around) - 1, -1)
        touch = touching(centre, meta, self.native) & present[:, None]
        return {"centre": centre.reshape(*lead, 2), "present": present.reshape(lead),
                "touch": touch.reshape(*lead, n), "colors": colors.reshape(*lead, n)}

    # dice --------------------------------------------------------------------
    @torch.no_grad()
    @torch.autocast("cpu", enabled=False)
    def read_digits(self, frames: torch.Tensor, grids, chunk: int = 1024) -> np.ndarray:
        """(K, 3, S, S) frames and their faces' grids -> (K,) digits read (NONE: no digit)."""
        out = [self.net(warp(frames[a:a + chunk], grids[a:a + chunk])).argmax(1) for a in range(0, len(frames), chunk)]
        return torch.cat(out).numpy() if out else np.zeros(0, int)


def _mode(values: np.ndarray) -> np.ndarray:
    """The commonest value of each row of non-negative ints (ties: the smallest)."""
    counts = np.zeros((len(values), int(values.max(initial=0)) + 1), int)
    np.add.at(counts, (np.repeat(np.arange(len(values)), values.shape[1]), values.ravel()), 1)
    return counts.argmax(1)


def touching(centre: np.ndarray, meta: dict, native: int) -> np.ndarray:
    """(K, 2) centres of shape 0 (native pixels) -> (K, n) bool: shape j's true centre lies at
    the touching distance from it (radii + 1, as the generator places it) within TOUCH_TOL.
    Column 0 (shape 0 itself) is False. A frame can touch two shapes at once."""
    pos, r = np.asarray(meta["positions"])[0], radii(meta, native)
    d = np.linalg.norm(centre[:, None] - pos[None], axis=-1)               # (K, n)
    out = np.abs(d - (r[0] + r + native / 64)) <= TOUCH_TOL * native / 64
    out[:, 0] = False
    return out


# ---------------------------------------------------------------- files

def probe_path(data: str | Path, size: int) -> Path:
    return FC.dataset_cache_dir(Dataset(data)) / f"probe-{size}px.pt"


def _kind(data: str | Path) -> tuple[Dataset, str]:

    DS.dataset_info(data)  # a missing dataset: one line naming the command that makes it
    ds = Dataset(data)
    if ds.name not in KINDS:
        raise JumpbenchError(f"{data}: no probe for a {ds.name} dataset (known: {', '.join(KINDS)})")
    return ds, KINDS[ds.name]


def load_probe(data: str | Path, size: int) -> Probe:
    """The trained probe of a dataset at `size`; a one-line error naming the command otherwise."""
    ds, kind = _kind(data)
    path = probe_path(data, size)
    if not path.is_file():
        raise JumpbenchError(f"no {size}px probe for {data} yet; train it with: jumpbench probe train {data} "
                             f"--size {size}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        net = NarrativeNet() if kind == "narratives" else DigitNet()
        net.load_state_dict(state["state"])
    except Exception as e:
        raise JumpbenchError(f"{path}: probe does not load ({type(e).__name__}); delete it and train again") from None
    return Probe(kind, size, int(ds.manifest["params"]["size"]), net, state.get("report"))


def _check_size(ds: Dataset, size: int) -> int:
    native = int(ds.manifest["params"]["size"])
    if size < 8 or native % size:
        raise JumpbenchError(f"--size {size} must divide the dataset's frame size {native}")
    return native


def train_probe(data: str | Path, size: int, steps: int | None = None, scenes: int | None = None,
                seed: int = 0, progress: bool = True, force: bool = False, batch: int | None = None) -> dict:
    """Train the probe of a dataset at `size` on its train split's true frames, measure it on
    held-out test frames (clean and degraded), save both atomically; returns the report. An
    existing probe is kept unless `force`."""
    ds, kind = _kind(data)
    native = _check_size(ds, size)
    path = probe_path(data, size)
    if path.is_file() and not force:
        return load_probe(data, size).report
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    train = _train_narratives if kind == "narratives" else _train_dice
    net, report = train(data, size, native, steps, scenes, seed, progress, batch)
    report.update(dataset=ds.name, size=size, native=native, kind=kind, seed=seed,
                  seconds=round(time.perf_counter() - t0, 1), version=VERSION)
    _save(path, net, report)  # first without its accuracy: a failed measurement keeps the probe
    report.update(accuracy(Probe(kind, size, native, net), data))
    _save(path, net, report)
    write_json_atomic(path.with_suffix(".json"), report)
    return report


def _save(path: Path, net: nn.Module, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"state": net.state_dict(), "report": report}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def accuracy(probe: Probe, data, n_test: int | None = None) -> dict:
    """The probe's accuracy on held-out test scenes, clean and degraded (DEGRADED)."""
    if probe.kind == "narratives":
        test = DS.Scenes(data, "test", probe.size)
        n = min(n_test or 300, len(test))
        return {"test_scenes": n, **{name: narrative_accuracy(probe, test, range(n), fn)
                                     for name, fn in (("clean", lambda x: x), ("degraded", degrade))}}
    test = _dice_set(data, "test", probe.size, n_test or 500, CLEAR)
    seen = test["vis"] >= CLEAR
    out = {"test_scenes": test["scenes"], "test_faces": int(seen.sum()), "test_turned_away": int((~seen).sum())}
    for name, fn in (("clean", lambda x: x), ("degraded", degrade)):
        hit = probe.read_digits(fn(DS.to_float(test["frames"]))[test["rows"]], test["grids"]) == test["labels"].numpy()
        out[name] = {"digit": round(float(hit[seen].mean()), 5), "none": round(float(hit[~seen].mean()), 5)}
    return out


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, dynamic_ncols=True, mininterval=2)


def _fit(net: nn.Module, steps: int, batch_fn, loss_fn, desc: str, progress: bool) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.1)
    net.train()
    with _bar(steps, desc, progress) as bar:
        for step in range(steps):
            loss = loss_fn(*batch_fn(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
    net.eval()


# -- narratives

def _narrative_set(data, split: str, size: int, native: int, n: int) -> dict:
    """Frames (N*T, 3, S, S) uint8, their scene's static frame (N*T, 3, S, S) float16, colour
    labels (N*T, S, S), centres (N*T, 2) native, and the metas of the first n scenes of a split."""
    scenes = DS.Scenes(data, split, size)
    n = min(n, len(scenes))
    frames, refs, labels, centres, metas, overlap = [], [], [], [], [], []
    for i in range(n):
        item = scenes[i]
        meta = scenes.meta(i)
        t = item["frames"].shape[0]
        frames.append(item["frames"])
        refs.append(np.repeat(static_frame(meta, native, size)[None].astype(np.float16), t, 0))
        labels.append(color_labels(meta, native, size))
        centres.append(np.asarray(meta["positions"])[:, 0])
        metas.append(meta)
        pos, r = np.asarray(meta["positions"]), radii(meta, native)
        gap = np.linalg.norm(pos[:, :1] - pos[:, 1:], axis=-1) - r[0] - r[1:]
        overlap.append((gap < 0).any(1))
    return {"frames": torch.cat(frames), "refs": torch.as_tensor(np.concatenate(refs)),
            "labels": torch.as_tensor(np.concatenate(labels)), "centres": np.concatenate(centres), "metas": metas,
            "overlap": torch.as_tensor(np.concatenate(overlap))}


def _heat_target(centres: np.ndarray, native: int, size: int, sigma: float = 0.7) -> torch.Tensor:
    px = torch.as_tensor(to_pixels(centres, native, size), dtype=torch.float32)
    r = torch.arange(size, dtype=torch.float32)
    gx = torch.exp(-(r[None] - px[:, :1]) ** 2 / (2 * sigma ** 2))
    gy = torch.exp(-(r[None] - px[:, 1:]) ** 2 / (2 * sigma ** 2))
    h = gy[:, :, None] * gx[:, None, :]
    return h / h.sum((1, 2), keepdim=True)


def _train_narratives(data, size, native, steps, n_scenes, seed, progress, batch=None):
    steps, n_scenes, batch = steps or 1500, n_scenes or 1500, batch or 64
    train = _narrative_set(data, "train", size, native, n_scenes)
    net = NarrativeNet()
    g = torch.Generator().manual_seed(seed)
    weight = 1.0 + 5.0 * train["overlap"].float()  # frames where the mover covers a shape are rare and hard

    def batch_fn(step):
        idx = torch.multinomial(weight, batch, replacement=True, generator=g)
        x = augment(DS.to_float(train["frames"][idx]), g)
        return torch.cat([x, train["refs"][idx].float()], 1), train["labels"][idx], \
            _heat_target(train["centres"][idx.numpy()], native, size)

    def loss_fn(x, labels, heat):
        out = net(x)
        colour = F.cross_entropy(out[:, :-1], labels, weight=CLASS_WEIGHTS)  # shapes are a tenth of a frame
        logp = out[:, -1].flatten(1).log_softmax(1)
        return colour - (heat.flatten(1) * logp).sum(1).mean()

    _fit(net, steps, batch_fn, loss_fn, f"probe {Path(data).name} {size}px", progress)
    return net, {"train_scenes": len(train["metas"]), "steps": steps}


def narrative_accuracy(probe: Probe, scenes: DS.Scenes, indices, transform=lambda x: x) -> dict:
    """Per-frame reading accuracy on true frames (`transform` degrades them first):
    `centre`, the moving shape's centre within 1 pixel at the probe's size; `visit`, at the
    frames where it reaches a shape (narratives.visit_frames / reaction_frames and later), that
    shape read as touched; `apart`, at frames where it is clearly touching nothing (every
    shape at least 2 x TOUCH_TOL from touching), no shape read as touched; `colors`, every
    shape's colour (per shape and frame)."""
    hits = {"centre": [], "visit": [], "apart": [], "colors": []}
    for i in indices:
        meta = scenes.meta(i)
        frames = transform(DS.to_float(scenes[i]["frames"]))
        r = probe.read_video(frames, meta)
        true_c = np.asarray(meta["positions"])[:, 0]
        err = np.linalg.norm(r["centre"] - true_c, axis=1) * probe.size / probe.native
        hits["centre"].append(err <= 1.0)
        t = len(true_c)
        if scenes.ds.name == "traveling_salesman":
            visits = list(zip(N.visit_frames(t), np.asarray(meta["order"])))
        else:
            visits = [(f, 1) for f in range(N.reaction_frames(t)[0], t)]
        hits["visit"].append(np.asarray([r["touch"][f, j] for f, j in visits]))
        pos, rad = np.asarray(meta["positions"])[0], radii(meta, probe.native)
        dist = np.linalg.norm(true_c[:, None] - pos[None, 1:], axis=-1)
        resid = np.abs(dist - (rad[0] + rad[1:] + probe.native / 64))
        apart = (resid >= 2 * TOUCH_TOL * probe.native / 64).all(1)
        hits["apart"].append(~r["touch"][apart].any(1))
        gap = np.linalg.norm(true_c[:, None] - pos[None], axis=-1) - rad[0] - rad  # (T, n): < 0 overlaps
        seen = np.concatenate([np.ones((t, 1), bool), gap[:, 1:] >= 0], 1)
        hits["colors"].append((r["colors"] == np.asarray(meta["frame_colors"]))[seen])
    return {k: round(float(np.concatenate(v).mean()), 5) for k, v in hits.items()} | {
        "frames": int(sum(len(v) for v in hits["centre"]))}


# -- dice

def _dice_set(data, split: str, size: int, n: int, min_vis: float) -> dict:
    """Frames (V, 3, S, S) uint8 of the first n scenes' views, and per face read: its view's
    row, grid, label (the digit for faces at least min_vis visible, NONE for the side and top
    faces turned away from the camera) and visibility."""
    scenes = DS.Scenes(data, split, size)
    n = min(n, len(scenes))
    frames, rows, grids, labels, vis = [], [], [], [], []
    for i in range(n):
        meta = scenes.meta(i)
        v = np.asarray(meta["face_visibility"])
        views, faces = np.nonzero((v >= min_vis) | (v == 0))
        keep = faces < 5  # the bottom face is never seen
        views, faces = views[keep], faces[keep]
        base = sum(len(f) for f in frames)
        frames.append(scenes[i]["frames"])
        rows.append(base + views)
        grids.append(face_grids(np.asarray(meta["cameras"])[views], meta["die_position"], float(meta["die_yaw"]),
                                faces))
        labels.append(np.where(v[views, faces] > 0, np.asarray(meta["digit_labels"])[faces], NONE))
        vis.append(v[views, faces])
    return {"frames": torch.cat(frames), "rows": torch.as_tensor(np.concatenate(rows)),
            "grids": np.concatenate(grids), "labels": torch.as_tensor(np.concatenate(labels)),
            "vis": np.concatenate(vis), "scenes": n}


def _train_dice(data, size, native, steps, n_scenes, seed, progress, batch=None):
    steps, n_scenes, batch = steps or 2000, n_scenes or 3000, batch or 128
    train = _dice_set(data, "train", size, n_scenes, 0.25)
    net = DigitNet()
    g = torch.Generator().manual_seed(seed)
    grids = torch.as_tensor(train["grids"])

    def batch_fn(step):
        idx = torch.randint(len(train["rows"]), (batch,), generator=g)
        x = DS.to_float(train["frames"][train["rows"][idx]])
        y = train["labels"][idx].clone()
        blank = torch.rand(batch, generator=g) < 0.05  # flat frames (black, a colour): no digit either
        x[blank] = torch.rand(int(blank.sum()), 3, 1, 1, generator=g).expand(-1, -1, *x.shape[2:])
        smear = (torch.rand(batch, generator=g) < 0.1) & ~blank  # blurred past reading: a blank face
        x[smear] = _blur(x[smear], 2.5 + 1.5 * torch.rand(int(smear.sum()), generator=g))
        y[blank | smear] = NONE
        return warp(augment(x, g), grids[idx]), y

    _fit(net, steps, batch_fn, lambda x, y: F.cross_entropy(net(x), y), f"probe {Path(data).name} {size}px",
         progress)
    return net, {"train_scenes": train["scenes"], "train_faces": len(train["rows"]), "steps": steps}


def format_report(r: dict) -> str:
    lines = [f"probe of {r['dataset']} at {r['size']}px ({r['kind']}): trained on {r['train_scenes']} train scenes, "
             f"{r['steps']} steps, {r['seconds']:.0f} s; accuracy on held-out test frames:"]
    for name in ("clean", "degraded"):
        acc = ", ".join(f"{k} {v:.2%}" for k, v in r[name].items() if k != "frames")
        lines.append(f"  {name:<9} {acc}")
    lines.append(f"  (degraded: blur sigma {DEGRADED['blur']} px, gain {DEGRADED['gain']}, "
                 f"noise sigma {DEGRADED['noise']})")
    return "\n".join(lines)
