"""Wall time of the test suite, run as a subprocess (so it shares nothing with the runner)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "pytest", "tests", "-q", "-x", "-p", "no:cacheprovider"]


def run(command=None, cwd=ROOT, timeout: float = 3600) -> dict:
    """``{"command", "wall_s", "returncode", "summary"}``; summary is pytest's last line."""
    command = list(command or COMMAND)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    wall = time.perf_counter() - start
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return {"command": " ".join(["python"] + command[1:]), "wall_s": wall, "returncode": proc.returncode,
            "summary": lines[-1] if lines else proc.stderr.strip().splitlines()[-1:]}
