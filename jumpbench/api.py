"""The public Python API (docs/python.md), as `jumpbench.__all__` names it: open_dataset and
generate here; load_run (benchmarks/runs.py) and train (benchmarks/train.py) where they live.
Everything else in the package is internal and may change without notice. No torch at import
time: `jumpbench generate` imports this module and starts fast.
"""
from __future__ import annotations

from pathlib import Path

from jumpbench.errors import JumpbenchError

GENERATORS = {  # name -> (default train scenes, test scenes, scenes per shard), as the CLI's
    "narratives": (98000, 1000, 1000),
    "dice": (20000, 1000, 500),
}


def open_dataset(path: str | Path, split: str = "train", image_size: int | None = None,
                 dtype: str = "uint8"):
    """One split of a generated dataset folder (the one holding manifest.json) as a torch
    Dataset of scenes (benchmarks.data.SceneDataset); frames area-downsampled to `image_size`
    (a divisor of the stored size; None: as stored). Safe with a DataLoader and several workers."""
    from jumpbench.benchmarks.data import SceneDataset

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


# the parameters a generator records that are derived, not chosen (a checksum of its inputs)
DERIVED_PARAMS = ("digits_sha256",)


def generate_for_run(run: str | Path, out: str | Path = "data", workers: int = 1, progress: bool = True) -> Path:
    """Write again the dataset a run trained on, from the generator, version and parameters its
    config.json records (the same bytes: the same manifest sha256), under out/<dataset>/; returns
    that folder. For continuing a run from git on a fresh machine."""
    from jumpbench.files import read_json

    record = read_json(Path(run) / "config.json")
    gen = record.get("dataset_generator") if isinstance(record, dict) else None
    if not isinstance(gen, dict) or gen.get("generator") not in GENERATORS or not isinstance(gen.get("params"), dict):
        raise JumpbenchError(f"{run}: its config.json does not record how its dataset was made (dataset_generator)")
    params = dict(gen["params"])
    counts = params.pop("counts", {})
    options = {k: v for k, v in params.items() if k not in DERIVED_PARAMS + ("shard_size",)}
    return generate(gen["generator"], out, counts.get("train"), counts.get("test"), shard_size=params.get("shard_size"),
                    workers=workers, progress=progress, **options)
