"""The video-prediction baselines (sSSM, SV2P, CDNA) and the forward-prediction min-MSE."""
import pytest
import torch
from torch import nn

from jumpbench.benchmarks.evaluation.evaluate import baseline_mse, min_mse, sample_metrics
from jumpbench.models import MODELS
from jumpbench.models.base import ground_truth_fraction
from jumpbench.models.cdna import CDNAConfig
from jumpbench.models.sv2p import SV2PConfig

torch.set_num_threads(1)
B, T, S = 2, 6, 16  # batch, frames, image size
TINY = {
    "cdna": dict(lstm_sizes=(4, 4, 8, 8, 8, 4, 4), num_masks=2),
    "sv2p": dict(lstm_sizes=(4, 4, 8, 8, 8, 4, 4), num_masks=2, encoder_channels=(4, 8, 8),
                 stage1_steps=0, stage2_steps=0, anneal_end=0),
    "sssm": dict(state_channels=8, z_channels=2, hidden_channels=8, encoder_channels=(4, 8, 8)),
}
BASELINES = sorted(TINY)


def make(name, **kw):
    cls, cfg = MODELS[name]
    torch.manual_seed(0)
    return cls(cfg(image_size=S, frames=T, **{**TINY[name], **kw}))


def times(idx):
    return torch.tensor(idx, dtype=torch.float32).view(1, -1, 1).expand(B, -1, -1)  # (B, K, 1)


def video():
    """A square moving one pixel per frame over a dark background, its colour per video."""
    g = torch.Generator().manual_seed(1)
    v = torch.full((B, T, 3, S, S), 0.1)                      # (B, T, 3, H, W)
    colour = torch.rand(B, 3, 1, 1, generator=g)
    for t in range(T):
        v[:, t, :, 5:10, 3 + t:8 + t] = colour
    return v


def batch(m=2, v=None):
    v = video() if v is None else v
    return {"context_frames": v[:, :m], "context_viewpoints": times(range(m)),
            "target_frames": v[:, m:], "target_viewpoints": times(range(m, T))}


def test_registry():
    for name in BASELINES:
        cls, cfg = MODELS[name]
        assert cls.jumpy is False and cls.__name__ == name.upper()


@pytest.mark.parametrize("name", BASELINES)
def test_trains_on_a_fixed_batch(name):
    model, b = make(name), batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_at(step):
        torch.manual_seed(123)
        return float(model(b, step)["loss"].detach())

    before = loss_at(0)
    for step in range(25):
        out = model(b, step)
        assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert loss_at(0) < 0.9 * before


@pytest.mark.parametrize("name", BASELINES)
def test_sample_shapes(name):
    model, v = make(name).eval(), video()
    s = model.sample(v[:, :2], times([0, 1]), times([5, 2, 3]), 3)
    assert s.shape == (B, 3, 3, 3, S, S)
    assert s.min() >= 0 and s.max() <= 1


def test_sv2p_samples_differ_cdna_samples_do_not():
    v = video()
    for name, differ in (("sv2p", True), ("cdna", False)):
        s = make(name).eval().sample(v[:, :2], times([0, 1]), times([4, 5]), 2)
        assert (not torch.allclose(s[:, 0], s[:, 1])) == differ, name


def test_sssm_decodes_only_the_queried_frames():
    model, v, calls = make("sssm").eval(), video(), []
    model.decoder.register_forward_hook(lambda *a: calls.append(1))
    model.sample(v[:, :2], times([0, 1]), times([5]), 1)
    assert len(calls) == 1


@pytest.mark.parametrize("name", BASELINES)
def test_not_jumpy_raises(name):
    model, v = make(name), video()
    with pytest.raises(ValueError, match="not jumpy"):
        model.sample(v[:, :2], times([1, 2]), times([4]), 1)   # context is not a prefix
    with pytest.raises(ValueError, match="not jumpy"):
        model.sample(v[:, :2], times([0, 1]), times([1]), 1)   # query inside the context
    bad = batch()
    bad["target_viewpoints"] = times([3, 4, 5, 6])             # a gap after the context
    with pytest.raises(ValueError, match="consecutive"):
        model(bad, 0)


def test_config_validation_and_schedules():
    with pytest.raises(ValueError):
        CDNAConfig(image_size=12)
    with pytest.raises(ValueError):
        SV2PConfig(stage1_steps=10, stage2_steps=10, anneal_end=5)
    c = SV2PConfig(stage1_steps=10, stage2_steps=10, anneal_end=30, kl_weight=1.0)
    assert [c.kl_multiplier(s) for s in (0, 19, 20, 25, 30, 99)] == [0, 0, 0, 0.5, 1, 1]
    assert ground_truth_fraction(0, 900.0) > 0.99 > 0.01 > ground_truth_fraction(20000, 900.0)
    assert ground_truth_fraction(0, 0) == 0


class Stub(nn.Module):
    """Samples the true continuation plus offset[i] for sample i (counted across calls)."""

    def __init__(self, truth, offsets):
        super().__init__()
        self.truth, self.offsets, self.drawn = truth, offsets, 0

    def sample(self, context_frames, context_viewpoints, query_viewpoints, n_samples):
        m = context_frames.shape[1]
        assert torch.equal(context_viewpoints, times(range(m)))
        assert torch.equal(query_viewpoints, times(range(m, T)))
        off = torch.tensor(self.offsets[self.drawn:self.drawn + n_samples])
        self.drawn += n_samples
        return self.truth[:, None, m:] + off.view(1, -1, 1, 1, 1, 1)


def test_min_mse_zero_on_truth_and_minimum_over_samples():
    v = video()
    assert torch.equal(min_mse(Stub(v, [0.0] * 4), v, m=2, n_samples=4, chunk=3), torch.zeros(B))
    stub = Stub(v, [0.3, 0.2, -0.1, 0.4, 0.25])
    got = min_mse(stub, v, m=3, n_samples=5, chunk=2)
    assert stub.drawn == 5
    assert torch.allclose(got, torch.full((B,), 0.01))


def test_time_variation_is_one_for_the_truth_and_zero_for_a_frozen_frame():
    v = video()
    m = 2
    truth = sample_metrics(Stub(v, [0.0] * 3), v, m, 3)
    assert truth["test_min_mse"] == 0 and truth["test_time_variation"] == pytest.approx(1.0, rel=1e-5)

    class Frozen(Stub):  # the last context frame at every query time
        def sample(self, context_frames, context_viewpoints, query_viewpoints, n_samples):
            K = query_viewpoints.shape[1]
            return context_frames[:, None, -1:].expand(-1, n_samples, K, -1, -1, -1)
    assert sample_metrics(Frozen(v, []), v, m, 3)["test_time_variation"] == 0


def test_the_static_oracle_keeps_what_stands_still_and_erases_what_moves():
    """A still square and a 2x2 dot moving one pixel a frame: the oracle (each pixel's median
    over the video) scores exactly the dot's pixels, so its MSE is the dot's share."""
    T, S = 9, 16
    frames = torch.zeros(1, T, 3, S, S)
    frames[..., 2:6, 2:6] = 0.5                      # the still shape, in every frame
    for t in range(T):
        frames[0, t, :, 10:12, t:t + 2] = 1.0        # the mover
    base = baseline_mse(frames, 3)
    assert base["static_oracle"] == pytest.approx(4 / S ** 2)   # 4 of 256 pixels at 1.0
    assert base["repeat_last"] > base["static_oracle"] and base["black"] > base["repeat_last"]


def test_min_mse_on_a_baseline():
    got = min_mse(make("sv2p"), video(), m=2, n_samples=3, chunk=2)
    assert got.shape == (B,) and (got > 0).all()


def test_cdna_and_sv2p_score_only_the_frames_after_the_context():
    """Finn et al.'s loss pairs images[m:] with the predictions of frames m..T-1: changing a
    context frame's *prediction target* (frame 1 of a 3-frame context) leaves the loss alone."""
    for name in ("cdna", "sv2p"):
        model = make(name)
        b = batch(m=3)
        torch.manual_seed(0)
        out = model(b, 100)
        if name == "cdna":
            assert torch.allclose(out["loss"], out["mse"])
        # corrupting the context frames' own *predictions* cannot matter: make the model's
        # prediction of frame 1 (inside the context) arbitrary and the loss stays the same
        real = model.predictor.rollout

        def rollout(video, steps, m, p_truth=0.0, latent=None):
            pred = real(video, steps, m, p_truth, latent).clone()
            pred[:, :m - 1] = torch.rand_like(pred[:, :m - 1])
            return pred

        model.predictor.rollout = rollout
        torch.manual_seed(0)
        out2 = model(b, 100)
        assert torch.allclose(out["loss"], out2["loss"])


def test_sv2p_kl_is_summed_over_latent_units():
    model = make("sv2p", kl_weight=1.0)
    units = model.config.latent_channels * (S // 8) ** 2

    class Fixed(nn.Module):  # q = N(1, 1) everywhere: KL to N(0, 1) is 0.5 per unit
        def forward(self, video):
            shape = (video.shape[0], model.config.latent_channels, S // 8, S // 8)
            return torch.ones(shape), torch.zeros(shape)

    model.tower = Fixed()
    out = model(batch(), 10_000)
    assert out["kl"].item() == pytest.approx(0.5 * units)


def test_sssm_context_reaches_the_state_without_the_latents():
    """With a collapsed posterior (z ignores the frames) the deterministic initial state still
    carries the context: two different contexts give different samples under the same noise."""
    model = make("sssm")
    for head in (model.posterior, model.prior):
        nn.init.zeros_(head[-1].weight)
        nn.init.zeros_(head[-1].bias)
    v1, v2 = video(), video() * 0.3
    states = []
    for v in (v1, v2):  # the state the prior rolls forward from, after filtering the context
        e = model.encoder(v[:, :3].flatten(0, 1)).unflatten(0, (B, 3))
        torch.manual_seed(0)
        states.append(model.step(model.initial_state(e), e[:, 2])[0])
    assert (states[0] - states[1]).abs().mean() > 1e-3 * states[0].abs().mean()


def test_sssm_free_nats_and_warmup():
    c = MODELS["sssm"][1](image_size=S, frames=T, kl_weight=2.0, kl_warmup=100, **TINY["sssm"])
    assert [c.kl_multiplier(s) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    model = make("sssm", free_nats=1e6)  # every KL below the free nats: no gradient through the KL
    out = model(batch(m=3), 0)
    out["loss"].backward()
    g = [p.grad for p in model.posterior.parameters() if p.grad is not None]
    # the posterior still gets gradient from the likelihood, through z; only the KL term is flat
    assert g


def test_sssm_prior_rollouts_stay_finite():
    """A prior that asks for a huge std (log std clamped at log_std_max) and a transition that
    would amplify the state: the bounded residual step keeps a long rollout finite."""
    model = make("sssm")
    with torch.no_grad():
        head = model.prior[-1]
        head.bias[model.config.z_channels:] = 50.0           # log std far above the bound
        for p in model.transition.parameters():
            p.mul_(100.0)                                      # an amplifying transition
    v = video()
    out = model.sample(v[:, :3], times(range(3)), times(range(3, T)), 4)
    assert torch.isfinite(out).all()
