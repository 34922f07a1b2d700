"""Run configuration: a preset (TOML data in presets/), overridden by `--set key=value`, and
resolved against a dataset's manifest into the train, data and model configs of a run.

Keys: `train.<k>`, `data.<k>`, `model.<k>`, or a bare `<k>` found in exactly one of them.
Values are TOML literals (`lr=3e-4`, `lstm_sizes=[8,8]`, `pixel_var_schedule=piecewise`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
from dataclasses import dataclass
from importlib import resources

from jumpbench.checks import parse_override
from jumpbench.errors import JumpbenchError

PRESETS = ("smoke", "cpu", "paper")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 36          # torch-jump
    lr: float = 5e-4              # torch-jump: Adam 5e-4 annealed linearly to 5e-5
    lr_final: float = 5e-5
    lr_anneal_steps: int = 1_600_000
    grad_clip: float = 1.0        # max gradient norm; 0 turns clipping off
    eval_every: int = 1000        # evaluate, write samples.png and checkpoint every N steps
    eval_scenes: int = 64         # the fixed test subset
    eval_samples: int = 30        # samples per video for min-MSE (the paper's 30)
    sample_scenes: int = 4        # scenes in samples.png
    num_workers: int = 1          # DataLoader processes (streaming only; the frame cache needs none)
    threads: int = 0              # torch intra-op threads; 0: the cores free to this job (machine.py)
    precision: str = "auto"       # "bf16" autocast (losses stay fp32), "fp32", or "auto": bf16 on CPUs
                                  # with AVX512-BF16/AMX, and on CUDA GPUs for a compiled loss only
    compile: bool = False         # torch.compile the model's loss (compiles once per run)
    cuda_graph: bool = False      # CUDA GPUs: replay each step's forward and backward from a CUDA graph
                                  # (training/graphs.py; JUMP and GQN)
    cache: bool = True            # decode the train split once into a uint8 frame cache
    cache_gb: float = 8.0         # ... if it fits in this many GB, else stream from the shards
    log_every: int = 50           # --tensorboard: per-step scalars every N steps (losses, lr, grad norm, speed)

    def __post_init__(self):
        for k in ("steps", "batch_size", "eval_every", "eval_scenes", "eval_samples", "sample_scenes", "log_every"):
            if getattr(self, k) < 1:
                raise JumpbenchError(f"train.{k} must be at least 1, got {getattr(self, k)}")
        if self.lr <= 0 or self.lr_final <= 0 or self.lr_anneal_steps < 1:
            raise JumpbenchError("train.lr, train.lr_final must be positive and lr_anneal_steps >= 1")
        if self.num_workers < 0 or self.grad_clip < 0 or self.threads < 0 or self.cache_gb < 0:
            raise JumpbenchError("train.num_workers, train.threads, train.cache_gb and train.grad_clip "
                                 "must be non-negative")
        if self.precision not in PRECISIONS:
            raise JumpbenchError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def lr_at(self, step: int) -> float:
        a = min(step / self.lr_anneal_steps, 1.0)
        return self.lr + a * (self.lr_final - self.lr)


@dataclass
class DataConfig:
    image_size: int = 64          # frames are area-downsampled to this at load time
    context_min: int = 1          # training: a random number of context frames in [min, max] ...
    context_max: int = 6
    targets_min: int = 1          # ... and K ~ U[targets_min, targets] other random target frames
    targets: int = 4              # (paper, section 4.1: "a small number of randomly chosen targets")
    eval_context: int = 5         # forward prediction: the first m frames are the context

    def __post_init__(self):
        if not 1 <= self.context_min <= self.context_max:
            raise JumpbenchError("data.context_min must be in 1..context_max")
        if not 1 <= self.targets_min <= self.targets:
            raise JumpbenchError("data.targets_min must be in 1..targets")
        if self.targets < 1 or self.eval_context < 1 or self.image_size < 8:
            raise JumpbenchError("data.targets and data.eval_context must be >= 1, data.image_size >= 8")


def load_preset(name: str) -> dict:
    if name not in PRESETS:
        raise JumpbenchError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    text = resources.files("jumpbench.benchmarks").joinpath("presets", f"{name}.toml").read_text()
    return tomllib.loads(text)


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


def build_config(cls, values: dict, section: str):
    fields = _fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise JumpbenchError(f"unknown {section} key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    kwargs = {}
    for k, v in values.items():
        kwargs[k] = check_type(f"{section.split()[0]}.{k}", v, fields[k].type, fields[k].default)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise JumpbenchError(f"bad {section} config: {e}") from None


def check_type(key: str, value, annotation, default=None) -> object:
    """`value` as the field's type (an int is a float too, a list a tuple: of ints where the
    field's default is), or a one-line error naming the key: --set train.steps=1.5, =abc, =true,
    =nan or lstm_sizes=[4.5,8] are refused before anything runs."""
    kinds = [a.strip() for a in (annotation if isinstance(annotation, str) else
                                 getattr(annotation, "__name__", str(annotation))).split("|")]

    def number(x, kind):
        return not isinstance(x, bool) and (isinstance(x, int) or (kind == "float" and isinstance(x, float)
                                                                    and math.isfinite(x)))

    if isinstance(default, tuple) and default and all(number(x, "int") for x in default):
        kinds = ["tuple[int]" if k.startswith("tuple") else k for k in kinds]

    for kind in kinds:
        if kind == "None" and value is None:
            return None
        if kind in ("int", "float") and number(value, kind):
            return float(value) if kind == "float" else value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "str" and isinstance(value, str):
            return value
        if kind.startswith("tuple") and isinstance(value, (list, tuple)) and all(
                number(x, "int" if kind == "tuple[int]" else "float") for x in value):
            return tuple(value)
    shown = {"tuple": "a list of numbers, e.g. [8,8]", "tuple[int]": "a list of whole numbers, e.g. [8,8]",
             "float": "a finite number"}.get(kinds[0], kinds[0]) if len(kinds) == 1 else " or ".join(kinds)
    raise JumpbenchError(f"{key} must be {shown}, got {value!r}")


def resolve(model: str, preset: str, dataset: str, manifest_info: dict, overrides: list[str]) -> dict:
    """{"train": TrainConfig, "data": DataConfig, "model": <Model>Config, "warnings": [...]} for
    one run, held to what the data and the machine allow (fit_to_data: its warnings).

    manifest_info: {"viewpoint_dim": D, "frames": T, and where known "viewpoint_key" and
    "test_scenes"} read from the dataset's manifest (dataset.dataset_info)."""
    from jumpbench.models import MODELS

    if model not in MODELS:
        raise JumpbenchError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    raw = load_preset(preset)
    # [train] and [data] may hold a table per model ([train.cdna]) that overrides them for it
    sections = {}
    for name in ("train", "data"):
        table = raw.get(name, {})
        sections[name] = {k: v for k, v in table.items() if not isinstance(v, dict)}
        sections[name].update(table.get(model, {}))
    model_raw = raw.get("model", {}).get(model, {})
    sections["model"] = {k: v for k, v in model_raw.items() if not isinstance(v, dict)}
    sections["model"].update(model_raw.get(dataset, {}))
    model_cls = MODELS[model][1]
    known = {"train": _fields(TrainConfig), "data": _fields(DataConfig), "model": _fields(model_cls)}
    for item in overrides:
        key, value = parse_override(item)
        if "." in key:
            section, key = key.split(".", 1)
            if section not in known:
                raise JumpbenchError(f"--set {item}: unknown section {section!r} (train, data or model)")
        else:
            owners = [s for s in known if key in known[s]]
            if len(owners) != 1:
                raise JumpbenchError(f"--set {item}: unknown key {key!r}" if not owners else
                                     f"--set {item}: {key!r} is in {' and '.join(owners)}; write e.g. {owners[0]}.{key}")
            section = owners[0]
        if key not in known[section]:
            raise JumpbenchError(f"--set {item}: unknown {section} key {key!r}")
        sections[section][key] = value
    data = build_config(DataConfig, sections["data"], "data")
    sections["model"].update(image_size=data.image_size, viewpoint_dim=manifest_info["viewpoint_dim"],
                             frames=manifest_info["frames"])
    cfg = {"train": build_config(TrainConfig, sections["train"], "train"), "data": data,
           "model": build_config(model_cls, sections["model"], f"model ({model})")}
    cfg["warnings"] = fit_to_data(cfg, manifest_info)
    return cfg


def fit_to_data(cfg: dict, info: dict) -> list[str]:
    """Hold the config to what the dataset (`info`: dataset_info's frames per scene, viewpoint
    key and test scenes, where given) and this machine allow, rather than record one value and
    quietly use another: a split that cannot be drawn is refused; a value beyond what can be
    used is clamped to it, and the warnings returned (resolve's "warnings": the run's
    config.json records them, and training prints them)."""
    from jumpbench.workers import usable_cores

    tc, dc, t = cfg["train"], cfg["data"], info["frames"]
    warnings = []

    def clamp(section, key: str, limit: int, why: str) -> None:
        value = getattr(section, key)
        if value > limit:
            setattr(section, key, limit)
            name = f"{'train' if section is tc else 'data'}.{key}"
            warnings.append(f"{name}={value} is more than {why}; using {limit}")

    if dc.context_min + dc.targets_min > t:
        raise JumpbenchError(f"data.context_min={dc.context_min} context + data.targets_min={dc.targets_min} "
                             f"target frames do not fit in the dataset's scenes of {t} frames")
    if info.get("viewpoint_key") == "timestamps" and dc.eval_context >= t:
        raise JumpbenchError(f"data.eval_context={dc.eval_context} leaves no frame to predict in the dataset's "
                             f"videos of {t} frames; give at most {t - 1}")
    clamp(dc, "context_max", t - dc.targets_min, f"a scene of {t} frames leaves beside "
                                                 f"data.targets_min={dc.targets_min} target(s)")
    clamp(dc, "targets", t - dc.context_min, f"a scene of {t} frames leaves beside "
                                             f"data.context_min={dc.context_min} context frame(s)")
    if info.get("test_scenes"):
        clamp(tc, "eval_scenes", info["test_scenes"], f"the {info['test_scenes']} scenes of the test split")
    clamp(tc, "sample_scenes", tc.eval_scenes, f"the train.eval_scenes={tc.eval_scenes} scenes evaluated")
    cores = usable_cores()
    clamp(tc, "threads", cores, f"the {cores} core(s) this process may use")
    clamp(tc, "num_workers", cores, f"the {cores} core(s) this process may use")
    return warnings


def config_name(preset: str, overrides: list[str]) -> str:
    """The run folder's config name: the preset, plus the overrides when there are any."""
    if not overrides:
        return preset
    text = ",".join(sorted(overrides))
    safe = "".join(c if c.isalnum() or c in "=.-_," else "_" for c in text)
    return f"{preset}+{safe}" if len(safe) <= 60 else f"{preset}+{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def to_dict(cfg: dict) -> dict:
    """The train, data and model sections as dicts (config.json's "config"; not the warnings)."""
    return {k: dataclasses.asdict(v) for k, v in cfg.items() if dataclasses.is_dataclass(v)}


def run_inputs(model, data, preset, overrides_, seeds, out, run_name=None, branch_from=None,
               minutes=None) -> None:
    """Check a training run's (or a seed sweep's, or a grid sweep's) arguments: train() and the
    launcher's run_seeds and sweep, which the CLI's run and sweep call. `seeds`: a list; each a
    whole number >= 0 (a seed of -1 would make a folder seed--1)."""
    from jumpbench.checks import folder, name, overrides, positive, shown, whole
    from jumpbench.models import MODELS

    name("model", model, list(MODELS))
    folder("--data", data)
    name("preset", preset, PRESETS)
    overrides(overrides_)
    for s in seeds:
        whole("--seed", s, 0)
    folder("--out", out)
    if run_name is not None and not isinstance(run_name, str):
        raise JumpbenchError(f"--name must be a folder name, got {shown(run_name)}")
    folder("--from", branch_from, none_ok=True)
    positive("--minutes", minutes, none_ok=True)
