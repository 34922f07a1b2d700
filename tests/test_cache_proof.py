"""The decoded-frame cache proves itself (issue 30, hole 3): a cache whose values, shapes,
viewpoints, files or proof were changed is rebuilt with one line, a scene that fails past the
opening spot check is decoded again from the shards, and a run's result does not depend on
what the cache folder holds."""
import json

import numpy as np
import pytest

from jumpbench import cache as FC
from jumpbench import dataset as DS
from jumpbench.records import load_manifest
from conftest import run


@pytest.fixture
def scenes(small_ts, tmp_path, monkeypatch):
    monkeypatch.setenv("JUMPBENCH_CACHE", str(tmp_path / "cache"))
    return DS.Scenes(small_ts, "train", 16)


def _builds(monkeypatch):
    calls, build = [], FC.FrameCache._build
    monkeypatch.setattr(FC.FrameCache, "_build", staticmethod(lambda *a: calls.append(1) or build(*a)))
    return calls


def _cache_lines(text):
    return [line for line in text.splitlines() if "frame cache" in line]


def test_a_cache_records_the_dataset_its_shapes_and_hashes(scenes, capsys):
    cache = FC.FrameCache(scenes, progress=False)
    index_path, proof_path = FC.FrameCache.proof_paths(scenes)
    proof = json.loads(proof_path.read_text())
    manifest = load_manifest(scenes.ds.root)
    assert proof["dataset_sha256"] == DS.dataset_sha256(scenes.ds.root)
    assert proof["params_sha256"] == manifest["params_sha256"]
    assert proof["frames"] == {"shape": [40, 20, 3, 16, 16], "dtype": "uint8"}
    assert proof["viewpoints"] == {"shape": [40, 20, 1], "dtype": "float32"}
    index = np.load(index_path)
    assert index.shape == (40, 32) and index[5].tobytes() == FC._sha(scenes.arrays(5)[0])
    np.testing.assert_array_equal(cache.frames[7], scenes.arrays(7)[0])
    assert FC.FrameCache.nbytes(scenes) == cache.frames.nbytes  # from the dataset's shapes
    assert _cache_lines(capsys.readouterr().err) == []  # a first build says nothing


def _invert(fpath, vpath, scenes=slice(3, 6)):
    f = np.load(fpath)
    f[scenes] = 255 - f[scenes]
    np.save(fpath, f)


def _cut(fpath, vpath):
    np.save(fpath, np.load(fpath)[:, :10])


def _nan(fpath, vpath):
    v = np.load(vpath)
    v[2, 4] = np.nan
    np.save(vpath, v)


def _edit_proof(key, value):
    def damage(fpath, vpath):
        proof = fpath.with_name(fpath.name.replace(".frames.npy", ".proof.json"))
        p = json.loads(proof.read_text())
        p[key] = value
        proof.write_text(json.dumps(p))
    return damage


@pytest.mark.parametrize("damage, says", [
    (_invert, "are not those it was built with"),
    (_cut, "frames.npy holds uint8 [40, 10, 3, 16, 16], the dataset needs uint8 [40, 20, 3, 16, 16]"),
    (_nan, "viewpoints.npy holds values that are not finite"),
    (lambda f, v: f.write_bytes(b""), "frames.npy is unreadable"),
    (lambda f, v: v.write_bytes(b"\x93NUMPY garbage"), "viewpoints.npy is unreadable"),
    (lambda f, v: f.with_name(f.name.replace(".frames.npy", ".index.npy")).write_bytes(b""), "index.npy is unreadable"),
    (lambda f, v: f.with_name(f.name.replace(".frames.npy", ".proof.json")).unlink(), "no proof"),
    (_edit_proof("dataset_sha256", "0" * 64), "dataset_sha256"),
    (_edit_proof("index_sha256", "0" * 64), "index.npy is not the file it was built with"),
])
def test_a_cache_that_does_not_prove_itself_is_rebuilt_with_one_line(scenes, monkeypatch, capsys, damage, says):
    good = FC.FrameCache(scenes, progress=False)
    fpath, vpath = FC.FrameCache.paths(scenes)
    damage(fpath, vpath)
    assert FC.FrameCache.nbytes(scenes) == good.frames.nbytes  # a zero-byte file is no EOFError here
    builds = _builds(monkeypatch)
    capsys.readouterr()
    cache = FC.FrameCache(scenes, progress=False)
    lines = _cache_lines(capsys.readouterr().err)
    assert builds == [1] and len(lines) == 1 and says in lines[0] and lines[0].endswith("rebuilding it"), lines
    np.testing.assert_array_equal(cache.frames, good.frames)
    np.testing.assert_array_equal(cache.viewpoints, good.viewpoints)
    np.testing.assert_array_equal(np.load(fpath), good.frames)  # written over, and proven again:
    FC.FrameCache(scenes, progress=False)
    assert builds == [1] and _cache_lines(capsys.readouterr().err) == []


def test_a_scene_past_the_spot_check_is_checked_when_a_batch_first_uses_it(scenes, monkeypatch, capsys):
    good = FC.FrameCache(scenes, progress=False).frames.copy()
    fpath, _ = FC.FrameCache.paths(scenes)
    f = np.load(fpath)
    f[9] = 255 - f[9]
    np.save(fpath, f)
    monkeypatch.setattr(FC, "SPOT_CHECK", 0)  # a large cache: most scenes are not spot-checked
    builds = _builds(monkeypatch)
    cache = FC.FrameCache(scenes, progress=False)
    assert builds == [] and not cache.checked.any()
    batches = list(cache.batches([[1, 9, 9, 30], [9, 2]]))
    np.testing.assert_array_equal(batches[0]["frames"].numpy(), good[[1, 9, 9, 30]])  # the shards' frames
    np.testing.assert_array_equal(batches[1]["frames"].numpy(), good[[9, 2]])
    lines = _cache_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "scene 9's frames" in lines[0] and "decodes such scenes from the shards" in lines[0]
    assert not FC.FrameCache.proof_paths(scenes)[1].exists()  # the next run rebuilds it
    FC.FrameCache(scenes, progress=False)
    assert builds == [1] and "no proof" in _cache_lines(capsys.readouterr().err)[0]


def _rows(folder):
    return [{k: v for k, v in json.loads(line).items() if k != "wall"}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_runs_result_does_not_depend_on_what_the_cache_holds(small_ts, tmp_path, monkeypatch):
    """Trained on a sound cache, and again on one whose viewpoints are NaN and whose frames
    differ for scenes past the spot check: the same rows, done (not "diverged at step 0")."""
    monkeypatch.setenv("JUMPBENCH_CACHE", str(tmp_path / "cache"))
    args = ("run", "--model", "jump", "--data", small_ts, "--preset", "smoke", "--quiet")
    r = run(*args, "--out", tmp_path / "a")
    assert r.exit_code == 0 and _cache_lines(r.output) == [], r.output
    fpath, vpath = FC.FrameCache.paths(DS.Scenes(small_ts, "train", 16))
    _nan(fpath, vpath)
    r = run(*args, "--out", tmp_path / "b")
    assert r.exit_code == 0 and len(_cache_lines(r.output)) == 1 and "not finite" in r.output, r.output
    _invert(fpath, vpath, slice(None))  # every scene: each batch meets some
    monkeypatch.setattr(FC, "SPOT_CHECK", 0)
    r = run(*args, "--out", tmp_path / "c")
    assert r.exit_code == 0 and len(_cache_lines(r.output)) == 1 and "from the shards" in r.output, r.output
    folders = [tmp_path / x / "traveling_salesman" / "jump" / "smoke" / "seed-0" for x in "abc"]
    assert _rows(folders[0]) == _rows(folders[1]) == _rows(folders[2])
    assert all(json.loads((f / "status.json").read_text())["status"] == "done" for f in folders)
