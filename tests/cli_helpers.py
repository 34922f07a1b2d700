"""The CLI through click's CliRunner, and the check of a one-line error (tests of issue 11)."""
from click.testing import CliRunner

from jumpbench.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, text):
    out = result.output.strip()
    assert result.exit_code != 0, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    assert text in out, out
