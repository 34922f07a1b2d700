"""The jumpy sampling-speed benchmark, on tiny configs."""
import json
from dataclasses import dataclass

import torch

from jumpbench.benchmarks.speed.speed import format_table, jumpy_speed
from jumpbench.models import MODELS
from jumpbench.models.base import Model, ModelConfig

torch.set_num_threads(1)
TINY = {
    "cdna": dict(lstm_sizes=(4, 4, 8, 8, 8, 4, 4), num_masks=2),
    "sv2p": dict(lstm_sizes=(4, 4, 8, 8, 8, 4, 4), num_masks=2, encoder_channels=(4, 8, 8),
                 stage1_steps=0, stage2_steps=0, anneal_end=0),
    "sssm": dict(state_channels=8, z_channels=2, hidden_channels=8, encoder_channels=(4, 8, 8)),
}


@dataclass
class StubJumpConfig(ModelConfig):
    pass


class StubJump(Model):
    """Renders any frame in one step, as a jumpy model does."""

    def __init__(self, config):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def sample(self, context_frames, context_viewpoints, query_viewpoints, n_samples):
        B, K = query_viewpoints.shape[:2]
        x = self.conv(context_frames[:, -1])
        return x[:, None, None].expand(B, n_samples, K, *x.shape[1:])


def test_jumpy_speed_tiny(monkeypatch):
    monkeypatch.setitem(MODELS, "jump", (StubJump, StubJumpConfig))
    names = ["jump", "sssm", "sv2p", "cdna"]
    res = jumpy_speed(models=names, frames=8, ts=(3, 7), context=2, image_size=16, repeats=2,
                      config_overrides=TINY)
    json.dumps(res)
    assert list(res["seconds"]) == names and res["ts"] == [3, 7]
    assert all(len(s) == 2 and min(s) > 0 for s in res["seconds"].values())
    assert set(res["ratios"]) == {"sssm/jump", "sv2p/jump", "cdna/jump"}
    assert res["ratios"]["sv2p/jump"] == res["seconds"]["sv2p"][-1] / res["seconds"]["jump"][-1]
    table = format_table(res)
    assert "sv2p" in table and "sv2p/jump" in table


def test_jumpy_speed_without_jump_has_no_ratios():
    res = jumpy_speed(models=["cdna"], frames=5, ts=(4,), context=1, image_size=16, repeats=1, warmup=0,
                      config_overrides=TINY)
    assert res["ratios"] == {} and "cdna" in format_table(res)


def test_bench_train_writes_a_table_and_json(small_ts, tmp_path):
    """`jumpbench bench train`: every model and variant timed, end to end from the shards and
    from the frame cache, FLOPs counted, the conv ceiling measured in the same run."""
    from click.testing import CliRunner

    from jumpbench.cli import cli

    out = tmp_path / "train.json"
    res = CliRunner().invoke(cli, ["bench", "train", "--preset", "smoke", "--models", "jump,sssm", "--data",
                                   str(small_ts), "--steps", "1", "--repeats", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert set(r["models"]) == {"jump", "sssm"} and r["conv_ceiling_gflops"]["fp32"] > 0
    for m in r["models"].values():
        assert {"fp32", "end-to-end stream", "end-to-end cache"} <= set(m["ms"]) and m["gflop_per_step"] > 0
        assert all(t > 0 for t in m["ms"].values())
    assert "ms/step" in res.output
    bad = CliRunner().invoke(cli, ["bench", "train", "--models", "nope", "--out", str(out)])
    assert bad.exit_code != 0 and "unknown model" in bad.output


def test_bench_train_times_the_data_parallel_step(tmp_path):
    from click.testing import CliRunner

    from jumpbench.cli import cli

    out = tmp_path / "train.json"
    res = CliRunner().invoke(cli, ["bench", "train", "--preset", "smoke", "--models", "cdna", "--procs", "2",
                                   "--steps", "1", "--repeats", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ms = json.loads(out.read_text())["models"]["cdna"]["ms"]
    assert set(ms) >= {"fp32", "fp32 x2 procs"} and all(t > 0 for t in ms.values())
    bad = CliRunner().invoke(cli, ["bench", "train", "--preset", "smoke", "--models", "cdna", "--procs", "3",
                                   "--out", str(out)])
    assert bad.exit_code != 0 and "does not split evenly" in bad.output
