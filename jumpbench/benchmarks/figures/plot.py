"""The figures of "Consistent Generative Query Networks" (Kumar, Eslami et al., ICLR 2019) from
run folders, as PNG and PDF, each with a JSON of exactly what was drawn beside it:

- fig5a_<dataset>_<preset>: test min-MSE against training steps, one line per model (Fig. 5a);
- fig5b_<dataset>_<preset>: test negative ELBO on the MNIST Dice hidden-face views against
  steps, and the consistency analysis' final NELBO per model when it exists (Fig. 5b);
- consistency_<dataset>_<preset>: KL1 and KL3 per model, the paper's 4.19 / 4.25 marked;
- speed_<name>: from results/speed/*.json, the time to sample frame t per model (log scale;
  `bench jumpy`) or the milliseconds per training step per model and variant (`bench train`);
- legs_<dataset>_<model>_<config>_seed<k>: a run trained in several legs (continued from its
  checkpoint or published weights): prior min-MSE, posterior MSE and KL, the joins marked;
- fig3/fig4/fig6 sample grids (grids.py).

Every curve and bar is the mean over seeds with error bars of sqrt(2) x SEM; every run is
counted, how is in results.py (a run that stopped early carries its last value forward; a
cross marks where a diverged run stopped). Each figure names its dataset, preset, the number
of runs and how many diverged. Per model the config with the most seeds is drawn (results.
main_configs). A figure without inputs is skipped with the command that makes them.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
import json
from pathlib import Path

import numpy as np

from jumpbench.benchmarks.evaluation.evaluate import BASELINES
from jumpbench.benchmarks.evaluation.consistency import PAPER_KL
from jumpbench.benchmarks.figures.results import (LEG_METRICS, baselines, RunResult, collect, continued, count_text,
                                                  counts, curve, leg_rows, main_configs, primary_metric, read_best,
                                                  read_pins, sem2, set_text, write_summary)
from jumpbench.benchmarks.figures.common import ordered, plt as _plt, save

HINTS = {
    "fig5a": "jumpbench run --model M --data data/traveling_salesman --seeds 15 "
             "(M = jump, gqn, sssm, sv2p, cdna)",
    "fig5b": "jumpbench run --model jump --data data/mnist_dice --seeds 7 (and --model gqn; data: "
             "jumpbench generate dice)",
    "consistency": "jumpbench consistency RUN_DIR (each JUMP/GQN seed on mnist_dice)",
    "scores": "jumpbench probe train DATA, then jumpbench score RUN_DIR",
    "speed": "jumpbench bench jumpy",
    "summary": "jumpbench run --model M --seeds N",
}
BASELINE_STYLES = ("--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))  # one per baseline drawn
CARRY = ("mean ± √2·SEM over seeds; every run counted: a run that stopped early carries its last value, "
         "× = diverged")


def _all(models: dict[str, list[RunResult]]) -> list[RunResult]:
    return [r for rs in models.values() for r in rs]


def _title(fig, what: str, dataset: str, preset: str, runs: list[RunResult]) -> None:
    fig.suptitle(f"{what}\n{dataset}, preset {preset}, {count_text(runs)}", fontsize=10)


def _curves(ax, models: dict[str, list[RunResult]], metric: str) -> dict:
    """One error-bar line per model; returns {model: curve + counts} as drawn."""
    drawn = {}
    for i, model in enumerate(ordered(models)):
        rs = models[model]
        c = curve(rs, metric)
        if not c["steps"]:
            continue
        color = f"C{i}"
        ax.errorbar(c["steps"], c["mean"], yerr=np.nan_to_num(c["err"]), color=color, marker="o", ms=3,
                    capsize=3, label=f"{model} [{rs[0].config}]: {count_text(rs)}")
        for r, at in zip(rs, c["diverged_at"]):
            if at is not None:
                steps, vals = r.values(metric)
                ax.plot(at, vals[-1], "x", color=color, ms=8, mew=2)
        drawn[model] = {"config": rs[0].config, **counts(rs), **c}
    return drawn


def fig5a(main: dict, out: Path) -> list[Path]:
    """Test min-MSE against steps, one line per model, per (dataset, preset) of videos, with
    the baselines of the test sets those runs were evaluated on (results.baselines)."""
    plt, made = _plt(), []
    for (dataset, preset), models in main.items():
        models = {m: rs for m, rs in models.items() if any("test_min_mse" in row for r in rs for row in r.rows)}
        if not models:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn = _curves(ax, models, "test_min_mse")
        sets = baselines(_all(models))  # on the test sets of the runs drawn, each set its own lines
        top = max((v for d in drawn.values() for v in d["mean"] if v is not None and np.isfinite(v)), default=None)
        off, i = [], 0
        for key, base in sets.items():
            where = f"; {set_text(key)}" if len(sets) > 1 else ""
            for k, v in sorted(base.items(), key=lambda kv: kv[1]):  # the trivial predictors
                if top is not None and v > 2 * top:  # far above every curve: named, not drawn (it would squash them)
                    off.append(f"{BASELINES.get(k, k)} {v:.4g}{where}")
                    continue
                ax.axhline(v, color="0.35", ls=BASELINE_STYLES[i % len(BASELINE_STYLES)], lw=1,
                           label=f"baseline: {BASELINES.get(k, k)} ({v:.4g}{where})")
                i += 1
        samples = _eval_samples(_all(models))
        ax.set_xscale("log")  # the video models' 1,000 steps and JUMP's tens of thousands, each readable
        ax.set(xlabel="training steps (log scale)", ylabel=f"test min-MSE ({samples} samples per video)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        _title(fig, "Fig. 5a: forward-prediction min-MSE", dataset, preset, _all(models))
        fig.text(0.01, -0.02, CARRY + ("\nbaselines far above the curves, not drawn: " + "; ".join(off) if off else ""),
                 fontsize=7, va="top")
        made.append(save(fig, out, f"fig5a_{dataset}_{preset}", {"metric": "test_min_mse", "models": drawn,
                                                                 "baselines": [{"test_set": set_text(k), **v}
                                                                               for k, v in sets.items()]}))
    return made


def fig_legs(runs: list[RunResult], out: Path) -> list[Path]:
    """legs_<dataset>_<model>_<config>_seed<k>, for each run trained in more than one leg: the
    prior's min-MSE (with the repeat-last baseline), the posterior's MSE and the KL against
    steps, side by side, a dashed line where each leg joins the one before."""
    plt, made = _plt(), []
    for run in continued(runs):
        keys = [(k, name) for k, name in LEG_METRICS if run.values(k)[0]][:3]
        if not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
        drawn = {}
        for ax, (k, name) in zip(axes[0], keys):
            steps, vals = run.values(k)
            ax.plot(steps, vals, "o-", ms=3, color="C0", label=name)
            drawn[k] = {"steps": steps, "values": vals}
            base = run.final("test_baseline_repeat_last") if k in ("test_min_mse", "test_mse") else None
            if base is not None:
                ax.axhline(base, color="0.4", ls="--", lw=1, label=f"repeat last frame ({base:.4g})")
            for i, leg in enumerate(run.legs[1:], 2):
                ax.axvline(leg.get("from", 0), color="0.6", ls=":", lw=1)
                ax.text(leg.get("from", 0), 1.0, f" leg {i}", transform=ax.get_xaxis_transform(), fontsize=6,
                        va="top", color="0.4")
            ax.set(xlabel="training steps", title=name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        spans: list = []  # [first leg, last leg, machine]: consecutive legs on one machine said once
        for i, leg in enumerate(run.legs, 1):
            where = (leg.get("machine") or "not recorded") + (f" ({leg['device']}, {leg['precision']})"
                                                             if leg.get("device") else "")
            if spans and spans[-1][2] == where:
                spans[-1][1] = i
            else:
                spans.append([i, i, where])
        what = "; ".join((f"leg {a}" if a == b else f"legs {a}-{b}") + f": {where}" for a, b, where in spans)
        fig.suptitle(f"{run.dataset} / {run.model} / {run.config} / seed {run.seed}: "
                     f"{len(run.legs)} legs to step {run.legs[-1].get('to', 0):,}", fontsize=10)
        fig.text(0.01, -0.06, what, fontsize=6, wrap=True, va="top")
        made.append(save(fig, out, f"legs_{run.dataset}_{run.model}_{run.config}_seed{run.seed}",
                         {"legs": leg_rows(run), "curves": drawn}))
    return made


def _eval_samples(runs: list[RunResult]) -> str:
    for r in runs:
        n = (r.record.get("config") or {}).get("train", {}).get("eval_samples")
        if n:
            return str(n)
    return "?"


def _points(ax, models: dict[str, list[RunResult]], keys: list[str], xlabels: list[str]) -> dict:
    """Mean ± sqrt(2) SEM per model and key (grouped, a square with error bars), each seed a dot
    beside it. Returns what was drawn."""
    drawn, names = {}, ordered(models)
    width = 0.8 / max(len(names), 1)
    for i, model in enumerate(names):
        drawn[model] = {"config": models[model][0].config, **counts(models[model])}
        for j, key in enumerate(keys):
            pairs = [(r.seed, r.final(key)) for r in models[model] if r.final(key) is not None]
            if not pairs:
                continue
            vals = [v for _, v in pairs]
            x = j + (i - (len(names) - 1) / 2) * width
            m, e = float(np.mean(vals)), sem2(vals)
            # a point, not a bar: the axis is fitted to the values, and a bar from its edge would mislead
            ax.errorbar(x, m, yerr=0 if np.isnan(e) else e, fmt="s", ms=8, capsize=5, color=f"C{i}",
                        label=f"{model}: {count_text(models[model])}" if j == 0 else None)
            ax.plot([x + width * 0.25] * len(vals), vals, "k.", ms=4)
            drawn[model][key] = {"mean": m, "err": e, "n": len(vals), "seeds": [s for s, _ in pairs],
                                 "values": vals}
    ax.set_xticks(range(len(keys)), xlabels)
    ax.set_xlim(-0.5, len(keys) - 0.5)  # each key its slot (one point alone would sit on the axis' edge)
    ax.margins(y=0.15)  # the axis fits the values and whatever else is drawn (bars from 0 hid differences)
    return drawn


def fig5b(main: dict, out: Path) -> list[Path]:
    """Dice: test negative ELBO against steps (the evaluation's test_loss on the hidden-face
    views, nats per scene), beside the consistency analysis' final NELBO when it exists."""
    plt, made = _plt(), []
    for (dataset, preset), models in main.items():
        if dataset != "mnist_dice":
            continue
        models = {m: rs for m, rs in models.items() if m in ("jump", "gqn")}
        with_curve = {m: rs for m, rs in models.items() if any("test_loss" in row for r in rs for row in r.rows)}
        with_final = {m: rs for m, rs in models.items() if any(r.consistency for r in rs)}
        if not with_curve and not with_final:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [2, 1]})
        data = {"curves": _curves(axes[0], _at_final_pixel_var(with_curve), "test_loss")}
        axes[0].set(xlabel="training steps", ylabel="test negative ELBO (nats per scene)",
                    title="3 views of the hidden face, during training\n(the evaluations at the final pixel variance)")
        axes[0].grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        data["final"] = _points(axes[1], with_final, ["nelbo"], ["final NELBO\n(jumpbench consistency)"])
        axes[1].set(title="after training" if with_final else "no consistency.json yet")
        _title(fig, "Fig. 5b: JUMP vs GQN, test negative ELBO (lower is better)", dataset, preset, _all(models))
        fig.subplots_adjust(top=0.74)
        fig.text(0.01, -0.02, CARRY, fontsize=7)
        made.append(save(fig, out, f"fig5b_{dataset}_{preset}", data))
    return made


def _at_final_pixel_var(models: dict[str, list[RunResult]]) -> dict[str, list[RunResult]]:
    """Each run with only its evaluations at its last test pixel variance: a likelihood is
    measured under the pixel variance of its step, so the -ELBO of a piecewise schedule jumps
    (and is negative at small variances) where the variance changes; only the last phase's
    values compare with each other and with the final NELBO."""
    def last_phase(r: RunResult) -> RunResult:
        pv = [row.get("test_pixel_var") for row in r.rows]
        keep = len(pv)
        while keep and pv[keep - 1] == pv[-1]:
            keep -= 1
        return dataclasses.replace(r, rows=r.rows[keep:])

    return {m: [last_phase(r) for r in rs] for m, rs in models.items()}


def fig_consistency(main: dict, out: Path) -> list[Path]:
    """KL1 and KL3 per model (nats per scene), the paper's JUMP means as dashed lines."""
    plt, made = _plt(), []
    for (dataset, preset), models in main.items():
        models = {m: rs for m, rs in models.items() if any(r.consistency for r in rs)}
        if not models:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.2))
        drawn = _points(ax, models, ["kl1", "kl3"], ["KL1 (1 target view)", "KL3 (3 target views)"])
        for j, key in enumerate(("kl1", "kl3")):
            ax.hlines(PAPER_KL[key], j - 0.45, j + 0.45, colors="k", linestyles="--",
                      label="paper, JUMP (12 runs)" if j == 0 else None)
            ax.annotate(f"{PAPER_KL[key]}", (j + 0.45, PAPER_KL[key]), fontsize=7, va="bottom")
        ax.set(ylabel="KL(posterior ‖ prior), nats per scene")
        ax.legend(fontsize=7)
        _title(fig, "Consistency: KL3 ≈ KL1 for a consistent model, 3 x KL1 for a factored one",
               dataset, preset, _all(models))
        fig.text(0.01, -0.02, "mean ± √2·SEM over seeds, dots = seeds", fontsize=7)
        made.append(save(fig, out, f"consistency_{dataset}_{preset}", {"paper": PAPER_KL, "models": drawn}))
    return made


def fig_scores(main: dict, out: Path) -> list[Path]:
    """The ground-truth consistency scores (scores.py) per model, the ground truth and the
    sanity baselines as lines: route validity and coverage on Traveling Salesman, hidden-face
    agreement and diversity on dice (JUMP vs GQN), the reaction forwards and backwards."""
    from jumpbench.benchmarks.figures.results import run_row, score_groups
    from jumpbench.benchmarks.evaluation.scores import KEYS, LABELS, REFERENCES, split_row

    plt, made = _plt(), []
    for (dataset, preset), models in main.items():
        sets = score_groups(_all(models))  # the runs scored, by test set: the one most runs share is drawn
        if dataset not in KEYS or not sets:
            continue
        where, scored = max(sets.items(), key=lambda kv: (len(kv[1]), kv[0][0] or 0))  # ties: more scenes
        models = {m: [r for r in rs if any(r is x for x in scored)] for m, rs in models.items()}
        models = {m: rs for m, rs in models.items() if rs}
        refs = split_row(run_row(scored[0]))[1]
        others = sum(len(v) for v in sets.values()) - len(scored)
        fig, axes = plt.subplots(1, len(KEYS[dataset]), figsize=(4.5 * len(KEYS[dataset]), 4))
        data = {"models": {}, "references": refs}
        for ax, key in zip(axes, KEYS[dataset]):
            data["models"][key] = _points(ax, models, [f"test_score_{key}"], [LABELS[key]])
            for j, (ref, vals) in enumerate(refs.items()):
                if vals.get(key) is not None:
                    ax.axhline(vals[key], color="0.3", lw=1, ls=("-", "--", ":", "-.")[j % 4],
                               label=f"{REFERENCES.get(ref, ref)} ({vals[key]:.2f})")
            for bars in ax.containers:  # the value on each bar (a zero bar is otherwise invisible)
                if hasattr(bars, "patches"):
                    ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            ax.set_ylim(0, 1.15 * max(1.0, ax.get_ylim()[1]))
            if ax.get_legend_handles_labels()[0]:  # (a score no run and no reference has: an empty panel)
                ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.12))
        _title(fig, "Ground-truth consistency scores of samples (higher is better): mean ± √2·SEM over seeds,\n"
               f"dots = seeds; lines: the truth and the sanity baselines on the same {where[0]} test scenes "
               f"({where[1]} samples each)", dataset, preset, _all(models))
        if others:
            fig.text(0.01, 0.01, f"{others} run(s) scored on other test sets left out (results/summary.md lists them)",
                     fontsize=7)
        fig.subplots_adjust(top=0.78)
        data["test_set"] = {"scenes": where[0], "samples": where[1], "runs_left_out": others}
        made.append(save(fig, out, f"scores_{dataset}_{preset}", data))
    return made


def fig_speed(speed_dir: Path, out: Path, problems: list[str] | None = None) -> list[Path]:
    """One figure per speed JSON: `bench jumpy`'s seconds to sample frame t per model (log scale),
    or `bench train`'s milliseconds per training step per model and variant. A file that is
    neither is skipped with a line in `problems`."""
    plt, made = _plt(), []
    problems = [] if problems is None else problems
    for path in sorted(Path(speed_dir).glob("*.json")):
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"warning: {path}: unreadable ({type(e).__name__}), not drawn")
            continue
        if isinstance(res, dict) and isinstance(res.get("models"), dict) and res["models"]:
            made.append(fig_train_speed(res, path, out))
            continue
        try:
            ts, secs = res["ts"], res["seconds"]
        except (KeyError, TypeError):
            problems.append(f"warning: {path}: neither a 'bench jumpy' nor a 'bench train' result, not drawn")
            continue
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for i, model in enumerate(ordered(secs)):
            ax.plot([t + 1 for t in ts], secs[model], "o-", color=f"C{i}", label=model)
        ax.set(yscale="log", xlabel=f"frame t of a {res.get('frames', '?')}-frame video (1-based)",
               ylabel="seconds to sample frame t")
        ratios = ", ".join(f"{k} = {v:.1f}x" for k, v in res.get("ratios", {}).items())
        ax.set_title(f"Jumpy sampling speed ({path.name}): {res.get('device', '?')}, {res.get('threads', '?')} "
                     f"threads, batch {res.get('batch', '?')}, {res.get('image_size', '?')}px,\nrandom weights at "
                     f"paper-scale configs (no runs); last frame: {ratios}", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        made.append(save(fig, out, f"speed_{path.stem}", {"source": str(path), "ts": ts, "seconds": secs}))
    return made


def fig_train_speed(res: dict, path: Path, out: Path) -> Path:
    """`jumpbench bench train`'s result: ms per step, one group of bars per model, one bar per
    variant (fp32, bf16, compiled, end to end), each labelled with its speed-up over fp32."""
    plt = _plt()
    models = ordered(res["models"])
    variants = []
    for m in models:
        variants += [v for v in res["models"][m]["ms"] if v not in variants]
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(models) * (len(variants) + 1)))
    h, drawn = 1.0 / (len(variants) + 1), {}
    for j, v in enumerate(variants):
        drawn[v] = {m: res["models"][m]["ms"][v] for m in models if v in res["models"][m]["ms"]}
        ys = [models.index(m) + j * h for m in drawn[v]]
        ax.barh(ys, list(drawn[v].values()), height=h * 0.9, color=f"C{j}", label=v)
        for y, (m, x) in zip(ys, drawn[v].items()):
            speedup = res["models"][m].get("speedup_vs_fp32", {}).get(v, float("nan"))
            ax.text(x, y, f" {x:.4g} ms, {speedup:.2f}x", va="center", fontsize=6)
    ax.set_yticks([i + (len(variants) - 1) * h / 2 for i in range(len(models))],
                  [f"{m}\n{res['models'][m].get('gflop_per_step', float('nan')):.4g} GFLOP" for m in models])
    ax.invert_yaxis()
    top = max(x for d in drawn.values() for x in d.values())
    ax.set(xlim=(0, top * 1.4), xlabel="milliseconds per training step (median of interleaved rounds)")
    ceiling = ", ".join(f"{k} {v:,.0f}" for k, v in res.get("conv_ceiling_gflops", {}).items())
    ax.set_title(f"Training step ({path.name}): preset {res.get('preset', '?')}, {res.get('dataset', '?')}, "
                 f"{res.get('device', '?')}, {res.get('threads', '?')} threads"
                 + (f"; x{res['procs']} procs: {res['procs']} processes of {res['threads'] // res['procs'] or 1} "
                    "thread(s)" if res.get("procs", 1) > 1 else "")
                 + f"\nconv ceiling GFLOP/s: {ceiling}; "
                 "labels: ms and speed-up over fp32", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="x")
    return save(fig, out, f"speed_{path.stem}", {"source": str(path), "ms": drawn})


def plot_all(runs_root, out, speed=None, summary=None, grids: bool = True, progress: bool = False) -> list[str]:
    """Every figure and the summary; returns one line per output or skipped figure
    (`progress`: a bar over the figures, on stderr)."""
    from tqdm import tqdm

    runs_root, out = Path(runs_root), Path(out)
    summary = Path(summary) if summary else runs_root.parent / "summary"
    if speed is not None and not Path(speed).is_dir():  # given, not there (the default may be missing: skipped)
        from jumpbench.errors import JumpbenchError

        raise JumpbenchError(f"--speed {speed}: no such folder (speed JSONs come from jumpbench bench jumpy/train)")
    speed = Path(speed) if speed else runs_root.parent / "speed"
    runs = collect(runs_root)
    main = main_configs(runs, read_best(runs_root), read_pins(runs_root, runs))
    lines = [f"warning: {r.path}: counted with no evaluations: {r.problem}" for r in runs if r.problem]
    stale = Counter(r.dataset for r in runs if r.outdated_scores)
    if stale:
        lines.append(f"warning: the ground-truth scores of {sum(stale.values())} run(s) ("
                     + ", ".join(f"{d}: {n}" for d, n in sorted(stale.items())) + ") are of an older definition "
                     "and left out; the summary names them (jumpbench score rescores a run that has its weights)")
    lines += [f"warning: {r.path}: left out, measured on other weights: {r.stale_scores} (jumpbench score, "
              "jumpbench consistency measure them again)" for r in runs if r.stale_scores]
    for r in runs:  # a last evaluation that is not finite: the summary shows the last finite one, and says so
        metric = primary_metric([r]) if r.own_rows else None
        last = r.own_rows[-1].get(metric) if metric else None
        if isinstance(last, (int, float)) and not np.isfinite(last) and r.values(metric, own=True)[0]:
            lines.append(f"warning: {r.path}: its last evaluation's {metric} is {last} (step {r.own_rows[-1]['step']}); "
                         f"the summary shows step {r.values(metric, own=True)[0][-1]}'s value")
    speed_problems = []
    makers = (("fig5a", lambda: fig5a(main, out)), ("fig5b", lambda: fig5b(main, out)),
              ("consistency", lambda: fig_consistency(main, out)), ("scores", lambda: fig_scores(main, out)),
              ("speed", lambda: fig_speed(speed, out, speed_problems)))
    for name, make in tqdm(makers, desc="figures", disable=None if progress else True, leave=False):  # None: a terminal only
        made = make()
        lines += [f"wrote {p} (+ .pdf, .json)" for p in made] or [
            f"skipped {name}: no inputs under {speed if name == 'speed' else runs_root}; make them with: {HINTS[name]}"]
    lines += speed_problems
    lines += [f"wrote {p} (+ .pdf, .json)" for p in fig_legs(runs, out)]
    if grids:
        from jumpbench.benchmarks.figures.grids import sample_grids

        lines += sample_grids(main, out)
    if runs:
        md, csv_path = write_summary(runs, summary)
        lines.append(f"wrote {md} and {csv_path}")
    else:
        lines.append(f"skipped summary: no runs under {runs_root}; make them with: {HINTS['summary']}")
    return lines
