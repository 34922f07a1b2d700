"""The run folder: its format, and every read and write of it. `Run(folder)` is the one way to
its files (the training loop, sweeps, scoring, the figures, the Python API and the
consistency analysis all go through it); the functions below it are their formats.

A run is a `RunSpec` (what `jumpbench run` was asked), in the folder
<out>/<dataset>/<model>/<config name>/seed-<k>/:

<run>/config.json            what the run is: written once, when the folder is new; a resume
                             whose resolved config, dataset fingerprint (the manifest's
                             sha256), model, seed or world size differ is refused. The one
                             rewrite: `run --extend` continues a run to a larger train.steps
                             and lists the earlier counts in "extended_from"; a branch
                             (`run --from PARENT`) names the run and step it started from in
                             "branched_from"
<run>/checkpoint.pt          torch.save of {"model", "optimizer", "step", "wall", "rng",
                             "sums", "count", "precision", "device_type"}; sums/count: the
                             running train_* sums since the last evaluation, so that the next
                             row is exact after a resume; precision/device_type: what the
                             steps ran in, kept by a resume under train.precision=auto
<run>/checkpoint.pt.sha256   {"sha256", "previous"}: the checkpoint's sha256 (written before
                             the checkpoint is renamed into place, so it also keeps the one
                             before); a checkpoint that matches neither is refused
<run>/metrics.jsonl          one JSON row per evaluation; a torn last line (a crash in the
                             middle of an append) is dropped on resume
<run>/status.json            running | interrupted | done | diverged | failed, and why
<run>/samples.png            the last evaluation's samples (evaluate.write_samples)
<run>/weights.safetensors    what git carries of a run: the weights in fp32, Adam's moments in
                             bf16 and the step (publish_weights); its sha256 in a sidecar
<run>/legs.json              the stretches of training the run was made in (Leg)
<run>/scores.json            `jumpbench score`'s ground-truth scores (evaluate.score_run)
<run>/consistency.json       `jumpbench consistency`'s KL1/KL3 (consistency.py)
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jumpbench.benchmarks import config as C
from jumpbench.errors import JumpbenchError
from jumpbench.files import (append_line, atomic_path, file_lock, fsync, read_json, write_json_atomic,
                             write_text_atomic)
from jumpbench.records import MANIFEST, load_manifest, params_diff

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
STATUS = "status.json"
CONSISTENCY = "consistency.json"  # written by `jumpbench consistency` (consistency.py)
SCORES = "scores.json"            # written by `jumpbench score` (scores.py)
WEIGHTS = "weights.safetensors"   # published weights (publish_weights): what git carries of a run
LEGS = "legs.json"                # the stretches of training the run was made in (Leg)
SAMPLES = "samples.png"           # the last evaluation's samples (evaluate.write_samples)
BEST = "best.json"                # <out>/<dataset>/<model>/best.json: a sweep's ranking (sweep.py)
PIN = "main.json"                 # <out>/<dataset>/<model>/main.json: the config chosen for the figures
IDENTITY = ("model", "dataset", "dataset_sha256", "seed", "world_size", "config")  # what a resume must match
# how a leg runs on its machine, not what the run is: a resume or a continuation elsewhere may
# change them (legs.json records the threads each leg had; compile: the same loss, compiled for
# a GPU leg, where these small models wait on kernel launches; cuda_graph: the same step, replayed)
EXECUTION = ("config.train.threads", "config.train.num_workers", "config.train.cache", "config.train.cache_gb",
             "config.train.log_every", "config.train.compile", "config.train.cuda_graph")


def _dataset():
    """jumpbench.dataset, imported when first needed: it imports torch, and the run folder's names
    and records are read by commands that need none (jumpbench view of a dataset)."""
    from jumpbench import dataset

    return dataset


@dataclass(frozen=True)
class RunSpec:
    """One training run of one seed: what `jumpbench run` was asked for. `name` is the config
    name of its folder (the preset, plus the overrides, when not given); `tensorboard` and
    `extend` change how it trains, not what it is (they are not in config.json); `branch_from`: a
    run folder (or its config folder) whose checkpoint this run starts from (see branch_source);
    `procs`: data-parallel processes on this machine (config.json's world_size), started by the
    sweep's local launcher; `minutes`: stop after that many minutes of training (a leg of a
    fixed length; the same command goes on)."""
    model: str
    data: str
    preset: str = "cpu"
    overrides: tuple = ()
    seed: int = 0
    out: str = "results/runs"
    name: str | None = None
    tensorboard: bool = False
    extend: bool = False
    branch_from: str | None = None
    procs: int = 1
    minutes: float | None = None

    def __post_init__(self):
        for key, value in (("data", str(self.data)), ("out", str(self.out)), ("overrides", tuple(self.overrides)),
                           ("branch_from", None if self.branch_from is None else str(self.branch_from)),
                           ("seed", int(self.seed)), ("name", self.name or C.config_name(self.preset, list(self.overrides)))):
            object.__setattr__(self, key, value)

    def folder(self, dataset: str | None = None) -> Path:
        """The run folder (`dataset`: the dataset's name, read from its manifest when not given)."""
        return run_dir(self.out, dataset or _dataset().dataset_info(self.data)["name"], self.model, self.name,
                       self.seed)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        return cls(**json.loads(text))


class Run:
    """A run folder, and the one way to each file in it (the names above; their formats in the
    functions below). The training loop, sweeps, scoring, the consistency analysis, the figures
    and the API read and write a run through it. `rank`: the process's rank under data
    parallelism; only rank 0 writes, so a Run of another rank reads and its writes do nothing,
    and the training loop needs no `if rank == 0` around its files."""

    def __init__(self, folder: str | Path, rank: int = 0):
        self.folder, self.rank = Path(folder), rank

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r})"

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def path(self, name: str) -> Path:
        """The path of one of its files (CONFIG, SAMPLES, SCORES, ...)."""
        return self.folder / name

    # config.json: what the run is
    def exists(self) -> bool:
        return (self.folder / CONFIG).is_file()

    def record(self) -> dict | None:
        """config.json's record, or None when it is missing or not a JSON object."""
        rec = read_json(self.folder / CONFIG)
        return rec if isinstance(rec, dict) else None

    def open(self, record: dict, extend: bool = False, write: bool = True) -> bool:
        """open_run: check `record` against config.json, or write it (rank 0, with `write`)."""
        return open_run(self.folder, record, write and self.writes, extend)

    # status.json
    def status(self) -> dict | None:
        return read_status(self.folder)

    def mark(self, status: str, why: str) -> None:
        if self.writes:
            write_status(self.folder, status, why)

    # metrics.jsonl
    def metrics(self) -> list[dict]:
        return read_metrics(self.folder / METRICS)

    def append(self, row: dict) -> None:
        if self.writes:
            append_metrics(self.folder, row)

    def truncate(self, step: int) -> None:
        if self.writes:
            truncate_metrics(self.folder / METRICS, step)

    def check_metrics(self, step: int, eval_every: int, source: str) -> None:
        check_metrics(self.folder, step, eval_every, source)

    def last_value(self, metric: str, dataset: str | None = None) -> tuple[float | None, int | None]:
        return last_value(self.folder, metric, dataset)

    # checkpoint.pt and weights.safetensors
    def has_weights(self) -> bool:
        return has_weights(self.folder)

    def training_state(self, map_location="cpu", with_sha: bool = False):
        return training_state(self.folder, map_location, with_sha)

    def checkpoint(self, model, opt, step: int, wall: float, sums: dict | None = None, count: int = 0,
                   precision: str | None = None, device_type: str | None = None) -> None:
        """checkpoint.pt, then weights.safetensors from the same state (rank 0)."""
        if self.writes:
            save_training_state(self.folder / CHECKPOINT, model, opt, step, wall, sums, count,
                                precision=precision, device_type=device_type)
            publish_weights(self.folder, model, opt, step, wall, sums, count, precision, device_type)

    def load(self, device="cpu"):
        """load_run: (model, record)."""
        return load_run(self.folder, device)

    def start_branch(self, parent_checkpoint: Path, step: int) -> None:
        """A new branch's metrics and legs: its parent's, up to `step` (start_branch; rank 0)."""
        if self.writes:
            start_branch(self.folder, parent_checkpoint, step)

    # legs.json
    def legs(self) -> list[dict]:
        return read_legs(self.folder)

    def leg(self, step: int, **facts) -> "Leg":
        return Leg(self.folder, step, write=self.writes, **facts)

    # what other commands write into it
    def scores(self) -> dict | None:
        return read_json(self.folder / SCORES)

    def write_scores(self, result: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / SCORES, result)
        return self.folder / SCORES

    def consistency(self) -> dict | None:
        return read_json(self.folder / CONSISTENCY)

    def write_consistency(self, result: dict) -> Path:
        write_json_atomic(self.folder / CONSISTENCY, result)
        return self.folder / CONSISTENCY


def run_dir(out: str | Path, dataset: str, model: str, name: str, seed: int) -> Path:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise JumpbenchError(f"--name {name!r}: give a plain folder name (no path separators, not '.' or '..')")
    return Path(out) / dataset / model / name / f"seed-{seed}"


def record(spec: RunSpec, world: int, info: dict, cfg: dict) -> dict:
    """config.json's content: what a resume must match (IDENTITY), how the run was asked for,
    and how to make its dataset again on another machine (the generator, its version and
    parameters: `jumpbench generate` with them gives the same manifest sha256)."""
    m = load_manifest(Path(spec.data))
    return {"model": spec.model, "data": spec.data, "dataset": info["name"],
            "dataset_sha256": _dataset().dataset_sha256(spec.data),
            "dataset_generator": {k: m.get(k) for k in ("generator", "version", "params")},
            "preset": spec.preset, "overrides": list(spec.overrides), "seed": spec.seed, "world_size": world,
            "batch_size_is_global": True, "config": C.to_dict(cfg)}


def check_global_batch(folder: Path) -> None:
    """A data-parallel run made before train.batch_size became the global batch (each process
    then took a whole batch of its own) is refused rather than resumed with half the batch."""
    old = read_json(Path(folder) / CONFIG)
    if isinstance(old, dict) and old.get("world_size", 1) > 1 and not old.get("batch_size_is_global"):
        raise JumpbenchError(f"{folder} was trained with train.batch_size per process (an older jumpbench); "
                             "it would resume with another batch: give another --name or --out to start anew")


@contextmanager
def run_lock(folder: Path):
    """One trainer per run folder: the folder itself is locked (flock) while a process trains it,
    so that a second process (the same command twice, a sweep and a manual run) gets a one-line
    refusal rather than both writing its checkpoint and metrics; deleting a file cannot break the
    lock. A folder left empty (a run refused before it wrote anything) is removed again. Under
    torchrun only rank 0 takes it."""
    folder = Path(folder)
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder, wait=False, busy=lambda: f"{folder} is being trained by another jumpbench process; "
                                                     f"wait for it to finish, or stop it, and re-run"):
        try:
            yield
        finally:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass


def read_status(folder: Path) -> dict | None:
    """status.json: {"status", "why", ...}, or None when it is missing or not such a record (a
    run with no readable status is neither done nor failed: it is resumed)."""
    status = read_json(Path(folder) / STATUS)
    ok = isinstance(status, dict) and isinstance(status.get("status"), str) and isinstance(status.get("why"), str)
    return status if ok else None


def pending(spec: RunSpec) -> tuple[Path, dict | None]:
    """(run folder, its status if the run is finished under this very config, else None). A
    finished run under another config is refused naming the keys, unless `spec.extend` asks for
    more steps of it (then None: it has work to do)."""
    from jumpbench.benchmarks.batches import batch_share

    info = _dataset().dataset_info(spec.data)
    cfg = C.resolve(spec.model, spec.preset, info["name"], info, list(spec.overrides))
    folder = spec.folder(info["name"])
    world = int(os.environ.get("WORLD_SIZE", spec.procs))  # torchrun's, or the processes the launcher starts
    batch_share(cfg["train"].batch_size, world)
    extended = open_run(folder, record(spec, world, info, cfg), write=False, extend=spec.extend)
    if spec.branch_from is not None:
        check_branch_folder(spec, folder)
    status = read_status(folder)
    if not status or status["status"] not in ("done", "diverged"):
        return folder, None
    return folder, None if extended and status["status"] == "done" else status


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every differing leaf of the identity keys (config.* shown bare)."""
    a = _flat({k: old.get(k) for k in IDENTITY if k in old or k in new})
    b = _flat({k: new.get(k) for k in IDENTITY if k in old or k in new})
    for key in EXECUTION + (("dataset_sha256",) if "dataset_sha256" not in old else ()):
        a.pop(key, None), b.pop(key, None)  # (no dataset_sha256: a run folder from before fingerprints)
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, list) != isinstance(vb, list) and va is not None and vb is not None:
            va, vb = list(va), list(vb)  # JSON has no tuples
        if va != vb:
            out.append(f"{key.removeprefix('config.')}: {_short(va)} -> {_short(vb)}")
    return out


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 20 else text[:8] + "..." + text[-4:]


def open_run(folder: Path, record: dict, write: bool, extend: bool = False) -> bool:
    """Check `record` (config.json's content) against an existing run folder's config.json, or
    write it when the folder is new (`write`: rank 0). Returns True when the run is being
    extended. `extend`: the one difference allowed is a larger train.steps (every schedule is a
    function of the step, never of train.steps, so a run continued from S to N steps is the
    run that had asked for N from the start); config.json is then rewritten with the new steps
    and the old count appended to its "extended_from" list. Otherwise config.json is never
    rewritten. `extend` on a folder with no run is refused."""
    path = Path(folder) / CONFIG
    if extend and not path.is_file():
        raise JumpbenchError(f"--extend: no run to continue at {folder}")
    if path.is_file():
        old = read_json(path)
        if not isinstance(old, dict):
            raise JumpbenchError(f"{path}: unreadable; this folder is not a run this command can resume")
        new = json.loads(json.dumps(record))
        diff = config_diff(old, new)
        if not diff:
            return False
        before = ((old.get("config") or {}).get("train") or {}).get("steps")
        after = new["config"]["train"]["steps"]
        if extend and [d.split(":")[0] for d in diff] == ["train.steps"] and after > before:
            if write:
                kept = {k: v for k, v in old.items() if k not in new}  # branched_from, among others
                write_json_atomic(path, {**new, **kept, "extended_from": old.get("extended_from", []) + [before]})
            return True
        hint = ("--extend continues a run to more steps, with nothing else changed" if extend else
                "resume with the same settings, or give another --name or --out")
        if any(d.startswith("dataset_sha256:") for d in diff):
            hint += ("; the dataset's manifest is not the one the run trained on: point --data at that "
                     "dataset (config.json: dataset_generator has its parameters)")
        raise JumpbenchError(f"{folder} is a run with another config; differs: {'; '.join(diff)} ({hint})")
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    return False


# What a run's evaluations are measured on: a branch's join its parent's curve (the rows it
# starts with), so it must measure the same way.
EVALUATION = (("train", "eval_scenes"), ("train", "eval_samples"), ("data", "eval_context"), ("data", "image_size"))


def branch_source(parent: str | Path, spec: RunSpec, info: dict, steps: int,
                  config: dict | None = None) -> tuple[Path, dict, dict]:
    """(path, its loaded state, the "branched_from" record) of the run that the branch `spec`
    starts from. A branch is a new run folder that starts from another run's checkpoint (weights,
    optimizer state, step, random state and its metrics so far), or its published weights where
    it has no checkpoint, and goes on under its own config: the same architecture, dataset, model
    and seed, other schedules (say, a last phase of the pixel variance). `parent`: a run folder,
    or its config folder (then its seed-<seed>). Refused in one line when the parent is not such
    a run, or (`config`: the branch's resolved config, as dicts) when the branch would evaluate
    on other test scenes, samples, context or size (EVALUATION) than the parent did."""
    p, rec = branch_parent(parent, spec.seed)
    mine_sha = _dataset().dataset_sha256(spec.data)
    for key, mine in (("model", spec.model), ("dataset_sha256", mine_sha), ("seed", spec.seed)):
        if rec.get(key) != mine:
            raise JumpbenchError(f"--from {p}: its {key} is {_short(rec.get(key))}, this run's {_short(mine)}; "
                                 "a branch keeps the model, dataset and seed of the run it starts from")
    for section, key in EVALUATION if config else ():
        theirs, mine = ((rec.get("config") or {}).get(section) or {}).get(key), config[section][key]
        if theirs is not None and theirs != mine:
            raise JumpbenchError(f"--from {p}: it evaluates with {section}.{key}={theirs}, this run with {mine}; a "
                                 f"branch's curve goes on from its parent's, so give --set {section}.{key}={theirs}")
    state, path, sha = training_state(p, with_sha=True)
    if state is None:
        raise JumpbenchError(f"--from {p}: no {CHECKPOINT} or {WEIGHTS} to start from")
    if state["step"] >= steps:
        raise JumpbenchError(f"--from {p}: its {path.name} is at step {state['step']}; give train.steps "
                             f"above it (this run's: {steps})")
    origin = {"dataset": info["name"], "model": rec["model"], "name": p.parent.name, "seed": rec["seed"],
              "step": state["step"], "checkpoint_sha256": sha}
    if state["source"] != "checkpoint":
        origin["from"] = path.name
    return path, state, origin


def check_branch_folder(spec: RunSpec, folder: Path) -> None:
    """For `--from`: refuse a folder that holds a run that is not a branch, or a branch of
    another parent, in one line (rather than resume or skip it)."""
    old = read_json(Path(folder) / CONFIG)
    if old is None:
        return
    before = old.get("branched_from") if isinstance(old, dict) else None
    if not before:
        raise JumpbenchError(f"{folder} already holds a run that is not a branch: give another --name")
    given = Path(spec.branch_from).resolve()
    if before.get("name") != (given.parent.name if given.name == f"seed-{spec.seed}" else given.name):
        raise JumpbenchError(f"{folder} is a branch of {before['name']}/seed-{before['seed']}, "
                             f"not of {spec.branch_from}")


def branch_parent(parent: str | Path, seed: int) -> tuple[Path, dict]:
    """(run folder, its config.json) of `--from parent` for `seed`: `parent` itself, or its
    seed-<seed> when it is a config folder. One line naming the folder when there is no run."""
    p = Path(parent).resolve()
    if not (p / CONFIG).is_file() and (p / f"seed-{seed}").is_dir():
        p = p / f"seed-{seed}"
    rec = read_json(p / CONFIG)
    if not isinstance(rec, dict):
        raise JumpbenchError(f"--from {parent}: no run for seed {seed} there (no readable {CONFIG} in {p.name})")
    return p, rec


def start_branch(folder: Path, parent_checkpoint: Path, step: int) -> None:
    """A new branch's metrics.jsonl and legs.json: its parent's rows and legs up to the step it
    starts from (the last leg cut there)."""
    parent = parent_checkpoint.parent
    rows = [r for r in read_metrics(parent / METRICS) if r.get("step", 0) <= step]
    write_text_atomic(folder / METRICS, "".join(json.dumps(r) + "\n" for r in rows))
    legs = [{**leg, "to": min(leg.get("to", 0), step)} for leg in read_legs(parent) if leg.get("from", 0) < step]
    if legs:
        write_json_atomic(folder / LEGS, legs)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save `state` to `path` atomically, its sha256 recorded in the sidecar first."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    _save_checked(Path(path), buf.getvalue())


def _save_checked(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, its sha256 recorded in the sidecar first (which also
    keeps the one before: a crash between the two writes leaves a file the sidecar accepts)."""
    previous = (read_json(_sidecar(path)) or {}).get("sha256") if path.is_file() else None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            fsync(f)
        write_json_atomic(_sidecar(path), {"sha256": hashlib.sha256(data).hexdigest(), "previous": previous})


def _read_checked(path: Path, what: str) -> tuple[bytes, str]:
    """(bytes, sha256) of a file written by _save_checked, refused in one line when its sha256 is
    neither of those its sidecar records."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise JumpbenchError(f"{path}: unreadable {what} ({e.strerror or e})") from None
    sums, sha = read_json(_sidecar(path)), hashlib.sha256(data).hexdigest()
    if sums is not None:
        known = {sums.get("sha256"), sums.get("previous")} - {None} if isinstance(sums, dict) else set()
        if sha not in known:
            raise JumpbenchError(f"{path}: corrupt {what} (its sha256 is not the one in {_sidecar(path).name})")
    return data, sha


def save_training_state(path: Path, model, opt, step: int, wall: float, sums: dict | None = None,
                        count: int = 0, precision: str | None = None, device_type: str | None = None) -> None:
    """The training loop's checkpoint (see the module's docstring). sums/count: the running
    train_* sums since the last evaluation (none right after one); precision and device_type:
    what the steps ran in ("bf16" or "fp32"; "cpu" or "cuda"), which a resume under
    train.precision=auto on the same kind of device keeps."""
    import torch

    save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "wall": wall,
                           "rng": torch.get_rng_state(), "sums": dict(sums or {}), "count": count,
                           "precision": precision, "device_type": device_type})


def load_checkpoint(path: Path, map_location="cpu", with_sha: bool = False):
    """The checkpoint's dict, after checking its sha256 (with `with_sha`: the dict and the
    sha256 of the very bytes loaded); a one-line error naming the file when it is corrupt or
    does not load."""
    import torch

    path = Path(path)
    try:
        data, sha = _read_checked(path, "checkpoint")
    except JumpbenchError as e:
        if "corrupt" in str(e):
            raise JumpbenchError(f"{e}; delete it to go on from {WEIGHTS} where there is one, else from the "
                                 f"start") from None
        raise
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception as e:
        raise JumpbenchError(f"{path}: checkpoint does not load ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:120]})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise JumpbenchError(f"{path}: not a jumpbench checkpoint")
    return (state, sha) if with_sha else state


def load_state(path: Path, module, state_dict: dict, what: str = "model") -> None:
    """module.load_state_dict, failing with one line that names the checkpoint."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, ValueError, KeyError) as e:
        first = " ".join(str(e).split())[:160]
        raise JumpbenchError(f"{path}: the checkpoint's {what} does not fit this run ({first})") from None


# Published weights: what a run folder carries in git (checkpoint.pt does not travel). One
# safetensors file (no pickle: opening weights from a repository runs no code) with the model's
# tensors under "model/<name>" and, for continuing the run elsewhere, Adam's moments in bf16
# under "adam.exp_avg/<name>" and "adam.exp_avg_sq/<name>" (half the bytes of fp32; continuing
# with them joins the uninterrupted loss curve, docs/reproduction.md); the header's metadata
# "jumpbench" holds the step, wall, precision, device type, Adam's step count and the train_*
# sums since the last evaluation. Its sha256 is in weights.safetensors.sha256, checked on load.
WEIGHTS_FORMAT = 1


def publish_weights(folder: Path, model, opt, step: int, wall: float, sums: dict | None = None, count: int = 0,
                    precision: str | None = None, device_type: str | None = None, moments: bool = True) -> Path:
    """Write the run's published weights (see above) atomically; `opt`: its Adam optimizer, whose
    moments are published unless `moments` is False (or `opt` is None): weights to sample from only."""
    from safetensors.torch import save

    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {f"model/{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    adam_step = None
    if moments and opt is not None:
        import torch

        for p, st in opt.state.items():
            if "exp_avg" not in st:
                continue
            name = names[id(p)]
            tensors[f"adam.exp_avg/{name}"] = st["exp_avg"].detach().to("cpu", torch.bfloat16).contiguous()
            tensors[f"adam.exp_avg_sq/{name}"] = st["exp_avg_sq"].detach().to("cpu", torch.bfloat16).contiguous()
            adam_step = float(st["step"])
    meta = {"format": WEIGHTS_FORMAT, "model": type(model).__name__, "step": step, "wall": round(wall, 2),
            "sums": dict(sums or {}), "count": count, "precision": precision, "device_type": device_type,
            "adam_step": adam_step, "moments": "bfloat16" if adam_step is not None else None}
    path = Path(folder) / WEIGHTS
    _save_checked(path, save(tensors, metadata={"jumpbench": json.dumps(meta)}))
    return path


def load_weights(path: Path, map_location="cpu", with_sha: bool = False):
    """A published weights file as a training state: {"model": state dict, "moments": {name:
    (exp_avg, exp_avg_sq)} (empty when none were published), "adam_step", "step", "wall", "sums",
    "count", "precision", "device_type", "source": "weights"}, after checking its sha256; one
    line naming the file when it is corrupt or not such a file."""
    from safetensors.torch import load

    path = Path(path)
    data, sha = _read_checked(path, "published weights")
    try:
        meta = _weights_header(data)
        tensors = load(data)
        if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT or not isinstance(meta.get("step"), int):
            raise ValueError("no jumpbench header")
    except Exception as e:
        raise JumpbenchError(f"{path}: not jumpbench's published weights ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:100]})") from None
    state = {"model": {}, "moments": {}, "source": "weights",
             **{k: meta.get(k) for k in ("step", "wall", "sums", "count", "precision", "device_type", "adam_step")}}
    state["sums"], state["count"], state["wall"] = state["sums"] or {}, state["count"] or 0, state["wall"] or 0.0
    for key, t in tensors.items():
        kind, _, name = key.partition("/")
        t = t.to(map_location)
        if kind == "model":
            state["model"][name] = t
        elif kind in ("adam.exp_avg", "adam.exp_avg_sq"):
            state["moments"].setdefault(name, [None, None])[kind == "adam.exp_avg_sq"] = t
    return (state, sha) if with_sha else state


def load_moments(path: Path, opt, model, state: dict) -> bool:
    """Put a published state's Adam moments (and step count) into `opt`, the fresh Adam of
    `model`; False (opt left fresh) when none were published. Refused in one line when they
    are not the model's."""
    import torch

    if not state.get("moments"):
        return False
    params = dict(model.named_parameters())
    if set(state["moments"]) != set(params) or any(None in m for m in state["moments"].values()):
        raise JumpbenchError(f"{path}: its Adam moments are not this model's parameters")
    for name, p in params.items():
        avg, sq = state["moments"][name]
        if avg.shape != p.shape:
            raise JumpbenchError(f"{path}: its Adam moments for {name} have shape {tuple(avg.shape)}, "
                                 f"the model's {tuple(p.shape)}")
        opt.state[p] = {"step": torch.tensor(float(state["adam_step"])),
                        "exp_avg": avg.to(p.device, p.dtype), "exp_avg_sq": sq.to(p.device, p.dtype)}
    return True


def publish(folder: str | Path, moments: bool = True) -> dict:
    """Publish a run's checkpoint.pt as its weights.safetensors (runs trained before the loop
    published its weights; or, with `moments` False, to publish weights for sampling only, at
    half the size); returns the weights' metadata. The run must not be training."""
    import torch

    folder = Path(folder)
    with run_lock(folder):
        model, record, state = _load_run(folder)
        if state["source"] != "checkpoint":
            if (folder / CHECKPOINT).is_file():  # an older checkpoint beside newer published weights
                raise JumpbenchError(f"{folder}: its {WEIGHTS} (step {state['step']}) is newer than its {CHECKPOINT}: "
                                     "nothing to publish")
            raise JumpbenchError(f"{folder}: no {CHECKPOINT} to publish (its {WEIGHTS} is what it has)")
        opt = torch.optim.Adam(model.parameters())
        load_state(folder / CHECKPOINT, opt, state["optimizer"], "optimizer state")
        publish_weights(folder, model, opt, state["step"], state["wall"], state.get("sums"), state.get("count", 0),
                        state.get("precision"), state.get("device_type"), moments)
    return load_weights(folder / WEIGHTS)


def has_weights(folder: Path) -> bool:
    """Whether a run folder has weights to load: its checkpoint or its published weights."""
    return any((Path(folder) / name).is_file() for name in (CHECKPOINT, WEIGHTS))


def training_state(folder: Path, map_location="cpu", with_sha: bool = False):
    """The state a run goes on from: its checkpoint.pt (exact), or its published weights (a run
    from git: weights, Adam's moments in bf16, step) where it has no checkpoint or where the
    weights are further on (a checkout that pulled or unpacked a newer leg beside an older local
    checkpoint: going on from that would drop the newer leg's rows); else None. The dict has
    "source": "checkpoint" or "weights"; with `with_sha`: (state, path, sha)."""
    folder = Path(folder)
    ckpt, weights = folder / CHECKPOINT, folder / WEIGHTS
    state = None
    if ckpt.is_file():  # a corrupt checkpoint is refused (named), never passed over
        state, sha = load_checkpoint(ckpt, map_location=map_location, with_sha=True)
        state["source"], path = "checkpoint", ckpt
    if weights.is_file() and (state is None or weights_step(weights) > state["step"]):
        (state, sha), path = load_weights(weights, map_location=map_location, with_sha=True), weights
    if state is None:
        return (None, None, None) if with_sha else None
    return (state, path, sha) if with_sha else state


def weights_step(path: Path) -> int:
    """The step of a published weights file, from its header alone (-1 when unreadable: the
    full load then says why)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            return int(_weights_header(head + f.read(int.from_bytes(head, "little")))["step"])
    except Exception:
        return -1


def _weights_header(data: bytes) -> dict:
    """The "jumpbench" metadata of a safetensors file's header (its first 8 bytes: the header's
    length, then the header's JSON); raises when it has none."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["jumpbench"])


def load_run(folder: str | Path, device="cpu"):
    """(model, record) of a run folder: the model (in eval mode, on `device`) with the weights
    of its checkpoint, or of its published weights where it has no checkpoint (a run from git),
    and config.json's record: model, data, dataset, preset, overrides, seed and the resolved
    config ({"train", "data", "model"} sections), plus "checkpoint_step": the step of the
    weights loaded (a run may go on past it) and "weights_source": "checkpoint" or "weights".
    The one way a run's model is loaded (consistency, score, the figures' grids,
    jumpbench.load_run)."""
    model, record, _ = _load_run(folder, device)
    return model, record


def _load_run(folder: str | Path, device="cpu"):
    """load_run's (model, record), and the training state the weights came from (publish reads
    its optimizer state from the same load)."""
    from jumpbench.benchmarks.config import build_config
    from jumpbench.models import MODELS

    folder = Path(folder)
    record = read_json(folder / CONFIG)
    if not isinstance(record, dict):
        raise JumpbenchError(f"{folder}: not a run folder (no readable {CONFIG})")
    if not has_weights(folder):
        raise JumpbenchError(f"{folder}: no {CHECKPOINT} and no {WEIGHTS} (not trained yet, or a run from git made "
                             f"before runs published their weights: train it again with jumpbench run, under "
                             f"another --name where it is done)")
    try:
        cls, cfg_cls = MODELS[record["model"]]
        model_cfg = record["config"]["model"]
    except (KeyError, TypeError):
        raise JumpbenchError(f"{folder}/{CONFIG}: not a run's config (no model or config.model)") from None
    state, path, _ = training_state(folder, map_location=device, with_sha=True)
    model = cls(build_config(cfg_cls, model_cfg, "model"))
    load_state(path, model, state["model"])
    return model.to(device).eval(), {**record, "checkpoint_step": state["step"], "weights_source": state["source"],
                                     "run": str(folder), "data_path": find_dataset(folder, record)}, state


def find_dataset(folder: Path, record: dict) -> str | None:
    """Where the dataset a run recorded is on this machine: its "data" path as it was given
    (relative to where the run trained: the repository's root, as a rule), from the current
    folder or from any folder above the run's; the first that holds a dataset of the run's name
    and generator parameters. None when there is none."""
    data = record.get("data")
    if not isinstance(data, str) or not data:
        return None
    paths = [Path(data)] + ([] if Path(data).is_absolute() else [p / data for p in Path(folder).resolve().parents])
    for path in paths:
        if (path / MANIFEST).is_file():
            try:
                return str(run_dataset(record, path))
            except JumpbenchError:
                continue
    return None


def continuation(folder: str | Path, data: str | Path | None = None, steps: int | None = None) -> dict:
    """How to train a run folder on (`jumpbench continue`): {"model", "data", "preset",
    "overrides", "seed", "out", "name", "procs"} from its config.json (procs: its world size);
    `steps` replaces its train.steps. The dataset is `data`, else the one find_dataset finds
    (from here or above the run) when it is the run's (by its manifest's sha256), else a
    one-line error naming the command that writes it again."""
    folder = Path(folder)
    rec = read_json(folder / CONFIG)
    if not isinstance(rec, dict) or not {"model", "preset", "seed", "dataset"} <= set(rec):
        raise JumpbenchError(f"{folder}: not a run folder (no readable {CONFIG})")
    if folder.resolve().name != f"seed-{rec['seed']}":
        raise JumpbenchError(f"{folder}: a run folder is <out>/<dataset>/<model>/<name>/seed-{rec['seed']}")
    if data is None:
        data = find_dataset(folder, rec)  # from here, or from a folder above the run's
        if not (data and _dataset().dataset_sha256(data) == rec.get("dataset_sha256")):
            raise JumpbenchError(f"{folder}: its dataset is not at {rec.get('data')} (from here or above the run); "
                                 f"write it again with: jumpbench generate for-run {folder} (then give --data "
                                 f"data/{rec['dataset']} if it goes elsewhere)")
    overrides = [o for o in rec.get("overrides", []) if not (steps is not None and o.startswith("train.steps="))]
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    full = folder.resolve()
    return {"model": rec["model"], "data": str(data), "preset": rec["preset"], "overrides": overrides,
            "seed": rec["seed"], "out": str(full.parents[3]), "name": full.parent.name,
            "procs": rec.get("world_size", 1)}


def read_legs(folder: Path) -> list[dict]:
    """legs.json: the stretches of training a run was made in, in order, each {"from", "to" (steps),
    "wall_s", "started" (UTC), "machine", "device", "precision", "threads", "procs", "resumed"
    ("start", "checkpoint", "weights" or "branch"), "optimizer"}; [] when there is none."""
    legs = read_json(Path(folder) / LEGS)
    return [leg for leg in legs if isinstance(leg, dict)] if isinstance(legs, list) else []


class Leg:
    """This process's stretch of training, recorded in legs.json at every checkpoint (rank 0).
    Legs recorded by an earlier process past the step it resumes from (its work after its last
    checkpoint, lost) are cut there; steps made before legs were recorded become one leg whose
    machine is unknown."""

    def __init__(self, folder: Path, step: int, write: bool = True, **facts):
        self.path, self.write = Path(folder) / LEGS, write
        legs = [leg for leg in read_legs(folder) if leg.get("from", 0) < step]
        if legs and legs[-1].get("to", 0) > step:
            legs[-1] = {**legs[-1], "to": step}
        if step > 0 and not legs:
            legs = [{"from": 0, "to": step, "machine": None, "note": "made before legs were recorded"}]
        self.legs = legs
        self.leg = {"from": step, "to": step, "wall_s": 0.0,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **facts}

    def update(self, step: int, wall_s: float) -> None:
        if step <= self.leg["from"] or not self.write:
            return
        self.leg.update(to=step, wall_s=round(wall_s, 1))
        write_json_atomic(self.path, self.legs + [self.leg])


def read_best(path: Path) -> dict:
    """A sweep's best.json (<out>/<dataset>/<model>/best.json), checked once for everything its
    readers take: "preset", "best" with its config "name" and "overrides", "procs" (1 when
    absent). One line when it is missing or not such a file."""
    path = Path(path)
    try:
        best = json.loads(path.read_text())
    except OSError:
        raise JumpbenchError(f"no {path}") from None
    except ValueError:
        best = None
    top = best.get("best") if isinstance(best, dict) else None
    if not (isinstance(top, dict) and isinstance(top.get("name"), str) and isinstance(best.get("preset"), str)
            and isinstance(top.get("overrides"), list) and all(isinstance(o, str) for o in top["overrides"])
            and isinstance(best.get("procs", 1), int) and best.get("procs", 1) >= 1):
        raise JumpbenchError(f"{path}: not a sweep's best.json (its \"preset\", \"procs\" or \"best\" config "
                             f"\"name\" and \"overrides\" missing); run the sweep again or delete it")
    return best


def write_best(path: Path, best: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, best)


def run_dataset(record: dict, data: str | Path | None = None) -> Path:
    """The dataset to evaluate a loaded run on (`data`, else the one it trained on), refused when
    its generator, version or scene parameters are not those the run recorded: other test scenes.
    Scene i of a split is a function of those alone, so the split sizes and the shard size (the
    layout: another manifest sha256) may differ. Without `data`, a record from load_run is looked
    for where find_dataset found it, from any folder."""
    if data is None and record.get("run") and not record.get("data_path"):
        raise JumpbenchError(f"{record['run']}: its dataset is not at {record.get('data')} (from here or above the "
                             f"run); write it again with: jumpbench generate for-run {record['run']}, or give --data")
    data = Path(data or record.get("data_path") or record["data"])
    want = record.get("dataset_generator")
    if want and (data / MANIFEST).is_file():
        m = load_manifest(data)

        def scenes(g: dict) -> dict:  # what makes the scenes: all but the split sizes and the layout
            params = {k: v for k, v in (g.get("params") or {}).items() if k not in ("counts", "shard_size")}
            return {"generator": g.get("generator"), "version": g.get("version"), **params}

        if scenes(want) != scenes(m):
            raise JumpbenchError(f"{data} holds other scenes than the dataset the run trained on "
                                 f"({params_diff(scenes(want), scenes(m))}); "
                                 f"give --data that dataset (config.json: dataset_generator)")
    return data


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.jsonl. A torn last line (an append cut short: no newline after it,
    or not JSON) is dropped; a bad line before the last is an error naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = [(i + 1, ln) for i, ln in enumerate(text.split("\n")) if ln.strip()]
    if lines and not text.endswith("\n"):
        lines.pop()  # written without its newline: the append did not finish
    rows = []
    for k, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("no step")
        except ValueError:
            if k == len(lines) - 1:
                break
            raise JumpbenchError(f"{path}: line {number} is not a metrics row") from None
        rows.append(row)
    return rows


def check_metrics(folder: Path, step: int, eval_every: int, source: str) -> None:
    """A run resumed at `step` (from its `source`, checkpoint.pt or weights.safetensors) must have
    every evaluation it made on the way there in metrics.jsonl (a deleted or cut file would leave
    a gap in its curve for good): refused in one line that says how to go on as a new run. A
    branch's rows before the step it started from are its parent's, not checked here."""
    rec = read_json(Path(folder) / CONFIG)
    start = ((rec.get("branched_from") or {}).get("step", 0)) if isinstance(rec, dict) else 0
    have = {r["step"] for r in read_metrics(Path(folder) / METRICS)}
    missing = [s for s in range((start // eval_every + 1) * eval_every, step + 1, eval_every) if s not in have]
    if missing:
        at = ", ".join(map(str, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise JumpbenchError(f"{folder}: {METRICS} lacks the evaluations at step {at}, made before its {source} at "
                             f"step {step} (a deleted or cut file); go on as a new run from it with: "
                             f"jumpbench run ... --from {folder} --name NEW")


def append_metrics(folder: Path, row: dict) -> None:
    append_line(Path(folder) / METRICS, json.dumps(row))


def last_value(folder: Path, metric: str, dataset: str | None = None) -> tuple[float | None, int | None]:
    """The last evaluation's (value, step) of `metric` in a run's metrics.jsonl; with `dataset`,
    of the evaluations whose test_score_* are of today's definition (scores.current)."""
    from jumpbench.benchmarks.evaluation.scores import current

    try:
        rows = list(read_metrics(Path(folder) / METRICS))
    except JumpbenchError:
        return None, None
    rows = [r for r in rows if (current(r, dataset) if dataset else r).get(metric) is not None]
    return (float(rows[-1][metric]), int(rows[-1]["step"])) if rows else (None, None)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the evaluations up to the checkpoint we resume from, without a torn last line."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if r["step"] <= step]
    text = "".join(json.dumps(r) + "\n" for r in keep)
    if text != path.read_text():
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def write_status(folder: Path, status: str, why: str) -> None:
    write_json_atomic(Path(folder) / STATUS, {"status": status, "why": why, "time": time.time(),
                                              "pid": os.getpid()})
