"""GQN, the Generative Query Network (Eslami et al., "Neural scene representation and
rendering", Science 2018), as the factored baseline of Kumar, Eslami et al., "Consistent
Generative Query Networks", ICLR 2019 (sections 4.2, Fig. 5b and 6).

    r = sum_j M_theta(v_j, f_j)                      the same representation net as JUMP
    for each query v_i independently:
        z_i ~ P(z | r, v_i)                           conv-DRAW prior, one latent per query
        f_i ~ N(g(z_i, r, v_i), pixel_var)            the generator's canvas -> frame
    ELBO = sum_i ( E_{q(z_i | r, v_i, f_i)} log N(f_i; .) - KL(q(z_i | r, v_i, f_i) || P(z_i | r, v_i)) )

Every target is its own ELBO term (the posterior sees only that target, through M_theta of
it), so the terms of K targets are the factored sum, and K queries sampled together get K
independent latents: GQN is not consistent across queries. Same sizes and pixel-variance
schedule as JUMP for a fair comparison. Loss units as JUMP: nats per scene (summed over the
K targets), averaged over the batch; `mse` is per pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from jumpbench.models.base import ELBOModel
from jumpbench.models.jump import JUMPConfig
from jumpbench.models.draw import (REP_CHANNELS, ConvDRAW, FrameHead, Representation, ViewpointEncoding, broadcast,
                                   gaussian_nll, unflatten)


@dataclass
class GQNConfig(JUMPConfig):
    """GQN at JUMP's sizes (Appendix B) and pixel-variance schedule: the paper compares the two
    models with the same encoder and DRAW widths. The generator runs nt DRAW steps per query."""


class GQN(ELBOModel):
    """GQN: a conv-DRAW generator conditioned on r and the query viewpoint, latents per query."""

    jumpy = True

    def __init__(self, config: GQNConfig):
        super().__init__()
        self.config = cfg = config
        self.encode = ViewpointEncoding.of(cfg)
        self.represent = Representation(self.encode.features, cfg.viewpoint_layer)  # M_theta, as in JUMP
        # generator: prior P(z | r, v), posterior q(z | r, v, M_theta(v, f)), canvas
        self.generator = ConvDRAW(REP_CHANNELS + self.encode.features, nf_z=cfg.nf_z,
                                  post_channels=REP_CHANNELS, canvas=True, **cfg.draw_kwargs())
        self.head = FrameHead(cfg.nf_to_obs, cfg.image_size // (cfg.grid * cfg.stride_to_obs))

    def _generate(self, r: torch.Tensor, viewpoints: torch.Tensor, targets: torch.Tensor | None = None):
        """r (N, 32, h, h), query viewpoints (N, K, D), targets (N, K, 3, H, W) or None ->
        frame means (N, K, 3, H, W) and kl (N, K): one generator pass per query, each with its
        own latent (from the posterior on its own target when targets are given)."""
        N, K, _ = viewpoints.shape
        h = r.shape[-1]
        v = self.encode(viewpoints)                           # (N, K, D')
        cond = torch.cat([r.repeat_interleave(K, 0), broadcast(v.flatten(0, 1), h)], 1)  # (N*K, 32+D', h, h)
        post = None
        if targets is not None:
            post = self.represent(targets, v).flatten(0, 1)                     # (N*K, 32, h, h)
        u, _, kl = self.generator(cond, post)                                   # canvas (N*K, nf_to_obs, ., .)
        return unflatten(self.head(u), N, K), kl.view(N, K)

    def _elbo(self, context_frames, context_viewpoints, target_frames, target_viewpoints, pixel_var):
        r = self.represent.aggregate(context_frames, self.encode(context_viewpoints))
        mean, kl = self._generate(r, target_viewpoints, target_frames)          # (B, K, 3, H, W), (B, K)
        nll = gaussian_nll(target_frames, mean, pixel_var).flatten(2).sum(2)    # (B, K)
        return nll.sum(1), kl.sum(1), mean

    @torch.no_grad()
    def sample(self, context_frames: torch.Tensor, context_viewpoints: torch.Tensor,
               query_viewpoints: torch.Tensor, n_samples: int) -> torch.Tensor:
        """(B, n_samples, K, 3, H, W) frame means clamped to [0, 1], an independent latent per query."""
        B, K = query_viewpoints.shape[:2]
        r = self.represent.aggregate(context_frames, self.encode(context_viewpoints))
        frames, _ = self._generate(r.repeat_interleave(n_samples, 0),
                                   query_viewpoints.repeat_interleave(n_samples, 0))  # (B*S, K, 3, H, W)
        return frames.view(B, n_samples, K, *frames.shape[2:]).clamp(0, 1)
