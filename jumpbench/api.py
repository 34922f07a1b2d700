"""The public Python API (docs/python.md), as `jumpbench.__all__` names it: open_dataset and
generate here; load_run (benchmarks/runs.py) and train (benchmarks/training/train.py) where they live.
Everything else in the package is internal and may change without notice. No torch at import
time: `jumpbench generate` imports this module and starts fast; nor ever for
open_dataset(backend="numpy") (NumpyScenes).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jumpbench.errors import JumpbenchError
from jumpbench.scenes import scene_index

GENERATORS = {  # name -> (default train scenes, test scenes, scenes per shard), as the CLI's
    "narratives": (98000, 1000, 1000),
    "dice": (20000, 1000, 500),
}


def open_dataset(path: str | Path, split: str = "train", image_size: int | None = None,
                 dtype: str = "uint8", transform=None, backend: str = "torch"):
    """One split of a generated dataset folder (the one holding manifest.json) as a torch
    Dataset of scenes (dataset.SceneDataset); frames area-downsampled to `image_size`
    (a divisor of the stored size; None: as stored). Safe with a DataLoader and several workers.
    `transform`: a callable applied to each item (its return value is the item). ds[a:b]: a
    list of items. backend="numpy": the same items as numpy arrays, from a plain sequence that
    never imports torch (NumpyScenes)."""
    from jumpbench import checks

    checks.folder("path", path)
    if not isinstance(split, str):
        raise JumpbenchError(f"split must be a split's name (e.g. 'train'), got {checks.shown(split)}")
    checks.whole("image_size", image_size, 1, none_ok=True)
    if transform is not None and not callable(transform):
        raise JumpbenchError(f"transform must be a callable (item -> item), got {checks.shown(transform)}")
    checks.name("backend", backend, ("torch", "numpy"))
    if backend == "numpy":
        return NumpyScenes(path, split, image_size, dtype, transform)
    from jumpbench.dataset import SceneDataset

    return SceneDataset(path, split, image_size, dtype, transform)


class NumpyScenes:
    """open_dataset(..., backend="numpy"): one split as a sequence of the torch Dataset's items
    with numpy arrays in place of tensors (frames (T, 3, S, S) uint8, or float32 in [0, 1];
    viewpoints (T, D) float32; index; meta), read without torch (for JAX, TensorFlow or numpy
    alone). len(), [i], [a:b] (a list), iteration, metadata(i) and ragged_keys as the torch one."""

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None,
                 dtype: str = "uint8", transform=None):
        from jumpbench.records import Dataset

        if dtype not in ("uint8", "float32"):
            raise JumpbenchError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
        self.ds = Dataset(root)
        native = self.ds.size
        self.size = native if image_size is None else image_size
        if not isinstance(self.size, int) or self.size < 1 or native % self.size:
            raise JumpbenchError(f"image_size {image_size!r} must divide the dataset's frame size {native}")
        self.split, self.dtype, self.transform = split, dtype, transform
        self.n = self.ds.num(split)  # an unknown split fails here, in one line
        self.key = self.ds.manifest["viewpoint"]["key"]
        schema = self.ds.schema
        self.ragged_keys = sorted(k for k, s in schema.items() if k != "frames" and -1 in s["shape"])
        self.meta_keys = sorted(k for k in schema if k != "frames" and k not in self.ragged_keys)

    def __len__(self):
        return self.n

    def __iter__(self):
        return (self[i] for i in range(self.n))

    def __getitem__(self, i):
        i = scene_index(i, self.n, self.split)
        if isinstance(i, range):
            return [self[k] for k in i]
        from jumpbench.scenes import downsample, viewpoints

        scene = self.ds.scene(self.split, i)
        frames = np.ascontiguousarray(downsample(scene.frames, self.size).transpose(0, 3, 1, 2))
        if self.dtype == "float32":
            frames = frames.astype(np.float32) / np.float32(255)
        vps = viewpoints(scene.meta, self.key)
        item = {"frames": frames, "viewpoints": vps, "index": i,
                "meta": {k: np.asarray(scene.meta[k]) for k in self.meta_keys}}
        return item if self.transform is None else self.transform(item)

    def metadata(self, i: int) -> dict:
        """Every metadata key of scene i (numpy arrays), the variable-length ones included."""
        i = scene_index(i, self.n, self.split)
        if isinstance(i, range):
            return [self.metadata(k) for k in i]
        return {k: v for k, v in self.ds.features(self.split, i).items() if k != "frames"}


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
    import dataclasses

    from jumpbench import checks
    from jumpbench.generators.base import generate as write
    from jumpbench.generators.base import generate_parts
    from jumpbench.workers import quiet_workers

    checks.name("launcher", launcher, ("local", "slurm"))
    checks.name("generator", generator, list(GENERATORS))
    checks.folder("--out", out)
    for key, value in (("--n", n), ("--test-n", test_n), ("--shard-size", shard_size), ("--part", part)):
        checks.whole(key, value, none_ok=True)
    for key, value in (("--size", size), ("--seed", seed), ("--workers", workers), ("--parts", parts)):
        checks.whole(key, value)
    default_n, default_test_n, default_shard = GENERATORS[generator]
    if generator == "narratives":
        from jumpbench.generators.narratives import NarrativesConfig as Config
        from jumpbench.generators.narratives import NarrativesGenerator as Generator
    else:
        from jumpbench.generators.dice import DiceConfig as Config
        from jumpbench.generators.dice import DiceGenerator as Generator
    fields = {f.name: str(f.type) for f in dataclasses.fields(Config)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise JumpbenchError(f"generate {generator}: no option {unknown[0]!r}; its options: "
                             f"{', '.join(k for k in fields if k not in ('size', 'seed'))}")
    for key, value in options.items():  # whole numbers (frames, views, digit_pool), names and paths
        option, none_ok = f"--{key.replace('_', '-')}", "None" in fields[key]
        if fields[key].startswith("int"):
            checks.whole(option, value, none_ok=none_ok)
        elif not (isinstance(value, (str, os.PathLike)) or (value is None and none_ok)):
            raise JumpbenchError(f"{option} must be a str, got {checks.shown(value)}")
    gen = Generator(Config(size=size, seed=seed, **options))
    if generator == "dice":
        gen.renderer()  # fails here, before anything is written, without a working OpenGL
    counts = {"train": default_n if n is None else n, "test": default_test_n if test_n is None else test_n}
    shard_size = default_shard if shard_size is None else shard_size
    with quiet_workers():  # a killed parent leaves no worker to complain
        if parts == 1 and part is None and launcher == "local":
            return write(gen, out, counts, shard_size, workers, overwrite, progress)
        return generate_parts(gen, out, counts, shard_size, parts, "slurm" if launcher == "slurm" else None, part,
                              workers, overwrite, progress)


# the parameters a generator records that are derived, not chosen (a checksum of its inputs)
DERIVED_PARAMS = ("digits_sha256",)


def generate_for_run(run: str | Path, out: str | Path = "data", workers: int = 1, progress: bool = True) -> Path:
    """Write again the dataset a run trained on, from the generator, version and parameters its
    config.json records (the same bytes: the same manifest sha256), under out/<dataset>/; returns
    that folder. For continuing a run from git on a fresh machine."""
    from jumpbench.benchmarks.runs import Run

    gen = (Run(run).record() or {}).get("dataset_generator")
    if not isinstance(gen, dict) or gen.get("generator") not in GENERATORS or not isinstance(gen.get("params"), dict):
        raise JumpbenchError(f"{run}: its config.json does not record how its dataset was made (dataset_generator)")
    params = dict(gen["params"])
    counts = params.pop("counts", {})
    options = {k: v for k, v in params.items() if k not in DERIVED_PARAMS + ("shard_size",)}
    return generate(gen["generator"], out, counts.get("train"), counts.get("test"), shard_size=params.get("shard_size"),
                    workers=workers, progress=progress, **options)
