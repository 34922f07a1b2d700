"""CDNA: Convolutional Dynamic Neural Advection (Finn, Goodfellow & Levine, "Unsupervised
learning for physical interaction through video prediction", NeurIPS 2016).

A stack of convolutional LSTMs (an encoder-decoder with skip connections) reads the previous
frame and predicts `num_masks` normalised kernels (5x5) that move the previous frame's
pixels, an image drawn from scratch, and softmax compositing masks over: the previous frame,
the static background (the first frame), the scratch image and the transformed frames.
Deterministic; trained with an L2 loss and scheduled sampling. Defaults follow the reference
code, tensorflow/models research/video_prediction (prediction_model.py, prediction_train.py).

The predictor (`CDNAPredictor`) is shared with SV2P, which feeds it a latent as well.
Like SV2P and sSSM it trains on consecutive frames (base.training_video).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jumpbench.models.base import (Model, ModelConfig, check_prefix, frame_indices, gather_frames,
                                   ground_truth_fraction, training_video)


class CDNALSTMCell(nn.Module):
    """The CDNA stack's convolutional LSTM cell (Shi et al. 2015): forget-gate bias 1 as in the
    reference; forward(x, state) -> (h, (h, c)), each (B, hidden, H, W); state None = zeros.
    (JUMP and GQN's conv-DRAW cell is draw.ConvLSTMCell.)"""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 5):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x, state):
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)  # forget bias 1 as in the reference
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class CDNAPredictor(nn.Module):
    """One step: previous frame (B, 3, H, W) [+ latent (B, Cz, H/8, W/8)] -> next frame.
    Layer sizes as in Finn et al.'s prediction_model.py; H and W must be multiples of 8."""

    def __init__(self, image_size: int, lstm_sizes=(32, 32, 64, 64, 128, 64, 32), num_masks: int = 10,
                 kernel_size: int = 5, relu_shift: float = 1e-12, latent_channels: int = 0,
                 lstm_kernel: int = 5):
        super().__init__()
        s, k = lstm_sizes, lstm_kernel
        self.num_masks, self.kernel_size, self.relu_shift = num_masks, kernel_size, relu_shift
        norm = lambda c: nn.GroupNorm(1, c)  # layer norm over (C, H, W), per-channel affine
        self.enc0 = nn.Sequential(nn.Conv2d(3, 32, 5, stride=2, padding=2), norm(32))          # H/2
        self.lstm = nn.ModuleList([
            CDNALSTMCell(32, s[0], k), CDNALSTMCell(s[0], s[1], k),                            # H/2
            CDNALSTMCell(s[1], s[2], k), CDNALSTMCell(s[2], s[3], k),                          # H/4
            CDNALSTMCell(s[3], s[4], k),                                                       # H/8
            CDNALSTMCell(s[4], s[5], k),                                                       # H/4
            CDNALSTMCell(s[5] + s[1], s[6], k),                                                # H/2
        ])
        self.norms = nn.ModuleList([norm(c) for c in s])
        self.enc1 = nn.Conv2d(s[1], s[1], 3, stride=2, padding=1)                              # H/4
        self.enc2 = nn.Conv2d(s[3], s[3], 3, stride=2, padding=1)                              # H/8
        self.enc3 = nn.Conv2d(s[3] + latent_channels, s[3], 1)                                 # H/8
        self.enc4 = nn.ConvTranspose2d(s[4], s[4], 4, stride=2, padding=1)                     # H/4
        self.enc5 = nn.ConvTranspose2d(s[5] + s[1], s[5] + s[1], 4, stride=2, padding=1)       # H/2
        self.enc6 = nn.Sequential(nn.ConvTranspose2d(s[6] + 32, s[6], 4, stride=2, padding=1), norm(s[6]))  # H
        self.scratch = nn.Conv2d(s[6], 3, 1)                        # an image drawn from scratch
        self.masks = nn.Conv2d(s[6], num_masks + 3, 1)              # prev, background, scratch, transforms
        self.kernels = nn.Linear(s[4] * (image_size // 8) ** 2, num_masks * kernel_size ** 2)

    def forward(self, prev, first, state=None, latent=None):
        """prev, first (B, 3, H, W); state: the LSTM states or None -> (frame, state)."""
        B, _, H, W = prev.shape
        state = list(state) if state is not None else [None] * 7
        enc0 = torch.relu(self.enc0(prev))                                # (B, 32, H/2, W/2)
        h = enc0
        for i in (0, 1):
            h, state[i] = self.lstm[i](h, state[i]); h = self.norms[i](h)
        enc1 = torch.relu(self.enc1(h))                                   # (B, s1, H/4, W/4)
        h = enc1
        for i in (2, 3):
            h, state[i] = self.lstm[i](h, state[i]); h = self.norms[i](h)
        enc2 = torch.relu(self.enc2(h))                                   # (B, s3, H/8, W/8)
        if latent is not None:
            enc2 = torch.cat([enc2, latent], dim=1)
        h5, state[4] = self.lstm[4](torch.relu(self.enc3(enc2)), state[4])
        h5 = self.norms[4](h5)                                            # (B, s4, H/8, W/8)
        h, state[5] = self.lstm[5](torch.relu(self.enc4(h5)), state[5])
        h = torch.cat([self.norms[5](h), enc1], dim=1)                    # (B, s5 + s1, H/4, W/4)
        h, state[6] = self.lstm[6](torch.relu(self.enc5(h)), state[6])
        h = torch.cat([self.norms[6](h), enc0], dim=1)                    # (B, s6 + 32, H/2, W/2)
        enc6 = torch.relu(self.enc6(h))                                   # (B, s6, H, W)

        # CDNA: normalised kernels from the bottleneck, applied to every colour channel alike
        k = self.kernel_size
        kern = self.kernels(h5.flatten(1)).view(B * self.num_masks, 1, k, k)
        kern = F.relu(kern - self.relu_shift) + self.relu_shift
        kern = kern / kern.sum(dim=(2, 3), keepdim=True)
        with torch.autocast(prev.device.type, enabled=False):  # a depthwise conv: slower in bf16 on CPUs
            moved = F.conv2d(prev.float().transpose(0, 1), kern.float(), padding=k // 2, groups=B)  # (3, B*N, H, W)
        moved = moved.view(3, B, self.num_masks, H, W).permute(1, 2, 0, 3, 4)   # (B, N, 3, H, W)
        layers = torch.cat([prev[:, None], first[:, None], torch.sigmoid(self.scratch(enc6))[:, None],
                            moved], dim=1)                                      # (B, N+3, 3, H, W)
        masks = torch.softmax(self.masks(enc6), dim=1)[:, :, None]             # (B, N+3, 1, H, W)
        return (masks * layers).sum(dim=1), state

    def rollout(self, video, steps: int, m: int, p_truth: float = 0.0, latent=None):
        """Predict frames 1..steps from video (B, T0, 3, H, W): frames 0..m-1 are always fed
        from the video; later inputs come from the video for a random round(p_truth * B) of
        the batch (scheduled sampling), else from the model's own last prediction.
        Returns (B, steps, 3, H, W), the predictions of frames 1..steps."""
        B = video.shape[0]
        first, prev, state, out = video[:, 0], video[:, 0], None, []
        n_truth = round(p_truth * B)
        for t in range(1, steps + 1):
            pred, state = self(prev, first, state, latent)
            out.append(pred)
            if t < m:
                prev = video[:, t]
            elif n_truth > 0 and t < video.shape[1]:
                use = torch.zeros(B, dtype=torch.bool, device=video.device)
                use[torch.randperm(B, device=video.device)[:n_truth]] = True
                prev = torch.where(use[:, None, None, None], video[:, t], pred)
            else:
                prev = pred
        return torch.stack(out, dim=1)


@dataclass
class CDNAConfig(ModelConfig):
    # Finn et al. 2016, research/video_prediction/prediction_model.py and prediction_train.py
    lstm_sizes: tuple = (32, 32, 64, 64, 128, 64, 32)  # the seven conv-LSTM layers
    num_masks: int = 10          # CDNA transformations (--num_masks=10)
    kernel_size: int = 5         # DNA_KERN_SIZE
    lstm_kernel: int = 5         # the ConvLSTMs' kernel (the reference: 5x5)
    relu_shift: float = 1e-12    # RELU_SHIFT, lower bound of kernel entries before normalising
    schedsamp_k: float = 900.0   # --schedsamp_k; <= 0 feeds the model its own predictions always

    def __post_init__(self):
        super().__post_init__()
        self.lstm_sizes = tuple(self.lstm_sizes)
        if self.image_size % 8:
            raise ValueError(f"CDNA needs image_size divisible by 8, got {self.image_size}")
        if len(self.lstm_sizes) != 7 or min(self.lstm_sizes) < 1:
            raise ValueError(f"lstm_sizes must be seven positive ints, got {self.lstm_sizes}")
        if self.num_masks < 1 or min(self.kernel_size, self.lstm_kernel) < 1 or \
                self.kernel_size % 2 == 0 or self.lstm_kernel % 2 == 0:
            raise ValueError("num_masks must be >= 1, kernel_size and lstm_kernel positive odd numbers")
        if self.relu_shift <= 0:
            raise ValueError(f"relu_shift must be positive, got {self.relu_shift}")
        if self.frames < 2:
            raise ValueError(f"a video needs at least 2 frames, got {self.frames}")


class CDNA(Model):
    """Deterministic CDNA video predictor (Finn et al. 2016). Not jumpy."""

    jumpy = False

    def __init__(self, config: CDNAConfig):
        super().__init__()
        self.config = c = config
        self.predictor = CDNAPredictor(c.image_size, c.lstm_sizes, c.num_masks, c.kernel_size, c.relu_shift,
                                       lstm_kernel=c.lstm_kernel)

    def forward(self, batch, step):
        video, m = training_video(batch)                                  # (B, T, 3, H, W)
        T = video.shape[1]
        p = ground_truth_fraction(step, self.config.schedsamp_k)
        pred = self.predictor.rollout(video, T - 1, m, p)                 # frames 1..T-1
        # L2 on the frames after the context only (m..T-1), as the reference's training loss
        # (prediction_train.py pairs images[context_frames:] with gen_images[context_frames - 1:])
        err = (pred[:, m - 1:].float() - video[:, m:]) ** 2
        return {"loss": err.mean(), "mse": err.mean().detach(), "p_ground_truth": torch.tensor(p)}

    @torch.no_grad()
    def sample(self, context_frames, context_viewpoints, query_viewpoints, n_samples):
        m, end = check_prefix(context_viewpoints, query_viewpoints)
        pred = self.predictor.rollout(context_frames, end - 1, m)          # (B, end-1, 3, H, W)
        out = gather_frames(pred[:, None], frame_indices(query_viewpoints) - 1)
        # deterministic: every sample is the same prediction
        return out.clamp(0, 1).expand(-1, n_samples, -1, -1, -1, -1).contiguous()
