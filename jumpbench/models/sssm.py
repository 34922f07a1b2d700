"""sSSM: the stochastic state-space model of Buesing, Weber, Racaniere, Eslami, Rezende et
al., "Learning and querying fast generative models for reinforcement learning" (2018).

Transitions run in a compact latent state at 1/8 of the frame resolution, never in pixel
space: a deterministic state s_t (B, state_channels, H/8, W/8) and a stochastic z_t
(B, z_channels, H/8, W/8) per step,
    z_t ~ p(z_t | s_{t-1})          prior (test time, after the context)
    z_t ~ q(z_t | s_{t-1}, e(x_t))  filtering posterior (training, and on the context)
    s_t = s_{t-1} + f(s_{t-1}, z_t) residual conv transition
    x_t ~ N(d(s_t), pixel_var)      decoded only when a frame is asked for,
so sampling frame t costs t cheap transitions and one decode. No actions here (videos).
As in Buesing et al., the state starts deterministically from the first observations:
s_{n0-1} = g(e(x_0), ..., e(x_{n0-1})) with n0 = min(init_frames, m), so the context reaches
the state without passing through the KL-penalised latents (without it a collapsed
posterior leaves the model nothing to predict from). Trained on the ELBO: the Gaussian NLL of
frames n0-1..T-1 plus kl_weight (the beta the JUMP paper sweeps, Appendix B) times the KL of
posterior to prior, with optional free nats per frame (Kingma et al. 2016) and a linear KL
warm-up, the usual guards against posterior collapse. Sizes are ours, chosen so the
state is small beside a frame (64 channels at 8x8 for 64x64 frames); Buesing et al. use a
state of feature maps at reduced resolution and a convolutional encoder and decoder too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from jumpbench.models.base import Model, ModelConfig, check_prefix, frame_indices, gather_frames, training_video


@dataclass
class SSSMConfig(ModelConfig):
    state_channels: int = 64        # deterministic state s_t at H/8 x W/8
    z_channels: int = 8             # stochastic z_t per step at H/8 x W/8
    hidden_channels: int = 64       # inside the prior, posterior and transition nets
    encoder_channels: tuple = (32, 64, 64)  # three stride-2 convs, frame -> e(x) at H/8
    pixel_var: float = 0.5          # fixed decoder variance (JUMP's final pixel variance, Appendix B)
    kl_weight: float = 1.0          # beta on the KL; the JUMP paper sweeps it for sSSM
    log_std_min: float = -5.0       # lower bound of the Gaussians' log std
    log_std_max: float = 2.0        # upper bound: an unbounded prior std fed back through the state
                                    # blew prior rollouts up to NaN within 6 steps (measured)
    init_frames: int = 3            # observations the initial state is computed from (Buesing et al.: 3)
    free_nats: float = 0.0          # per frame: a batch-mean KL below this costs nothing
    kl_warmup: int = 0              # steps over which the KL weight rises linearly from 0

    def __post_init__(self):
        super().__post_init__()
        self.encoder_channels = tuple(self.encoder_channels)
        if self.image_size % 8:
            raise ValueError(f"sSSM needs image_size divisible by 8, got {self.image_size}")
        if min(self.state_channels, self.z_channels, self.hidden_channels) < 1:
            raise ValueError("state_channels, z_channels and hidden_channels must be positive")
        if len(self.encoder_channels) != 3 or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be three positive ints, got {self.encoder_channels}")
        if self.pixel_var <= 0 or self.kl_weight < 0:
            raise ValueError("pixel_var must be positive and kl_weight >= 0")
        if self.log_std_max <= self.log_std_min:
            raise ValueError("log_std_max must be above log_std_min")
        if self.init_frames < 1 or self.free_nats < 0 or self.kl_warmup < 0:
            raise ValueError("init_frames must be >= 1, free_nats and kl_warmup >= 0")

    def kl_multiplier(self, step: int) -> float:
        """kl_weight, ramped linearly from 0 over the first kl_warmup steps."""
        if self.kl_warmup <= 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, step / self.kl_warmup)


def _gaussian_head(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    """(B, c_in, h, w) -> (B, 2 * c_out, h, w): mean and log std of a diagonal Gaussian."""
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden, 2 * c_out, 3, padding=1))


class SSSM(Model):
    """Stochastic state-space model (Buesing et al. 2018). Not jumpy."""

    jumpy = False

    def __init__(self, config: SSSMConfig):
        super().__init__()
        self.config = c = config
        e1, e2, e3 = c.encoder_channels
        self.encoder = nn.Sequential(                                     # (B, 3, H, W) -> (B, e3, H/8, W/8)
            nn.Conv2d(3, e1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(e1, e2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(e2, e3, 4, stride=2, padding=1))
        self.init = nn.Sequential(                                        # e(x_0..x_{n0-1}) -> s_{n0-1}
            nn.Conv2d(c.init_frames * e3, c.hidden_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c.hidden_channels, c.state_channels, 3, padding=1))
        self.prior = _gaussian_head(c.state_channels, c.hidden_channels, c.z_channels)
        self.posterior = _gaussian_head(c.state_channels + e3, c.hidden_channels, c.z_channels)
        self.transition = nn.Sequential(
            nn.Conv2d(c.state_channels + c.z_channels, c.hidden_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c.hidden_channels, c.state_channels, 3, padding=1))
        self.decoder = nn.Sequential(                                     # (B, S, H/8, W/8) -> (B, 3, H, W)
            nn.Conv2d(c.state_channels, e3, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(e3, e2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(e2, e1, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(e1, 3, 4, stride=2, padding=1))  # linear, as JUMP's (draw.FrameHead)

    def initial_state(self, e: torch.Tensor) -> torch.Tensor:
        """e (B, n0, e3, h, w), the first n0 frames' encodings -> s_{n0-1} (B, S, h, w). With fewer
        than init_frames observations the missing slots are zeros."""
        B, n0 = e.shape[:2]
        missing = self.config.init_frames - n0
        if missing > 0:
            e = torch.cat([e, e.new_zeros(B, missing, *e.shape[2:])], 1)
        return self.init(e.flatten(1, 2))

    def _split(self, h):
        mean, log_std = h.chunk(2, dim=1)
        return mean, log_std.clamp(self.config.log_std_min, self.config.log_std_max)

    def step(self, s, e=None):
        """One transition from s_{t-1}: with e = e(x_t) z_t comes from the posterior, else from
        the prior. Returns (s_t, z_t, KL(q || p) per unit or None)."""
        p_mean, p_log_std = self._split(self.prior(s))
        if e is None:
            mean, log_std, kl = p_mean, p_log_std, None
        else:
            mean, log_std = self._split(self.posterior(torch.cat([s, e], dim=1)))
            kl = (p_log_std - log_std
                  + (torch.exp(2 * log_std) + (mean - p_mean) ** 2) / (2 * torch.exp(2 * p_log_std)) - 0.5)
        z = mean + torch.exp(log_std) * torch.randn_like(mean)
        # a bounded residual step: the state moves at most 1 per unit per frame, so a rollout of
        # the prior cannot run away (a free one reached 1e7 by frame 10, then NaN)
        return s + torch.tanh(self.transition(torch.cat([s, z], dim=1))), z, kl

    def forward(self, batch, step):
        c = self.config
        video, m = training_video(batch)                                  # (B, T, 3, H, W)
        B, T = video.shape[:2]
        e = self.encoder(video.flatten(0, 1)).unflatten(0, (B, T))        # (B, T, e3, H/8, W/8)
        n0 = min(c.init_frames, m)
        s = self.initial_state(e[:, :n0])                                 # s_{n0-1}
        states, kls = [s], []
        for t in range(n0, T):                                            # filter through the video
            s, _, kl = self.step(s, e[:, t])
            states.append(s)
            kls.append(kl.float().flatten(1).sum(1))                      # (B,)
        recon = self.decoder(torch.stack(states, 1).flatten(0, 1)).unflatten(0, (B, T - n0 + 1))
        err = (recon.float() - video[:, n0 - 1:]) ** 2                     # frames n0-1..T-1
        nll = err.flatten(2).sum(2) / (2 * c.pixel_var)                   # (B, T-n0+1), constant dropped
        kl = torch.stack(kls, 1)                                          # (B, T-n0)
        kl_cost = kl.mean(0).clamp(min=c.free_nats).sum()                 # free nats per frame, batch mean
        loss = (nll.sum(1).mean() + c.kl_multiplier(step) * kl_cost) / (3 * c.image_size ** 2)
        return {"loss": loss, "nll": nll.sum(1).mean().detach(), "kl": kl.sum(1).mean().detach(),
                "mse": err[:, m - n0 + 1:].mean().detach()}

    @torch.no_grad()
    def sample(self, context_frames, context_viewpoints, query_viewpoints, n_samples):
        m, end = check_prefix(context_viewpoints, query_viewpoints)
        B = context_frames.shape[0]
        ctx = context_frames.repeat_interleave(n_samples, dim=0)          # (B*n, m, 3, H, W)
        e = self.encoder(ctx.flatten(0, 1)).unflatten(0, ctx.shape[:2])   # (B*n, m, e3, h, w)
        n0 = min(self.config.init_frames, m)
        s = self.initial_state(e[:, :n0])
        for t in range(n0, m):                                            # filter the rest of the context
            s, _, _ = self.step(s, e[:, t])
        index = frame_indices(query_viewpoints)                           # (B, K)
        wanted = set(index.flatten().tolist())
        frames = {}
        for t in range(m, end):                                           # roll the prior forward
            s, _, _ = self.step(s)
            if t in wanted:                                               # decode only asked frames
                frames[t] = self.decoder(s)                               # (B*n, 3, H, W)
        order = sorted(frames)
        out = torch.stack([frames[t] for t in order], 1)                  # (B*n, K', 3, H, W)
        out = out.view(B, n_samples, *out.shape[1:])
        lookup = torch.searchsorted(torch.tensor(order, device=index.device), index)  # frame -> row of out
        return gather_frames(out, lookup).clamp(0, 1)
