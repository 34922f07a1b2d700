"""SV2P: Stochastic Variational Video Prediction (Babaeizadeh, Finn, Erhan, Campbell & Levine,
ICLR 2018).

The CDNA predictor of Finn et al. 2016 (imported from cdna.py) conditioned on a
time-invariant latent z (B, latent_channels, H/8, W/8), joined to its bottleneck at every
step. At training time z is drawn from q(z | the whole video), a conv encoder over all T
frames stacked along channels; at test time from the prior N(0, I). Training runs in the
paper's three phases:
  1. step < stage1_steps: the predictor alone, z from the prior (the encoder is unused);
  2. step < stage1_steps + stage2_steps: z from q, no KL term;
  3. afterwards: the KL to N(0, I) is added, its multiplier rising linearly from 0 to
     `kl_weight` by step `anneal_end`.
Defaults: tensor2tensor next_frame_sv2p / next_frame_basic_stochastic (latent_channels=1,
latent_std_min=-5, 15000 + 15000 steps, latent_loss_multiplier=1e-3, anneal_end=50000).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jumpbench.models.base import Model, check_prefix, frame_indices, gather_frames, ground_truth_fraction, training_video
from jumpbench.models.cdna import CDNAConfig, CDNAPredictor


@dataclass
class SV2PConfig(CDNAConfig):
    # the predictor's fields (lstm_sizes, num_masks, kernel_size, relu_shift, schedsamp_k) are
    # CDNA's; tensor2tensor next_frame_sv2p uses the same (num_masks=10, dna_kernel_size=5, k=900)
    latent_channels: int = 1        # next_frame_basic_stochastic: latent_channels
    latent_std_min: float = -5.0    # lower bound of the encoder's log std (latent_std_min)
    encoder_channels: tuple = (32, 64, 64)  # the inference tower's three stride-2 convs
    stage1_steps: int = 15000       # num_iterations_1st_stage: no latent inference
    stage2_steps: int = 15000       # num_iterations_2nd_stage: inference, no KL
    kl_weight: float = 1e-3         # latent_loss_multiplier (the paper's beta)
    anneal_end: int = 50000         # step at which the KL multiplier reaches kl_weight

    def __post_init__(self):
        super().__post_init__()
        self.encoder_channels = tuple(self.encoder_channels)
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be at least 1, got {self.latent_channels}")
        if len(self.encoder_channels) != 3 or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be three positive ints, got {self.encoder_channels}")
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ValueError("stage1_steps and stage2_steps must be >= 0")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.anneal_end < self.stage1_steps + self.stage2_steps:
            raise ValueError("anneal_end must not come before the end of phase 2 "
                             f"({self.stage1_steps + self.stage2_steps}), got {self.anneal_end}")

    def kl_multiplier(self, step: int) -> float:
        """0 in phases 1-2, then a linear ramp to kl_weight at anneal_end."""
        start = self.stage1_steps + self.stage2_steps
        if step < start:
            return 0.0
        if self.anneal_end == start:
            return self.kl_weight
        return self.kl_weight * min(1.0, (step - start) / (self.anneal_end - start))


class LatentTower(nn.Module):
    """q(z | video): (B, T, 3, H, W) -> mean, log std, each (B, Cz, H/8, W/8)."""

    def __init__(self, frames: int, channels, latent_channels: int, std_min: float):
        super().__init__()
        layers, c_in = [], 3 * frames
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(1, c), nn.ReLU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.mean = nn.Conv2d(c_in, latent_channels, 3, padding=1)
        self.log_std = nn.Conv2d(c_in, latent_channels, 3, padding=1)
        self.std_min = std_min

    def forward(self, video):
        h = self.net(video.flatten(1, 2))                                # (B, c, H/8, W/8)
        return self.mean(h), self.log_std(h).clamp(min=self.std_min)


class SV2P(Model):
    """Stochastic video prediction with a time-invariant latent (Babaeizadeh et al. 2018). Not
    jumpy. The training batch must be a whole video of `config.frames` frames (context =
    frames 0..m-1, targets = m..T-1): the inference tower reads all of it."""

    jumpy = False

    def __init__(self, config: SV2PConfig):
        super().__init__()
        self.config = c = config
        self.predictor = CDNAPredictor(c.image_size, c.lstm_sizes, c.num_masks, c.kernel_size, c.relu_shift,
                                       latent_channels=c.latent_channels, lstm_kernel=c.lstm_kernel)
        self.tower = LatentTower(c.frames, c.encoder_channels, c.latent_channels, c.latent_std_min)

    def prior_latent(self, n: int, device) -> torch.Tensor:
        s = self.config.image_size // 8
        return torch.randn(n, self.config.latent_channels, s, s, device=device)  # (n, Cz, H/8, W/8)

    def forward(self, batch, step):
        c = self.config
        video, m = training_video(batch)                                  # (B, T, 3, H, W)
        B, T = video.shape[:2]
        if T != c.frames:
            raise ValueError(f"SV2P's inference tower reads whole videos of {c.frames} frames, got {T}")
        mean, log_std = self.tower(video)
        # KL(q || N(0, I)) summed over the latent units, averaged over the batch (as tensor2tensor's
        # kl_divergence); a mean over units would weigh it (H/8)^2 * latent_channels times less
        m32, s32 = mean.float(), log_std.float()
        kl = (0.5 * (m32 ** 2 + torch.exp(2 * s32)) - s32 - 0.5).flatten(1).sum(1).mean()
        if step < c.stage1_steps:                                         # phase 1: prior latent
            z = self.prior_latent(B, video.device)
        else:                                                             # phases 2-3: posterior
            z = mean + torch.exp(log_std) * torch.randn_like(mean)
        p = ground_truth_fraction(step, c.schedsamp_k)
        pred = self.predictor.rollout(video, T - 1, m, p, latent=z)       # frames 1..T-1
        err = (pred[:, m - 1:].float() - video[:, m:]) ** 2               # after the context, as CDNA
        beta = c.kl_multiplier(step)
        return {"loss": err.mean() + beta * kl, "mse": err.mean().detach(),
                "kl": kl.detach(), "kl_weight": torch.tensor(beta), "p_ground_truth": torch.tensor(p)}

    @torch.no_grad()
    def sample(self, context_frames, context_viewpoints, query_viewpoints, n_samples):
        m, end = check_prefix(context_viewpoints, query_viewpoints)
        B = context_frames.shape[0]
        ctx = context_frames.repeat_interleave(n_samples, dim=0)         # (B*n, m, 3, H, W)
        z = self.prior_latent(B * n_samples, ctx.device)                  # one latent per sample
        pred = self.predictor.rollout(ctx, end - 1, m, latent=z)          # (B*n, end-1, 3, H, W)
        pred = pred.view(B, n_samples, *pred.shape[1:])
        return gather_frames(pred, frame_indices(query_viewpoints) - 1).clamp(0, 1)
