"""JUMP, the consistent generative query network (Kumar, Eslami et al., "Consistent Generative
Query Networks", ICLR 2019, section 3, Appendices A and B).

    r_j = M_theta(v_j, f_j),  r = sum_j r_j                  context representation
    z ~ P_phi(z | r)                                          conv-DRAW prior, once per scene
    f_i = M_gamma(z, v_i)                                     deterministic renderer, per query
    ELBO = E_{z ~ P_psi(z | C, V, F)}[sum_i log N(f_i; M_gamma(z, v_i), pixel_var)]
           - KL(P_psi(z | C, V, F) || P_phi(z | C))           (Appendix A)

The posterior sees all K targets at once through r' = sum_i M_theta(v_i, f_i) (the paper's
P_{psi,theta} shares M_theta). One z is shared by every query of a sample: that is JUMP's
consistency. Loss units: nats per scene (summed over the K targets and their pixels),
averaged over the batch; `mse` is per pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from jumpbench.models.base import ELBOModel, ModelConfig
from jumpbench.models.draw import (REP_CHANNELS, VIEWPOINT_LAYERS, ConvDRAW, FrameHead, Representation,
                                   ViewpointEncoding, broadcast, gaussian_nll, unflatten)

PIXEL_VAR_SCHEDULES = ("linear", "piecewise")


@dataclass
class JUMPConfig(ModelConfig):
    """JUMP's sizes and its pixel-variance schedule (read by ELBOModel, models/base.py), a plain
    record checked on creation. Optimiser settings belong to the training loop."""

    nt: int = 4                 # DRAW steps, prior/posterior and renderer (App. B, narratives; dice: 6)
    stride_to_hidden: int = 2   # kernel = stride of the conv reading into the LSTM (App. B)
    nf_to_hidden: int = 64      # LSTM channels (App. B, narratives; dice: 128)
    nf_enc: int = 128           # channels of that read conv (App. B)
    stride_to_obs: int = 2      # kernel = stride of the transposed conv LSTM -> canvas (App. B)
    nf_to_obs: int = 128        # canvas channels between the LSTM and the frame (App. B)
    nf_dec: int = 64            # channels of the conv reading the canvas back (App. B; dice: 128)
    nf_z: int = 3               # latent channels per DRAW step (App. B)
    kernel: int = 5             # ConvLSTM kernel (paper silent; 5 as in GQN and torch-jump)
    viewpoint_scale: float | None = None  # viewpoints are multiplied by it; None: 1/frames when
                                          # viewpoint_dim == 1 (narrative times -> [0, 1)), else 1
    time_frequencies: int = 0   # timestamps only: feed t with sin/cos(2^k pi t), k < this (draw.ViewpointEncoding)
    viewpoint_layer: int = 0    # M_theta's layer whose input gets the viewpoint: 0 (the frame) or 2 (Representation)
    pixel_var_schedule: str = "linear"    # "linear" (narratives) or "piecewise" (dice), App. B
    pixel_var_start: float = 2.0          # linear: alpha (App. B)
    pixel_var_end: float = 0.5            # linear: beta (App. B)
    pixel_var_steps: int = 100_000        # linear: steps of the anneal (App. B)
    pixel_var_values: tuple = (2.0, 0.2, 0.4, 0.9)             # piecewise: the values (App. B, dice)
    pixel_var_boundaries: tuple = (100_000, 150_000, 200_000)  # piecewise: steps where each ends

    def __post_init__(self):
        super().__post_init__()
        self.pixel_var_values = tuple(float(v) for v in self.pixel_var_values)
        self.pixel_var_boundaries = tuple(int(b) for b in self.pixel_var_boundaries)
        for name in ("nt", "stride_to_hidden", "nf_to_hidden", "nf_enc", "stride_to_obs",
                     "nf_to_obs", "nf_dec", "nf_z", "kernel", "pixel_var_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same padding), got {self.kernel}")
        if self.image_size % (4 * self.stride_to_hidden):
            raise ValueError(f"image_size {self.image_size} must be a multiple of 4 * stride_to_hidden "
                             f"= {4 * self.stride_to_hidden}")
        if self.image_size % (self.grid * self.stride_to_obs):
            raise ValueError(f"image_size {self.image_size} must be a multiple of the canvas size "
                             f"{self.grid} * stride_to_obs = {self.grid * self.stride_to_obs}")
        if self.time_frequencies < 0 or (self.time_frequencies and self.viewpoint_dim != 1):
            raise ValueError("time_frequencies must be 0, or positive for timestamps (viewpoint_dim 1), "
                             f"got {self.time_frequencies} with viewpoint_dim {self.viewpoint_dim}")
        if self.viewpoint_layer not in VIEWPOINT_LAYERS:
            raise ValueError(f"viewpoint_layer must be one of {VIEWPOINT_LAYERS}, got {self.viewpoint_layer}")
        if self.viewpoint_scale is not None and self.viewpoint_scale <= 0:
            raise ValueError(f"viewpoint_scale must be positive, got {self.viewpoint_scale}")
        if self.pixel_var_schedule not in PIXEL_VAR_SCHEDULES:
            raise ValueError(f"pixel_var_schedule must be one of {PIXEL_VAR_SCHEDULES}, "
                             f"got {self.pixel_var_schedule!r}")
        if min(self.pixel_var_start, self.pixel_var_end, *self.pixel_var_values) <= 0:
            raise ValueError("pixel variances must be positive")
        b = self.pixel_var_boundaries
        if len(self.pixel_var_values) != len(b) + 1 or any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError("pixel_var_boundaries must increase and have one entry fewer than "
                             f"pixel_var_values, got {b} and {self.pixel_var_values}")

    @property
    def grid(self) -> int:
        """The LSTM grid: image_size / 4 (M_theta) / stride_to_hidden."""
        return self.image_size // (4 * self.stride_to_hidden)

    def draw_kwargs(self) -> dict:
        """Appendix B's sizes, as ConvDRAW takes them."""
        return dict(nt=self.nt, nf_to_hidden=self.nf_to_hidden, stride_to_hidden=self.stride_to_hidden,
                    nf_enc=self.nf_enc, stride_to_obs=self.stride_to_obs, nf_to_obs=self.nf_to_obs,
                    nf_dec=self.nf_dec, kernel=self.kernel)


class JUMP(ELBOModel):
    """JUMP: one scene latent from a conv-DRAW prior, rendered deterministically per query."""

    jumpy = True

    def __init__(self, config: JUMPConfig):
        super().__init__()
        self.config = cfg = config
        self.encode = ViewpointEncoding.of(cfg)
        self.represent = Representation(self.encode.features, cfg.viewpoint_layer)  # M_theta
        # prior P_phi(z | r) and posterior P_psi(z | r, r'): one latent conv-DRAW
        self.latent = ConvDRAW(REP_CHANNELS, nf_z=cfg.nf_z, post_channels=REP_CHANNELS, canvas=False,
                               **cfg.draw_kwargs())
        # renderer M_gamma(z, v): the same core without latents, fed [z, v] at every step
        self.renderer = ConvDRAW(cfg.nt * cfg.nf_z + self.encode.features, canvas=True,
                                 **{**cfg.draw_kwargs(), "stride_to_hidden": None})
        self.head = FrameHead(cfg.nf_to_obs, cfg.image_size // (cfg.grid * cfg.stride_to_obs))

    def represent_sum(self, frames: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """(B, M, 3, H, W), (B, M, D) -> r = sum_j M_theta(v_j, f_j): (B, 32, H/4, W/4)."""
        return self.represent.aggregate(frames, self.encode(viewpoints))

    def render(self, z: torch.Tensor, viewpoints: torch.Tensor) -> torch.Tensor:
        """z (N, nt*nf_z, G, G), query viewpoints (N, K, D) -> frame means (N, K, 3, H, W)."""
        N, K, _ = viewpoints.shape
        G = z.shape[-1]
        z = z[:, None].expand(N, K, *z.shape[1:]).reshape(N * K, *z.shape[1:])   # (N*K, nt*nf_z, G, G)
        v = broadcast(self.encode(viewpoints).flatten(0, 1), G)  # (N*K, features, G, G)
        u, _, _ = self.renderer(torch.cat([z, v], 1))   # canvas (N*K, nf_to_obs, G*s, G*s)
        return unflatten(self.head(u), N, K)

    def _elbo(self, context_frames, context_viewpoints, target_frames, target_viewpoints, pixel_var):
        r = self.represent_sum(context_frames, context_viewpoints)       # (B, 32, H/4, W/4)
        r_targets = self.represent_sum(target_frames, target_viewpoints)  # (B, 32, H/4, W/4)
        _, z, kl = self.latent(r, r_targets)                             # z (B, nt*nf_z, G, G), kl (B,)
        mean = self.render(z, target_viewpoints)                         # (B, K, 3, H, W)
        nll = gaussian_nll(target_frames, mean, pixel_var).flatten(1).sum(1)  # (B,)
        return nll, kl, mean

    @torch.no_grad()
    def sample(self, context_frames: torch.Tensor, context_viewpoints: torch.Tensor,
               query_viewpoints: torch.Tensor, n_samples: int) -> torch.Tensor:
        """(B, n_samples, K, 3, H, W) frame means clamped to [0, 1]. The context is encoded once, the
        prior runs once per sample, the renderer once per query of each sample."""
        B, K = query_viewpoints.shape[:2]
        r = self.represent_sum(context_frames, context_viewpoints)   # (B, 32, H/4, W/4)
        _, z, _ = self.latent(r.repeat_interleave(n_samples, 0))     # (B*S, nt*nf_z, G, G)
        frames = self.render(z, query_viewpoints.repeat_interleave(n_samples, 0))  # (B*S, K, 3, H, W)
        return frames.view(B, n_samples, K, *frames.shape[2:]).clamp(0, 1)
