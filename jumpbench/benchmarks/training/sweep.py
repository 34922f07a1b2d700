"""Seed and hyperparameter sweeps (Kumar, Eslami et al., ICLR 2019, section 4.1: "We swept over
model size, learning rate, and stochasticity parameters ... selected the best hyperparameter
configuration ... over 15 random seeds").

Every run is a `runs.RunSpec` trained by the same `train_run(spec)` call. Seed sweeps skip runs already done (or diverged),
resume interrupted ones from their checkpoint, and go on when one diverges or fails (its
status.json says why; a diverged run counts as failed, so `jumpbench run` exits non-zero).
Launchers:
- `local`, jobs = 1: the runs one after another in this process;
- `local`, jobs = J > 1: J runs at a time, each in a fresh Python process with
  cores // J torch threads, or its own GPU (CUDA_VISIBLE_DEVICES) when there are GPUs;
- `local`, procs = P > 1: each run trains data-parallel in P processes on this machine
  (DistributedDataParallel over gloo on CPUs, one GPU each on GPUs), with cores // (J * P)
  threads each. On a 2-core CPU two 1-thread processes beat one 2-thread process for the
  video models (many small operations, which a second thread does not speed up);
  `jumpbench bench train --procs 2` measures it;
- `slurm`: the same calls submitted through submitit as one job array (`cluster="local"` or
  `"debug"` run submitit's own executors, as the tests do). Slurm parameters come from the
  environment variable JUMPBENCH_SLURM, e.g. "slurm_partition=gpu,timeout_min=4320";
  submitit's logs go to <out>/.submitit/.

A grid sweep (`sweep`) trains one seed per point of the cross product of `--grid key=v1,v2`
lists (any key `--set` accepts), ranks the points by the last evaluation's value of a test
metric (`rank_sign`: lower is better for the losses and errors, higher for the ground-truth
scores test_score_*), and writes <out>/<dataset>/<model>/best.json; `run --config best` then
trains the seeds with it.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import sys
from pathlib import Path

import click

from jumpbench import checks, launch
from jumpbench.benchmarks import config as C
from jumpbench.benchmarks import runs
from jumpbench.benchmarks.machine import free_port
from jumpbench.benchmarks.runs import Run, RunSpec
from jumpbench.benchmarks.training.train import MINUTES_STOP, PEER_LOST, check_model_fits, train_run
from jumpbench.dataset import dataset_info
from jumpbench.errors import JumpbenchError, error_line
from jumpbench.workers import usable_cores

LAUNCHERS = ("local", "slurm")


def run_tasks(tasks: list[RunSpec], jobs: int = 1, launcher: str = "local", progress: bool = True,
              cluster: str | None = None) -> list[tuple[RunSpec, str]]:
    """Train each run unless it is done or diverged already; returns [(spec, why)] for those
    that failed or diverged (now or before). `cluster` picks submitit's executor for the
    slurm launcher ("slurm" by default; "local" and "debug" for tests)."""
    if jobs < 1:
        raise JumpbenchError(f"--jobs must be at least 1, got {jobs}")
    if launcher not in LAUNCHERS:
        raise JumpbenchError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    procs = max([t.procs for t in tasks], default=1)
    if procs > 1:
        if launcher != "local":
            raise JumpbenchError("--procs: data-parallel processes are started by the local launcher only "
                                 "(on a cluster, start the processes with torchrun)")
        if os.environ.get("WORLD_SIZE"):
            raise JumpbenchError("--procs: this process is already one of a data-parallel group (torchrun)")
    todo, failed = [], []
    for t in tasks:  # a finished run under another config (or a batch its processes cannot split) is refused here
        folder, status = runs.pending(t)
        if status:
            click.echo(f"{folder}: {status['status']} already ({status['why']}); skipped")
            if status["status"] == "diverged":  # a failed run, re-run or not
                failed.append((t, f"diverged ({status['why']})"))
        else:
            todo.append((t, folder))
    if not todo:
        return failed
    if launcher == "slurm":
        return failed + _submitit(todo, jobs, cluster or "slurm")
    if jobs == 1 and procs == 1:
        for t, folder in todo:
            try:
                train_run(t, progress)
            except Exception as e:  # this run's own (a corrupt checkpoint; status.json says why): the others go on
                if len(todo) == 1 and isinstance(e, (JumpbenchError, OSError)):
                    raise
                failed.append((t, error_line(e)))
                continue
            why = _report(folder)
            if why and (Run(folder).status() or {}).get("status") == "diverged":  # a failed run too
                failed.append((t, why))
        return failed
    return failed + _processes(todo, jobs, procs, progress)


def _report(folder: Path) -> str | None:
    """Say how a run ended; None when it is done, else why it is not (a diverged run failed)."""
    status = Run(folder).status()
    click.echo(f"{folder}: {status['status']} ({status['why']})" if status else f"{folder}: no status")
    if status and status["status"] == "diverged":
        return f"diverged ({status['why']})"
    if status and status["status"] == "interrupted" and status["why"].startswith(MINUTES_STOP):
        return None  # a leg of --minutes ended as asked
    return None if status and status["status"] == "done" else (status or {}).get("why", "no status")


def _slots(jobs: int, procs: int = 1) -> list[dict]:
    """The environment of each of `jobs` parallel runs of `procs` processes each: their GPUs, or
    their share of cores."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if procs > 1 and len(gpus) < jobs * procs:
            raise JumpbenchError(f"--jobs {jobs} --procs {procs} needs {jobs * procs} GPUs, this machine "
                                 f"shows {len(gpus)}")
    threads = max(1, usable_cores() // (jobs * procs))
    slots = []
    for i in range(jobs):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "JUMPBENCH_THREADS": str(threads)}
        if gpus:  # a run of P processes gets P GPUs; each process takes the one of its LOCAL_RANK
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[(i * procs + r) % len(gpus)] for r in range(procs))
        slots.append(env)
    return slots


def _run_processes(children: launch.Children, task: RunSpec, env: dict,
                   show: bool) -> tuple[int, str | None, list[int]]:
    """Train `task` in its `procs` processes (ranks of one data-parallel run when more than one)
    and wait for them (`launch.run_group`): (exit status, why they failed or None, their pids).
    `show`: rank 0 writes to this terminal (its progress bar). When one process fails, the
    others notice within the minute they are given (their gradients' all-reduce fails) and say
    only that they lost a peer: the reason is the first one's."""
    argv = [sys.executable, "-m", "jumpbench.benchmarks.training.sweep", task.to_json()] + (["--progress"] if show else [])
    group = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(task.procs),
             "LOCAL_WORLD_SIZE": str(task.procs)} if task.procs > 1 else {}
    envs = [{**env, **group, **({"RANK": str(r), "LOCAL_RANK": str(r)} if task.procs > 1 else {})}
            for r in range(task.procs)]
    return launch.run_group(children, argv, envs, show, aside=PEER_LOST)


def _processes(todo: list[tuple[RunSpec, Path]], jobs: int, procs: int = 1,
               progress: bool = False) -> list[tuple[RunSpec, str]]:
    """Run the tasks `jobs` at a time, each in its own `python -m jumpbench.benchmarks.training.sweep`
    (`procs` of them for a data-parallel run). With one job at a time and `progress`, the
    training's progress bar shows."""
    children = launch.Children()

    def run(item: tuple[RunSpec, Path], env: dict) -> tuple[int, str | None, list[int]]:
        return _run_processes(children, item[0], env, show=progress and jobs == 1)

    def after(item: tuple[RunSpec, Path], ended: tuple[int, str | None, list[int]]) -> str | None:
        (_, folder), (_, why, pids) = item, ended
        files = Run(folder)
        status = files.status()
        if why is None or children.stopping:
            return _report(folder)
        if status and status.get("pid") in pids and status["status"] != "running" and \
                not status["why"].startswith(PEER_LOST):
            return _report(folder)  # the run's status.json says why, from this launch
        if files.exists():  # else: a stale status, "running", or only a lost peer
            files.mark("failed", why)
            return _report(folder)
        click.echo(f"{folder}: failed ({why})")  # before the run had a folder
        return why

    ended = launch.in_slots(children, todo, _slots(jobs, procs), run, after)
    return [(t, why) for (t, _), why in ended if why]


def _train_task(task: RunSpec, threads: int | None = None, progress: bool = False) -> str:
    """One run in a worker process (subprocess or submitit job); returns its final status."""
    import torch

    threads = threads or int(os.environ.get("JUMPBENCH_THREADS", "0"))
    if threads:  # train() takes its threads from here
        os.environ["JUMPBENCH_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    folder = train_run(task, progress)
    return (Run(folder).status() or {}).get("status", "unknown")


def _submitit(todo: list[tuple[RunSpec, Path]], jobs: int, cluster: str) -> list[tuple[RunSpec, str]]:
    """Submit the tasks through submitit as one array (at most `jobs` at a time) and wait."""
    threads = max(1, usable_cores() // jobs) if cluster != "slurm" else None
    folder = Path(todo[0][0].out) / ".submitit"
    submitted = launch.submit_array(_train_task, [(t, threads) for t, _ in todo], folder, cluster, "jumpbench",
                                    parallelism=jobs)
    failed = []
    for job, (_, f) in zip(submitted, todo):
        click.echo(f"{f}: submitted as job {job.job_id}")
    for (t, f), e in zip(todo, launch.job_outcomes(submitted)):
        if e is not None:  # submitit re-raises the job's error; the status says why
            failed.append((t, (Run(f).status() or {}).get("why") or f"{type(e).__name__}: {str(e)[-300:]}"))
            continue
        why = _report(f)
        if why:
            failed.append((t, why))
    return failed


def run_seeds(model: str, data, preset: str, overrides: list[str], seeds: list[int], out, name=None,
              progress: bool = True, jobs: int = 1, launcher: str = "local",
              cluster: str | None = None, tensorboard: bool = False, extend: bool = False,
              branch_from: str | None = None, procs: int = 1, minutes: float | None = None) -> list[tuple[int, str]]:
    """Train each seed (see run_tasks); returns [(seed, why)] for the seeds that failed.
    `tensorboard`, `extend`, `branch_from`, `minutes`: train()'s keywords (a config folder as
    `branch_from` gives each seed its own parent)."""
    C.run_inputs(model, data, preset, overrides, seeds, out, name, branch_from, minutes)
    info = dataset_info(data)
    check_model_fits(model, info)
    C.resolve(model, preset, info["name"], info, overrides)  # bad config: fail before any seed
    name = name or C.config_name(preset, overrides)
    if tensorboard:
        from jumpbench.benchmarks.training.board import require

        require()  # the one-line hint before any seed starts
    if branch_from is not None:  # every seed's parent before any seed trains
        from jumpbench.benchmarks.runs import branch_parent

        for s in seeds:
            branch_parent(branch_from, s)
    tasks = [RunSpec(model, data, preset, tuple(overrides), s, out, name, tensorboard, extend, branch_from, procs,
                     minutes) for s in seeds]
    return [(t.seed, why) for t, why in run_tasks(tasks, jobs, launcher, progress, cluster)]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["lr=1e-4,3e-4", "lstm_sizes=[8,8],[16,16]"] -> {"lr": ["1e-4", "3e-4"], ...}: commas
    outside brackets separate values (TOML literals, as `--set` takes them)."""
    grid = {}
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or not text.strip():
            raise JumpbenchError(f"--grid expects key=v1,v2,..., got {item!r}")
        values, depth, cur = [], 0, ""
        for ch in text:
            depth += (ch in "[{") - (ch in "]}")
            if ch == "," and depth == 0:
                values.append(cur.strip())
                cur = ""
            else:
                cur += ch
        values.append(cur.strip())
        if any(not v for v in values):
            raise JumpbenchError(f"--grid {item!r}: an empty value")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise JumpbenchError(f"--grid {key}: {repeated[0]} given twice; give each value once")
        if key in grid:
            raise JumpbenchError(f"--grid {key} given twice")
        grid[key] = values
    if not grid:
        raise JumpbenchError("give at least one --grid key=v1,v2,...")
    return grid


def default_metric(info: dict) -> str:
    return "test_min_mse" if info["viewpoint_key"] == "timestamps" else "test_loss"


def rank_sign(metric: str) -> int:
    """+1 where lower is better (the losses and errors: every metric but the scores), -1 where
    higher is (test_score_*: fractions of samples that pass, the number of valid routes). A
    trivial predictor's value (the same at every grid point), a reference's score, the time
    variation and the dice' digits per scene (both right at 1, not at either end) rank nothing:
    an error."""
    from jumpbench.benchmarks.evaluation.scores import REFERENCES

    if metric.startswith("test_baseline_") or any(metric.startswith(f"test_score_{r}_") for r in REFERENCES):
        raise JumpbenchError(f"--metric {metric}: a trivial predictor's value, the same at every grid point; "
                             "rank by one of the model's")
    if metric in ("test_time_variation", "test_score_diversity"):
        raise JumpbenchError(f"--metric {metric}: right at 1 (the truth's), not at either end, so it ranks nothing; "
                             "rank by an error or a pass rate")
    return -1 if metric.startswith("test_score_") else 1


def check_score_metric(metric: str, model: str, data, info: dict, image_size: int) -> None:
    """A sweep by a ground-truth score: one of the dataset's (scores.KEYS, or one of its checks),
    of a model that draws it (backwards: jumpy models only), and a probe to read the samples
    with (the final evaluation scores them only where one is trained). Refused in one line
    before anything trains."""
    from jumpbench.benchmarks.evaluation import scores as S
    from jumpbench.benchmarks.evaluation.probes import load_probe
    from jumpbench.models import MODELS

    name, keys = metric[len("test_score_"):], S.KEYS.get(info["name"], ())
    if not any(name == k or name.startswith(k + "_") for k in keys):
        raise JumpbenchError(f"--metric {metric}: not a score of {info['name']} (its scores: "
                             + ", ".join(f"test_score_{k}" for k in keys) + ")")
    if "backward" in name and not MODELS[model][0].jumpy:
        raise JumpbenchError(f"--metric {metric}: {model} is not jumpy and draws no video backwards")
    try:
        load_probe(data, image_size)
    except JumpbenchError as e:
        raise JumpbenchError(f"--metric {metric}: the runs' final evaluations score their samples with a probe, and "
                             f"there is none: {e}") from None


def logged_metrics(model: str, cfg: dict, info: dict) -> set[str]:
    """The metrics a run of `model` under `cfg` logs: train_<term> and test_<term> for each term
    of its loss (one forward pass on a random batch of two, at the config's sizes), and the
    evaluation's own: test_min_mse and test_time_variation on videos. (test_baseline_* and,
    at a run's end, test_score_* come on top.)"""
    import torch

    from jumpbench.benchmarks import batches as B
    from jumpbench.models import MODELS

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = MODELS[model][0](cfg["model"])
    with torch.no_grad():
        terms = net(B.train_batch(B.synthetic_item(info, 2, cfg["data"].image_size), cfg["data"], net.jumpy, g), 0)
    video = ["test_min_mse", "test_time_variation"] if info["viewpoint_key"] == "timestamps" else []
    return {f"{split}_{k}" for k in terms for split in ("train", "test")} | set(video)


def sweep(model: str, data, preset: str, grid_items: list[str], out, metric: str | None = None,
          base_overrides: list[str] = (), seed: int = 0, jobs: int = 1, launcher: str = "local",
          progress: bool = True, cluster: str | None = None, procs: int = 1) -> dict:
    """Train one seed per grid point, rank the points by `metric` (lower is better; diverged or
    failed points last) and write <out>/<dataset>/<model>/best.json. Returns its content."""
    C.run_inputs(model, data, preset, base_overrides, [seed], out)
    grid = parse_grid(checks.overrides(grid_items))
    info = dataset_info(data)
    check_model_fits(model, info)
    metric = metric or default_metric(info)
    points = [list(base_overrides) + [f"{k}={v}" for k, v in zip(grid, combo)]
              for combo in itertools.product(*grid.values())]
    seen = {}
    for p in points:  # every point must be a valid config before anything trains, and each its own
        cfg = C.resolve(model, preset, info["name"], info, p)
        key = json.dumps(C.to_dict(cfg), sort_keys=True)
        if key in seen:
            raise JumpbenchError(f"--grid: {' '.join(seen[key])} and {' '.join(p)} are the same config; "
                                 "give each value once")
        seen[key] = p
    try:  # and the metric one its runs log (a typo: before hours of training)
        known = logged_metrics(model, cfg, info)
    except (RuntimeError, ValueError) as e:  # a config that does not run fails here, not in every point
        raise JumpbenchError(f"{model} under this config fails a forward pass: {error_line(e)}") from None
    sign = rank_sign(metric)
    if metric.startswith("test_score_"):
        check_score_metric(metric, model, data, info, cfg["data"].image_size)
    elif metric not in known:
        raise JumpbenchError(f"unknown metric {metric!r}; {model} on {info['name']} logs {', '.join(sorted(known))}")
    tasks = [RunSpec(model, data, preset, tuple(p), seed, out, procs=procs) for p in points]
    failed = {t.name: why for t, why in run_tasks(tasks, jobs, launcher, progress, cluster)}
    ranking = []
    for t in tasks:
        files = Run(t.folder(info["name"]))
        value, step = files.last_value(metric, info["name"])
        status = (files.status() or {}).get("status", "missing")
        ok = status == "done" and value is not None and math.isfinite(value)
        ranking.append({"overrides": list(t.overrides), "name": t.name, "value": value, "step": step,
                        "status": status, "why": failed.get(t.name), "ok": ok})
    if not any(r["value"] is not None for r in ranking):
        raise JumpbenchError(f"metric {metric!r} is in no run's metrics.jsonl; see the keys there "
                             f"(e.g. {default_metric(info)})")
    ranking.sort(key=lambda r: (not r["ok"], sign * r["value"] if r["ok"] else math.inf))
    if not ranking[0]["ok"]:
        raise JumpbenchError(f"no grid point finished; see the status.json files under {Path(out) / info['name']}")
    best = {"model": model, "dataset": info["name"], "data": str(data), "preset": preset, "metric": metric,
            "lower_is_better": sign > 0, "seed": seed, "procs": procs, "grid": grid, "base_overrides": list(base_overrides),
            "best": {k: ranking[0][k] for k in ("overrides", "name", "value")}, "ranking": ranking}
    runs.write_best(Path(out) / info["name"] / model / runs.BEST, best)
    return best


def load_best(out, data, model: str, which: str = "best") -> tuple[str, list[str], int]:
    """(preset, overrides, processes per run) of a sweep's winner: `which` is "best"
    (<out>/<dataset>/<model>/best.json) or the path of such a file. Its seed's run is the
    sweep's own point, so `run --config best` trains in as many processes as the sweep did."""
    path = Path(which)
    if which == "best":
        path = Path(out) / dataset_info(data)["name"] / model / runs.BEST
    if path.is_dir():
        raise JumpbenchError(f"--config {which}: a folder; give 'best' or the path of a sweep's best.json")
    if not path.is_file():
        raise JumpbenchError(f"no {path} (make it with: jumpbench sweep --model {model} --grid KEY=V1,V2)")
    best = runs.read_best(path)
    return best["preset"], list(best["best"]["overrides"]), best.get("procs", 1)


def _main(argv: list[str]) -> int:
    """One run (or one process of it) for the local launcher: TASK_JSON [--progress]. An error is
    one line on stderr and in $JUMPBENCH_ERROR_FILE, which the launcher reports. A SIGTERM
    before the training loop takes over the signals (while the model is built) stops it as
    interrupted, as does the launcher's death (`launch.as_child`)."""
    launch.as_child()
    try:
        _train_task(RunSpec.from_json(argv[0]), progress="--progress" in argv[1:])
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        launch.tell_why(error_line(e))
        return 1
    return 0


if __name__ == "__main__":  # one run of a parallel local sweep: python -m jumpbench.benchmarks.training.sweep TASK_JSON
    sys.exit(_main(sys.argv[1:]))
