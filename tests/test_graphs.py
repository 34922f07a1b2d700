"""Steps replayed from CUDA graphs (training/graphs.py), as far as a CPU can check them: the
schedule a replay is fed, the per-shape graphs, their inputs and gradients (a replay emulated
with a graph's memory semantics), the noise, the refusals, and frames held on the device."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jumpbench import cache as FC
from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.training import graphs as G
from jumpbench.benchmarks.training.train import forward, update
from jumpbench.errors import JumpbenchError
from jumpbench.models import MODELS
from jumpbench.models.base import pixel_var
from conftest import one_line_error, run
from test_models import make_batch, tiny_config

CPU = torch.device("cpu")


class EmulatedGraphs(G.GraphedStep):
    """A CUDA graph's semantics on the CPU: capturing records the step at the capture step (its
    Python values baked in, its noise drawn); a replay recomputes that recorded step from the
    graph's own input tensors and writes the outputs and gradients into the captured tensors."""

    def _capture(self, inputs, step):
        out = self._forward_backward(inputs, step)
        return out, [p.grad for p in self.params], None, out["loss"].clone()

    def _replay(self, entry):
        out = self._forward_backward(entry.inputs, entry.step)  # the capture's step, as a graph would
        for k, v in out.items():
            entry.out[k].copy_(v)
        for g, p in zip(entry.grads, self.params):
            g.copy_(p.grad)


@pytest.mark.parametrize("name", ["jump", "gqn"])
def test_a_batch_feeds_the_schedule_of_its_step(name):
    """forward reads the pixel variance from the batch when it is there (step_inputs)."""
    cfg = tiny_config(name, pixel_var_schedule="linear", pixel_var_start=2.0, pixel_var_end=0.5, pixel_var_steps=10)
    torch.manual_seed(0)
    model = MODELS[name][0](cfg)
    assert model.step_inputs(7) == {"pixel_var": pixel_var(cfg, 7)} != model.step_inputs(0)
    batch = make_batch()
    torch.manual_seed(1)
    at_7 = model(batch, step=7)
    torch.manual_seed(1)
    fed = model({**batch, "pixel_var": torch.tensor(pixel_var(cfg, 7))}, step=0)
    torch.manual_seed(1)
    at_0 = model(batch, step=0)
    assert torch.equal(at_7["loss"], fed["loss"]) and not torch.equal(at_0["loss"], fed["loss"])


def test_models_whose_loss_branches_on_the_step_have_no_step_inputs():
    for name in ("cdna", "sv2p", "sssm"):
        assert MODELS[name][0](tiny_config(name)).step_inputs(5) is None


def test_replayed_steps_train_as_eager_steps_do():
    """Six steps of three batch shapes: one graph per shape; every replay gets its own batch and
    its own pixel variance (a linear anneal, so a stale one would show), draws the noise an
    eager step draws, and leaves the same gradients: the same losses and weights as eager."""
    cfg = tiny_config("jump", pixel_var_schedule="linear", pixel_var_start=2.0, pixel_var_end=0.5,
                      pixel_var_steps=4)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = MODELS["jump"][0](cfg)
        models.append((m, torch.optim.Adam(m.parameters(), lr=1e-3)))
    (eager, opt_e), (replayed, opt_r) = models
    graphed = EmulatedGraphs(replayed, lambda b, s: forward(replayed, b, s, "fp32", CPU, cache=False), CPU)
    shapes = [(2, 1), (1, 2), (2, 1), (3, 1), (1, 2), (2, 1)]
    for step, (m, k) in enumerate(shapes):
        batch = make_batch(m=m, targets=tuple(range(m, m + k)), seed=step)
        torch.manual_seed(100 + step)
        a = forward(eager, batch, step, "fp32", CPU)
        update(eager, opt_e, a["loss"], 1e-3, 1.0)
        torch.manual_seed(100 + step)
        b = graphed(batch, step)
        assert float(b["pixel_var"]) == pytest.approx(pixel_var(cfg, step))
        assert torch.allclose(a["loss"].detach(), b["loss"], rtol=1e-5), step
        update(replayed, opt_r, None, 1e-3, 1.0)
    assert len(graphed.graphs) == 3
    for (n, p), q in zip(eager.named_parameters(), replayed.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def test_the_leg_captures_every_shape_random_split_draws_before_its_first_step():
    from types import SimpleNamespace as NS

    dc = NS(context_min=1, context_max=6, targets_min=1, targets=6)
    shapes = B.split_shapes(12, dc)
    assert len(shapes) == len(set(shapes)) == 36 and all(m + k <= 12 for m, k in shapes)
    g = torch.Generator().manual_seed(0)
    item = B.synthetic_item({"viewpoint_key": "timestamps", "frames": 12}, 2, 16)
    drawn = set()
    for _ in range(400):
        b = B.random_split(item["frames"], item["viewpoints"], dc, g)
        drawn.add((b["context_frames"].shape[1], b["target_frames"].shape[1]))
    assert drawn <= set(shapes) and len(drawn) > 30
    cfg = tiny_config("jump", frames=12)
    model = MODELS["jump"][0](cfg)
    graphed = EmulatedGraphs(model, lambda b, s: forward(model, b, s, "fp32", CPU, cache=False), CPU)
    small = NS(context_min=1, context_max=3, targets_min=1, targets=2)
    batches = B.shape_batches(item, small)
    assert [(b["context_frames"].shape[1], b["target_frames"].shape[1]) for b in batches] == B.split_shapes(12, small)
    assert graphed.capture(batches, 0) == len(batches) == 6
    assert graphed.capture(batches[:2], 0) == 6  # captured once


def test_a_replay_that_differs_from_the_pass_it_recorded_is_refused():
    class Wrong(EmulatedGraphs):
        def _replay(self, entry):
            super()._replay(entry)
            entry.out["loss"].mul_(1.01)

    model = MODELS["jump"][0](tiny_config("jump"))
    graphed = Wrong(model, lambda b, s: forward(model, b, s, "fp32", CPU, cache=False), CPU)
    with pytest.raises(JumpbenchError, match="replayed from the graph"):
        graphed(make_batch(), 0)


def test_graphs_are_refused_where_they_cannot_work():
    from jumpbench.models.cdna import CDNA
    from jumpbench.models.jump import JUMP

    tc = SimpleNamespace(cuda_graph=True, compile=False)
    cuda = torch.device("cuda")
    G.check(tc, JUMP, cuda, 1)  # the one case that captures
    G.check(SimpleNamespace(cuda_graph=False, compile=True), CDNA, CPU, 4)  # off: nothing to check
    for args, text in [((tc, JUMP, CPU, 1), "need a CUDA GPU"), ((tc, JUMP, cuda, 2), "data-parallel"),
                       ((SimpleNamespace(cuda_graph=True, compile=True), JUMP, cuda, 1), "set one of them"),
                       ((tc, CDNA, cuda, 1), "CDNA's loss reads the training step")]:
        with pytest.raises(JumpbenchError, match=text):
            G.check(*args)


def test_a_cpu_run_asked_for_cuda_graphs_is_refused_in_one_line(small_cr, tmp_path):
    result = run("run", "--model", "jump", "--data", small_cr, "--preset", "smoke", "--out", tmp_path,
                 "--set", "train.cuda_graph=true")
    one_line_error(result, "CUDA graphs need a CUDA GPU")
    assert not list(tmp_path.rglob("config.json"))


def test_frames_held_on_the_device_give_the_batches_the_host_gives(small_cr):
    """FrameCache.on_device (a GPU's path, here on the CPU): the same scenes per step, every
    scene checked against the index before the frames move."""
    scenes = DS.Scenes(small_cr, "train", 16)
    cache = FC.FrameCache(scenes, progress=False)
    cache.checked[:] = False
    sampler = B.StepBatches(len(scenes), 8, 0, 0, 5)
    host = list(cache.batches(sampler))
    device = list(cache.on_device(sampler, CPU))
    assert cache.checked.all()
    assert len(host) == len(device) == 5
    for h, d in zip(host, device):
        assert all(torch.equal(h[k], d[k]) for k in ("frames", "viewpoints", "index"))
    assert list(cache.batches(sampler, CPU))[0]["index"].tolist() == np.asarray(next(iter(sampler))).tolist()
