"""The jumpbench command line: thin click commands that parse options and call plain functions.

Every user-facing failure (JumpbenchError, a full disk, an unwritable folder, Ctrl-C) ends
as one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from jumpbench.benchmarks.config import PRESETS, config_name
from jumpbench.errors import JumpbenchError, error_line


class Fail(click.ClickException):
    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


def one_line_errors(fn):
    """Turn expected failures into one line and exit status 1 (2 for bad usage, click's)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (JumpbenchError, OSError) as e:
            raise Fail(error_line(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: finished work is kept; re-run the same command to resume", err=True)
            sys.exit(130)

    return wrapper


class OneLineGroup(click.Group):
    """Usage errors too are one line ("error: ..."), exit status 2, no usage dump; so is a group
    given no command (`jumpbench generate`: which commands it has). Its subgroups are of its class."""

    group_class = type

    def parse_args(self, ctx, args):
        if not args and not ctx.resilient_parsing:
            raise click.UsageError(f"{ctx.command_path} needs a command: {', '.join(self.list_commands(ctx))}", ctx)
        return super().parse_args(ctx, args)

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx else "jumpbench"
            click.echo(f"error: {e.format_message()} (see '{cmd} --help')", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)


@click.group(cls=OneLineGroup)
@click.version_option(package_name="jumpbench")
def cli():
    """jumpbench: datasets and benchmarks for consistent, jumpy generative models (JUMP)."""


@cli.group()
def generate():
    """Render a dataset to sharded TFRecords (gqn-datasets layout)."""


def generation_options(default_n: int, default_test_n: int, default_shard: int):
    """Options every generator shares: counts, seed, parallelism, sharding, output."""

    def deco(fn):
        for opt in reversed([
            click.option("--n", "n", type=int, default=default_n, show_default=True, help="Training scenes."),
            click.option("--test-n", type=int, default=default_test_n, show_default=True, help="Test scenes."),
            click.option("--size", type=int, default=64, show_default=True, help="Frame height and width."),
            click.option("--seed", type=int, default=0, show_default=True, help="Base seed of the dataset."),
            click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes."),
            click.option("--shard-size", type=int, default=default_shard, show_default=True,
                         help="Scenes per shard."),
            click.option("--out", type=click.Path(file_okay=False), default="data", show_default=True,
                         help="Root folder; the dataset goes in OUT/<dataset>/."),
            click.option("--overwrite", is_flag=True, help="Replace a dataset made with other parameters."),
            click.option("--parts", type=int, default=1, show_default=True,
                         help="Split the shards into N parts, each written by its own job (see --launcher)."),
            click.option("--part", type=int, default=None,
                         help="Write part K of --parts alone (re-run a failed part)."),
            click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
                         help="slurm: each part is a submitit job (parameters from $JUMPBENCH_SLURM); "
                              "local: the parts one after another here."),
            click.option("--quiet", is_flag=True, help="No progress bar."),
        ]):
            fn = opt(fn)
        return fn

    return deco


def _run_generation(generator, n, test_n, shard_size, workers, out, overwrite, quiet, parts, part, launcher,
                    **options):
    from jumpbench import records
    from jumpbench.api import generate as write

    root = write(generator, out, n, test_n, shard_size=shard_size, workers=workers, overwrite=overwrite,
                 progress=not quiet, parts=parts, part=part, launcher=launcher, **options)
    if (root / records.MANIFEST).is_file():
        click.echo(f"{root}: {n} train + {test_n} test scenes")
    else:  # --part K: one part written
        click.echo(f"{root}: part {part} of {parts} written; the same command without --part writes the "
                   f"parts still missing, then the manifest")


@generate.command("narratives")
@click.option("--narrative", type=click.Choice(["traveling_salesman", "color_reaction"]),
              default="traveling_salesman", show_default=True)
@click.option("--frames", type=int, default=None, help="Frames per video [20 salesman, 12 colour reaction].")
@generation_options(98000, 1000, 1000)
@one_line_errors
def generate_narratives(narrative, frames, n, test_n, size, seed, workers, shard_size, out, overwrite, quiet,
                        parts, part, launcher):
    """The Narratives videos (Traveling Salesman, Color Reaction), paper section 4.1."""
    _run_generation("narratives", n, test_n, shard_size, workers, out, overwrite, quiet, parts, part, launcher,
                    size=size, seed=seed, narrative=narrative, frames=frames)


@generate.command("dice")
@click.option("--views", type=int, default=12, show_default=True, help="Camera views (frames) per scene.")
@click.option("--digit-pool", type=int, default=100, show_default=True,
              help="Draw the faces' digits from the first N MNIST digits (the paper: 100).")
@click.option("--mnist-dir", type=click.Path(), default=None,
              help="A folder of MNIST IDX files (train-* or t10k-*, .gz or not) [the shipped test split].")
@generation_options(20000, 1000, 500)
@one_line_errors
def generate_dice(views, digit_pool, mnist_dir, n, test_n, size, seed, workers, shard_size, out, overwrite, quiet,
                  parts, part, launcher):
    """The MNIST Dice 3D scenes (a die engraved with MNIST digits in a room), paper section 4.2."""
    _run_generation("dice", n, test_n, shard_size, workers, out, overwrite, quiet, parts, part, launcher,
                    size=size, seed=seed, views=views, digit_pool=digit_pool, mnist_dir=mnist_dir)


@generate.command("for-run")
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Root folder; the dataset goes in OUT/<dataset>/.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel processes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def generate_for_run(run_dir, out, workers, quiet):
    """The dataset a run trained on, again, from what its config.json records (the same bytes)."""
    from jumpbench.api import generate_for_run as write

    if workers < 1:
        raise JumpbenchError(f"--workers must be at least 1, got {workers}")
    click.echo(f"{write(run_dir, out, workers, progress=not quiet)}: the dataset of {run_dir}")


@cli.command()
@click.argument("dataset", type=click.Path())
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def verify(dataset, quiet):
    """Re-read every shard of DATASET: counts, sha256, CRCs, every frame decodes."""
    from tqdm import tqdm

    from jumpbench import records

    manifest = records.load_manifest(Path(dataset))
    total = sum(s["records"] for sp in manifest["splits"].values() for s in sp["shards"])
    with tqdm(total=total, unit="scene", dynamic_ncols=True, disable=quiet) as bar:
        counts = records.verify(dataset, progress=bar.update)
    click.echo(f"{dataset}: ok (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")


@cli.command()
@click.argument("folder", type=click.Path())
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--index", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="A .png contact sheet or a .gif.")
@click.option("--scale", type=int, default=None, help="Pixel magnification [default: 2; a run's: to about 128 px].")
@click.option("--samples", type=int, default=None, help="A run's samples beside the truth [default: 3].")
@click.option("--data", type=click.Path(), default=None, help="A run's dataset, where it is not found.")
@one_line_errors
def view(folder, split, index, out, scale, samples, data):
    """Write a contact sheet (PNG) or an animation (GIF) of one scene of a dataset FOLDER; of
    a run FOLDER, the scene's truth beside samples of the run's model, which sees the first
    data.eval_context frames (dice: the hidden-face context views), panel by panel over time."""
    from jumpbench.benchmarks.runs import Run
    from jumpbench.records import MANIFEST

    if Run(folder).exists() and not (Path(folder) / MANIFEST).is_file():  # a run folder
        from jumpbench.view import write_run_samples

        what = write_run_samples(folder, out, index, split, 3 if samples is None else samples, scale, data)
        click.echo(f"wrote {out}: {what}")
        return
    if samples is not None or data is not None:
        raise JumpbenchError(f"--samples and --data are for a run folder; {folder} is not one (no config.json)")
    from jumpbench.view import write_scene

    write_scene(folder, split, index, out, 2 if scale is None else scale)
    click.echo(f"wrote {out}")


def _model_names():
    from jumpbench.models import MODELS

    return list(MODELS)


class LazyChoice(click.Choice):
    """A Choice whose values come from a registry, read when the option is parsed."""

    def __init__(self, source):
        self.source = source
        super().__init__([])

    def convert(self, value, param, ctx):
        self.choices = self.source()
        return super().convert(value, param, ctx)

    def get_metavar(self, *args, **kwargs):  # --help lists the registry's names
        self.choices = self.source()
        return super().get_metavar(*args, **kwargs)


@cli.command()
@click.option("--model", type=LazyChoice(_model_names), required=True, help="A model of the registry.")
@click.option("--data", type=click.Path(), default="data/traveling_salesman", show_default=True,
              help="A dataset folder (with manifest.json).")
@click.option("--preset", type=click.Choice(PRESETS), default="cpu", show_default=True)
@click.option("--seeds", type=int, default=None, help="Run seeds 0..N-1, skipping those already done.")
@click.option("--seed", type=int, default=None, help="Run this one seed [0].")
@click.option("--steps", type=int, default=None, help="Training steps (overrides the preset's).")
@click.option("--extend", is_flag=True, help="Continue the runs named by the other options (done or not) "
              "to --steps in total; nothing else may differ. The folder keeps its name.")
@click.option("--from", "branch_from", type=click.Path(), default=None, metavar="RUN",
              help="Start from RUN's checkpoint or published weights (a run folder, or its config folder for "
              "each seed's own): "
              "its weights, optimizer, step and metrics so far; the new config may change schedules, "
              "not the architecture. Needs --name.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key; repeatable.")
@click.option("--name", default=None, help="Config name of the run folder [preset, plus the overrides].")
@click.option("--out", type=click.Path(file_okay=False), default="results/runs", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Seeds run at a time, each in its own process (cores // J threads, or its own GPU).")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="slurm: submit through submitit (parameters from $JUMPBENCH_SLURM).")
@click.option("--procs", type=int, default=None,
              help="Data-parallel processes per run on this machine (the batch split among them; "
              "cores // (J * P) threads each). On a 2-core CPU, 2 makes CDNA and SV2P faster. "
              "[1, or the sweep's with --config]")
@click.option("--config", "config", default=None, metavar="best|FILE",
              help="Preset and overrides of a sweep's winner (OUT/<dataset>/<model>/best.json, or a file).")
@click.option("--tensorboard", is_flag=True, help="Also write TensorBoard events into each run folder "
              "(tensorboard --logdir OUT); needs jumpbench[tensorboard].")
@click.option("--minutes", type=float, default=None, help="Stop each run after this many minutes of training "
              "(checkpointed and published; the same command goes on): a leg of a fixed length.")
@one_line_errors
def run(model, data, preset, seeds, seed, steps, extend, branch_from, overrides, name, out, quiet, jobs, launcher,
        procs, config, tensorboard, minutes):
    """Train MODEL on a dataset for one seed or a sweep of seeds (resumable). A run goes on from
    its checkpoint.pt, or, where it has none (a run from git), from its published weights."""
    from jumpbench.benchmarks.training.sweep import load_best, run_seeds

    for opt, value in (("--jobs", jobs), ("--procs", procs)):
        if value is not None and value < 1:
            raise JumpbenchError(f"{opt} must be at least 1, got {value}")
    if config is not None:  # the sweep's preset, overrides and processes; --set and --steps apply on top
        preset, best, best_procs = load_best(out, data, model, config)
        overrides = best + list(overrides)
        procs = procs or best_procs
    procs = procs or 1
    if minutes is not None and not minutes > 0:
        raise JumpbenchError(f"--minutes must be above 0, got {minutes}")
    if seeds is not None and seed is not None:
        raise JumpbenchError("give --seeds N or --seed K, not both")
    if seeds is not None and seeds < 1:
        raise JumpbenchError(f"--seeds must be at least 1, got {seeds}")
    if extend and steps is None:
        raise JumpbenchError("--extend needs --steps N: the total number of steps to continue the runs to")
    if branch_from is not None and (extend or not name):
        raise JumpbenchError("--from starts a new run: give it a --name of its own (and no --extend)")
    if extend:  # the folder of the run being continued: named without the new step count
        name = name or config_name(preset, list(overrides))
    overrides = list(overrides) + ([f"train.steps={steps}"] if steps is not None else [])
    seed_list = list(range(seeds)) if seeds is not None else [seed or 0]
    failed = run_seeds(model, data, preset, overrides, seed_list, out, name, progress=not quiet,
                       jobs=jobs, launcher=launcher, tensorboard=tensorboard, extend=extend,
                       branch_from=branch_from, procs=procs, minutes=minutes)
    if failed:
        raise JumpbenchError(f"{len(failed)} of {len(seed_list)} seed(s) failed: " +
                             "; ".join(f"seed {k}: {why}" for k, why in failed))


@cli.command("continue")
@click.argument("run_dir", type=click.Path())
@click.option("--data", type=click.Path(), default=None,
              help="Its dataset [the folder config.json names, if it holds that dataset].")
@click.option("--steps", type=int, default=None, help="Continue to this many steps in all [the run's own].")
@click.option("--minutes", type=float, default=None, help="Stop after this many minutes of training "
              "(checkpointed and published; the same command goes on): a leg of a fixed length.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="How this leg runs on this machine: train.threads, num_workers, cache, cache_gb, log_every, "
              "compile.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def continue_(run_dir, data, steps, minutes, overrides, quiet):
    """Train a run folder on: from its checkpoint, or from its published weights (a run from git),
    with the model, dataset, preset, overrides, seed and name its config.json records."""
    from jumpbench.benchmarks.runs import EXECUTION, continuation
    from jumpbench.benchmarks.training.sweep import run_seeds

    if minutes is not None and not minutes > 0:
        raise JumpbenchError(f"--minutes must be above 0, got {minutes}")
    allowed = {k.removeprefix("config.") for k in EXECUTION}
    for o in overrides:
        if o.split("=", 1)[0].strip() not in allowed:
            raise JumpbenchError(f"--set {o}: continue takes only {', '.join(sorted(allowed))} (what the run is "
                                 f"cannot change; branch it with jumpbench run --from)")
    c = continuation(run_dir, data, steps)
    failed = run_seeds(c["model"], c["data"], c["preset"], c["overrides"] + list(overrides), [c["seed"]], c["out"],
                       c["name"], progress=not quiet, extend=steps is not None, minutes=minutes, procs=c["procs"])
    if failed:
        raise JumpbenchError(f"{run_dir}: {failed[0][1]}")


@cli.command()
@click.option("--model", type=LazyChoice(_model_names), required=True, help="A model of the registry.")
@click.option("--data", type=click.Path(), default="data/traveling_salesman", show_default=True)
@click.option("--preset", type=click.Choice(PRESETS), default="cpu", show_default=True)
@click.option("--grid", "grid", multiple=True, required=True, metavar="KEY=V1,V2",
              help="Values of one config key (any --set key); repeat for the cross product.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fixed overrides for every point.")
@click.option("--metric", default=None, help="Test metric to rank by: lower is better, but for the "
              "scores test_score_*, where higher is [test_min_mse on videos, test_loss on dice].")
@click.option("--seed", type=int, default=0, show_default=True, help="The one seed of each point.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Points run at a time.")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--procs", type=int, default=1, show_default=True,
              help="Data-parallel processes per run on this machine (the batch split among them; "
              "cores // (J * P) threads each). On a 2-core CPU, 2 makes CDNA and SV2P faster.")
@click.option("--out", type=click.Path(file_okay=False), default="results/runs", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def sweep(model, data, preset, grid, overrides, metric, seed, jobs, launcher, procs, out, quiet):
    """Hyperparameter sweep: one seed per grid point, ranked; writes OUT/<dataset>/<model>/best.json."""
    from jumpbench.benchmarks.training.sweep import sweep as run_sweep

    if procs < 1:
        raise JumpbenchError(f"--procs must be at least 1, got {procs}")
    best = run_sweep(model, data, preset, list(grid), out, metric, list(overrides), seed, jobs, launcher,
                     progress=not quiet, procs=procs)
    for i, r in enumerate(best["ranking"]):
        value = "-" if r["value"] is None else f"{r['value']:.6g}"
        click.echo(f"{i + 1:>3}. {best['metric']} {value:>10}  {r['status']:<8} {' '.join(r['overrides'])}")
    click.echo(f"best: {' '.join(best['best']['overrides'])}; run its seeds with: "
               f"jumpbench run --model {model} --data {data} --config best --seeds 15")


@cli.command()
@click.option("--runs", type=click.Path(file_okay=False), default="results/runs", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="results/figures", show_default=True)
@click.option("--speed", type=click.Path(file_okay=False), default=None, help="Speed JSONs [RUNS/../speed].")
@click.option("--summary", type=click.Path(dir_okay=False), default=None,
              help="Summary table path without suffix [RUNS/../summary -> summary.md, summary.csv].")
@click.option("--no-grids", is_flag=True, help="Skip the sample grids (they load checkpoints and sample).")
@one_line_errors
def plot(runs, out, speed, summary, no_grids):
    """The paper's figures (PNG and PDF) and the summary table, from the run folders."""
    from jumpbench import checks
    from jumpbench.benchmarks.figures.plot import plot_all

    checks.folder("--out", out)
    if not Path(runs).is_dir():
        raise JumpbenchError(f"--runs {runs}: no such folder (make runs with: jumpbench run --model M --data D)")
    lines = plot_all(runs, out, speed, summary, grids=not no_grids, progress=True)
    if not any(line.startswith("wrote") for line in lines):
        raise JumpbenchError(f"nothing to plot: no runs under {runs} and no speed results (make them with: "
                             f"jumpbench run --model M --data D, jumpbench bench jumpy)")
    for line in lines:
        click.echo(line)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--weights-only", is_flag=True, help="Leave out Adam's moments: weights to sample from, half "
              "the size; a continuation then starts a new Adam with a warm-up.")
@one_line_errors
def publish(run_dirs, weights_only):
    """Write a run's checkpoint.pt as weights.safetensors, the file git carries (training writes
    it at every checkpoint; this is for runs trained before that)."""
    from jumpbench.benchmarks.runs import WEIGHTS, Run, publish as publish_run

    for run_dir in run_dirs:
        meta = publish_run(run_dir, moments=not weights_only)
        path = Run(run_dir).path(WEIGHTS)
        click.echo(f"{path}: step {meta['step']}, {path.stat().st_size / 1e6:.1f} MB"
                   f"{', with Adam moments' if meta['moments'] else ''}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--data", type=click.Path(), default=None, help="An MNIST Dice set [the run's own data].")
@click.option("--scenes", type=int, default=100, show_default=True, help="Test scenes to average over.")
@click.option("--draws", type=int, default=4, show_default=True, help="Posterior draws per scene.")
@one_line_errors
def consistency(run_dir, data, scenes, draws):
    """KL1 vs KL3 and the test negative ELBO on the dice hidden-face views (JUMP/GQN runs)."""
    from jumpbench.benchmarks.evaluation.consistency import consistency as measure
    from jumpbench.benchmarks.evaluation.consistency import format_table
    from jumpbench.benchmarks.runs import CONSISTENCY, Run

    result = measure(run_dir, data, scenes, draws, progress=True)
    click.echo(format_table(result))
    click.echo(f"wrote {Run(run_dir).path(CONSISTENCY)}")


@cli.group()
def probe():
    """Probes trained on ground truth that read frames for the consistency scores (jumpbench score)."""


@probe.command("train")
@click.argument("dataset", type=click.Path())
@click.option("--size", type=int, default=32, show_default=True,
              help="The frame size it reads: a run's data.image_size (the cpu preset's 32).")
@click.option("--steps", type=int, default=None, help="Training steps [1500 narratives, 2000 dice].")
@click.option("--scenes", type=int, default=None, help="Train scenes to learn from [1500 narratives, 3000 dice].")
@click.option("--force", is_flag=True, help="Train again over an existing probe.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors
def probe_train(dataset, size, steps, scenes, force, quiet):
    """Train DATASET's probe at --size, cached by the dataset's manifest sha256; prints its accuracy."""
    from jumpbench.benchmarks.evaluation.probes import format_report, probe_path, train_probe

    if (steps is not None and steps < 1) or (scenes is not None and scenes < 1):
        raise JumpbenchError("--steps and --scenes must be at least 1")
    click.echo(format_report(train_probe(dataset, size, steps, scenes, progress=not quiet, force=force)))
    click.echo(f"probe: {probe_path(dataset, size)}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--data", type=click.Path(), default=None, help="The run's dataset folder [config.json's data].")
@click.option("--scenes", type=int, default=None, help="Test scenes [the run's train.eval_scenes].")
@click.option("--samples", type=int, default=None, help="Samples per scene [the run's train.eval_samples].")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for scores.json [RUN_DIR].")
@one_line_errors
def score(run_dir, data, scenes, samples, out):
    """Ground-truth consistency scores of a run's samples (route validity, reaction, dice agreement)."""
    from jumpbench.benchmarks.evaluation.evaluate import score_run
    from jumpbench.benchmarks.runs import SCORES as SCORES_FILE
    from jumpbench.benchmarks.runs import Run
    from jumpbench.benchmarks.evaluation.scores import format_table

    if (scenes is not None and scenes < 1) or (samples is not None and samples < 1):
        raise JumpbenchError("--scenes and --samples must be at least 1")
    result = score_run(run_dir, out, data, scenes, samples, progress=True)
    click.echo(format_table(result))
    click.echo(f"wrote {Run(out or run_dir).path(SCORES_FILE)}")


@cli.group()
def bench():
    """Speed benchmarks: each prints a table of its timings and writes them as JSON."""


@bench.command("jumpy")
@click.option("--frames", type=int, default=40, show_default=True, help="Video length.")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option("--models", default=None, help="Comma-separated registry names [all].")
@click.option("--out", type=click.Path(dir_okay=False), default="results/speed/jumpy.json", show_default=True)
@one_line_errors
def bench_jumpy(frames, batch, device, repeats, models, out):
    """Time to sample frame t of a FRAMES-long video, per model, at the paper preset's sizes."""
    import torch

    from jumpbench.benchmarks.speed.speed import format_table, jumpy_speed
    from jumpbench.files import write_json_atomic

    if device == "cuda" and not torch.cuda.is_available():
        raise JumpbenchError("--device cuda: no CUDA device here")
    if not 5 <= frames <= 10_000:
        raise JumpbenchError(f"--frames must be in 5..10000, got {frames}")
    if not (1 <= batch <= 4096 and 1 <= repeats <= 10_000):
        raise JumpbenchError(f"--batch must be in 1..4096 and --repeats in 1..10000, got {batch} and {repeats}")
    # frames t >= 3, after the 3 context frames: frames 5..11 give fewer than five distinct t
    ts = sorted({max(3, t) for t in (frames // 8, frames // 4, frames // 2, 3 * frames // 4, frames - 1)})
    try:
        result = jumpy_speed(models.split(",") if models else None, frames, ts, batch=batch,
                             device=device, repeats=repeats)
    except ValueError as e:
        raise JumpbenchError(str(e)) from None
    click.echo(format_table(result))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out), result)
    click.echo(f"wrote {out}")


@bench.command("train")
@click.option("--preset", type=click.Choice(PRESETS), default="cpu", show_default=True)
@click.option("--models", default=None, help="Comma-separated registry names [all].")
@click.option("--dataset", default="traveling_salesman", show_default=True,
              help="The shapes to mimic with synthetic batches (ignored with --data).")
@click.option("--data", type=click.Path(), default=None, help="A dataset: also time end to end, "
              "streaming from the shards vs the decoded-frame cache.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--steps", type=int, default=5, show_default=True, help="Steps per variant per round.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Interleaved rounds.")
@click.option("--compile", "compiled", is_flag=True, help="Also time the torch.compile'd step.")
@click.option("--procs", type=int, default=1, show_default=True,
              help="Also time the step data-parallel in this many processes (as run --procs trains).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config overrides.")
@click.option("--out", type=click.Path(dir_okay=False), default="results/speed/train.json", show_default=True)
@one_line_errors
def bench_train(preset, models, dataset, data, device, steps, repeats, compiled, procs, overrides, out):
    """Print a table of ms per training step per model: fp32 vs bf16 (vs compiled), end to end."""
    import torch

    from jumpbench.benchmarks.speed.train_speed import format_table, train_speed
    from jumpbench.files import write_json_atomic
    from jumpbench.workers import default_threads

    torch.set_num_threads(default_threads())
    result = train_speed([m for m in models.split(",") if m] if models else _model_names(), preset, dataset, device, steps, repeats,
                         compiled, data, list(overrides), procs)
    click.echo(format_table(result))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out), result)
    click.echo(f"wrote {out}")


if __name__ == "__main__":  # python -m jumpbench.cli (torchrun uses this)
    cli()
