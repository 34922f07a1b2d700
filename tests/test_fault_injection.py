"""scripts/fault_injection.py (issue 11): every injected fault is refused or repaired."""
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fault_injection.py"


def test_every_injected_fault_survives(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--keep", str(tmp_path / "work")], env=env,
                          capture_output=True, text=True, timeout=110)
    last = proc.stdout.strip().splitlines()[-1]
    n = last.split("faults injected ")[1].split(",")[0]
    assert last == f"faults injected {n}, survived with nothing lost {n}", proc.stdout + proc.stderr[-2000:]
    assert proc.returncode == 0
