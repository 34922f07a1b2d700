"""Figures and the summary from synthetic run folders (one diverged), missing inputs skipped."""
import csv
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from jumpbench.benchmarks.figures.plot import plot_all
from jumpbench.benchmarks.training.train import train
from jumpbench.cli import cli
from jumpbench.errors import JumpbenchError

# traveling_salesman, test_min_mse at steps 10, 20, 30; seed 2 diverged after step 10
CURVES = {("jump", 0): [0.30, 0.20, 0.10], ("jump", 1): [0.32, 0.24, 0.12], ("jump", 2): [0.50],
          ("gqn", 0): [0.40, 0.35, 0.30], ("gqn", 1): [0.42, 0.33, 0.31]}
KL = {("jump", 0): (4.1, 4.3, 900.0), ("jump", 1): (4.3, 4.2, 950.0), ("gqn", 0): (4.0, 11.9, 990.0),
      ("gqn", 1): (4.2, 12.7, 1010.0)}
# hidden-face agreement in the final evaluation row (scores.py), with the truth and a baseline
AGREE = {("jump", 0): 0.9, ("jump", 1): 0.8, ("gqn", 0): 0.1, ("gqn", 1): 0.2}
REFS = {"test_score_truth_agreement": 1.0, "test_score_truth_diversity": 1.0,
        "test_score_black_agreement": 0.0, "test_score_black_diversity": 0.0}


def make_run(root, dataset, model, seed, status, rows, consistency=None, config="cpu", preset=None, **record):
    """A synthetic run folder; its preset is the config's name up to a "+" unless given, and
    `record` adds keys to its config.json (e.g. branched_from)."""
    folder = root / dataset / model / config / f"seed-{seed}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model": model, "dataset": dataset, "preset": preset or config.split("+")[0], "overrides": [], "seed": seed,
        "config": {"train": {"steps": 30, "eval_scenes": 10, "eval_samples": 30}}, **record}))
    (folder / "status.json").write_text(json.dumps({"status": status, "why": "synthetic", "time": 0}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if consistency:
        (folder / "consistency.json").write_text(json.dumps(consistency))
    return folder


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "results" / "runs"
    for (model, seed), vals in CURVES.items():
        rows = [{"step": 10 * (i + 1), "wall": 5.0 * (i + 1), "test_min_mse": v, "test_loss": 1.0}
                for i, v in enumerate(vals)]
        make_run(root, "traveling_salesman", model, seed, "diverged" if len(vals) == 1 else "done", rows)
    for (model, seed), (kl1, kl3, nelbo) in KL.items():
        rows = [{"step": 10, "wall": 1.0, "test_loss": nelbo * 2}, {"step": 20, "wall": 2.0, "test_loss": nelbo,
                 "test_score_agreement": AGREE[model, seed], "test_score_diversity": 1.5, **REFS}]
        make_run(root, "mnist_dice", model, seed, "done", rows,
                 {"kl1": kl1, "kl3": kl3, "nelbo": nelbo, "n_scenes": 10, "units": "nats per scene"})
    speed = tmp_path / "results" / "speed"
    speed.mkdir()
    (speed / "jumpy.json").write_text(json.dumps({
        "frames": 40, "ts": [4, 39], "seconds": {"jump": [0.01, 0.01], "sv2p": [0.02, 0.12]},
        "ratios": {"sv2p/jump": 12.0}, "device": "cpu", "threads": 2, "batch": 1, "image_size": 64}))
    (speed / "train_cpu.json").write_text(json.dumps({  # what `jumpbench bench train` writes
        "preset": "cpu", "dataset": "traveling_salesman", "device": "cpu", "threads": 2,
        "conv_ceiling_gflops": {"fp32": 150.0, "bf16": 250.0},
        "models": {"cdna": {"gflop_per_step": 226.0, "ms": {"fp32": 800.0, "bf16": 560.0},
                            "speedup_vs_fp32": {"fp32": 1.0, "bf16": 1.43}},
                   "jump": {"gflop_per_step": 11.4, "ms": {"fp32": 89.0, "bf16": 68.0, "end-to-end cache": 88.0},
                            "speedup_vs_fp32": {"fp32": 1.0, "bf16": 1.31, "end-to-end cache": 1.01}}}}))
    return root


def sem2(vals):
    v = np.array(vals)
    return math.sqrt(2) * math.sqrt(((v - v.mean()) ** 2).sum() / (len(v) - 1)) / math.sqrt(len(v))


def _figure(out, name):
    assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    return json.loads((out / f"{name}.json").read_text())


def test_fig5a_error_bars_are_sqrt2_sem_and_the_diverged_run_counts(runs, tmp_path):
    out = tmp_path / "figures"
    plot_all(runs, out, grids=False)
    jump = _figure(out, "fig5a_traveling_salesman_cpu")["models"]["jump"]
    assert jump["runs"] == 3 and jump["diverged"] == 1 and jump["steps"] == [10, 20, 30]
    assert jump["n"] == [3, 3, 3]  # the diverged run carries its last value, 0.50
    for i, vals in enumerate([[0.30, 0.32, 0.50], [0.20, 0.24, 0.50], [0.10, 0.12, 0.50]]):
        assert jump["mean"][i] == pytest.approx(np.mean(vals))
        assert jump["err"][i] == pytest.approx(sem2(vals))
    assert jump["diverged_at"] == [None, None, 10]


def test_summary_counts_every_run(runs, tmp_path):
    plot_all(runs, tmp_path / "figures", grids=False)
    rows = {(r["dataset"], r["model"]): r for r in csv.DictReader(open(runs.parent / "summary.csv"))}
    jump = rows[("traveling_salesman", "jump")]
    assert (jump["runs"], jump["done"], jump["diverged"], jump["failed"]) == ("3", "2", "1", "0")
    finals = [0.10, 0.12, 0.50]
    assert float(jump["mean"]) == pytest.approx(np.mean(finals))
    assert float(jump["sqrt2_sem"]) == pytest.approx(sem2(finals))
    assert (jump["best_seed"], jump["worst_seed"]) == ("0", "2")
    dice = rows[("mnist_dice", "jump")]
    assert dice["metric"] == "nelbo" and float(dice["kl1"]) == pytest.approx(4.2)
    assert float(dice["kl3_sqrt2_sem"]) == pytest.approx(sem2([4.3, 4.2]))
    assert "4.19" in dice["paper"] and "4.25" in dice["paper"]
    md = (runs.parent / "summary.md").read_text()
    assert "| traveling_salesman | jump | cpu | 3 | 2/1/0/0 |" in md


def test_fig5b_consistency_and_speed(runs, tmp_path):
    out = tmp_path / "figures"
    lines = plot_all(runs, out, grids=False)
    assert not [ln for ln in lines if ln.startswith("skipped") and "fig" not in ln.split(":")[0]]
    kl = _figure(out, "consistency_mnist_dice_cpu")
    assert kl["paper"] == {"kl1": 4.19, "kl3": 4.25}
    gqn = kl["models"]["gqn"]
    assert gqn["kl3"]["mean"] == pytest.approx(12.3) and gqn["kl3"]["err"] == pytest.approx(sem2([11.9, 12.7]))
    b = _figure(out, "fig5b_mnist_dice_cpu")
    assert b["final"]["jump"]["nelbo"]["mean"] == pytest.approx(925.0)
    assert b["curves"]["gqn"]["mean"] == pytest.approx([2000.0, 1000.0])
    speed = _figure(out, "speed_jumpy")
    assert speed["seconds"]["sv2p"] == [0.02, 0.12]
    train = _figure(out, "speed_train_cpu")  # every model and variant drawn, JUMP's end to end too
    assert train["ms"] == {"fp32": {"jump": 89.0, "cdna": 800.0}, "bf16": {"jump": 68.0, "cdna": 560.0},
                           "end-to-end cache": {"jump": 88.0}}
    assert not [ln for ln in lines if ln.startswith("warning")]
    speed = runs.parent / "speed"
    (speed / "torn.json").write_text('{"models": {"jump"')
    (speed / "notes.json").write_text('{"todo": 1}')
    lines = plot_all(runs, out, grids=False)  # files it cannot draw are named, the others drawn
    assert [ln.split(": ")[1] for ln in lines if ln.startswith("warning")] == [
        str(speed / "notes.json"), str(speed / "torn.json")]
    assert any("speed_train_cpu" in ln for ln in lines)
    scores = _figure(out, "scores_mnist_dice_cpu")
    agree = scores["models"]["agreement"]
    assert agree["jump"]["test_score_agreement"]["mean"] == pytest.approx(0.85)
    assert agree["gqn"]["test_score_agreement"]["err"] == pytest.approx(sem2([0.1, 0.2]))
    assert scores["references"]["truth"] == {"agreement": 1.0, "diversity": 1.0}
    md = (runs.parent / "summary.md").read_text()
    assert "| jump | cpu | 10 x 30 | 2 | 0.850 ± " in md and "| ground truth | - | 10 x 30 | - | 1.000 | 1.000 |" in md


def test_missing_inputs_are_skipped_with_the_command_that_makes_them(tmp_path):
    lines = plot_all(tmp_path / "runs", tmp_path / "figures")
    text = "\n".join(lines)
    for name, hint in [("fig5a", "jumpbench run"), ("fig5b", "jumpbench generate dice"),
                       ("consistency", "jumpbench consistency"), ("speed", "jumpbench bench jumpy"),
                       ("scores", "jumpbench score"),
                       ("fig3", "color_reaction"), ("fig4", "jumpbench run"), ("fig6", "jumpbench generate dice"),
                       ("summary", "jumpbench run")]:
        line = [ln for ln in lines if ln.startswith(f"skipped {name}")]
        assert len(line) == 1 and hint in line[0], text
    assert not (tmp_path / "figures").exists() or not any((tmp_path / "figures").iterdir())


def test_plot_cli(runs, tmp_path):
    out = tmp_path / "figs"
    r = CliRunner().invoke(cli, ["plot", "--runs", str(runs), "--out", str(out), "--no-grids"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and (out / "fig5a_traveling_salesman_cpu.pdf").is_file()
    assert (runs.parent / "summary.md").is_file()


def test_sample_grids_from_checkpoints(small_ts, small_cr, tmp_path):
    root = tmp_path / "runs"
    for data in (small_ts, small_cr):
        train("jump", data, "smoke", [], 0, root, progress=False)
    train("gqn", small_ts, "smoke", [], 0, root, progress=False)
    out = tmp_path / "figures"
    lines = plot_all(root, out)
    assert any("fig4_traveling_salesman_smoke.png" in ln for ln in lines), lines
    assert any("fig3_color_reaction_smoke.png" in ln for ln in lines), lines
    fig4 = _figure(out, "fig4_traveling_salesman_smoke")
    assert set(fig4) == {"jump", "gqn"} and fig4["jump"]["seed"] == 0
    assert any(ln.startswith("skipped fig6") for ln in lines)


def test_fig6_draws_dice_runs_from_any_folder(tmp_path, monkeypatch):
    """Fig. 6 from a JUMP run on a tiny dice set (its hidden-face protocol), drawn from another
    working folder than the one the run trained in: the dataset is found from the run folder
    (runs.run_dataset), as Fig. 3 and 4 find theirs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    r = CliRunner().invoke(cli, ["generate", "dice", "--n", "3", "--test-n", "3", "--views", "8", "--size", "32",
                                 "--shard-size", "2", "--seed", "3", "--quiet", "--out", "data", "--workers", "1"])
    assert r.exit_code == 0, r.output
    train("jump", "data/mnist_dice", "smoke", [], 0, "results/runs", progress=False)
    monkeypatch.chdir(tmp_path)
    lines = plot_all(repo / "results" / "runs", tmp_path / "figures")
    assert any("fig6_mnist_dice_smoke.png" in ln for ln in lines), lines
    fig6 = _figure(tmp_path / "figures", "fig6_mnist_dice_smoke")
    assert set(fig6) == {"jump"} and fig6["jump"]["seed"] == 0


def test_the_presets_own_config_wins_a_tie_with_a_variant(tmp_path):
    """One seed under `cpu` and one under an older variant of it (`cpu-pv05`, preset cpu in its
    config.json): the figures draw the preset's own config, whatever the names' order."""
    from jumpbench.benchmarks.figures.results import collect, main_configs
    root = tmp_path / "runs"
    rows = [{"step": 10, "wall": 1.0, "test_min_mse": 0.1}]
    for config in ("cpu", "cpu-pv05"):
        make_run(root, "traveling_salesman", "jump", 0, "done", rows, config=config, preset="cpu")
    chosen = main_configs(collect(root))[("traveling_salesman", "cpu")]["jump"]
    assert [r.config for r in chosen] == ["cpu"]
    # branches of the preset's runs (run --from) are those runs trained further: they win the
    # tie, a finished one before one that was interrupted
    for config, status in (("cpu-up", "done"), ("cpu-upx", "interrupted")):
        make_run(root, "traveling_salesman", "jump", 0, status, rows, config=config, preset="cpu",
                 branched_from={"name": "cpu"})
    chosen = main_configs(collect(root))[("traveling_salesman", "cpu")]["jump"]
    assert [r.config for r in chosen] == ["cpu-up"]


def test_a_main_json_pins_the_config_the_figures_draw(tmp_path):
    """Two finished branches of one run tie on every automatic rule; the model's main.json
    decides, even against a config with more runs, and a pin naming no runs is a clear error."""
    from jumpbench.benchmarks.figures.results import collect, main_configs, read_pins
    root = tmp_path / "runs"
    rows = [{"step": 10, "wall": 1.0, "test_min_mse": 0.1}]
    for config, seeds in (("cpu-a", [0]), ("cpu-b", [0]), ("cpu", [0, 1])):
        for seed in seeds:
            make_run(root, "color_reaction", "jump", seed, "done", rows, config=config, preset="cpu")
    runs = collect(root)
    assert [r.config for r in main_configs(runs)[("color_reaction", "cpu")]["jump"]] == ["cpu", "cpu"]
    pin = root / "color_reaction" / "jump" / "main.json"
    pin.write_text(json.dumps({"config": "cpu-a", "why": "the recipe"}))
    pins = read_pins(root, runs)
    assert pins == {("color_reaction", "jump"): "cpu-a"}
    assert [r.config for r in main_configs(runs, None, pins)[("color_reaction", "cpu")]["jump"]] == ["cpu-a"]
    pin.write_text(json.dumps({"config": "cpu-c"}))
    with pytest.raises(JumpbenchError, match="cpu-c.*has no runs"):
        read_pins(root, runs)
    pin.write_text(json.dumps({"why": "no config"}))
    with pytest.raises(JumpbenchError, match="needs a \"config\""):
        read_pins(root, runs)


def test_the_same_runs_redraw_the_same_bytes(runs, tmp_path):
    """No creation date in the PDFs: regenerating the figures from unchanged run folders leaves
    every committed file as it was."""
    first, again = tmp_path / "a", tmp_path / "b"
    (tmp_path / "no-speed").mkdir()  # a speed folder with no results in it
    plot_all(runs, first, tmp_path / "no-speed", first / "summary.md")
    plot_all(runs, again, tmp_path / "no-speed", again / "summary.md")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    pdfs = [p for p in files if p.suffix == ".pdf"]
    assert pdfs and not any(b"/CreationDate" in (first / p).read_bytes() for p in pdfs)
    assert all((first / p).read_bytes() == (again / p).read_bytes() for p in files)


def test_every_committed_run_names_its_dataset_for_another_machine():
    """A committed run records how to make its dataset again (generator, version, parameters)
    and the manifest's sha256, and no committed result holds an absolute path of the machine
    that made it. Only files git tracks: a user's own runs may point anywhere."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        tracked = subprocess.run(["git", "ls-files", "results"], cwd=root, capture_output=True,
                                 text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    configs = [root / p for p in tracked if re.fullmatch(r"results/runs/.+/seed-\d+/config\.json", p)]
    if not configs:
        pytest.skip("no committed runs in this checkout")
    for path in configs:
        cfg = json.loads(path.read_text())
        gen = cfg.get("dataset_generator") or {}
        assert {"generator", "version", "params"} <= set(gen) and gen["params"], path
        assert re.fullmatch(r"[0-9a-f]{64}", cfg["dataset_sha256"]), path
        assert not Path(cfg["data"]).is_absolute(), path
    machine_path = re.compile(r"(?<![\w.])/(home|work|root|tmp|Users|mnt)/")
    for p in tracked:
        if Path(p).suffix in (".json", ".jsonl", ".md", ".csv"):
            assert not machine_path.search((root / p).read_text()), p


def test_malformed_run_files_give_one_line_errors_or_a_warning(runs, tmp_path):
    """Hand-edited or damaged JSON beside the runs: a refusal naming the file, never a traceback;
    a run whose metrics cannot be read is still counted, with a warning that says why."""
    from conftest import one_line_error

    def plot():
        return CliRunner().invoke(cli, ["plot", "--runs", str(runs), "--out", str(tmp_path / "f"), "--no-grids"])

    bad_metrics = runs / "traveling_salesman" / "jump" / "cpu" / "seed-0" / "metrics.jsonl"
    bad_metrics.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    r = plot()
    assert r.exit_code == 0 and f"warning: {bad_metrics.parent}: counted with no evaluations" in r.output, r.output
    status = runs / "traveling_salesman" / "gqn" / "cpu" / "seed-0" / "status.json"
    status.write_text("[1]")
    assert plot().exit_code == 0  # a status that is not a record: the run counts as missing
    for name, text in (("best.json", '{"best": 5}'), ("main.json", "[1]")):
        path = runs / "traveling_salesman" / "jump" / name
        path.write_text(text)
        one_line_error(plot(), name)
        path.unlink()


def test_a_run_with_an_unreadable_status_is_resumed(small_ts, tmp_path):
    from conftest import run

    args = ("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--out", tmp_path, "--quiet")
    assert run(*args).exit_code == 0
    status = tmp_path / "traveling_salesman" / "jump" / "smoke" / "seed-0" / "status.json"
    for text in ("[1]", '{"status": "done"}'):  # not a record; a record without its "why"
        status.write_text(text)
        r = run(*args)
        assert r.exit_code == 0 and "skipped" not in r.output, r.output  # resumed, not taken as done
        assert json.loads(status.read_text())["status"] == "done"  # and written again


def test_plot_names_runs_it_cannot_read_and_leaves_no_stale_temporaries(tmp_path):
    """A config.json whose "config" is not a config, a metrics value that is not a number and
    a last evaluation that is NaN are named (no traceback); --speed that is not a folder is one
    line; a temporary file left by a killed plot is removed by the next."""
    import json as _json

    from conftest import one_line_error, run

    def make(name, rows, config=None):
        folder = tmp_path / "runs" / "traveling_salesman" / "jump" / name / "seed-0"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(_json.dumps({"model": "jump", "preset": "cpu", "config": config or {}}))
        (folder / "status.json").write_text(_json.dumps({"status": "done", "why": "test"}))
        (folder / "metrics.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in rows))

    good = [{"step": 1, "test_min_mse": 0.02}, {"step": 2, "test_min_mse": 0.01}]
    make("oops", good, config="oops")
    make("abc", [{"step": 1, "test_min_mse": "abc"}])
    make("nan", good + [{"step": 3, "test_min_mse": float("nan")}])
    out = tmp_path / "figs"
    out.mkdir()
    (out / ".summary.md.999999999.tmp").write_text("")  # a killed plot's (no such process)
    r = run("plot", "--runs", tmp_path / "runs", "--out", out, "--summary", out / "summary", "--no-grids")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert '"config" is not a run' in r.output and "test_min_mse is not a number" in r.output, r.output
    assert "last evaluation's test_min_mse is nan (step 3); the summary shows step 2's value" in r.output
    assert not (out / ".summary.md.999999999.tmp").exists()
    one_line_error(run("plot", "--runs", tmp_path / "runs", "--out", out, "--speed", tmp_path / "none"),
                   "no such folder")


def test_scores_of_an_older_definition_are_left_out_and_named(runs, tmp_path):
    """A Color Reaction run scored before the reaction looked at the mover (no
    scores_definition, i.e. 1) is not drawn beside one scored today, and plot and the summary
    say which; the dice runs' scores, whose definition has not changed, still count."""
    from jumpbench.benchmarks.evaluation.scores import DEFINITIONS

    refs = {"test_score_truth_reaction_forward": 1.0, "test_score_truth_reaction_backward": 1.0}
    for seed, (value, definition) in enumerate([(0.9, None), (0.2, DEFINITIONS["color_reaction"])]):
        scores = {"test_score_reaction_forward": value, "test_score_reaction_backward": value, **refs}
        if definition:
            scores["scores_definition"] = definition
        rows = [{"step": 10, "wall": 1.0, "test_min_mse": 0.01, **scores}]
        folder = make_run(runs, "color_reaction", "jump", seed, "done", rows)
        (folder / "scores.json").write_text(json.dumps({"model": "jump", "dataset": "color_reaction", "step": 10,
                                                        **scores}))  # as `jumpbench score` writes it
    out = tmp_path / "figures"
    lines = plot_all(runs, out, grids=False)
    drawn = _figure(out, "scores_color_reaction_cpu")["models"]["reaction_forward"]["jump"]
    assert drawn["test_score_reaction_forward"]["mean"] == pytest.approx(0.2)
    assert _figure(out, "scores_mnist_dice_cpu")["models"]["agreement"]["jump"]["test_score_agreement"]["mean"] \
        == pytest.approx(0.85)
    warned = [ln for ln in lines if "older definition" in ln]
    assert len(warned) == 1 and "1 run(s) (color_reaction: 1)" in warned[0], lines
    md = (runs.parent / "summary.md").read_text()
    assert "Left out: the scores of color_reaction/jump/cpu/seed-0," in md
    assert "| jump | cpu | 10 x 30 | 1 | 0.200 |" in md and "| ground truth | - | 10 x 30 | - | 1.000 |" in md  # the one scored
    # rescored (jumpbench score writes today's definition): counted, and no longer named
    folder = runs / "color_reaction" / "jump" / "cpu" / "seed-0"
    (folder / "scores.json").write_text(json.dumps({"model": "jump", "dataset": "color_reaction", "step": 10,
                                                    "test_score_reaction_forward": 0.4, "scores_definition": 2}))
    lines = plot_all(runs, out, grids=False)
    assert not [ln for ln in lines if "older definition" in ln]
    drawn = _figure(out, "scores_color_reaction_cpu")["models"]["reaction_forward"]["jump"]
    assert drawn["test_score_reaction_forward"]["mean"] == pytest.approx(0.3)
    assert "Left out" not in (runs.parent / "summary.md").read_text()


def test_a_branch_is_reported_by_its_own_evaluations_and_scores_by_their_step(runs, tmp_path):
    """A branch begins with its parent's rows: they draw its curve, but its summary row, scores
    and final values are its own (none yet: no value, not the parent's). Scores measured at
    another step than the run's weights are left out and named."""
    from jumpbench.benchmarks.figures.results import collect, run_row, summary_rows

    parent = [{"step": 10, "wall": 1.0, "test_min_mse": 0.5, "test_time_variation": 0.9},
              {"step": 20, "wall": 2.0, "test_min_mse": 0.4, "test_score_reaction_forward": 0.7,
               "scores_definition": 2}]
    origin = {"branched_from": {"name": "cpu", "seed": 0, "step": 20}}
    branch = make_run(runs, "color_reaction", "jump", 0, "running", parent, config="cpu-b", preset="cpu", **origin)
    (branch / "legs.json").write_text(json.dumps([{"from": 0, "to": 20}, {"from": 20, "to": 25}]))
    got = {r.config: r for r in collect(runs) if r.dataset == "color_reaction"}["cpu-b"]
    assert got.values("test_min_mse") == ([10, 20], [0.5, 0.4])  # the curve goes on from the parent's
    assert got.final("test_min_mse") is None and got.final("test_time_variation") is None and not run_row(got)
    row = next(r for r in summary_rows([got]))
    assert row["mean"] is None and row["steps"] == 0 and row["test_time_variation"] is None
    # its own evaluation at 30, then scored at 25 (before it): the scores are not of its weights
    (branch / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in parent + [
        {"step": 30, "wall": 3.0, "test_min_mse": 0.3, "test_time_variation": 0.8}]))
    (branch / "legs.json").write_text(json.dumps([{"from": 0, "to": 20}, {"from": 20, "to": 30}]))
    (branch / "scores.json").write_text(json.dumps({"step": 25, "test_score_reaction_forward": 0.9,
                                                    "test_time_variation": 0.1, "scores_definition": 2}))
    (branch / "consistency.json").write_text(json.dumps({"step": 20, "kl1": 1.0, "kl3": 1.0, "nelbo": 5.0}))
    got = {r.config: r for r in collect(runs) if r.dataset == "color_reaction"}["cpu-b"]
    assert got.final("test_min_mse") == 0.3 and got.final("test_time_variation") == 0.8
    assert not run_row(got) and got.scores is None and got.consistency is None and got.final("kl1") is None
    assert got.stale_scores == "scores.json: step 25; consistency.json: step 20; its weights: step 30"
    (branch / "consistency.json").unlink()
    lines = plot_all(runs, tmp_path / "figures", grids=False)
    assert any("cpu-b/seed-0: left out, measured on other weights: scores.json: step 25" in ln for ln in lines)
    assert "color_reaction/jump/cpu-b/seed-0 (scores.json: step 25" in (runs.parent / "summary.md").read_text()
    # rescored at 30: counted
    (branch / "scores.json").write_text(json.dumps({"step": 30, "test_score_reaction_forward": 0.9,
                                                    "scores_definition": 2}))
    got = {r.config: r for r in collect(runs) if r.dataset == "color_reaction"}["cpu-b"]
    assert run_row(got)["test_score_reaction_forward"] == 0.9 and not got.stale_scores
    # no scores.json: its final evaluation's scores, of step 30, then trained on to 35 (no evaluation since)
    (branch / "scores.json").unlink()
    (branch / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in parent + [
        {"step": 30, "test_min_mse": 0.3, "test_score_reaction_forward": 0.6, "scores_definition": 2}]))
    (branch / "legs.json").write_text(json.dumps([{"from": 0, "to": 20}, {"from": 20, "to": 35}]))
    got = {r.config: r for r in collect(runs) if r.dataset == "color_reaction"}["cpu-b"]
    assert not run_row(got) and got.stale_scores == "the final evaluation's scores: step 30; its weights: step 35"


def test_baselines_and_score_references_are_per_test_set_never_averaged_across(runs, tmp_path):
    """Runs evaluated on 64 and on 256 test videos: each set's repeat-last baseline and truth
    score are shown for it, none is the mean of the two, and runs scored on different sets are
    not averaged together."""
    for seed, (scenes, base, score, truth) in enumerate([(64, 0.0106, 0.1, 0.98), (256, 0.0111, 0.3, 1.0)]):
        row = {"step": 10, "wall": 1.0, "test_min_mse": 0.005, "test_baseline_repeat_last": base}
        folder = make_run(runs, "color_reaction", "jump", seed, "done", [row])
        cfg = json.loads((folder / "config.json").read_text())
        cfg["config"]["train"]["eval_scenes"] = scenes
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "scores.json").write_text(json.dumps({
            "step": 10, "n_scenes": scenes, "n_samples": 30, "scores_definition": 2,
            "test_score_reaction_forward": score, "test_score_truth_reaction_forward": truth}))
    out = tmp_path / "figures"
    plot_all(runs, out, grids=False)
    md = (runs.parent / "summary.md").read_text()
    assert "| color_reaction | 64 test scenes, - context frames, - px | repeat the last context frame | 0.0106 |" in md
    assert "| color_reaction | 256 test scenes, - context frames, - px | repeat the last context frame | 0.0111 |" in md
    assert "0.01085" not in md
    assert "| jump | cpu | 64 x 30 | 1 | 0.100 |" in md and "| jump | cpu | 256 x 30 | 1 | 0.300 |" in md
    assert "| ground truth | - | 64 x 30 | - | 0.980 |" in md and "| ground truth | - | 256 x 30 | - | 1.000 |" in md
    assert [b["repeat_last"] for b in _figure(out, "fig5a_color_reaction_cpu")["baselines"]] == [0.0106, 0.0111]
    drawn = _figure(out, "scores_color_reaction_cpu")
    assert drawn["test_set"] == {"scenes": 256, "samples": 30, "runs_left_out": 1}  # a tie: the larger set
    assert drawn["models"]["reaction_forward"]["jump"]["test_score_reaction_forward"]["values"] == [0.3]
