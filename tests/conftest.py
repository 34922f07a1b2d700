import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("JUMPBENCH_THREADS", "1")  # training in tests: tiny models, one thread each
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
if "JUMPBENCH_CACHE" not in os.environ:  # decoded-frame caches of the tests' datasets: a temp folder
    import atexit
    import shutil
    import tempfile

    os.environ["JUMPBENCH_CACHE"] = tempfile.mkdtemp(prefix="jumpbench-cache-")
    atexit.register(shutil.rmtree, os.environ["JUMPBENCH_CACHE"], True)

import pytest
from click.testing import CliRunner

from jumpbench.cli import cli


def run(*args):
    """The jumpbench command line in this process (click's CliRunner); arguments str()-ed."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, text):
    """A user-facing failure: a non-zero exit and one line of output naming `text`, no traceback."""
    out = result.output.strip()
    assert result.exit_code != 0, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert text in out, out


@pytest.fixture(scope="session")
def small_ts(tmp_path_factory):
    """A small Traveling Salesman set (40 train, 10 test), shared by read-only tests."""
    from jumpbench.generators.base import generate
    from jumpbench.generators.narratives import NarrativesConfig, NarrativesGenerator

    out = tmp_path_factory.mktemp("data")
    return generate(NarrativesGenerator(NarrativesConfig()), out, {"train": 40, "test": 10},
                    shard_size=16, progress=False)


@pytest.fixture(scope="session")
def small_cr(tmp_path_factory):
    """A small Color Reaction set (40 train, 10 test)."""
    from jumpbench.generators.base import generate
    from jumpbench.generators.narratives import NarrativesConfig, NarrativesGenerator

    out = tmp_path_factory.mktemp("data")
    return generate(NarrativesGenerator(NarrativesConfig("color_reaction")), out,
                    {"train": 40, "test": 10}, shard_size=16, progress=False)
