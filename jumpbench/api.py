"""The public Python API (docs/python.md): what `jumpbench.__all__` names is re-exported from
here; everything else in the package is internal and may change without notice.

- open_dataset: one split of a dataset as a torch Dataset (frames, viewpoints, metadata);
- load_run: a run folder's trained model and its config;
- generate: write a dataset (what `jumpbench generate ...` calls);
- train: train one seed of one model (what `jumpbench run` calls per seed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from jumpbench.benchmarks import data as D
from jumpbench.benchmarks.runs import load_run
from jumpbench.benchmarks.train import train
from jumpbench.errors import JumpbenchError

__all__ = ["open_dataset", "load_run", "generate", "train", "SceneDataset"]

GENERATORS = {  # name -> (default train scenes, test scenes, scenes per shard), as the CLI's
    "narratives": (98000, 1000, 1000),
    "dice": (20000, 1000, 500),
}


class SceneDataset(D.Scenes):
    """One split as a `torch.utils.data.Dataset`; item i is a dict of
    frames (T, 3, S, S) uint8 (float32 in [0, 1] with dtype="float32"), viewpoints (T, D)
    float32, index (int) and meta: the scene's ground truth (every fixed-shape metadata array
    of the manifest's schema, as tensors). `metadata(i)` gives every key as numpy arrays,
    including the variable-length ones (`ragged_keys`), which a default collate cannot batch."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None,
                 dtype: str = "uint8"):
        if dtype not in ("uint8", "float32"):
            raise JumpbenchError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
        native = D.Dataset(root).manifest["params"]["size"]
        size = native if image_size is None else image_size
        if not isinstance(size, int) or size < 1 or native % size:
            raise JumpbenchError(f"image_size {image_size!r} must divide the dataset's frame size {native}")
        super().__init__(root, split, size)
        self.ds._split(split)  # an unknown split fails here, in one line
        self.dtype = dtype
        schema = self.ds.schema
        self.ragged_keys = sorted(k for k, s in schema.items() if k != "frames" and -1 in s["shape"])
        self.meta_keys = sorted(k for k in schema if k != "frames" and k not in self.ragged_keys)

    def __getitem__(self, i):
        if not -self.n <= int(i) < self.n:
            raise IndexError(f"{self.split} has {self.n} scenes, no index {i}")
        i = int(i) % self.n
        scene = self.ds.scene(self.split, i)
        frames = torch.from_numpy(D.downsample(scene.frames, self.size).copy()).permute(0, 3, 1, 2)
        if self.dtype == "float32":
            frames = D.to_float(frames)
        meta = {k: torch.as_tensor(np.asarray(scene.meta[k])) for k in self.meta_keys}
        return {"frames": frames, "viewpoints": torch.from_numpy(D.viewpoints(scene.meta, self.key)),
                "index": i, "meta": meta}

    def metadata(self, i: int) -> dict:
        """Every metadata key of scene i (numpy arrays), the variable-length ones included."""
        return {k: v for k, v in self.ds.features(self.split, int(i)).items() if k != "frames"}


def open_dataset(path: str | Path, split: str = "train", image_size: int | None = None,
                 dtype: str = "uint8") -> SceneDataset:
    """One split of a generated dataset folder (the one holding manifest.json) as a torch
    Dataset of scenes; frames area-downsampled to `image_size` (a divisor of the stored size;
    None: as stored). Safe with a DataLoader and several workers."""
    return SceneDataset(path, split, image_size, dtype)


def generate(generator: str, out: str | Path = "data", n: int | None = None, test_n: int | None = None, *,
             size: int = 64, seed: int = 0, workers: int = 1, shard_size: int | None = None,
             overwrite: bool = False, progress: bool = True, parts: int = 1, part: int | None = None,
             launcher: str = "local", **options) -> Path:
    """Write a dataset under out/<dataset>/ and return that folder (resumable; a finished set
    with the same parameters is left as it is). generator: "narratives" (options: narrative=
    "traveling_salesman" | "color_reaction", frames=None) or "dice" (options: views=12,
    digit_pool=100, mnist_dir=None). n, test_n, shard_size default to the CLI's defaults.
    parts > 1: the shards in that many parts, each its own job (launcher="slurm", through
    submitit) or written one after another here ("local"); part=K writes part K alone (to
    re-run a part that failed); the manifest comes when every part is written."""
    from jumpbench.generators.base import generate as write
    from jumpbench.generators.base import generate_parts

    if launcher not in ("local", "slurm"):
        raise JumpbenchError(f"unknown launcher {launcher!r}; choose from local, slurm")

    if generator not in GENERATORS:
        raise JumpbenchError(f"unknown generator {generator!r}; choose from {', '.join(GENERATORS)}")
    default_n, default_test_n, default_shard = GENERATORS[generator]
    try:
        if generator == "narratives":
            from jumpbench.generators.narratives import NarrativesConfig, NarrativesGenerator

            gen = NarrativesGenerator(NarrativesConfig(size=size, seed=seed, **options))
        else:
            from jumpbench.generators.dice import DiceConfig, DiceGenerator

            gen = DiceGenerator(DiceConfig(size=size, seed=seed, **options))
    except TypeError as e:  # an option the generator does not have
        raise JumpbenchError(f"generate {generator}: {e}") from None
    if generator == "dice":
        gen.renderer()  # fails here, before anything is written, without a working OpenGL
    counts = {"train": default_n if n is None else n, "test": default_test_n if test_n is None else test_n}
    shard_size = default_shard if shard_size is None else shard_size
    if parts == 1 and part is None and launcher == "local":
        return write(gen, out, counts, shard_size, workers, overwrite, progress)
    return generate_parts(gen, out, counts, shard_size, parts, "slurm" if launcher == "slurm" else None, part,
                          workers, overwrite, progress)
