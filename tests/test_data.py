"""Scenes to batches (scenes.py, dataset.py, cache.py, benchmarks/batches.py): viewpoints,
downsampling, context/target splits, batches from several loader workers without duplicates,
and the decoded-frame cache."""
import numpy as np
import pytest
import torch

from jumpbench import cache as FC
from jumpbench import dataset as DS
from jumpbench.benchmarks import batches as B
from jumpbench.benchmarks.config import DataConfig
from jumpbench.errors import JumpbenchError
from jumpbench.records import VIEWPOINT_DIMS
from jumpbench.scenes import downsample, viewpoints


def test_dice_viewpoints_in_gqn_datasets_order():
    cams = np.array([[1.0, 2.0, 3.0, np.pi / 2, -np.pi / 6]], np.float32)
    v = viewpoints({"cameras": cams}, "cameras")
    np.testing.assert_allclose(v, [[1, 2, 3, 1, 0, -0.5, np.cos(np.pi / 6)]], atol=1e-6)
    t = viewpoints({"timestamps": np.arange(4, dtype=np.float32)}, "timestamps")
    assert t.shape == (4, 1) and t[3, 0] == 3
    assert (v.shape[1], t.shape[1]) == (VIEWPOINT_DIMS["cameras"], VIEWPOINT_DIMS["timestamps"])


def test_area_downsampling():
    f = np.zeros((1, 4, 4, 3), np.uint8)
    f[0, :2, :2] = 200
    np.testing.assert_array_equal(downsample(f, 2)[0, :, :, 0], [[200, 0], [0, 0]])
    with pytest.raises(JumpbenchError):
        downsample(np.zeros((1, 6, 6, 3), np.uint8), 4)


def test_random_split_draws_disjoint_frames():
    frames = torch.arange(20, dtype=torch.uint8).view(1, 20, 1, 1, 1).expand(3, 20, 3, 2, 2).clone()
    vps = torch.arange(20.0).view(1, 20, 1).expand(3, 20, 1)
    cfg = DataConfig(image_size=8, context_min=2, context_max=4, targets_min=1, targets=3)
    sizes, counts = set(), set()
    for s in range(40):
        b = B.random_split(frames, vps, cfg, torch.Generator().manual_seed(s))
        m, k = b["context_frames"].shape[1], b["target_frames"].shape[1]
        sizes.add(m)
        counts.add(k)
        assert b["target_frames"].shape[0] == 3
        for i in range(3):  # frames match their viewpoints, context and targets disjoint
            ctx = b["context_viewpoints"][i, :, 0].long()
            tgt = b["target_viewpoints"][i, :, 0].long()
            assert torch.equal((b["context_frames"][i, :, 0, 0, 0] * 255).round().long(), ctx)
            assert not set(ctx.tolist()) & set(tgt.tolist())
    assert sizes == {2, 3, 4}
    assert counts == {1, 2, 3}  # the number of targets is drawn per batch too


def test_random_split_fits_short_scenes():
    """M + K never exceeds the frames: 4 frames, up to 3 context and 3 targets."""
    frames = torch.zeros(2, 4, 3, 2, 2, dtype=torch.uint8)
    vps = torch.arange(4.0).view(1, 4, 1).expand(2, 4, 1)
    cfg = DataConfig(image_size=8, context_min=1, context_max=3, targets_min=1, targets=3)
    for s in range(30):
        b = B.random_split(frames, vps, cfg, torch.Generator().manual_seed(s))
        assert b["context_frames"].shape[1] + b["target_frames"].shape[1] <= 4


def test_prefix_split():
    frames = torch.zeros(2, 10, 3, 4, 4, dtype=torch.uint8)
    vps = torch.arange(10.0).view(1, 10, 1).expand(2, 10, 1)
    b = B.prefix_split(frames, vps, 4)
    assert b["context_viewpoints"][0, :, 0].tolist() == [0, 1, 2, 3]
    assert b["target_viewpoints"][1, :, 0].tolist() == [4, 5, 6, 7, 8, 9]
    with pytest.raises(JumpbenchError):
        B.prefix_split(frames, vps, 10)


def test_loader_workers_give_each_step_its_batch_once(small_ts):
    scenes = DS.Scenes(small_ts, "train", 32)
    sampler = B.StepBatches(len(scenes), 4, seed=3, start=0, stop=6)
    want = list(sampler)
    got = [batch["index"].tolist() for batch in B.loader(scenes, sampler, workers=2)]
    assert got == want
    assert list(B.StepBatches(len(scenes), 4, seed=3, start=2, stop=6)) == want[2:]  # resume
    item = scenes[0]
    assert item["frames"].shape == (20, 3, 32, 32) and item["viewpoints"].shape == (20, 1)


def test_ddp_ranks_split_the_global_batch_of_a_step():
    """train.batch_size is the global batch: the processes of a data-parallel run share each
    step's scenes, the same scenes one process trains on."""
    full = list(B.StepBatches(100, 4, 0, 0, 3, rank=0, world=1))
    r0 = list(B.StepBatches(100, 4, 0, 0, 3, rank=0, world=2))
    r1 = list(B.StepBatches(100, 4, 0, 0, 3, rank=1, world=2))
    assert all(len(a) == len(b) == 2 and sorted(a + b) == sorted(f) for a, b, f in zip(r0, r1, full))
    with pytest.raises(JumpbenchError, match="does not split evenly over 3 processes"):
        B.StepBatches(100, 4, 0, 0, 3, rank=0, world=3)


def test_threads_are_shared_by_the_processes_of_a_data_parallel_run(monkeypatch):
    from jumpbench import workers as W

    monkeypatch.delenv("JUMPBENCH_THREADS", raising=False)
    monkeypatch.setattr(W, "usable_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert (W.default_threads(), W.default_threads(jobs=2)) == (8, 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's, and run --procs 2's
    assert (W.default_threads(), W.default_threads(jobs=2)) == (4, 2)
    monkeypatch.setenv("JUMPBENCH_THREADS", "3")
    assert W.default_threads() == 3


def _count_builds(monkeypatch):
    """Patch FrameCache._build to count its calls; returns the list it appends to."""
    calls, build = [], FC.FrameCache._build
    monkeypatch.setattr(FC.FrameCache, "_build", staticmethod(lambda *a: calls.append(1) or build(*a)))
    return calls


def test_the_frame_cache_holds_the_decoded_frames_and_is_built_once(small_ts, tmp_path, monkeypatch):
    monkeypatch.setenv("JUMPBENCH_CACHE", str(tmp_path))
    builds = _count_builds(monkeypatch)
    scenes = DS.Scenes(small_ts, "test", 16)
    cache = FC.FrameCache(scenes, progress=False)
    for i in (0, len(scenes) - 1):
        np.testing.assert_array_equal(cache.frames[i], scenes[i]["frames"].numpy())
        np.testing.assert_array_equal(cache.viewpoints[i], scenes[i]["viewpoints"].numpy())
    again = FC.FrameCache(scenes, progress=False)  # from the files
    assert builds == [1]
    np.testing.assert_array_equal(again.frames, cache.frames)


def test_an_unreadable_frame_cache_is_rebuilt_not_fatal(small_ts, tmp_path, monkeypatch):
    monkeypatch.setenv("JUMPBENCH_CACHE", str(tmp_path))
    scenes = DS.Scenes(small_ts, "test", 16)
    good = FC.FrameCache(scenes, progress=False).frames.copy()
    fpath, _ = FC.FrameCache.paths(scenes)
    fpath.write_bytes(fpath.read_bytes()[:200])  # truncated, as by a disk that filled up
    builds = _count_builds(monkeypatch)
    np.testing.assert_array_equal(FC.FrameCache(scenes, progress=False).frames, good)
    assert builds == [1]
    np.testing.assert_array_equal(np.load(fpath), good)  # and written over


def test_a_run_waits_for_the_frame_cache_another_is_building(small_ts, tmp_path, monkeypatch):
    """Runs started together on one dataset (a sweep's jobs) decode it once, not once each."""
    import threading

    from jumpbench.files import file_lock

    monkeypatch.setenv("JUMPBENCH_CACHE", str(tmp_path))
    scenes = DS.Scenes(small_ts, "test", 16)
    fpath, vpath = FC.FrameCache.paths(scenes)
    fpath.parent.mkdir(parents=True)
    built = FC.FrameCache._build(scenes, False)
    builds = _count_builds(monkeypatch)
    got = {}
    with file_lock(fpath.with_name("test-16px.lock")):  # another process is building it
        waiter = threading.Thread(target=lambda: got.update(cache=FC.FrameCache(scenes, progress=False)))
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive() and not got  # it waits rather than building a second copy
        FC.FrameCache._save(built, scenes)  # the builder finishes
    waiter.join(30)
    assert builds == [] and got  # loaded what the other built
    np.testing.assert_array_equal(got["cache"].frames, built[0])


def test_area_downsampling_is_the_rounded_mean_of_each_block():
    rng = np.random.default_rng(0)
    for h, size in ((64, 32), (64, 16), (63, 21), (30, 5)):
        f = rng.integers(0, 256, (3, h, h, 3), dtype=np.uint8)
        f[0, :2, :4, 0] = [[1, 2, 2, 3], [1, 2, 2, 3]]  # 2x2 blocks: ties at 1.5 and 2.5, both to 2
        k = h // size
        want = np.rint(f.reshape(3, size, k, size, k, 3).astype(np.float64).mean((2, 4))).astype(np.uint8)
        np.testing.assert_array_equal(downsample(f, size), want)


def test_the_frame_cache_is_built_alike_by_several_processes(small_ts, monkeypatch):
    monkeypatch.setattr(FC, "CACHE_CHUNK", 8)
    scenes = DS.Scenes(small_ts, "train", 16)
    one, two = FC.FrameCache._build(scenes, False, workers=1), FC.FrameCache._build(scenes, False, workers=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one[0][len(scenes) - 1], scenes[len(scenes) - 1]["frames"].numpy())
