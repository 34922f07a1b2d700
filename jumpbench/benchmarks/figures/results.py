"""Run folders to numbers: the statistics behind the figures and the summary table.

The paper (Kumar, Eslami et al., ICLR 2019, section 4.1) reports the mean over seeds with
error bars of sqrt(2) times the standard error of the mean, and keeps every JUMP run. Here
every run is counted too. A run that stopped early (diverged, failed, or still running)
carries its last finite evaluation forward to the later steps of a curve, so the number of
runs behind a curve stays the same at every step and a run that blew up keeps pulling the
mean the way it did when it stopped; a run with no evaluation at all cannot be placed and is
only counted in the labels. The summary's "final" value of a run is its last finite one, of its
own evaluations: a branch (`run --from`) begins with its parent's rows, which draw its curve
but are not its results. Scores (scores.json, or a final evaluation's test_score_*) count only
when they were measured on the weights the run has now (at its last step), and of today's
definition; otherwise they are left out, and the summary names the run to rescore.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jumpbench.benchmarks import runs as R
from jumpbench.benchmarks.evaluation import scores as S
from jumpbench.benchmarks.evaluation.evaluate import BASELINES
from jumpbench.errors import JumpbenchError
from jumpbench.files import read_json, write_text_atomic

# The paper's numbers for the same quantity, where it gives one (section 4.2: 12 JUMP runs).
PAPER = {("mnist_dice", "jump"): "KL1 4.19, KL3 4.25 (12 runs); NELBO: Fig. 5b plot only",
         ("mnist_dice", "gqn"): "NELBO: Fig. 5b plot only (6 of 7 runs)"}
VIDEO_PAPER = "Fig. 5a plot only (15 runs; 10 CDNA)"
CONSISTENCY_KEYS = ("kl1", "kl3", "nelbo")
SAMPLE_METRICS = ("test_score_", "test_time_variation")  # also in scores.json (jumpbench score)


@dataclass
class RunResult:
    path: Path
    dataset: str
    model: str
    config: str
    seed: int
    status: str = "missing"
    why: str = ""
    rows: list = field(default_factory=list)            # metrics.jsonl, one dict per evaluation
    consistency: dict | None = None                     # consistency.json
    scores: dict | None = None                          # scores.json (jumpbench score)
    record: dict = field(default_factory=dict)          # config.json
    problem: str = ""                                   # why metrics.jsonl could not be read
    legs: list = field(default_factory=list)            # legs.json: the stretches it was trained in
    weights_step: int | None = None                     # weights.safetensors' step (its header), if published
    outdated_scores: bool = False                       # test_score_* of an older definition, left out
    stale_scores: str = ""                              # scores.json, consistency.json of another step: left out

    @property
    def preset(self) -> str:
        return self.record.get("preset", self.config.split("+")[0])

    @property
    def target_steps(self) -> int | None:
        return ((self.record.get("config") or {}).get("train") or {}).get("steps")

    @property
    def branched_from(self) -> str | None:
        """The config name of the run this one branched from (`run --from`), if it did."""
        return (self.record.get("branched_from") or {}).get("name")

    @property
    def own_rows(self) -> list[dict]:
        """The evaluations of this run's own training: for a branch, those after the step it
        branched at (the rows before are its parent's)."""
        since = (self.record.get("branched_from") or {}).get("step", -1)
        return [r for r in self.rows if r["step"] > since]

    @property
    def scored_row(self) -> dict | None:
        """The last of own_rows that carries test_score_* (a final evaluation's), if any."""
        return next((r for r in reversed(self.own_rows) if any(k.startswith("test_score_") for k in r)), None)

    @property
    def trained_to(self) -> int:
        """The step of the weights the run has now: its last leg's end, its published weights' and
        its last evaluation's, whichever is latest (a run from before legs were recorded may have
        stopped past its last evaluation)."""
        return max([leg.get("to", 0) for leg in self.legs[-1:]] + [r["step"] for r in self.rows[-1:]]
                   + [self.weights_step or 0])

    @property
    def overrides(self) -> tuple:
        """config.json's --set items."""
        return tuple(self.record.get("overrides", ()))

    def values(self, metric: str, own: bool = False) -> tuple[list[int], list[float]]:
        """(steps, values) of the finite evaluations of `metric` (`own`: of own_rows only)."""
        pts = [(r["step"], float(r[metric])) for r in (self.own_rows if own else self.rows)
               if r.get(metric) is not None and math.isfinite(float(r[metric]))]
        return [s for s, _ in pts], [v for _, v in pts]

    def final(self, metric: str) -> float | None:
        if metric in CONSISTENCY_KEYS:
            v = (self.consistency or {}).get(metric)
            return float(v) if v is not None and math.isfinite(float(v)) else None
        if metric.startswith("test_score_") and (self.scores or {}).get(metric) is not None:
            return float(self.scores[metric])  # jumpbench score's, else the final evaluation's
        vals = self.values(metric, own=True)[1]
        if vals:
            return vals[-1]
        # a sample metric its evaluations did not log (older runs): scores.json's, of the same step
        v = (self.scores or {}).get(metric) if metric.startswith(SAMPLE_METRICS) else None
        last = self.own_rows[-1]["step"] if self.own_rows else None
        return float(v) if v is not None and self.scores.get("step") == last else None


def collect(root: str | Path) -> list[RunResult]:
    """Every run folder <root>/<dataset>/<model>/<config>/seed-<k>/."""
    runs = []
    for folder in sorted(Path(root).glob("*/*/*/seed-*")):
        if not folder.is_dir() or not folder.name[5:].isdigit():
            continue
        dataset, model, config = folder.parts[-4:-1]
        run, files = RunResult(folder, dataset, model, config, int(folder.name[5:])), R.Run(folder)
        run.record = files.record() or {}
        if not isinstance(run.record.get("config", {}), dict):  # counted with no config; plot says why
            run.record, run.problem = {}, f"{files.path(R.CONFIG)}: its \"config\" is not a run's resolved config"
        status = files.status() or {}
        run.status, run.why = status.get("status", "missing"), status.get("why", "")
        try:
            run.rows = [] if run.problem else files.metrics()
            bad = next(((r["step"], k) for r in run.rows for k, v in r.items()
                        if k != "step" and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))),
                       None)
            if bad:
                raise JumpbenchError(f"{files.path(R.METRICS)}: step {bad[0]}: {bad[1]} is not a number")
        except (OSError, JumpbenchError) as e:  # counted as a run with no evaluations; plot says why
            run.rows, run.problem = [], str(e)
        run.consistency, run.scores, run.legs = files.consistency(), files.scores(), files.legs()
        run.weights_step = R.weights_step(files.path(R.WEIGHTS)) if files.path(R.WEIGHTS).is_file() else None
        # scores of another definition than today's (scores.DEFINITIONS) are not compared with today's
        old_scores = S.outdated(run.scores, dataset)
        stale = old_scores or any(S.outdated(r, dataset) for r in run.rows)
        run.scores = None if old_scores else run.scores
        run.rows = [S.current(r, dataset) for r in run.rows]
        # measured, then trained on: not of the weights the run has now (consistency.json before it
        # recorded its step: taken as it is)
        moved = [(name, got["step"]) for name, got in ((R.SCORES, run.scores), (R.CONSISTENCY, run.consistency),
                                                       ("the final evaluation's scores",
                                                        None if run.scores else run.scored_row))
                 if got and got.get("step", run.trained_to) != run.trained_to]
        run.stale_scores = "; ".join(f"{name}: step {step}" for name, step in moved) + \
            (f"; its weights: step {run.trained_to}" if moved else "")
        left_out = {name for name, _ in moved}
        run.scores = None if R.SCORES in left_out else run.scores
        run.consistency = None if R.CONSISTENCY in left_out else run.consistency
        run.outdated_scores = stale and not run_row(run)  # rescored since: its current scores count
        runs.append(run)
    return runs


def group(runs: list[RunResult]) -> dict[tuple[str, str, str], list[RunResult]]:
    """{(dataset, model, config): runs sorted by seed}."""
    out: dict = {}
    for r in runs:
        out.setdefault((r.dataset, r.model, r.config), []).append(r)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in sorted(out.items())}


def main_configs(runs: list[RunResult], best: dict | None = None,
                 pins: dict | None = None) -> dict[tuple[str, str], dict[str, list[RunResult]]]:
    """{(dataset, preset): {model: runs}}, one config per model: the one pinned by the model's
    main.json (`read_pins`) if it names one of that preset; else the one with the most runs
    (the seeded config, not a sweep's one-seed points); ties go to best.json's winner, then to
    a config whose runs all finished (done or diverged), then to branches (`run --from`) of the
    preset's own runs (they are those runs, trained further), then to the preset's own config
    (the folder named as the preset, not a variant), then to the name."""
    by = {}
    for (dataset, model, config), rs in group(runs).items():
        by.setdefault((dataset, rs[0].preset, model), []).append((config, rs))
    out: dict = {}
    for (dataset, preset, model), options in sorted(by.items()):
        winner = ((best or {}).get((dataset, model)) or {}).get("name")
        pinned = (pins or {}).get((dataset, model))

        def rank(option):
            config, rs = option
            return (config == pinned, len(rs), config == winner, all(r.status in ("done", "diverged") for r in rs),
                    all(r.branched_from == preset for r in rs), config == preset, config)

        config, rs = max(options, key=rank)
        out.setdefault((dataset, preset), {})[model] = rs
    return out


def read_pins(root: str | Path, runs: list[RunResult]) -> dict[tuple[str, str], str]:
    """{(dataset, model): config} from every main.json under root: the config a person chose to
    stand for the model in the figures and the summary's findings, where several configs of one
    preset have equal claims (e.g. two branches of one run). A pin that names none of `runs`'
    configs is an error, not a silent fall-back."""
    out = {}
    for path in sorted(Path(root).glob(f"*/*/{R.PIN}")):
        content = read_json(path)
        config = content.get("config") if isinstance(content, dict) else None
        if not isinstance(config, str) or not config:
            raise JumpbenchError(f"{path}: needs a \"config\" naming a config folder beside it")
        key = (path.parts[-3], path.parts[-2])
        if not any((r.dataset, r.model, r.config) == (*key, config) for r in runs):
            raise JumpbenchError(f"{path} pins config {config!r}, but {path.parent / config} has no runs")
        out[key] = config
    return out


def read_best(root: str | Path) -> dict[tuple[str, str], dict]:
    """{(dataset, model): best.json's "best"} for every sweep under root."""
    out = {}
    for path in sorted(Path(root).glob(f"*/*/{R.BEST}")):
        out[(path.parts[-3], path.parts[-2])] = R.read_best(path)["best"]
    return out


def sem2(values) -> float:
    """sqrt(2) x the standard error of the mean (sample std, ddof 1); nan for fewer than 2."""
    v = np.asarray(list(values), float)
    return float(math.sqrt(2) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def curve(runs: list[RunResult], metric: str) -> dict:
    """Mean and sqrt(2) x SEM of `metric` over runs at every evaluated step, runs that stopped
    early carrying their last value forward (module docstring). Lists, JSON-ready."""
    series = [r.values(metric) for r in runs]
    steps = sorted({s for st, _ in series for s in st})
    mean, err, n = [], [], []
    for step in steps:
        vals = []
        for st, vs in series:
            idx = [i for i, s in enumerate(st) if s <= step]
            if idx:
                vals.append(vs[idx[-1]])
        mean.append(float(np.mean(vals)))
        err.append(sem2(vals))
        n.append(len(vals))
    return {"steps": steps, "mean": mean, "err": err, "n": n, "seeds": [r.seed for r in runs],
            "diverged_at": [r.values(metric)[0][-1] if r.status == "diverged" and r.values(metric)[0] else None
                            for r in runs]}


def counts(runs: list[RunResult]) -> dict:
    c = {"runs": len(runs), "done": 0, "diverged": 0, "failed": 0, "interrupted": 0, "running": 0, "missing": 0}
    for r in runs:
        c[r.status if r.status in c else "missing"] += 1
    return c


def count_text(runs: list[RunResult]) -> str:
    """"3 runs (1 diverged)", plus failed/interrupted/running/missing counts when there are any."""
    c = counts(runs)
    parts = [f"{c['diverged']} diverged"] + [f"{c[k]} {k}" for k in ("failed", "interrupted", "running", "missing")
                                             if c[k]]
    return f"{c['runs']} run{'s' * (c['runs'] != 1)} ({', '.join(parts)})"


def primary_metric(runs: list[RunResult]) -> str:
    """test_min_mse on videos, the consistency analysis' NELBO on dice when it exists, else test_loss."""
    if any("test_min_mse" in row for r in runs for row in r.rows):
        return "test_min_mse"
    if any(r.consistency for r in runs):
        return "nelbo"
    return "test_loss"


def summary_rows(runs: list[RunResult]) -> list[dict]:
    rows = []
    for (dataset, model, config), rs in group(runs).items():
        metric = primary_metric(rs)
        finals = [(r.seed, r.final(metric)) for r in rs]
        finals = [(s, v) for s, v in finals if v is not None]
        vals = [v for _, v in finals]
        best = min(finals, key=lambda x: x[1]) if finals else None
        worst = max(finals, key=lambda x: x[1]) if finals else None
        steps = [r.own_rows[-1]["step"] for r in rs if r.own_rows]
        walls = [r.own_rows[-1].get("wall", float("nan")) for r in rs if r.own_rows]
        targets = [r.target_steps for r in rs if r.target_steps]  # beside the median step, the median target
        row = {"dataset": dataset, "model": model, "config": config, "preset": rs[0].preset, **counts(rs),
               "metric": metric, "n_values": len(vals), "mean": float(np.mean(vals)) if vals else None,
               "sqrt2_sem": sem2(vals) if vals else None,
               "best_seed": best[0] if best else None, "best": best[1] if best else None,
               "worst_seed": worst[0] if worst else None, "worst": worst[1] if worst else None,
               "steps": int(np.median(steps)) if steps else 0, "target_steps": int(np.median(targets)) if targets else None,
               "wall_s_mean": float(np.mean(walls)) if walls else None}
        for k in ("kl1", "kl3", "test_time_variation"):
            kv = [r.final(k) for r in rs if r.final(k) is not None]
            row[k] = float(np.mean(kv)) if kv else None
            row[f"{k}_sqrt2_sem"] = sem2(kv) if kv else None
        row["overrides"] = " ".join(rs[0].overrides)
        row["paper"] = PAPER.get((dataset, model), VIDEO_PAPER if metric == "test_min_mse" else "")
        rows.append(row)
    return rows


EVAL_SET = tuple(k for k in R.EVALUATION if k != ("train", "eval_samples"))  # what the baselines depend on


def eval_set(run: RunResult) -> tuple:
    """What a run's evaluations measure on: (test scenes, context frames, image size)."""
    cfg = run.record.get("config") or {}
    return tuple((cfg.get(section) or {}).get(key) for section, key in EVAL_SET)


def baselines(runs: list[RunResult]) -> dict[tuple, dict[str, float]]:
    """{(dataset, *eval_set): {baseline name: value}}: the trivial predictors' scores that the
    runs' evaluators wrote (test_baseline_*), per test set; runs of one set agree but for the
    precision they were evaluated in (fp32 and bf16 differ in the 8th digit), so their mean is
    given to 6 significant digits, which keeps the figures' files stable as runs are added.
    Runs of different sets are never averaged together: each number is read against its own."""
    found: dict[tuple, dict[str, list[float]]] = {}
    for r in runs:
        last = r.rows[-1] if r.rows else {}
        for key, v in last.items():
            if key.startswith("test_baseline_") and v is not None:
                found.setdefault((r.dataset, *eval_set(r)), {}).setdefault(key[len("test_baseline_"):], []).append(float(v))
    return {k: {name: float(f"{np.mean(v):.6g}") for name, v in b.items()} for k, b in sorted(found.items(), key=_order)}


def _order(item) -> list:
    """Sort key of a (key tuple, value) item whose tuple may hold None (last)."""
    return [(v is None, v if v is not None else 0) for v in item[0]]


def set_text(key: tuple) -> str:
    """A baselines() key's test set in words: "256 test scenes, 5 context frames, 32 px"."""
    scenes, context, size = (_fmt(v) for v in key[1:])
    return f"{scenes} test scenes, {context} context frames, {size} px"


def _fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def write_summary(runs: list[RunResult], prefix: str | Path) -> tuple[Path, Path]:
    """<prefix>.csv (every column, raw numbers) and <prefix>.md (a readable table)."""
    rows = summary_rows(runs)
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = prefix.with_suffix(".csv"), prefix.with_suffix(".md")
    cols = list(rows[0]) if rows else ["dataset", "model", "config"]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, cols)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(csv_path, text.getvalue())
    head = ["dataset", "model", "config", "runs", "done/div/failed/stopped", "metric", "mean ± √2·SEM",
            "best (seed)", "worst (seed)", "steps", "wall/run", "KL1", "KL3", "time var.", "paper"]
    lines = ["# Summary", "",
             "Mean over seeds ± sqrt(2) x SEM; every run counted, a run that stopped early with its last "
             "finite value (diverged runs included). Lower is better for every metric. *time var.*: how "
             "much the sampled frames change across query times, relative to the truth (1: as much; 0: "
             "the same frame at every time; evaluate.TimeVariation).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        kl = [f"{_fmt(r[k])} ± {_fmt(r[k + '_sqrt2_sem'], 2)}" if r[k] is not None else "-" for k in ("kl1", "kl3")]
        wall = f"{r['wall_s_mean'] / 60:.1f} min" if r["wall_s_mean"] is not None else "-"
        lines.append("| " + " | ".join([
            r["dataset"], r["model"], r["config"], str(r["runs"]),
            f"{r['done']}/{r['diverged']}/{r['failed']}/{r['interrupted']}",
            r["metric"], f"{_fmt(r['mean'])} ± {_fmt(r['sqrt2_sem'], 2)} (n={r['n_values']})",
            f"{_fmt(r['best'])} ({_fmt(r['best_seed'])})", f"{_fmt(r['worst'])} ({_fmt(r['worst_seed'])})",
            f"{r['steps']}/{_fmt(r['target_steps'])}", wall, *kl, _fmt(r["test_time_variation"], 2),
            r["paper"]]) + " |")
    base = baselines(runs)
    if base:
        lines += ["", "Sanity baselines (MSE of a deterministic predictor, so also its min-MSE), per test set "
                  "(a run's evaluation settings): each number above is read against those of its own set.", "",
                  "| dataset | test set | baseline | MSE |", "|---|---|---|---|"]
        for key, values in base.items():
            for k, v in sorted(values.items(), key=lambda kv: kv[1]):
                lines.append(f"| {key[0]} | {set_text(key)} | {BASELINES.get(k, k)} | {_fmt(v)} |")
    lines += leg_lines(runs)
    lines += score_lines(group(runs))
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return md_path, csv_path


LEG_METRICS = (("test_min_mse", "prior min-MSE"), ("test_mse", "posterior MSE"), ("test_kl", "KL"),
               ("test_loss", "test loss"))


def continued(runs: list[RunResult]) -> list[RunResult]:
    """The runs trained in more than one leg (continued from a checkpoint or published weights)."""
    return [r for r in runs if len(r.legs) > 1]


def leg_rows(run: RunResult) -> list[dict]:
    """Per leg of a run: the leg's record and, at its last evaluation, the LEG_METRICS it logs
    (the prior's min-MSE, the posterior's MSE, the KL: side by side, so that a prior that stalls
    while the posterior improves shows)."""
    out = []
    for leg in run.legs:
        last = next((r for r in reversed(run.rows) if r["step"] <= leg.get("to", 0)), {})
        out.append({**leg, "eval_step": last.get("step"),
                    **{k: last.get(k) for k, _ in LEG_METRICS if k in last}})
    return out


def leg_lines(runs: list[RunResult]) -> list[str]:
    """Markdown tables for results/summary.md: every leg of each continued run."""
    lines = []
    for run in continued(runs):
        rows = leg_rows(run)
        keys = [(k, name) for k, name in LEG_METRICS if any(k in r for r in rows)]
        base = (run.rows[-1] if run.rows else {}).get("test_baseline_repeat_last")
        lines += ["", f"### Legs of {run.dataset}/{run.model}/{run.config}/seed-{run.seed}", "",
                  "Each leg: one stretch of training in one process, continued from the one before (its "
                  "checkpoint, or its published weights on another checkout or machine); the metrics at "
                  "the leg's last evaluation" + (f" (repeat-last baseline: {_fmt(base)})." if base else "."), "",
                  "| leg | steps | machine | device, precision, threads x procs | began from | wall | eval step | "
                  + " | ".join(name for _, name in keys) + " |", "|" + "---|" * (7 + len(keys))]
        for i, r in enumerate(rows):
            how = (f"{r.get('device', '?')}, {r.get('precision', '?')}, {r.get('threads', '?')} x {r.get('procs', '?')}"
                   if r.get("machine") else "-")
            wall = f"{r['wall_s'] / 60:.0f} min" if r.get("wall_s") is not None else "-"
            began = r.get("resumed", "-") + (f" ({r['optimizer']} Adam)" if r.get("optimizer") else "")
            lines.append("| " + " | ".join([str(i + 1), f"{r.get('from', 0):,}-{r.get('to', 0):,}",
                                            r.get("machine") or r.get("note", "not recorded"), how, began, wall,
                                            _fmt(r["eval_step"])] + [_fmt(r.get(k)) for k, _ in keys]) + " |")
    return lines


# ---------------------------------------------------------------- the ground-truth scores' tables

def run_row(run) -> dict:
    """A results.RunResult's test_score_* values: its scores.json (collect kept it only if it is
    of the run's last step), else its last evaluation if that has them and is of the last step
    (a run's final evaluation scores its samples)."""
    if run.scores:
        return run.scores
    row = run.scored_row
    return row if row and row["step"] == run.trained_to else {}


def score_set(run: RunResult) -> tuple:
    """(test scenes, samples per scene) that a run's scores (run_row) were measured on: the
    references' scores depend on the scenes, and coverage and diversity on the samples."""
    row = run.scores or {}
    train = (run.record.get("config") or {}).get("train") or {}
    return row.get("n_scenes", train.get("eval_scenes")), row.get("n_samples", train.get("eval_samples"))


def score_groups(runs: list[RunResult]) -> dict[tuple, list[RunResult]]:
    """{(test scenes, samples): the scored runs measured on them}: scores of different sets are
    neither averaged together nor read against one set's references."""
    out: dict = {}
    for r in runs:
        if run_row(r):
            out.setdefault(score_set(r), []).append(r)
    return dict(sorted(out.items(), key=_order))


def score_lines(groups: dict) -> list[str]:
    """Markdown tables for results/summary.md: per dataset, each scored (model, config) as the
    mean over seeds ± sqrt(2) x SEM, then the ground truth and the baselines, per score_set."""
    lines = []
    by_dataset: dict = {}
    for (dataset, model, config), rs in groups.items():
        for where, scored in score_groups(rs).items() if dataset in S.KEYS else ():
            by_dataset.setdefault(dataset, {}).setdefault(where, []).append(
                (model, config, [run_row(r) for r in scored]))
    for dataset, sets in sorted(by_dataset.items()):
        keys = S.KEYS[dataset]
        lines += ["", f"Ground-truth consistency scores on {dataset} (scores.py; higher is better for "
                  f"{S.LABELS[keys[0]]}; the truth must be about 1), per test set (scenes x samples per scene), "
                  "each with its references:", "",
                  "| who | config | test set | runs scored | " + " | ".join(S.LABELS[k] for k in keys) + " |",
                  "|---|---|---|---|" + "---|" * len(keys)]
        for (scenes, samples), entries in sets.items():
            where = f"{_fmt(scenes)} x {_fmt(samples)}"
            for model, config, rows in entries:
                cells = []
                for k in keys:
                    vals = [r[f"test_score_{k}"] for r in rows if r.get(f"test_score_{k}") is not None]
                    err = f" ± {sem2(vals):.2g}" if len(vals) > 1 else ""
                    cells.append(f"{np.mean(vals):.3f}{err}" if vals else "-")
                lines.append(f"| {model} | {config} | {where} | {len(rows)} | " + " | ".join(cells) + " |")
            for ref, vals in S.split_row(entries[0][2][0])[1].items():
                cells = [f"{vals[k]:.3f}" if vals.get(k) is not None else "-" for k in keys]
                lines.append(f"| {S.REFERENCES.get(ref, ref)} | - | {where} | - | " + " | ".join(cells) + " |")
    stale = [f"{r.dataset}/{r.model}/{r.config}/seed-{r.seed}"
             for rs in groups.values() for r in rs if r.outdated_scores]
    if stale:
        lines += ["", "Left out: the scores of " + ", ".join(stale) + ", measured under an older definition "
                  "(scores.DEFINITIONS); `jumpbench score` rescores a run that has its checkpoint or weights."]
    moved = [f"{r.dataset}/{r.model}/{r.config}/seed-{r.seed} ({r.stale_scores})"
             for rs in groups.values() for r in rs if r.stale_scores]
    if moved:
        lines += ["", "Left out, measured on other weights than the run has now: " + ", ".join(moved)
                  + "; `jumpbench score` (and `jumpbench consistency`) measure them again."]
    return lines
