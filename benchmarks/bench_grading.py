#!/usr/bin/env python
"""How long `resnet-course grade` takes: one student per assignment, and the --workers speed-up.

    python benchmarks/bench_grading.py                      # both parts, in a temporary course
    python benchmarks/bench_grading.py --students 6         # students for the --workers part
    python benchmarks/bench_grading.py --only per-assignment

Each submission is the course's solution as a student would hand it in (the released notebook
with the solution's answer cells), graded by the real command in a temporary course folder
(copies of nbgrader_config.py and solutions/). "task" is one student's sandboxed child plus the
trusted score, from the run's record; "command" is the whole command's wall time, with its fixed
costs (recording the assignment, starting the workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SEED = 5


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def solved_submission(assignment: str):
    """(file name, the released notebook with the solution's answer cells written in)."""
    (source,) = (ROOT / "solutions" / assignment).glob("*.ipynb")
    (release,) = (ROOT / "notebooks" / assignment).glob("*.ipynb")
    answers = {_grade_id(c): c.source for c in nbformat.read(source, as_version=4).cells
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        if _grade_id(cell) in answers:
            cell.source = "\n".join(line for line in answers[_grade_id(cell)].splitlines()
                                    if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
    return release.name, nb


def make_course(course: Path, assignments: list[str], students: list[str]) -> None:
    shutil.rmtree(course, ignore_errors=True)
    course.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", course)
    for assignment in assignments:
        shutil.copytree(ROOT / "solutions" / assignment, course / "solutions" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        name, nb = solved_submission(assignment)
        for student in students:
            folder = course / "submitted" / student / assignment
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / name)


def grade(course: Path, assignment: str, *options: str) -> tuple[float, float | None]:
    """(the command's wall time, the grading time it reports)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "resnet_course", "grade", assignment, "--seed", str(SEED),
                           "--no-progress", *options], cwd=course, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"resnet-course grade {assignment} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    found = re.search(r"Graded (\d+) submission\(s\) in ([\d.]+) s", done.stdout)
    return wall, float(found.group(2)) if found else None


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=6, help="students for the --workers part (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="the parallel run's --workers (default 2)")
    parser.add_argument("--only", choices=("per-assignment", "workers"), default=None)
    args = parser.parse_args(argv)

    print(f"CPU: {cpu()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    assignments = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        course = Path(tmp) / "course"
        if args.only in (None, "per-assignment"):
            make_course(course, assignments, ["s1"])
            print("\n| assignment | task (sandbox + score) | command | score |\n| --- | ---: | ---: | ---: |")
            total = 0.0
            for assignment in assignments:
                wall, _ = grade(course, assignment, "--workers", "1")
                record = json.loads((course / "grading" / assignment / "graded" / "s1.json").read_text())
                total += record["seconds"]
                print(f"| {assignment} | {record['seconds']:.1f} s | {wall:.1f} s | "
                      f"{sum(record['scores'].values()):g} |", flush=True)
            print(f"| all six | {total:.1f} s | | |")
        if args.only in (None, "workers"):
            students = [f"s{i}" for i in range(args.students)]
            make_course(course, ["01-identity-block"], students)
            times = {}
            for workers in (1, args.workers):
                wall, graded = grade(course, "01-identity-block", "--workers", str(workers), "--force")
                times[workers] = graded or wall
                print(f"\n01-identity-block, {len(students)} students, --workers {workers}: graded in "
                      f"{graded} s (command {wall:.1f} s)", flush=True)
            print(f"speed-up with --workers {args.workers}: {times[1] / times[args.workers]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
