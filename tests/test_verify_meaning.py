"""verify and the readers check what records mean, and generate repairs a finished set (issue 30,
holes 1 and 2): a record whose framing, sha256 and index all hold but whose frames, keys or
values are not what the manifest declares is refused by `jumpbench verify`, the reader
(`jumpbench.open_dataset`, `view`, `run`) and never trained on; a manifest that disagrees with
itself is refused everywhere; `generate` over a finished set rewrites swapped indexes and
shards that fail their sha256, byte for byte as the manifest records them."""
import io
import json
import shutil

import numpy as np
import pytest

import jumpbench
from conftest import one_line_error, run
from jumpbench import records
from jumpbench.errors import JumpbenchError

GEN = ("generate", "narratives", "--n", 6, "--test-n", 4, "--shard-size", 4, "--quiet")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small Traveling Salesman set (6 train in 2 shards, 4 test), copied by each test."""
    out = tmp_path_factory.mktemp("meaning")
    return jumpbench.generate("narratives", out, 6, 4, shard_size=4, progress=False)


@pytest.fixture
def ts(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "data" / "traveling_salesman")


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def _fault_injection():
    """scripts/fault_injection.py as a module: its forge() is the one way to forge a record."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "fault_injection.py"
    spec = importlib.util.spec_from_file_location("fault_injection", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


forge = _fault_injection().forge


def jpeg(png):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(records.decode_png(png)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def set_frame(k, make):
    def change(feats):
        feats["frames"][k] = make(feats["frames"][k])
    return change


def set_value(key, value):
    def change(feats):
        feats[key] = feats[key].copy()
        feats[key].flat[1] = value
    return change


def drop(key):
    return lambda feats: feats.pop(key)


def as_dtype(key, dtype):
    def change(feats):
        feats[key] = feats[key].astype(dtype)
    return change


def cut(key):
    def change(feats):
        feats[key] = feats[key][:-2]
    return change


# ---------------------------------------------------------------- 1. every record against the schema

RECORDS = {  # a forged test record 0: what is wrong, and what the one-line refusal names
    "jpeg frame": (set_frame(3, jpeg), "frame 3 is not a PNG"),
    "rgb png frame": (set_frame(0, lambda b: records.encode_png(records.decode_png(b))), "8-bit palette PNGs"),
    "32px frame": (set_frame(5, lambda b: records.encode_png_palette(
        np.zeros((1, 32, 32), np.uint8), bytes(3) + bytes(range(36)))[0]), "frame 5 is a 32x32 PNG"),
    "nan positions": (set_value("positions", np.nan), "'positions' holds NaN"),
    "nan timestamps": (set_value("timestamps", np.nan), "'timestamps' holds NaN"),
    "inf timestamps": (set_value("timestamps", np.inf), "'timestamps' holds NaN or infinite"),
    "missing timestamps": (drop("timestamps"), "no 'timestamps'"),
    "int64 positions": (as_dtype("positions", np.int64), "'positions' holds int64"),
    "float kinds": (as_dtype("kinds", np.float32), "'kinds' holds float32"),
    "cut positions": (cut("positions"), "'positions' holds 198 values"),
    "bytes positions": (lambda f: f.update(positions=[b"x"]), "'positions' holds bytes"),  # was AttributeError
    "extra key": (lambda f: f.update(extra=np.zeros(2, np.int64)), "'extra'"),
    "other scene_seed": (lambda f: f.update(scene_seed=np.asarray([7], np.int64)), "scene_seed"),
    "other scene_index": (lambda f: f.update(scene_index=np.asarray([1], np.int64)), "holds scene 1"),
}


@pytest.mark.parametrize("case", list(RECORDS))
def test_a_record_that_means_something_else_is_refused(ts, tmp_path, case):
    change, text = RECORDS[case]
    forge(ts, "test", "1-of-1.tfrecord", 0, change)
    one_line_error(run("verify", "--quiet", ts), text)
    one_line_error(run("view", ts, "--out", tmp_path / "v.png"), text)
    assert not (tmp_path / "v.png").exists()
    scenes = jumpbench.open_dataset(ts, "test")
    with pytest.raises(JumpbenchError, match="1-of-1.tfrecord: scene 0 of test") as e:
        scenes[0]
    assert text in str(e.value) and "\n" not in str(e.value)
    scenes[1]  # the other scene still reads


@pytest.mark.parametrize("case", ["jpeg frame", "nan timestamps", "missing timestamps"])
def test_a_run_refuses_a_record_that_means_something_else(ts, tmp_path, case):
    """These three used to train: a JPEG frame decoded, NaN viewpoints, a KeyError line."""
    change, text = RECORDS[case]
    forge(ts, "train", "2-of-2.tfrecord", 1, change)
    r = run("run", "--model", "jump", "--data", ts, "--preset", "smoke", "--out", tmp_path / "runs", "--quiet")
    one_line_error(r, text)
    assert "Error:" not in r.output  # no internal exception named
    status = json.loads((tmp_path / "runs/traveling_salesman/jump/smoke/seed-0/status.json").read_text())
    assert status["status"] == "failed" and text in status["why"]


def test_an_older_layout_with_an_edited_seed_is_refused_by_its_records(ts, tmp_path):
    """A manifest of the layout before 1.1 has no hash to catch an edited seed; the records'
    scene_seed does. (That layout had no .tfmeta sidecars either: they would prove the seed.)"""
    m = json.loads((ts / "manifest.json").read_text())
    _downgrade(m)
    for meta in ts.glob("*/*.tfmeta"):
        meta.unlink()
    (ts / "manifest.json").write_text(json.dumps(m))
    assert run("verify", "--quiet", ts).exit_code == 0  # still read, as docs/records.md promises
    m["seed"] = m["params"]["seed"] = 5
    (ts / "manifest.json").write_text(json.dumps(m))
    one_line_error(run("verify", "--quiet", ts), "is not the one seed 5 gives scene 0 of train")
    with pytest.raises(JumpbenchError, match="scene_seed"):
        jumpbench.open_dataset(ts, "test")[1]
    # generate with the edited seed cannot call the set finished: refused, then written anew
    one_line_error(run(*GEN, "--seed", 5, "--out", ts.parent), "--overwrite")
    assert run(*GEN, "--seed", 5, "--out", ts.parent, "--overwrite").exit_code == 0
    assert records.verify(ts) == {"train": 6, "test": 4}
    assert records.load_manifest(ts)["params_sha256"]


def _downgrade(m):
    """A manifest of the current layout passed off as the layout before 1.1: no hash, no shard sizes."""
    del m["params_sha256"]
    for info in m["splits"].values():
        for shard in info["shards"]:
            del shard["bytes"], shard["index_sha256"]


@pytest.mark.parametrize("edit", ["version", "mnist_dir", "none"])
def test_a_downgraded_manifest_is_held_to_its_shards_sidecars(ts, tmp_path, edit):
    """Deleting params_sha256 and the shard sizes does not pass a current set off as the layout
    before 1.1: each shard's .tfmeta still carries the proof, and the manifest must hash to it."""
    m = json.loads((ts / "manifest.json").read_text())
    _downgrade(m)
    if edit == "version":
        m["version"] = "9.9"
    elif edit == "mnist_dir":
        m["params"]["mnist_dir"] = str(tmp_path / "mnist")
    (ts / "manifest.json").write_text(json.dumps(m))
    if edit == "none":  # the same fields: the sidecars prove them, and the set is still read
        assert run("verify", "--quiet", ts).exit_code == 0
        assert jumpbench.open_dataset(ts, "test")[0] is not None
        return
    before = files_of(ts)
    one_line_error(run("verify", "--quiet", ts), "1-of-2.tfmeta: its params_sha256")
    with pytest.raises(JumpbenchError, match="1-of-2.tfmeta") as e:
        jumpbench.open_dataset(ts, "test")[0]
    assert "\n" not in str(e.value)
    one_line_error(run(*GEN, "--out", ts.parent), "--overwrite")  # generate does not call it finished
    assert files_of(ts) == before
    for meta in ts.glob("*/*.tfmeta"):  # a truly old set (no sidecars) has no proof to check
        meta.unlink()
    assert run("verify", "--quiet", ts).exit_code == 0


# ---------------------------------------------------------------- 1. the manifest against itself

def _del_hash(m):
    del m["params_sha256"]


def _rehash(m):
    m["params_sha256"] = records.dataset_proof(m["generator"], m["version"], m["dataset"], m["params"])


MANIFESTS = {  # an edit, and what the one-line refusal names
    "viewpoint key cameras": (lambda m: m["viewpoint"].update(key="cameras"), "viewpoint 'cameras'"),
    "viewpoint dim 7": (lambda m: m["viewpoint"].update(dim=7), "viewpoint 'timestamps' of dimension 7"),
    "viewpoint dim x": (lambda m: m["viewpoint"].update(dim="x"), "of dimension 'x'"),
    "viewpoint dim true": (lambda m: m["viewpoint"].update(dim=True), "of dimension True"),
    "viewpoint key other": (lambda m: m["viewpoint"].update(key="pose"), "viewpoint key 'pose'"),
    "frames jpeg": (lambda m: m["schema"]["frames"].update(dtype="jpeg"), "dtype 'jpeg'"),
    "positions reshaped": (lambda m: m["schema"]["positions"].update(shape=["T", 10]), "schema of 'positions'"),
    "positions widened": (lambda m: m["schema"]["positions"].update(shape=["T", 5, 3]), "schema of 'positions'"),
    "key undeclared": (lambda m: m["schema"].pop("timestamps"), "viewpoint 'timestamps' is not in its schema"),
    "dtype float64": (lambda m: m["schema"]["kinds"].update(dtype="float64"), "dtype 'float64'"),
    "seed disagrees": (lambda m: m.update(seed=3), "its seed 3 is not its params.seed 0"),
    "hash deleted": (_del_hash, "has no params_sha256"),
    "hash deleted, seed edited": (lambda m: (_del_hash(m), m["params"].update(seed=3), m.update(seed=3)),
                                  "has no params_sha256"),
    "hash deleted, narrative edited": (lambda m: (_del_hash(m), m["params"].update(narrative="color_reaction")),
                                       "has no params_sha256"),
    "narrative edited, rehashed": (lambda m: (m["params"].update(narrative="color_reaction"), _rehash(m)),
                                   "is not its params.narrative"),
    "narrative and dataset edited": (lambda m: (m["params"].update(narrative="color_reaction"),
                                                m.update(dataset="color_reaction"), _rehash(m)),
                                     "the narratives generator writes"),
    "size not an int": (lambda m: (m["params"].update(size="64"), _rehash(m)), "params.size '64'"),
    "layouts mixed": (lambda m: m["splits"]["test"]["shards"][0].pop("bytes"), "not a known layout"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_a_manifest_that_disagrees_with_itself_is_refused(pristine, ts, tmp_path, case):
    change, text = MANIFESTS[case]
    m = json.loads((ts / "manifest.json").read_text())
    change(m)
    (ts / "manifest.json").write_text(json.dumps(m))
    before = files_of(ts)
    one_line_error(run("verify", "--quiet", ts), text)
    one_line_error(run("view", ts, "--out", tmp_path / "v.png"), text)
    r = run("run", "--model", "jump", "--data", ts, "--preset", "smoke", "--out", tmp_path / "runs", "--quiet")
    one_line_error(r, text)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "v.png").exists()
    with pytest.raises(JumpbenchError, match="manifest.json: not a jumpbench manifest") as e:
        jumpbench.open_dataset(ts, "test")
    assert text in str(e.value)
    # generate over it: refused in one line (the set is not finished as asked) ...
    args = (*GEN, "--out", ts.parent) + (("--seed", 3) if "seed edited" in case else ())
    one_line_error(run(*args), "--overwrite")
    assert files_of(ts) == before
    if "seed edited" in case or "narrative" in case or "size" in case:
        return
    # ... and with --overwrite written again as its parameters make it
    assert run(*args, "--overwrite").exit_code == 0
    assert records.verify(ts) == {"train": 6, "test": 4} and files_of(ts) == files_of(pristine)


def test_the_real_generators_manifests_pass(pristine, small_cr):
    for root in (pristine, small_cr):
        assert records.meaning_problem(records.load_manifest(root)) is None


# ---------------------------------------------------------------- 2. generate repairs a finished set

def damage(root):
    """A same-size byte flip in a shard and two swapped index files: verify fails on both."""
    shard = root / "train" / "2-of-2.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    a, b = root / "train" / "1-of-2.tfindex", root / "test" / "1-of-1.tfindex"
    ta, tb = a.read_bytes(), b.read_bytes()
    a.write_bytes(tb)
    b.write_bytes(ta)


def test_generate_repairs_swapped_indexes_and_a_flipped_byte(ts):
    good = files_of(ts)
    damage(ts)
    one_line_error(run("verify", "--quiet", ts), "tfindex")
    r = run(*GEN[:-1], "--out", ts.parent)
    assert r.exit_code == 0, r.output
    assert "wrote 1 missing or damaged shard(s) again" in r.output and "repaired 2 missing or damaged index" in r.output
    assert files_of(ts) == good
    assert run("verify", "--quiet", ts).exit_code == 0


def test_generate_repairs_them_from_python_too(ts):
    good = files_of(ts)
    damage(ts)
    with pytest.raises(JumpbenchError):
        records.verify(ts)
    assert jumpbench.generate("narratives", ts.parent, 6, 4, shard_size=4, progress=False) == ts
    assert files_of(ts) == good


def test_generate_rewrites_a_forged_record_whose_shard_fails_its_sha256(ts):
    """A forged record without the manifest edited to match: the shard fails its sha256."""
    good = files_of(ts)
    manifest = (ts / "manifest.json").read_bytes()
    forge(ts, "test", "1-of-1.tfrecord", 1, set_frame(0, jpeg))
    (ts / "manifest.json").write_bytes(manifest)
    one_line_error(run("verify", "--quiet", ts), "frame 0 is not a PNG")
    assert run(*GEN, "--out", ts.parent).exit_code == 0
    assert files_of(ts) == good


def test_generate_from_python_refuses_an_unhashed_manifest_then_overwrites_it(pristine, ts):
    m = json.loads((ts / "manifest.json").read_text())
    del m["params_sha256"]
    (ts / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(JumpbenchError, match="has no params_sha256.*--overwrite"):
        jumpbench.generate("narratives", ts.parent, 6, 4, shard_size=4, progress=False)
    with pytest.raises(JumpbenchError, match="has no params_sha256"):
        jumpbench.open_dataset(ts)
    jumpbench.generate("narratives", ts.parent, 6, 4, shard_size=4, progress=False, overwrite=True)
    assert files_of(ts) == files_of(pristine)
