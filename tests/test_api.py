"""The public Python API: docs/python.md runs as written; `import jumpbench` stays light."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jumpbench

DOC = Path(__file__).resolve().parent.parent / "docs" / "python.md"


def code_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text (a block tagged `python <word>` is not run)."""
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_docs_python_md_runs(tmp_path, monkeypatch, capsys):
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_python_md"}
    for k, block in enumerate(blocks):
        try:
            exec(compile(block, f"{DOC.name}, python block {k + 1}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"docs/python.md block {k + 1} failed: {type(e).__name__}: {e}\n{block}")
    out = capsys.readouterr().out
    assert "data/no_such_set: no such dataset folder" in out


def test_all_is_the_public_api():
    assert set(jumpbench.__all__) == {"open_dataset", "load_run", "generate", "train", "JumpbenchError"}
    for name in jumpbench.__all__:
        assert getattr(jumpbench, name) is not None
    with pytest.raises(AttributeError):
        jumpbench.no_such_name


def test_import_is_light():
    """No torch for `import jumpbench`, nor for `jumpbench generate` (it starts fast: the
    fault-injection test of two writers races the second process's start)."""
    code = "import sys, jumpbench, jumpbench.api, jumpbench.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_open_dataset_bad_input(small_ts):
    with pytest.raises(jumpbench.JumpbenchError, match="image_size"):
        jumpbench.open_dataset(small_ts, image_size=24)
    with pytest.raises(jumpbench.JumpbenchError, match="no split"):
        jumpbench.open_dataset(small_ts, split="valid")
    with pytest.raises(jumpbench.JumpbenchError, match="dtype"):
        jumpbench.open_dataset(small_ts, dtype="float16")
    with pytest.raises(jumpbench.JumpbenchError, match="unknown generator"):
        jumpbench.generate("mnist")
    scenes = jumpbench.open_dataset(small_ts, "test", dtype="float32")
    assert len(scenes) == 10 and scenes[-1]["index"] == 9
    frames = scenes[0]["frames"]
    assert frames.shape == (20, 3, 64, 64) and 0 <= frames.min() and frames.max() <= 1
    with pytest.raises(IndexError):
        scenes[10]


def test_load_run_bad_folder(tmp_path):
    with pytest.raises(jumpbench.JumpbenchError, match="not a run folder"):
        jumpbench.load_run(tmp_path)
