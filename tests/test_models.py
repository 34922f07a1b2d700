"""Tests of jumpbench.models: every registered model with a tiny config, then JUMP and GQN
specifics (consistency, ELBO terms, pixel-variance schedules, a few training steps)."""
import dataclasses
import json

import pytest
import torch

from jumpbench.models import MODELS
from jumpbench.models.gqn import GQN, GQNConfig
from jumpbench.models.jump import JUMP, JUMPConfig

torch.set_num_threads(1)

# small sizes for whichever of these fields a model's config has
TINY = dict(image_size=16, frames=6, viewpoint_dim=1,
            nt=2, nf_to_hidden=8, nf_enc=8, nf_to_obs=8, nf_dec=8, nf_z=2, kernel=3,   # JUMP, GQN
            state_channels=8, z_channels=2, hidden_channels=8, encoder_channels=(4, 8, 8),  # sSSM, SV2P
            lstm_sizes=(4, 4, 8, 8, 8, 8, 4), num_masks=2, kernel_size=3)               # CDNA, SV2P


def tiny_config(name: str, **overrides):
    cls = MODELS[name][1]
    fields = {f.name for f in dataclasses.fields(cls)}
    return dataclasses.replace(cls(), **{k: v for k, v in {**TINY, **overrides}.items() if k in fields})


def make_batch(B=2, m=3, targets=(3, 4, 5), size=16, seed=0):
    """A narratives-style batch of 6-frame videos: context frames 0..m-1, targets the rest
    (what non-jumpy models train on)."""
    g = torch.Generator().manual_seed(seed)
    K = len(targets)
    return {"context_frames": torch.rand(B, m, 3, size, size, generator=g),
            "context_viewpoints": torch.arange(m, dtype=torch.float).view(1, m, 1).repeat(B, 1, 1),
            "target_frames": torch.rand(B, K, 3, size, size, generator=g),
            "target_viewpoints": torch.tensor(targets, dtype=torch.float).view(1, K, 1).repeat(B, 1, 1)}


def dice_batch(B=2, M=3, K=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"context_frames": torch.rand(B, M, 3, size, size, generator=g),
            "context_viewpoints": torch.randn(B, M, 7, generator=g),
            "target_frames": torch.rand(B, K, 3, size, size, generator=g),
            "target_viewpoints": torch.randn(B, K, 7, generator=g)}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    torch.manual_seed(0)
    cls, _ = MODELS[request.param]
    return request.param, cls(tiny_config(request.param))


def test_forward_loss_and_gradients(model):
    name, m = model
    out = m(make_batch(), step=10)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        if name in ("jump", "gqn"):
            assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("step", [0, 20000, 10 ** 6])
def test_every_parameter_gets_a_gradient_in_every_training_phase(model, step):
    """Data-parallel training (DistributedDataParallel without its search for unused
    parameters) needs every parameter in every step's graph: SV2P's phases (15k + 15k steps by
    default) and the schedules must not leave one out."""
    name, m = model
    m(make_batch(), step=step)["loss"].backward()
    missing = [pname for pname, p in m.named_parameters() if p.grad is None]
    assert not missing, f"{name} at step {step}: no gradient for {missing}"


def test_sample_shape_and_range(model):
    name, m = model
    b = make_batch(targets=(3, 5))   # queries may skip frames
    s = m.sample(b["context_frames"], b["context_viewpoints"], b["target_viewpoints"], n_samples=3)
    assert s.shape == (2, 3, 2, 3, 16, 16)
    assert s.min() >= 0 and s.max() <= 1


@pytest.mark.parametrize("cls,cfg_cls", [(JUMP, JUMPConfig), (GQN, GQNConfig)])
def test_consistency_of_repeated_queries(cls, cfg_cls):
    torch.manual_seed(0)
    m = cls(tiny_config("jump" if cls is JUMP else "gqn", viewpoint_dim=7))
    b = dice_batch()
    query = b["target_viewpoints"][:, :1].repeat(1, 2, 1)          # the same query twice
    s = m.sample(b["context_frames"], b["context_viewpoints"], query, n_samples=2)  # (B, 2, 2, 3, H, W)
    same_in_sample = torch.allclose(s[:, :, 0], s[:, :, 1], atol=1e-6)
    assert same_in_sample == (cls is JUMP)   # JUMP: one latent per sample; GQN: one per query
    assert (s[:, 0] - s[:, 1]).abs().max() > 1e-6                  # two samples differ


@pytest.mark.parametrize("cls", [JUMP, GQN])
@pytest.mark.parametrize("K", [1, 3])
def test_elbo_terms(cls, K):
    torch.manual_seed(0)
    m = cls(tiny_config(cls.__name__.lower(), viewpoint_dim=7))
    b = dice_batch(K=K)
    terms = m.elbo_terms(b["context_frames"], b["context_viewpoints"], b["target_frames"],
                         b["target_viewpoints"])
    assert terms["nll"].shape == terms["kl"].shape == (2,)
    assert (terms["kl"] >= 0).all() and torch.isfinite(terms["nll"]).all()
    low = m.elbo_terms(b["context_frames"], b["context_viewpoints"], b["target_frames"],
                       b["target_viewpoints"], pixel_var=0.01)
    assert (low["nll"] > terms["nll"]).all()   # a smaller variance costs more for these random frames


def test_gqn_elbo_is_factored_over_targets():
    torch.manual_seed(0)
    m = GQN(tiny_config("gqn", viewpoint_dim=7, nt=1))   # one DRAW step: the KL does not depend on z
    b = dice_batch(K=3)
    args = b["context_frames"], b["context_viewpoints"]
    kl = m.elbo_terms(*args, b["target_frames"], b["target_viewpoints"])["kl"]
    parts = sum(m.elbo_terms(*args, b["target_frames"][:, i:i + 1], b["target_viewpoints"][:, i:i + 1])["kl"]
                for i in range(3))
    assert torch.allclose(kl, parts, rtol=1e-5)


def test_pixel_variance_schedules():
    from jumpbench.models.base import final_pixel_var, pixel_var

    lin = JUMPConfig()
    assert [pixel_var(lin, s) for s in (0, 50_000, 100_000, 300_000)] == pytest.approx([2.0, 1.25, 0.5, 0.5])
    dice = JUMPConfig(pixel_var_schedule="piecewise")
    steps = (0, 99_999, 100_000, 149_999, 150_000, 199_999, 200_000, 10 ** 6)
    assert [pixel_var(dice, s) for s in steps] == [2.0, 2.0, 0.2, 0.2, 0.4, 0.4, 0.9, 0.9]
    assert final_pixel_var(lin) == 0.5 and final_pixel_var(dice) == 0.9


def test_config_validation_and_json_round_trip():
    for bad in (dict(kernel=4), dict(nt=0), dict(pixel_var_schedule="cosine"),
                dict(pixel_var_values=(1.0, 2.0)), dict(image_size=24, stride_to_hidden=4)):
        with pytest.raises(ValueError):
            JUMPConfig(**bad)
    cfg = JUMPConfig(pixel_var_schedule="piecewise", nt=6, nf_to_hidden=128, nf_dec=128)
    again = JUMPConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg


def test_time_frequencies_encode_timestamps_at_several_scales():
    from jumpbench.models.draw import ViewpointEncoding

    encode = ViewpointEncoding.of(JUMPConfig(frames=6, time_frequencies=3))
    t = torch.arange(6, dtype=torch.float).view(1, 6, 1)
    v = encode(t)                                                  # (1, 6, 1 + 2*3)
    assert encode.features == 7 and v.shape == (1, 6, 7)
    angles = (t / 6) * torch.tensor([1.0, 2.0, 4.0]) * torch.pi
    assert torch.allclose(v, torch.cat([t / 6, angles.sin(), angles.cos()], -1), atol=1e-6)
    assert torch.allclose(ViewpointEncoding.of(JUMPConfig(frames=6))(t), t / 6)  # 0: the timestamp alone
    with pytest.raises(ValueError, match="time_frequencies"):
        JUMPConfig(viewpoint_dim=7, time_frequencies=2)              # cameras are not timestamps
    with pytest.raises(ValueError, match="time_frequencies"):
        JUMPConfig(time_frequencies=-1)


@pytest.mark.parametrize("cls", [JUMP, GQN])
def test_models_see_the_encoded_time(cls):
    """With time_frequencies the models train and sample, and the query time changes what they
    draw (the encoded features reach the renderer)."""
    torch.manual_seed(0)
    m = cls(tiny_config(cls.__name__.lower(), time_frequencies=2)).eval()
    b = make_batch()
    assert torch.isfinite(m(b, 0)["loss"])
    torch.manual_seed(1)
    a = m.sample(b["context_frames"], b["context_viewpoints"], b["target_viewpoints"][:, :1], 1)
    torch.manual_seed(1)
    c = m.sample(b["context_frames"], b["context_viewpoints"], b["target_viewpoints"][:, 1:2], 1)
    assert a.shape == c.shape and not torch.equal(a, c)


@pytest.mark.parametrize("cls", [JUMP, GQN])
def test_the_viewpoint_can_enter_the_representation_after_its_second_layer(cls):
    """viewpoint_layer=2 concatenates the viewpoint at H/4 (GQN's tower): the first layers see
    RGB alone, the representation still depends on the viewpoint, and the model trains; the
    default (0) keeps the parameter layout of earlier checkpoints."""
    torch.manual_seed(0)
    m = cls(tiny_config(cls.__name__.lower(), viewpoint_layer=2, time_frequencies=2))
    assert m.represent.net[0].in_channels == 3 and m.represent.net[4].in_channels == 16 + 5
    old = cls(tiny_config(cls.__name__.lower(), time_frequencies=2))
    assert old.represent.net[0].in_channels == 3 + 5 and old.represent.net[4].in_channels == 16
    b = make_batch()
    out = m(b, 0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and m.represent.net[0].weight.grad.abs().sum() > 0
    v = m.encode(b["context_viewpoints"])
    r1 = m.represent(b["context_frames"], v)
    r2 = m.represent(b["context_frames"], v + 0.5)
    assert r1.shape == (2, 3, 32, 4, 4) and not torch.allclose(r1, r2)
    with pytest.raises(ValueError, match="viewpoint_layer"):
        JUMPConfig(viewpoint_layer=1)


def test_the_latent_core_traces_its_prior_and_posterior():
    """ConvDRAW(trace=[...]) records each DRAW step's prior and posterior Gaussians, the ones
    its KL is made of (scripts/latent_snr.py reads them)."""
    torch.manual_seed(0)
    m = JUMP(tiny_config("jump"))
    b = make_batch()
    r = m.represent_sum(b["context_frames"], b["context_viewpoints"])
    rt = m.represent_sum(b["target_frames"], b["target_viewpoints"])
    trace = []
    torch.manual_seed(1)
    _, z, kl = m.latent(r, rt, trace=trace)
    torch.manual_seed(1)
    _, z0, kl0 = m.latent(r, rt)
    assert torch.equal(z, z0) and torch.equal(kl, kl0)          # tracing changes nothing
    cfg = m.config
    assert len(trace) == cfg.nt and set(trace[0]) == {"mu_p", "logvar_p", "mu_q", "logvar_q"}
    assert trace[0]["mu_p"].shape == (2, cfg.nf_z, cfg.grid, cfg.grid)
    from jumpbench.models.draw import gaussian_kl
    again = sum(gaussian_kl(t["mu_q"], t["logvar_q"], t["mu_p"], t["logvar_p"]).flatten(1).sum(1) for t in trace)
    assert torch.allclose(again, kl, rtol=1e-5)
    prior_only = []
    m.latent(r, trace=prior_only)
    assert set(prior_only[0]) == {"mu_p", "logvar_p"}


def test_jump_loss_falls_with_adam():
    torch.manual_seed(0)
    m = JUMP(tiny_config("jump"))
    b = make_batch(B=4)
    b["target_frames"] = torch.linspace(0, 1, 3).view(1, 1, 3, 1, 1).expand(4, 3, 3, 16, 16).clone()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = m(b, step=200_000)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 10
