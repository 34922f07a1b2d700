"""A stored dataset as torch data: what a run needs of its manifest (dataset_info), its
fingerprint (dataset_sha256), and one split as a torch Dataset of decoded, downsampled scenes
(Scenes, which the harness reads; SceneDataset, which jumpbench.open_dataset gives). The arrays
come from scenes.py, as the numpy reader's do (api.NumpyScenes), so both give the same bytes.
Nothing of the harness here (which makes its batches of these scenes: benchmarks/batches.py).

Viewpoints: dice `(x, y, z, sin yaw, cos yaw, sin pitch, cos pitch)` (gqn-datasets order),
narratives the frame time t (a (T, 1) float).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from jumpbench.errors import JumpbenchError
from jumpbench.files import file_sha256
from jumpbench.records import MANIFEST, VIEWPOINT_DIMS, Dataset, check_manifest, frames_per_scene, load_manifest
from jumpbench.scenes import downsample, viewpoints


MISSING_DATA = {  # the command that makes each dataset, for the one-line hint
    "traveling_salesman": "jumpbench generate narratives",
    "color_reaction": "jumpbench generate narratives --narrative color_reaction",
    "mnist_dice": "jumpbench generate dice",
}


def dataset_info(data: str | Path) -> dict:
    """What a run needs of a dataset's manifest: its name, viewpoint key and dimension, frames
    per scene, frame size and test scenes; a one-line error with the command that makes it when
    missing."""
    data = Path(data)
    if not (data / MANIFEST).is_file() and not any(data.glob(f"*/{MANIFEST}")):  # else load_manifest says which
        hint = MISSING_DATA.get(data.name, "jumpbench generate ...")
        raise JumpbenchError(f"no dataset at {data} (make it with: {hint} --out {data.parent})")
    m = load_manifest(data)
    check_manifest(data, m)
    frames = frames_per_scene(m["params"])
    key, dim = m["viewpoint"]["key"], int(m["viewpoint"]["dim"])
    if VIEWPOINT_DIMS.get(key) != dim:
        raise JumpbenchError(f"{data / MANIFEST}: viewpoint {key!r} of dimension {dim}; jumpbench reads it as "
                             f"{VIEWPOINT_DIMS.get(key, 'unknown')} (the manifest was edited)")
    test = m["splits"].get("test", {}).get("shards", [])  # (check_manifest checked the shard list)
    return {"name": m["dataset"], "viewpoint_key": key, "viewpoint_dim": dim, "frames": int(frames),
            "size": int(m["params"]["size"]), "test_scenes": sum(int(s["records"]) for s in test)}


def dataset_sha256(data: str | Path) -> str:
    """The dataset's fingerprint: the sha256 of its manifest (which holds every shard's)."""
    return file_sha256(Path(data) / MANIFEST)


class Scenes(torch.utils.data.Dataset):
    """One split of a dataset as tensors: frames (T, 3, S, S) uint8, viewpoints (T, D)."""

    def __init__(self, root: str | Path, split: str, image_size: int):
        self.ds = Dataset(root)
        self.split, self.size = split, image_size
        self.key = self.ds.manifest["viewpoint"]["key"]
        self.n = self.ds.num(split)
        self.frames = frames_per_scene(self.ds.manifest["params"])  # per scene, as the manifest says

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self._item(self.ds.scene(self.split, int(i)), int(i))

    def _item(self, scene, i: int) -> dict:
        """A decoded scene as the item: frames downsampled, (T, 3, S, S) uint8; viewpoints (T, D)."""
        frames, vps = self._arrays(scene)
        return {"frames": torch.from_numpy(frames), "viewpoints": torch.from_numpy(vps), "index": i}

    def _arrays(self, scene) -> tuple[np.ndarray, np.ndarray]:
        """A decoded scene's frames downsampled, (T, 3, S, S) uint8, and viewpoints (T, D), in numpy."""
        if len(scene.frames) != self.frames:
            raise JumpbenchError(f"{self.ds.root}: a {self.split} scene holds {len(scene.frames)} frames, the "
                                 f"manifest says {self.frames} (run jumpbench verify)")
        return (np.ascontiguousarray(downsample(scene.frames, self.size).transpose(0, 3, 1, 2)),
                viewpoints(scene.meta, self.key))

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item i's frames and viewpoints as numpy arrays (no torch: safe in a forked worker)."""
        return self._arrays(self.ds.scene(self.split, int(i)))

    def meta(self, i: int) -> dict:
        return self.ds.features(self.split, i)


class SceneDataset(Scenes):
    """jumpbench.open_dataset: one split as a `torch.utils.data.Dataset`; item i is a dict of
    frames (T, 3, S, S) uint8 (float32 in [0, 1] with dtype="float32"), viewpoints (T, D)
    float32, index (int) and meta: the scene's ground truth (every fixed-shape metadata array
    of the manifest's schema, as tensors). `metadata(i)` gives every key as numpy arrays,
    including the variable-length ones (`ragged_keys`), which a default collate cannot batch.
    `transform(item)`, when given, is the item; ds[a:b] is a list of items."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None,
                 dtype: str = "uint8", transform=None):
        if dtype not in ("uint8", "float32"):
            raise JumpbenchError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
        native = Dataset(root).manifest["params"]["size"]
        size = native if image_size is None else image_size
        if not isinstance(size, int) or size < 1 or native % size:
            raise JumpbenchError(f"image_size {image_size!r} must divide the dataset's frame size {native}")
        super().__init__(root, split, size)
        self.ds._split(split)  # an unknown split fails here, in one line
        self.dtype, self.transform = dtype, transform
        schema = self.ds.schema
        self.ragged_keys = sorted(k for k, s in schema.items() if k != "frames" and -1 in s["shape"])
        self.meta_keys = sorted(k for k in schema if k != "frames" and k not in self.ragged_keys)

    def __getitem__(self, i):
        from jumpbench.scenes import scene_index

        i = scene_index(i, self.n, self.split)
        if isinstance(i, range):
            return [self[k] for k in i]
        scene = self.ds.scene(self.split, i)
        item = self._item(scene, i)
        if self.dtype == "float32":
            item["frames"] = to_float(item["frames"])
        item["meta"] = {k: torch.as_tensor(np.asarray(scene.meta[k])) for k in self.meta_keys}
        return item if self.transform is None else self.transform(item)

    def metadata(self, i: int) -> dict:
        """Every metadata key of scene i (numpy arrays), the variable-length ones included."""
        return {k: v for k, v in self.ds.features(self.split, int(i)).items() if k != "frames"}


def to_device(x: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """x on `device` (None: where it is). To a GPU it travels from pinned memory without
    blocking the host (a copy from ordinary memory would wait for the device's queue)."""
    if device is None or x.device == torch.device(device):
        return x
    return (x.pin_memory() if torch.device(device).type == "cuda" else x).to(device, non_blocking=True)


def to_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0
