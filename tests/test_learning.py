"""Does a model learn at all? JUMP trained on a handful of Color Reaction videos must
reproduce them from their first frames: its prior samples beat repeating the last context
frame by far, and they follow their context (shuffled contexts ruin them). A model with a
wiring bug (a renderer that ignores time, a prior that ignores its context) fails this at
any scale; the full data sets then only add learning speed and generalisation."""
import torch

from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.config import DataConfig
from jumpbench.benchmarks.evaluation.evaluate import baseline_mse, min_mse
from jumpbench.models.jump import JUMP, JUMPConfig

torch.set_num_threads(1)


def test_jump_overfits_a_few_videos(small_cr):
    scenes = DS.Scenes(small_cr, "train", 16)
    items = B.stack(scenes, range(6))
    frames, vps = items["frames"], items["viewpoints"]                # (6, 12, 3, 16, 16)
    torch.manual_seed(0)
    cfg = JUMPConfig(image_size=16, viewpoint_dim=1, frames=12, nt=2, stride_to_hidden=1, nf_to_hidden=32,
                     nf_enc=32, nf_to_obs=32, nf_dec=32, kernel=3, pixel_var_start=0.01, pixel_var_end=0.01)
    model = JUMP(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    dc = DataConfig(image_size=16, context_min=1, context_max=6, targets_min=1, targets=6)
    g = torch.Generator().manual_seed(0)
    for step in range(800):  # about 20 s on one thread
        batch = B.random_split(frames, vps, dc, g)
        loss = model(batch, step)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    video = DS.to_float(frames)
    torch.manual_seed(1)
    got = float(min_mse(model, video, 5, n_samples=4).mean())
    base = baseline_mse(video, 5)
    # measured: 0.00046 after 800 steps against 0.0067 for repeat-last (with a sigmoid output
    # head, which learns about 10x slower: 0.0050)
    assert got < 0.3 * base["repeat_last"], (got, base)
    # the prior follows its context: the contexts of other videos give far worse samples
    shuffled = torch.cat([video[:, :5].roll(1, 0), video[:, 5:]], 1)
    torch.manual_seed(1)
    assert float(min_mse(model, shuffled, 5, n_samples=4).mean()) > 2 * got
    # and the renderer follows time: the sampled frames change along the video as the truth does
    times = torch.arange(12.0).view(1, 12, 1).expand(6, 12, 1)
    with torch.no_grad():
        s = model.sample(video[:, :5], times[:, :5], times[:, 5:], 1)[:, 0]   # (6, 7, 3, 16, 16)
    assert (s[:, -1] - s[:, 0]).abs().mean() > 0.3 * (video[:, -1] - video[:, 5]).abs().mean()
