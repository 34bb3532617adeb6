"""Notebooks as students hand them in, for the tests that grade them: the release untouched, or
the release with the solution's answer cells written in (the course's solutions, without nbgrader's
solution markers)."""

from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def released(assignment: str):
    """(file name, the released notebook of ``assignment``, as a student gets it)."""
    (release,) = (ROOT / "notebooks" / assignment).glob("*.ipynb")
    return release.name, nbformat.read(release, as_version=4)


def solved(assignment: str):
    """(file name, the released notebook with the solution's answer cells written in)."""
    (source,) = (ROOT / "solutions" / assignment).glob("*.ipynb")
    answers = {_grade_id(c): c.source for c in nbformat.read(source, as_version=4).cells
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    name, nb = released(assignment)
    for cell in nb.cells:
        if _grade_id(cell) in answers:
            cell.source = "\n".join(line for line in answers[_grade_id(cell)].splitlines()
                                    if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)
    return name, nb
