"""The dice path end to end: a tiny MNIST Dice set, JUMP and GQN trained with the smoke
preset on it (hidden-face evaluation), then `jumpbench consistency` on the runs."""
import json

import pytest
from click.testing import CliRunner

from jumpbench.benchmarks.training.train import train
from jumpbench.cli import cli
from conftest import one_line_error, run


@pytest.fixture(scope="module")
def dice(tmp_path_factory):
    from jumpbench.generators.base import generate
    from jumpbench.generators.dice import DiceConfig, DiceGenerator

    out = tmp_path_factory.mktemp("dice")
    return generate(DiceGenerator(DiceConfig(size=32)), out, {"train": 4, "test": 3}, shard_size=4,
                    progress=False)


@pytest.mark.parametrize("model", ["jump", "gqn"])
def test_train_on_dice_then_consistency(dice, tmp_path, model):
    folder = train(model, dice, "smoke", [], 0, tmp_path, progress=False)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_loss"] > 0 and "test_min_mse" not in rows[-1]  # no forward prediction on dice
    r = CliRunner().invoke(cli, ["consistency", str(folder), "--scenes", "3", "--draws", "2"])
    assert r.exit_code == 0, r.output
    assert "KL1" in r.output and "KL3" in r.output
    result = json.loads((folder / "consistency.json").read_text())
    assert result["n_scenes"] == 3 and result["units"] == "nats per scene"
    assert result["step"] == json.loads((folder / "legs.json").read_text())[-1]["to"]  # the weights measured
    assert result["kl1"] >= 0 and result["kl3"] >= 0 and result["nelbo"] > 0
    assert len(result["per_scene"]["kl3"]) == 3


def test_consistency_refuses_videos_and_non_runs(small_ts, tmp_path):
    folder = train("jump", small_ts, "smoke", [], 0, tmp_path, progress=False)
    one_line_error(run("consistency", folder), "MNIST Dice")
    one_line_error(run("consistency", tmp_path), "not a run folder")
