"""The import rules docs/architecture.md states, checked on every module's imports (those inside
functions too): models import nothing of jumpbench outside models/ and no library but torch;
generators import nothing of the harness; the format and reading modules import neither torch
nor the harness, and the records modules import each other in one order; the torch readers of a
dataset (its scenes, the frame cache) import nothing of the harness; nothing below the top
imports the CLI or the API."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "jumpbench"
STDLIB = {"__future__", "dataclasses", "math", "typing", "functools", "itertools", "collections"}
RECORDS = sorted(p.relative_to(PKG).as_posix() for p in PKG.glob("records/*.py"))  # the records package, each module
LOW = RECORDS + ["scenes.py", "files.py", "checks.py", "errors.py", "launch.py", "workers.py"]
CHECK_GENERATORS = ["records/manifest.py", "records/reader.py"]  # the exception: see the test below
READERS = ["dataset.py", "cache.py"]  # a dataset as torch data: torch, but nothing of the harness


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import (one style: jumpbench.<module>)"
            names.add(node.module)
    return names


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names} | \
        {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}


def modules(pattern: str) -> list[Path]:
    return sorted(PKG.glob(pattern))


@pytest.mark.parametrize("path", modules("models/**/*.py"), ids=lambda p: p.relative_to(PKG).as_posix())
def test_models_import_only_torch_and_each_other(path):
    for name in imports(path):
        top = name.split(".")[0]
        assert top in STDLIB | {"torch"} or name.startswith("jumpbench.models"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", modules("generators/**/*.py"), ids=lambda p: p.relative_to(PKG).as_posix())
def test_generators_import_nothing_of_the_harness(path):
    for name in imports(path):
        assert not name.startswith(("jumpbench.benchmarks", "jumpbench.api", "jumpbench.cli", "torch")), \
            f"{path.name} imports {name}"


@pytest.mark.parametrize("name", LOW)
def test_the_format_and_reading_modules_need_no_torch_and_no_harness(name):
    for imported in imports(PKG / name):
        if (name in CHECK_GENERATORS and imported.startswith("jumpbench.generators")
                and imported not in top_level_imports(PKG / name)):
            continue  # the one exception, inside functions: a manifest is checked against what its generator writes
        assert not imported.startswith(("torch", "jumpbench.benchmarks", "jumpbench.api", "jumpbench.cli",
                                        "jumpbench.generators")), f"{name} imports {imported}"


def test_the_records_modules_import_each_other_in_one_order():
    """Each module of jumpbench/records/ imports only those before it in the order its
    __init__.py draws (so none imports one that imports it back); a new module joins the order."""
    order = ["codec", "framing", "manifest", "reader"]
    assert sorted(order) == sorted(p.stem for p in PKG.glob("records/*.py") if p.stem != "__init__")
    for k, name in enumerate(order):
        for imported in imports(PKG / "records" / f"{name}.py"):
            if imported.startswith("jumpbench.records"):  # the package itself imports every module
                assert imported.removeprefix("jumpbench.records.") in order[:k], f"records/{name}.py imports {imported}"


def test_the_harness_groups_import_each_other_in_one_order():
    """benchmarks/'s groups import only those before them: evaluation, then training (its loop
    evaluates), figures (they read what evaluation writes), speed (it times training's step);
    what they all share (config, runs, batches, machine) sits at benchmarks/'s top."""
    order = ["evaluation", "training", "figures", "speed"]
    assert sorted(order) == sorted(p.name for p in (PKG / "benchmarks").iterdir() if (p / "__init__.py").is_file())
    for k, group in enumerate(order):
        for path in modules(f"benchmarks/{group}/*.py"):
            for name in imports(path):
                parts = name.split(".")
                if name.startswith("jumpbench.benchmarks.") and parts[2] in order and parts[2] != group:
                    assert parts[2] in order[:k], f"{path.relative_to(PKG)} imports {name}"


@pytest.mark.parametrize("name", READERS)
def test_the_torch_readers_of_a_dataset_import_nothing_of_the_harness(name):
    for imported in imports(PKG / name):
        assert not imported.startswith(("jumpbench.benchmarks", "jumpbench.api", "jumpbench.cli",
                                        "jumpbench.generators")), f"{name} imports {imported}"


@pytest.mark.parametrize("path", modules("benchmarks/**/*.py") + modules("generators/**/*.py") + modules("models/**/*.py")
                         + [PKG / n for n in LOW + READERS], ids=lambda p: p.relative_to(PKG).as_posix())
def test_nothing_below_the_top_imports_the_cli_or_the_api(path):
    for name in imports(path):
        assert name not in ("jumpbench.cli", "jumpbench.api"), f"{path.name} imports {name}"


def test_a_run_resolves_its_config_once(small_ts, tmp_path, monkeypatch):
    """train_run resolves the config once and passes the plan down (no second resolution)."""
    from jumpbench.benchmarks import config as C
    from jumpbench.benchmarks import runs
    from jumpbench.benchmarks.training.train import train_run

    calls = []
    real = C.resolve
    monkeypatch.setattr(C, "resolve", lambda *a, **k: calls.append(a) or real(*a, **k))
    train_run(runs.RunSpec("jump", str(small_ts), "smoke", ("train.steps=2",), 0, str(tmp_path)), progress=False)
    assert len(calls) == 1
