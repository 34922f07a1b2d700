"""Layers shared by JUMP and GQN: a convolutional LSTM cell, a convolutional DRAW core, the
representation network M_theta, the viewpoint encoding and a closed-form Gaussian KL.

Kumar, Eslami et al., "Consistent Generative Query Networks", ICLR 2019, section 3 and
Appendix B; conv-DRAW from Gregor et al., "Towards Conceptual Compression", NeurIPS 2016;
the GQN generator layout from Eslami et al., "Neural scene representation and rendering",
Science 2018.

Resolutions (Appendix B's names; the paper is silent on where its strides apply, we follow
torch-jump's reading): M_theta maps an H x W frame to a representation at H/4 (two stride-2
layers). A DRAW core reads its conditioning and posterior inputs at that resolution with a
`stride_to_hidden` conv into `nf_enc` channels, so its LSTMs run on a grid of
G = H / (4 * stride_to_hidden) (8x8 for 64x64 frames at the paper's stride 2). Its canvas
has `nf_to_obs` channels at G * `stride_to_obs`, written by a transposed conv and read back
by a `stride_to_obs` conv into `nf_dec` channels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

REP_CHANNELS = 32  # the last layer of M_theta (Appendix B)
VIEWPOINT_LAYERS = (0, 2)  # where M_theta can take the viewpoint (Representation)


def broadcast(v: torch.Tensor, size: int) -> torch.Tensor:
    """Viewpoints (N, D) -> (N, D, size, size), constant over space."""
    return v[:, :, None, None].expand(-1, -1, size, size)


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))), elementwise, in nats, in fp32
    (under bf16 autocast the heads' outputs are bf16; the KL is summed over thousands of units)."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    """-log N(x; mean, var) elementwise, in nats, with the normalising constant, in fp32."""
    x, mean = x.float(), mean.float()
    var = torch.as_tensor(var, dtype=torch.float32, device=x.device)  # a tensor: torch.compile does
    return 0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))  # not recompile as it anneals


class ViewpointEncoding(nn.Module):
    """Viewpoints (..., D) -> (..., features): the viewpoints times `scale`, and for timestamps
    (D = 1) with `frequencies` F > 0 also sin and cos of 2^k pi t for k < F. The paper feeds
    the timestamp as the viewpoint without saying how; GQN feeds camera angles as their sines
    and cosines. A raw t reaches the networks only linearly, so a frame's time must be told
    apart by tiny offsets (0.05 between frames of 20); the sines and cosines make each time
    distinct at several scales (measured: with t alone the renderer's output did not vary with
    the query time after 4,000 steps, docs/lab-log.md). No parameters: a model's weights are
    the same with or without it."""

    def __init__(self, dim: int, scale: float, frequencies: int = 0):
        super().__init__()
        self.dim, self.scale, self.frequencies = dim, scale, frequencies
        self.features = dim + 2 * frequencies

    @classmethod
    def of(cls, cfg) -> "ViewpointEncoding":
        """From a JUMP or GQN config: viewpoint_scale, or by default 1/frames for timestamps
        (narrative times -> [0, 1)) and 1 for cameras; time_frequencies."""
        scale = cfg.viewpoint_scale
        if scale is None:
            scale = 1.0 / cfg.frames if cfg.viewpoint_dim == 1 else 1.0
        return cls(cfg.viewpoint_dim, scale, cfg.time_frequencies)

    def forward(self, viewpoints: torch.Tensor) -> torch.Tensor:
        v = viewpoints * self.scale
        if not self.frequencies:
            return v
        angles = v * (math.pi * 2.0 ** torch.arange(self.frequencies, device=v.device, dtype=v.dtype))
        return torch.cat([v, torch.sin(angles), torch.cos(angles)], -1)


class Representation(nn.Module):
    """M_theta (Appendix B): a conv net applied to each (viewpoint, frame) pair; 8/16/32/32
    channels, kernels 2x2 s2, 2x2 s2, 3x3 s1, 3x3 s1, ReLU between the layers, none after the
    last. The paper does not say where the viewpoint enters; it is broadcast over space and
    concatenated to the input of layer `viewpoint_layer` (0: to the frame's RGB channels;
    2: to the output of the second layer, at H/4, where GQN's tower concatenates it)."""

    def __init__(self, viewpoint_dim: int, viewpoint_layer: int = 0):
        super().__init__()
        if viewpoint_layer not in VIEWPOINT_LAYERS:
            raise ValueError(f"viewpoint_layer must be one of {VIEWPOINT_LAYERS}, got {viewpoint_layer}")
        self.viewpoint_layer = viewpoint_layer
        early, late = (viewpoint_dim, 0) if viewpoint_layer == 0 else (0, viewpoint_dim)
        self.net = nn.Sequential(
            nn.Conv2d(3 + early, 8, 2, stride=2), nn.ReLU(),
            nn.Conv2d(8, 16, 2, stride=2), nn.ReLU(),
            nn.Conv2d(16 + late, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, REP_CHANNELS, 3, padding=1),
        )

    def forward(self, frames: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """frames (B, M, 3, H, W), viewpoints (B, M, D) -> per pair (B, M, 32, H/4, W/4)."""
        B, M, C, H, W = frames.shape
        x, v = frames.reshape(B * M, C, H, W), viewpoints.reshape(B * M, -1)
        if self.viewpoint_layer == 0:
            x = torch.cat([x, broadcast(v, H)], 1)
        x = self.net[:4](x)  # (B*M, 16, H/4, W/4)
        if self.viewpoint_layer == 2:
            x = torch.cat([x, broadcast(v, x.shape[-1])], 1)
        r = self.net[4:](x)  # (B*M, 32, H/4, W/4)
        return r.view(B, M, *r.shape[1:])

    def aggregate(self, frames: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """r = sum over the M pairs of M_theta(v, f): (B, 32, H/4, W/4), permutation invariant."""
        return self(frames, viewpoints).sum(1)


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: a conv over [const, x, h] gives the four gates. Inputs that
    stay the same at every step (`const_channels`) have their own conv, applied once per
    sequence by `precompute` (the sum of the two convs is one conv over the concatenation)."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 5, const_channels: int = 0):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)
        self.const = (nn.Conv2d(const_channels, 4 * hidden, kernel, padding=kernel // 2, bias=False)
                      if const_channels else None)
        with torch.no_grad():  # forget-gate bias 1: remember by default at the start of training
            self.gates.bias.zero_()
            self.gates.bias[hidden:2 * hidden].fill_(1.0)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, c) for an input x (N, *, G, G): each (N, hidden, G, G)."""
        h = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
        return h, h.clone()

    def precompute(self, const: torch.Tensor) -> torch.Tensor:
        """The constant inputs' share of the gates: (N, const_channels, G, G) -> (N, 4*hidden, G, G)."""
        return self.const(const)

    def forward(self, x, state, const_gates=None):
        """x (N, in, G, G), state (h, c) each (N, hidden, G, G), const_gates from `precompute`
        -> new (h, c)."""
        h, c = state
        gates = self.gates(torch.cat([x, h], 1))
        if const_gates is not None:
            gates = gates + const_gates
        i, f, o, g = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvDRAW(nn.Module):
    """A conditional convolutional DRAW core (Gregor et al., 2016), in three roles:

    - latent model (nf_z > 0, canvas=False): JUMP's prior P_phi and posterior P_psi; returns
      the latents z_1..z_nt stacked (N, nt*nf_z, G, G);
    - latent model with a canvas (nf_z > 0, canvas=True): GQN's generator;
    - deterministic renderer (nf_z = 0, canvas=True): JUMP's M_gamma, fed `cond` every step.

    Step l: prior (mu, logvar) = conv([h_{l-1}, c]); when a posterior input is given, an
    inference LSTM reads [p, c, h_{l-1}] and its head gives the posterior, z_l is drawn from
    it and KL(posterior || prior) is summed; otherwise z_l is drawn from the prior. Then
    h_l = LSTM([c, z_l, read(canvas)], h_{l-1}) and canvas += write(h_l). `c` and `p` are the
    conditioning and posterior inputs after their `stride_to_hidden` read convs; they and their
    share of the LSTM gates are computed once, not at every step.
    """

    def __init__(self, cond_channels: int, nt: int, nf_to_hidden: int, nf_z: int = 0,
                 post_channels: int = 0, canvas: bool = False, stride_to_hidden: int | None = 2,
                 nf_enc: int = 128, stride_to_obs: int = 2, nf_to_obs: int = 128, nf_dec: int = 64,
                 kernel: int = 5):
        super().__init__()
        self.nt, self.nf_z, self.canvas = nt, nf_z, canvas
        self.nf_to_obs, self.stride_to_obs = nf_to_obs, stride_to_obs
        pad = kernel // 2
        if stride_to_hidden is None:  # cond is already on the LSTM grid: feed it as it is
            self.read_cond, c_ch = nn.Identity(), cond_channels
        else:
            self.read_cond = nn.Conv2d(cond_channels, nf_enc, stride_to_hidden, stride=stride_to_hidden)
            c_ch = nf_enc
        self.core = ConvLSTMCell(nf_z + (nf_dec if canvas else 0), nf_to_hidden, kernel, const_channels=c_ch)
        if nf_z:
            self.prior_head = nn.Conv2d(nf_to_hidden + c_ch, 2 * nf_z, kernel, padding=pad)
        if nf_z and post_channels:
            self.read_post = nn.Conv2d(post_channels, nf_enc, stride_to_hidden, stride=stride_to_hidden)
            self.inference = ConvLSTMCell(nf_to_hidden, nf_to_hidden, kernel, const_channels=nf_enc + c_ch)
            self.post_head = nn.Conv2d(nf_to_hidden, 2 * nf_z, kernel, padding=pad)
        if canvas:
            self.write = nn.ConvTranspose2d(nf_to_hidden, nf_to_obs, stride_to_obs, stride=stride_to_obs)
            self.read_canvas = nn.Conv2d(nf_to_obs, nf_dec, stride_to_obs, stride=stride_to_obs)

    def forward(self, cond: torch.Tensor, post: torch.Tensor | None = None, trace: list | None = None):
        """cond (N, cond_channels, ...) and post (N, post_channels, ...) at the read resolution.
        Returns (canvas (N, nf_to_obs, G*s, G*s) or None, z (N, nt*nf_z, G, G) or None,
        kl (N,) in nats, zero without a posterior). A `trace` list gets, per DRAW step, the
        prior's (mu, logvar) and, with a posterior, the posterior's: a dict of detached tensors
        (N, nf_z, G, G) (for diagnostics: scripts/latent_snr.py)."""
        c = self.read_cond(cond)                        # (N, c_ch, G, G)
        p = self.read_post(post) if post is not None else None  # (N, nf_enc, G, G)
        h, cell = self.core.init_state(c)
        c_gates = self.core.precompute(c)               # (N, 4*nf_to_hidden, G, G), once
        if p is not None:
            h_q, cell_q = self.inference.init_state(c)
            q_gates = self.inference.precompute(torch.cat([p, c], 1))
        N, _, G, _ = c.shape
        gs = G * self.stride_to_obs
        u = c.new_zeros(N, self.nf_to_obs, gs, gs) if self.canvas else None  # (N, nf_to_obs, G*s, G*s)
        zs, kl = [], torch.zeros(N, device=c.device)  # fp32 under autocast too
        for _ in range(self.nt):
            inputs = []
            if self.nf_z:
                mu, logvar = self.prior_head(torch.cat([h, c], 1)).chunk(2, 1)
                if trace is not None:
                    trace.append({"mu_p": mu.detach().float(), "logvar_p": logvar.detach().float()})
                if p is not None:
                    h_q, cell_q = self.inference(h, (h_q, cell_q), q_gates)
                    mu_q, logvar_q = self.post_head(h_q).chunk(2, 1)
                    kl = kl + gaussian_kl(mu_q, logvar_q, mu, logvar).flatten(1).sum(1)
                    mu, logvar = mu_q, logvar_q
                    if trace is not None:
                        trace[-1].update(mu_q=mu.detach().float(), logvar_q=logvar.detach().float())
                z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # (N, nf_z, G, G)
                zs.append(z)
                inputs.append(z)
            if self.canvas:
                inputs.append(self.read_canvas(u))
            x = torch.cat(inputs, 1) if inputs else c[:, :0]
            h, cell = self.core(x, (h, cell), c_gates)
            if self.canvas:
                u = u + self.write(h)
        return u, (torch.cat(zs, 1) if zs else None), kl


class FrameHead(nn.Module):
    """Canvas (N, nf_to_obs, g, g) -> frame means (N, 3, H, W): a transposed conv with kernel
    and stride H / g (4 at the paper's sizes), linear as in torch-jump and gqnlib's JUMP;
    samples are clamped to [0, 1] (`sample`), the likelihood sees the unclamped means. A sigmoid
    here learnt about 10x slower: its gradient vanishes at the 0s and 1s that flat black
    backgrounds and saturated shape colours are made of (measured: min-MSE 0.0050 vs 0.00046
    after 800 steps on 6 videos, docs/reproduction.md)."""

    def __init__(self, nf_to_obs: int, upsample: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(nf_to_obs, 3, upsample, stride=upsample)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.up(u)


def unflatten(x: torch.Tensor, *lead: int) -> torch.Tensor:
    """(prod(lead), ...) -> (*lead, ...)."""
    return x.reshape(*lead, *x.shape[1:])

