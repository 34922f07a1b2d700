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
