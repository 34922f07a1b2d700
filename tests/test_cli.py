"""The CLI's data commands through click's CliRunner: real runs and one-line errors."""
import os

import pytest
from click.testing import CliRunner

from jumpbench.cli import cli
from conftest import one_line_error


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def test_generate_verify_view(tmp_path):
    r = run("generate", "narratives", "--n", 6, "--test-n", 2, "--shard-size", 4, "--out", tmp_path, "--quiet")
    assert r.exit_code == 0, r.output
    root = tmp_path / "traveling_salesman"
    assert run("verify", root).exit_code == 0
    for name in ("sheet.png", "anim.gif"):
        r = run("view", root, "--index", 1, "--out", tmp_path / name)
        assert r.exit_code == 0 and (tmp_path / name).stat().st_size > 0
    from PIL import Image

    with Image.open(tmp_path / "sheet.png") as im:
        assert im.size[0] > 64 * 10


@pytest.mark.parametrize("args, text", [
    (["--n", 0], "at least 1 scene"),
    (["--test-n", -5], "at least 1 scene"),
    (["--size", 8], "too small"),
    (["--shard-size", 0], "--shard-size"),
    (["--workers", 0], "--workers"),
    (["--narrative", "dance"], "dance"),
])
def test_generate_bad_input(tmp_path, args, text):
    one_line_error(run("generate", "narratives", "--out", tmp_path, "--quiet", *args), text)
    assert not (tmp_path / "traveling_salesman" / "manifest.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output(tmp_path):
    tmp_path.chmod(0o500)
    try:
        one_line_error(run("generate", "narratives", "--n", 2, "--test-n", 1, "--out", tmp_path / "x", "--quiet"),
                       "ermission")
    finally:
        tmp_path.chmod(0o700)


def test_output_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    one_line_error(run("generate", "narratives", "--n", 2, "--test-n", 1, "--out", tmp_path / "f", "--quiet"), "")


def test_full_disk_is_one_line_and_keeps_finished_shards(tmp_path, monkeypatch):
    from jumpbench.records import framing  # where write_shard looks the function up

    real = framing.frame_record
    calls = {"n": 0}

    def full(data):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(28, "No space left on device")
        return real(data)

    monkeypatch.setattr(framing, "frame_record", full)
    r = run("generate", "narratives", "--n", 8, "--test-n", 1, "--shard-size", 4, "--out", tmp_path, "--quiet")
    one_line_error(r, "disk full")
    train = tmp_path / "traveling_salesman" / "train"
    assert sorted(p.name for p in train.iterdir()) == ["1-of-2.tfindex", "1-of-2.tfmeta", "1-of-2.tfrecord"]
    monkeypatch.setattr(framing, "frame_record", real)
    assert run("generate", "narratives", "--n", 8, "--test-n", 1, "--shard-size", 4, "--out", tmp_path,
               "--quiet").exit_code == 0
    assert run("verify", tmp_path / "traveling_salesman").exit_code == 0


def test_verify_names_the_bad_shard(tmp_path):
    run("generate", "narratives", "--n", 4, "--test-n", 1, "--out", tmp_path, "--quiet")
    shard = tmp_path / "traveling_salesman" / "train" / "1-of-1.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    one_line_error(run("verify", "--quiet", tmp_path / "traveling_salesman"), "1-of-1.tfrecord")


@pytest.mark.parametrize("args, text", [
    (["missing-dir", "--out", "x.png"], "no such dataset"),
])
def test_view_bad_input(tmp_path, args, text):
    one_line_error(run("view", *args), text)


def test_view_bad_index_and_suffix(small_ts, tmp_path):
    one_line_error(run("view", small_ts, "--index", 99, "--out", tmp_path / "a.png"), "no index 99")
    one_line_error(run("view", small_ts, "--out", tmp_path / "a.jpg"), ".png or .gif")


def test_errors_read_as_one_line_that_says_what_to_do():
    import errno

    from jumpbench.errors import one_line, os_error_line

    worker = ("Caught JumpbenchError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
              '  File "worker.py", line 374, in _worker_loop\n    data = fetcher.fetch(index)\n'
              "jumpbench.errors.JumpbenchError: d/train/2-of-4.tfrecord: record 19 does not match its index\n")
    assert one_line(worker) == "d/train/2-of-4.tfrecord: record 19 does not match its index"
    assert one_line("a\n  b") == "a b"
    assert "re-run to resume" in os_error_line(OSError(errno.ENOSPC, "No space left on device", "x"))
    for code, text in ((errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")):
        line = os_error_line(OSError(code, text, "out/x.png"))
        assert "cannot write there" in line and "out/x.png" in line and "resume" not in line
    assert "resume" not in os_error_line(OSError(errno.EEXIST, "File exists", "a.txt"))

