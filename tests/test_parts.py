"""Generation in parts (generate --parts N --launcher slurm): through submitit's local
executor the shard bytes are those of a one-process run; a failed part is re-run alone."""
import shutil

import pytest
from click.testing import CliRunner

from jumpbench.cli import cli
from jumpbench.errors import JumpbenchError
from jumpbench.generators import narratives as nar
from jumpbench.generators.base import generate, generate_parts

COUNTS = {"train": 10, "test": 3}


def files(root):
    """Every file of a dataset folder and its bytes (not the lock, which holds a pid)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return files(generate(nar.NarrativesGenerator(nar.NarrativesConfig()), tmp_path_factory.mktemp("one"),
                          COUNTS, 4, progress=False))


def test_two_parts_on_the_local_executor_give_the_same_bytes(one_process, tmp_path):
    root = generate_parts(nar.NarrativesGenerator(nar.NarrativesConfig()), tmp_path, COUNTS, 4, 2, "local",
                          progress=False)
    assert (tmp_path / ".submitit").is_dir()  # two jobs ran
    assert files(root) == one_process


def test_a_failed_part_is_rerun_alone(one_process, tmp_path):
    root = tmp_path / "traveling_salesman"
    blocker = root / "train" / "3-of-3.tfrecord"  # part 2's first shard cannot be renamed into place
    (blocker / "in-the-way").mkdir(parents=True)
    with pytest.raises(JumpbenchError, match=r"^1 of 2 part\(s\) failed \(part 2: .*Is a directory"):
        generate_parts(nar.NarrativesGenerator(nar.NarrativesConfig()), tmp_path, COUNTS, 4, 2, "local",
                       progress=False)
    assert not (root / "manifest.json").exists() and (root / "train" / "1-of-3.tfrecord").is_file()
    first = (root / "train" / "1-of-3.tfrecord").stat().st_mtime_ns
    (blocker / "in-the-way").rmdir()
    blocker.rmdir()
    generate_parts(nar.NarrativesGenerator(nar.NarrativesConfig()), tmp_path, COUNTS, 4, 2, "local", part=2,
                   progress=False)
    assert (root / "train" / "1-of-3.tfrecord").stat().st_mtime_ns == first  # part 1 was not written again
    assert files(root) == one_process


def test_cli_parts_here_and_bad_input(one_process, tmp_path):
    def run(*args):
        return CliRunner().invoke(cli, ["generate", "narratives", "--n", 10, "--test-n", 3, "--shard-size", 4,
                                        "--out", tmp_path, "--quiet", *map(str, args)])

    r = run("--parts", 2, "--part", 1)
    assert r.exit_code == 0 and "part 1 of 2 written" in r.output, r.output
    assert not (tmp_path / "traveling_salesman" / "manifest.json").exists()
    r = run("--parts", 2)
    assert r.exit_code == 0 and "10 train + 3 test scenes" in r.output, r.output
    assert files(tmp_path / "traveling_salesman") == one_process
    r = run("--parts", 6)  # 3 + 1 shards
    assert r.exit_code == 1 and "--parts must be in 1..4" in r.output
    r = run("--parts", 2, "--part", 3)
    assert r.exit_code == 1 and "--part must be in 1..2" in r.output


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a real slurm cluster")
def test_cli_slurm_without_slurm_is_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["generate", "narratives", "--n", "4", "--test-n", "2", "--out", str(tmp_path),
                                 "--quiet", "--launcher", "slurm", "--parts", "2", "--shard-size", "2"])
    assert r.exit_code == 1 and r.output.startswith("error: --launcher slurm: ") and len(r.output.splitlines()) == 1
