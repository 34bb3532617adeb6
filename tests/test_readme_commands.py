"""The README's instructor commands, run exactly as written, in a course laid out as a fresh clone is.

The course folder holds what a clone holds (nbgrader_config.py, solutions/, notebooks/) plus the
clone's `.venv` (a link to this one) and one student's submission. Every command of the README's
instructors' block runs from the course root as printed; the scores reach grades.csv and the
committed notebooks/ is left byte for byte as it was.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from handed_in import solved

pytestmark = pytest.mark.slow  # grades a submission in the sandbox, then runs nbgrader twice

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "01-identity-block"


def readme_instructor_commands() -> list[str]:
    """The commands of the README's "For instructors" bash block, comments removed."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## For instructors", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [command for command in commands if command and not command.startswith("#")]


def test_the_readme_names_the_grading_commands():
    commands = readme_instructor_commands()
    assert any(c.startswith(".venv/bin/resnet-course grade ") for c in commands), commands
    assert all(c.startswith(".venv/bin/") for c in commands), commands


def test_readme_instructor_commands_work_as_written(tmp_path):
    course = tmp_path / "resnet-course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    for folder in ("solutions", "notebooks"):
        shutil.copytree(ROOT / folder, course / folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_*"))
    (course / ".venv").symlink_to(Path(sys.prefix))
    name, nb = solved(ASSIGNMENT)
    (course / "submitted" / "alice" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(nb, course / "submitted" / "alice" / ASSIGNMENT / name)
    committed = {p: p.read_bytes() for p in (course / "notebooks").rglob("*.ipynb")}

    # As an instructor's shell has it: no venv activated, the system's PATH.
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    for command in readme_instructor_commands():
        done = subprocess.run(command, shell=True, cwd=course, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    with open(course / "grades.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["assignment"] == ASSIGNMENT]
    assert [(row["student_id"], float(row["score"]), float(row["max_score"])) for row in rows] == [("alice", 10.0, 10.0)]
    assert list((course / "feedback" / "alice" / ASSIGNMENT).glob("*.html"))
    assert {p: p.read_bytes() for p in (course / "notebooks").rglob("*.ipynb")} == committed
