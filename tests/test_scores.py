"""Ground-truth consistency scores (issue 13): probes trained on tiny generated sets read the
truth as valid (route validity, reaction, hidden-face agreement about 1), while shuffled frames,
repeated frames and independently drawn dice views score low; scores are deterministic for a
seed; the CLI's bad inputs end in one line."""
import json

import numpy as np
import pytest
import torch

from conftest import one_line_error, run
from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.evaluation import probes as P
from jumpbench.benchmarks.evaluation import scores as S
from jumpbench.models.base import Model

SIZE = 32  # the cpu preset's image size


def probe(data, steps, batch):
    """A probe trained for seconds (the real ones train for minutes on 1,500+ scenes)."""
    P.train_probe(data, SIZE, steps=steps, scenes=40, progress=False, batch=batch)
    return P.load_probe(data, SIZE)


@pytest.fixture(scope="module")
def ts_probe(small_ts):
    return probe(small_ts, 400, 16)


@pytest.fixture(scope="module")
def cr_probe(small_cr):
    return probe(small_cr, 400, 16)


@pytest.fixture(scope="module")
def dice_set(tmp_path_factory):
    """A tiny MNIST Dice set at 32x32 whose faces draw from the first 10 MNIST digits (so that 30
    training scenes show every digit many times)."""
    from jumpbench.generators.base import generate
    from jumpbench.generators.dice import DiceConfig, DiceGenerator

    out = tmp_path_factory.mktemp("dice")
    return generate(DiceGenerator(DiceConfig(size=SIZE, digit_pool=10)), out, {"train": 30, "test": 3},
                    shard_size=15, progress=False)


def test_traveling_salesman_truth_is_a_route_and_shuffles_are_not(small_ts, ts_probe):
    scenes = DS.Scenes(small_ts, "test", SIZE)
    refs = S.references(ts_probe, scenes, range(len(scenes)), 5)
    assert refs["truth"]["route_validity"] == 1.0
    assert refs["truth"]["route_coverage"] == 1.0  # one continuation: one order
    assert refs["shuffled"]["route_validity"] <= 0.2
    assert refs["repeat"]["route_validity"] == 0.0 and refs["black"]["route_validity"] == 0.0
    assert refs["truth"]["route_visits"] == 1.0 and refs["black"]["route_visits"] == 0.0
    assert refs["repeat"]["route_visits"] <= 0.25  # at most the first target, which it is next to
    assert S.references(ts_probe, scenes, range(len(scenes)), 5) == refs  # deterministic


def rendered(narrative: str, indices, edit=None) -> torch.Tensor:
    """The test scenes `indices` of a narrative set made with its default config (as conftest's
    small sets are), rendered again after `edit(spec)` changes their story (None: as
    generated), as (B, T, 3, SIZE, SIZE) floats: what a model could sample."""
    from jumpbench.generators import narratives as N
    from jumpbench.scenes import downsample

    gen = N.NarrativesGenerator(N.NarrativesConfig(narrative))
    rgb = np.frombuffer(N.PALETTE, np.uint8).reshape(-1, 3)
    videos = []
    for i in indices:
        spec = gen.spec("test", i)
        if edit:
            edit(spec)
        frames = downsample(rgb[N.render(spec, gen.config.size)], SIZE).transpose(0, 3, 1, 2)
        videos.append(DS.to_float(torch.from_numpy(np.ascontiguousarray(frames))))
    return torch.stack(videos)


def test_a_route_that_drops_a_shape_is_not_valid(small_ts, ts_probe):
    """The salesman on its true route over a scene that lost one of the other shapes (a story
    the narrative never tells) is not a valid route; the same scene drawn whole is."""
    def drop(spec):  # the shape visited last, drawn in the background's colour from frame 5 on
        spec["frame_colors"][5:, int(spec["order"][-1])] = -1

    scenes = DS.Scenes(small_ts, "test", SIZE)
    idx = range(len(scenes))
    for edit, expect in ((None, 1.0), (drop, 0.0)):
        scorer = S.Scorer(ts_probe, scenes, idx, 5)
        scorer.add(rendered("traveling_salesman", idx, edit)[:, None, 5:])
        assert scorer.result()["route_validity"] == expect, edit


def test_color_reaction_truth_reacts_both_ways(small_cr, cr_probe):
    scenes = DS.Scenes(small_cr, "test", SIZE)
    refs = S.references(cr_probe, scenes, range(len(scenes)), 5)
    assert refs["truth"] == {f"reaction_{d}{c}": 1.0 for d in ("forward", "backward")
                             for c in ["", *(f"_{c}" for c in S.REACTION_CHECKS)]}
    for bad in ("shuffled", "repeat", "black"):
        assert refs[bad]["reaction_forward"] <= 0.2 and refs[bad]["reaction_backward"] <= 0.2, (bad, refs)


def test_color_reaction_fails_when_the_change_reaches_the_mover(small_cr, cr_probe):
    """Samples in which both shapes take the new colour tell a story the narrative never tells
    (the mover keeps its colour): they fail the reaction, forwards and backwards, while the
    same scenes drawn right pass."""
    from jumpbench.generators import narratives as N

    def recolour_mover(spec):  # from the change on, in shape 2's new colour (or another new one)
        half = N.reaction_frames(len(spec["positions"]))[1]
        new, mover = int(spec["frame_colors"][half, 1]), int(spec["colors"][0])
        spec["frame_colors"][half:, 0] = new if new != mover else (mover + 1) % len(N.COLORS)

    scenes = DS.Scenes(small_cr, "test", SIZE)
    idx = range(len(scenes))
    for recolour, expect in ((None, 1.0), (recolour_mover, 0.0)):
        videos = rendered("color_reaction", idx, recolour)            # (B, T, 3, S, S)
        for direction, q in (("forward", slice(5, None)), ("backward", slice(None, -5))):
            scorer = S.Scorer(cr_probe, scenes, idx, 5, direction)
            scorer.add(videos[:, None, q])
            got = scorer.result()
            assert got[f"reaction_{direction}"] == expect, (recolour, direction)
            # each check's pass rate says what is wrong: here only the mover's colour
            assert {c: got[f"reaction_{direction}_{c}"] for c in S.REACTION_CHECKS} == \
                {c: 1.0 if c != "mover" else expect for c in S.REACTION_CHECKS}, (recolour, direction)
    # the same checks of another layout of context and queries (scripts/context_layouts.py): every
    # other frame is a query, and the mover's new colour from the change on is still caught
    q = list(range(1, videos.shape[1], 2))
    for recolour, expect in ((None, 1.0), (recolour_mover, 0.0)):
        scorer = S.Scorer(cr_probe, scenes, idx, 5, query=q)
        scorer.add(rendered("color_reaction", idx, recolour)[:, None, q])
        assert scorer.result()["reaction_forward_mover"] == expect, recolour
        assert scorer.result()["reaction_forward_touch"] == 1.0, recolour
    table = S.format_table({"model": "jump", "dataset": "color_reaction", "step": 7, "n_scenes": len(scenes),
                            "n_samples": 1, "image_size": SIZE, "context": 5,
                            **{f"test_score_{k}": v for k, v in got.items()}})
    assert "  the mover keeps its colour" in table and "reaction, backwards" in table


class Replay(Model):
    """A stand-in model whose samples are the true continuation or, with probability
    `p_shuffle` per sample (torch's RNG), the same frames shuffled in time."""

    def __init__(self, truth, p_shuffle):
        super().__init__()
        self.truth, self.p = truth, p_shuffle
        self.w = torch.nn.Parameter(torch.zeros(1))

    def sample(self, context_frames, context_viewpoints, query_viewpoints, n_samples):
        q = query_viewpoints[0, :, 0].long()
        out = []
        for _ in range(n_samples):
            x = self.truth[:, q]
            if float(torch.rand(())) < self.p:
                x = x[:, torch.randperm(len(q))]
            out.append(x)
        return torch.stack(out, 1)


def test_model_scores_read_the_min_mse_samples_and_are_deterministic(small_ts, ts_probe):
    from jumpbench.benchmarks.evaluation.evaluate import min_mse

    scenes = DS.Scenes(small_ts, "test", SIZE)
    frames = DS.to_float(B.stack(scenes, range(len(scenes)))["frames"])

    def scored(p, seed):
        counted = []
        rs = S.RunScores(ts_probe, scenes, range(len(scenes)), 5, n_samples=6, chunk=4, progress=counted.append)
        torch.manual_seed(seed)
        mse = min_mse(Replay(frames, p), frames, 5, 6, chunk=4, visit=rs.visit)
        row = rs.finish(Replay(frames, p), with_references=False)
        assert row["scores_definition"] == S.DEFINITIONS["traveling_salesman"]  # recorded with the scores
        assert counted == [4, 2] and sum(counted) == rs.draws(Replay(frames, p))  # the progress bar's count
        return float(mse.mean()), row

    mse, oracle = scored(0.0, 0)
    assert mse == 0.0 and oracle["test_score_route_validity"] == 1.0
    assert oracle["test_score_route_coverage"] == 1.0
    assert scored(1.0, 0)[1]["test_score_route_validity"] <= 0.2
    half = scored(0.5, 1)
    assert 0.2 < half[1]["test_score_route_validity"] < 0.8
    assert scored(0.5, 1) == half  # the same seed, the same samples, the same scores


def render_views(dice_root, index, digits_per_view):
    """The test scene's 3 hidden-face query views, each rendered with its own digit image
    on the hidden face (an independent draw per view), as (3, 3, S, S) floats."""
    from jumpbench.generators import dice_render
    from jumpbench.generators.dice import DiceConfig, DiceGenerator

    gen = DiceGenerator(DiceConfig(size=SIZE, digit_pool=10))
    spec = gen.spec("test", index)
    views = []
    for view, digit in zip(spec["query_views"][:3], digits_per_view):
        one = {**spec, "cameras": spec["cameras"][view:view + 1]}
        idx = np.array(spec["digit_indices"])
        idx[spec["hidden_face"]] = digit
        frame = dice_render.renderer(SIZE).render(one, gen.images[idx])[0]
        views.append(torch.from_numpy(frame).permute(2, 0, 1).float() / 255)
    return torch.stack(views)


def test_dice_truth_agrees_and_independent_views_do_not(dice_set):
    dprobe = probe(dice_set, 200, 64)
    assert dprobe.report["clean"]["digit"] >= 0.9
    scenes = DS.Scenes(dice_set, "test", SIZE)
    n = len(scenes)
    refs = S.references(dprobe, scenes, range(n), 3)
    assert refs["truth"]["agreement"] == 1.0 and refs["truth"]["diversity"] == 1.0
    assert refs["black"]["agreement"] == 0.0  # no digit is read on black views
    # each of 3 query views with its own random digit on the hidden face, 4 samples a scene
    rng = np.random.default_rng(0)
    samples = torch.stack([torch.stack([render_views(dice_set, i, rng.choice(10, 3, replace=True))
                                        for _ in range(4)]) for i in range(n)])     # (n, 4, 3, 3, S, S)
    indep = S.Scorer(dprobe, scenes, range(n), 3)
    indep.add(samples)
    assert indep.result()["agreement"] <= 0.35
    assert indep.result()["diversity"] > 1.5


def test_evaluator_and_score_command(small_ts, ts_probe, tmp_path):
    from jumpbench.benchmarks.training.train import train

    folder = train("jump", small_ts, "smoke", [f"data.image_size={SIZE}"], 0, tmp_path / "runs", progress=False)
    last = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][-1]
    assert {"test_score_route_validity", "test_score_truth_route_validity",
            "test_score_shuffled_route_validity"} <= set(last)
    assert last["test_score_truth_route_validity"] == 1.0
    got = []
    for out in ("a", "b"):
        res = run("score", folder, "--data", small_ts, "--out", tmp_path / out)
        assert res.exit_code == 0, res.output
        assert "route validity" in res.output
        got.append(json.loads((tmp_path / out / "scores.json").read_text()))
    assert got[0] == {**got[1], "run": got[0]["run"]}
    assert 0.0 <= got[0]["test_score_route_validity"] <= 1.0


def test_bad_input_is_one_line(small_ts, small_cr, tmp_path):
    one_line_error(run("score", tmp_path / "nothing"), "not a run folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "jump", "data": str(small_ts)}))
    one_line_error(run("score", tmp_path / "run"), "no checkpoint.pt")
    one_line_error(run("probe", "train", tmp_path / "nodata"), "no dataset at")
    one_line_error(run("probe", "train", small_cr, "--size", 24), "must divide")
    with pytest.raises(Exception, match="jumpbench probe train"):
        P.load_probe(small_cr, 16)


def test_context_layouts_gives_the_reaction_checks_of_prior_and_posterior(small_cr, cr_probe, tmp_path):
    """scripts/context_layouts.py on a Color Reaction run with a probe: each layout's MSEs and
    the reaction's checks of the prior's samples and of the posterior's reconstruction."""
    import subprocess
    import sys
    from pathlib import Path

    from jumpbench.benchmarks.training.train import train

    folder = train("jump", small_cr, "smoke", ["data.image_size=32", "model.image_size=32", "train.steps=2"], 0,
                   tmp_path / "runs", progress=False)
    script = Path(__file__).resolve().parents[1] / "scripts" / "context_layouts.py"
    proc = subprocess.run([sys.executable, str(script), str(folder), "--scenes", "3", "--samples", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reaction checks" in proc.stdout
    out = json.loads((folder / "context_layouts.json").read_text())
    assert len(out["layouts"]) == 3 and out["step"] == 2
    for row in out["layouts"].values():
        for who in ("prior", "posterior"):
            rates = row["checks"][who]
            assert set(rates) == {"all", *S.REACTION_CHECKS}, rates
            assert all(0.0 <= v <= 1.0 for v in rates.values()) and rates["all"] <= min(rates.values())
