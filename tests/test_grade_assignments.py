"""`resnet-course grade` on every assignment, through the real command and its sandbox: the
solutions score 10/10 and the untouched release 0, in nbgrader's grades.csv.

tests/test_grade_command.py tries the attacks on 01 and 02; this file checks that the assignments
after them (ResNet-50 and the training notebooks' exercises) grade through the same path.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from handed_in import released, solved

pytestmark = pytest.mark.slow  # one sandboxed grading run per assignment

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = ["03-resnet50", "04-signs", "05-cifar10", "06-fer2013"]


def _run(course: Path, *args: str) -> str:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run([sys.executable, "-m", *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_solutions_full_marks_and_release_zero_on_every_later_assignment(tmp_path):
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    for assignment in ASSIGNMENTS:
        shutil.copytree(ROOT / "solutions" / assignment, course / "solutions" / assignment,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_*"))
        for student, (name, nb) in (("alice", solved(assignment)), ("bob", released(assignment))):
            folder = course / "submitted" / student / assignment
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / name)

    logs = {assignment: _run(course, "resnet_course", "grade", assignment, "--workers", "2", "--seed", "11",
                             "--no-progress") for assignment in ASSIGNMENTS}
    _run(course, "nbgrader", "export")
    with open(course / "grades.csv", newline="") as f:
        found = {(row["student_id"], row["assignment"]): float(row["score"]) for row in csv.DictReader(f)}
    expected = {(student, assignment): score for assignment in ASSIGNMENTS
                for student, score in (("alice", 10.0), ("bob", 0.0))}
    assert found == expected, logs
