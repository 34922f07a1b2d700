"""Narratives: the combinatorics, the two narratives' rules, determinism across workers and
shard sizes, resume after an interrupted run, and the generator's refusals."""
import numpy as np
import pytest

from jumpbench import records
from jumpbench.errors import JumpbenchError
from jumpbench.generators import narratives as nar
from jumpbench.generators.base import generate, scene_seed


def test_combinatorics_match_the_paper():
    per_shape = len(nar.COLORS) * len(nar.SIZES) * len(nar.KINDS)
    assert per_shape == 192 and per_shape ** 5 > 260e9


def test_shapes_draw_every_attribute_independently():
    rng = np.random.default_rng(0)
    draws = [nar.sample_shapes(rng, 5, 64) for _ in range(400)]
    for key, n in (("kinds", 4), ("colors", 12), ("sizes", 4)):
        values = np.concatenate([d[key] for d in draws])
        assert set(values.tolist()) == set(range(n))
    kinds = np.stack([d["kinds"] for d in draws])
    assert (kinds[:, 0] == kinds[:, 1]).mean() < 0.4  # not tied across shapes


def test_shapes_never_overlap():
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = nar.sample_shapes(rng, 5, 64)
        c, r = d["start"], d["radii"]
        for i in range(5):
            assert r[i] + 1 <= c[i, 0] <= 63 - r[i] and r[i] + 1 <= c[i, 1] <= 63 - r[i]
            for j in range(i):
                assert np.hypot(*(c[i] - c[j])) >= r[i] + r[j]


def test_masks_tell_kinds_and_sizes_apart():
    masks = {(k, s): nar.shape_mask(k, s, 64) for k in range(4) for s in range(4)}
    for s in range(4):
        areas = [masks[k, s].sum() for k in range(4)]
        assert len(set(areas)) == 4, areas  # four different kinds at one size
    for k in range(4):
        areas = [masks[k, s].sum() for s in range(4)]
        assert areas == sorted(areas) and len(set(areas)) == 4


@pytest.mark.parametrize("frames", [20, 40, 5])
def test_salesman_visits_every_shape_in_a_random_order(frames):
    rng = np.random.default_rng(2)
    orders = set()
    for _ in range(60):
        spec = nar.sample_traveling_salesman(rng, frames, 64)
        pos, r = spec["positions"], spec["radii"]
        assert pos.shape == (frames, 5, 2)
        assert sorted(spec["order"].tolist()) == [1, 2, 3, 4]
        np.testing.assert_array_equal(pos[:, 1:], np.repeat(pos[:1, 1:], frames, 0))  # others still
        ends = [round((k + 1) * (frames - 1) / 4) for k in range(4)]
        for target, t in zip(spec["order"], ends):  # touching the visited shape at the leg's end
            assert np.hypot(*(pos[t, 0] - pos[t, target])) == pytest.approx(r[0] + r[target] + 1, abs=1e-6)
        orders.add(tuple(spec["order"]))
    assert len(orders) > 12  # of the 24 orders


def test_color_reaction_changes_colour_halfway():
    rng = np.random.default_rng(3)
    for _ in range(50):
        spec = nar.sample_color_reaction(rng, 12, 64)
        (shape, frame, old, new), = spec["color_changes"].tolist()
        assert (shape, frame) == (1, 6) and old != new
        assert (spec["frame_colors"][:6, 1] == old).all() and (spec["frame_colors"][6:, 1] == new).all()
        assert (spec["positions"][5:, 0] == spec["positions"][5, 0]).all()  # arrived by frame 6
        assert not np.allclose(spec["positions"][0, 0], spec["positions"][5, 0])


def test_rendered_frames_show_the_shapes():
    gen = nar.NarrativesGenerator(nar.NarrativesConfig())
    spec = gen.spec("test", 0)
    frames = nar.render(spec, 64)
    assert frames.shape == (20, 64, 64)
    for t in (0, 19):  # each shape's colour appears
        assert set((spec["frame_colors"][t] + 1).tolist()) <= set(np.unique(frames[t]).tolist())
    assert not np.array_equal(frames[0], frames[-1])


def test_scene_is_a_pure_function_of_seed_split_index():
    gen = nar.NarrativesGenerator(nar.NarrativesConfig(seed=5))
    a, b = gen.scene("train", 3), gen.scene("train", 3)
    assert records.serialize_example(a) == records.serialize_example(b)
    assert records.serialize_example(gen.scene("test", 3)) != records.serialize_example(a)
    assert int(a["scene_seed"]) == scene_seed(5, "train", 3)
    assert scene_seed(5, "train", 3) != scene_seed(5, "test", 3)


def _all_records(root):
    ds = records.Dataset(root)
    return {s: [ds.raw(s, i) for i in range(ds.num(s))] for s in ("train", "test")}


def test_bytes_do_not_depend_on_workers_or_shard_size(tmp_path):
    gen = nar.NarrativesGenerator(nar.NarrativesConfig())
    counts = {"train": 30, "test": 5}
    one = generate(gen, tmp_path / "w1", counts, 7, workers=1, progress=False)
    two = generate(gen, tmp_path / "w2", counts, 7, workers=2, progress=False)
    other = generate(gen, tmp_path / "s16", counts, 16, workers=1, progress=False)
    for split in counts:
        for a, b in zip(sorted((one / split).iterdir()), sorted((two / split).iterdir())):
            assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert _all_records(one) == _all_records(other)


class Interrupting(nar.NarrativesGenerator):
    def scene(self, split, index):
        if split == "train" and index == 17:
            raise KeyboardInterrupt
        return super().scene(split, index)


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path):
    counts = {"train": 30, "test": 5}
    with pytest.raises(KeyboardInterrupt):
        generate(Interrupting(nar.NarrativesConfig()), tmp_path / "a", counts, 8, progress=False)
    root = tmp_path / "a" / "traveling_salesman"
    assert not (root / "manifest.json").exists()
    assert sorted(p.name for p in (root / "train").iterdir()) == [
        f"{k}-of-4.{ext}" for k in (1, 2) for ext in ("tfindex", "tfmeta", "tfrecord")]
    with pytest.raises(JumpbenchError, match="incomplete"):
        records.Dataset(root)
    gen = nar.NarrativesGenerator(nar.NarrativesConfig())
    generate(gen, tmp_path / "a", counts, 8, progress=False)
    fresh = generate(gen, tmp_path / "b", counts, 8, progress=False)
    assert _all_records(root) == _all_records(fresh)
    assert records.load_manifest(root)["splits"] == records.load_manifest(fresh)["splits"]


def test_finished_set_is_left_alone_and_other_parameters_refused(tmp_path, capsys):
    gen = nar.NarrativesGenerator(nar.NarrativesConfig())
    root = generate(gen, tmp_path, {"train": 4, "test": 2}, 4, progress=False)
    before = (root / "manifest.json").stat().st_mtime_ns
    generate(gen, tmp_path, {"train": 4, "test": 2}, 4, progress=True)
    assert "nothing to do" in capsys.readouterr().out
    assert (root / "manifest.json").stat().st_mtime_ns == before
    other = nar.NarrativesGenerator(nar.NarrativesConfig(seed=1))
    with pytest.raises(JumpbenchError, match="seed: 0 -> 1.*--overwrite"):
        generate(other, tmp_path, {"train": 4, "test": 2}, 4, progress=False)
    assert (root / "manifest.json").stat().st_mtime_ns == before
    generate(other, tmp_path, {"train": 4, "test": 2}, 4, overwrite=True, progress=False)
    assert records.load_manifest(root)["params"]["seed"] == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(narrative="dance"), "unknown narrative"),
    (dict(size=16), "too small"),
    (dict(frames=3), "at least 5 frames"),
    (dict(seed=-1), "non-negative"),
])
def test_bad_configs(kwargs, message):
    with pytest.raises(JumpbenchError, match=message):
        nar.NarrativesConfig(**kwargs)


def test_frames_40_and_other_sizes_work():
    gen = nar.NarrativesGenerator(nar.NarrativesConfig(frames=40, size=32))
    frames = records.decode_frames(gen.scene("train", 0)["frames"], "x")
    assert frames.shape == (40, 32, 32, 3)
