"""Scores into nbgrader's gradebook and ``autograded/``, through nbgrader's own API.

So that ``nbgrader export``, ``generate_feedback`` and formgrader work as after ``nbgrader
autograde``:

* the assignment is recorded with ``nbgrader generate_assignment`` writing into a *temporary*
  release folder (never over the committed ``notebooks/``);
* each submission goes through nbgrader's sanitizing preprocessors (ClearOutput,
  DeduplicateIds, OverwriteKernelspec, OverwriteCells: the test cells come back from the source),
  test cells the student deleted are put back, each test cell's output becomes the trusted
  verdict (an error with the grader's message when it failed, "All tests passed." otherwise), and
  nbgrader's SaveAutoGrades and AssignLatePenalties write the scores.

The child's own output never reaches the notebook: feedback shows the grader's messages only.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook
from sqlalchemy.exc import SAWarning
from nbgrader.utils import parse_utc
from nbgrader.preprocessors import (
    AssignLatePenalties,
    ClearOutput,
    DeduplicateIds,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)

PASSED_TEXT = "All tests passed."


class GradebookError(RuntimeError):
    """nbgrader could not record the assignment or a submission."""


def db_url(course_root: Path) -> str:
    return "sqlite:///" + str(course_root / "gradebook.db")


def _put_environment_scripts_on_path() -> None:
    """nbgrader's Gradebook runs the ``alembic`` script by name: find it in this environment's bin/
    even when the environment is not activated (``.venv/bin/resnet-course grade ...``)."""
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        os.environ["PATH"] = scripts + (os.pathsep + path if path else "")


def record_assignment(course_root: Path, assignment: str, release_dir: Path) -> Path:
    """Record ASSIGNMENT (cells, points, hidden tests) in gradebook.db from solutions/.

    nbgrader's ``generate_assignment`` writes its release into ``release_dir`` (a temporary
    folder): the course's committed notebooks/ is never touched, even if it fails. Returns the
    released notebook folder, used to put back test cells a student deleted.
    """
    _put_environment_scripts_on_path()
    command = [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force",
               f"--CourseDirectory.release_directory={release_dir}", "--log-level=WARN"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, cwd=course_root, capture_output=True, text=True, env=env, timeout=900)
    released = release_dir / assignment
    if done.returncode != 0 or not released.is_dir():
        raise GradebookError(
            f"nbgrader generate_assignment {assignment} failed ({done.returncode}); its output:\n"
            f"{(done.stdout + done.stderr)[-3000:]}")
    return released


def _resources(course_root: Path, assignment: str, notebook_id: str, student: str) -> dict:
    return {"nbgrader": {"db_url": db_url(course_root), "assignment": assignment,
                         "notebook": notebook_id, "student": student}}


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _restore_deleted_cells(nb, released) -> list[str]:
    """Put back, in the release's order, the graded/locked cells the student deleted."""
    present = {_grade_id(c) for c in nb.cells if _grade_id(c)}
    restored = []
    for index, cell in enumerate(released.cells):
        grade_id = _grade_id(cell)
        if not grade_id or grade_id in present:
            continue
        meta = cell.metadata.get("nbgrader", {})
        if not (meta.get("grade") or meta.get("locked")) or meta.get("solution"):
            continue
        # After the nearest earlier release cell that the submission still has.
        position = 0
        for earlier in reversed(released.cells[:index]):
            earlier_id = _grade_id(earlier)
            ids = [_grade_id(c) for c in nb.cells]
            if earlier_id and earlier_id in ids:
                position = ids.index(earlier_id) + 1
                break
        nb.cells.insert(position, copy.deepcopy(cell))
        present.add(grade_id)
        restored.append(grade_id)
    return restored


#: nbgrader's ClearHiddenTests looks for these anywhere in any cell; in a student's cell an unpaired one
#: makes generate_feedback fail for that student, so the student's copies are disarmed.
_HIDDEN_MARKERS = re.compile(r"(BEGIN|END)(\s+)(HIDDEN\s+TESTS)", re.IGNORECASE)


def _disarm_hidden_test_markers(nb, released) -> None:
    # The assignment's own locked cells (restored from the source by OverwriteCells) keep theirs.
    own = {_grade_id(c) for c in released.cells
           if c.get("metadata", {}).get("nbgrader", {}).get("locked") and _grade_id(c)}
    for cell in nb.cells:
        if _grade_id(cell) in own and not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            continue
        if isinstance(cell.get("source"), str) and _HIDDEN_MARKERS.search(cell.source):
            cell.source = _HIDDEN_MARKERS.sub(lambda m: f"{m.group(1)}{m.group(2)}HIDDEN_TESTS(disarmed)", cell.source)


def verdict_outputs(result) -> list:
    """The test cell's outputs for one CellResult, as nbgrader scores them (SaveAutoGrades)."""
    if result.passed and result.points >= result.max_points:
        return [nbformat.v4.new_output("stream", name="stdout", text=PASSED_TEXT + "\n")]
    if result.points > 0:  # partial credit: nbgrader reads a number from the cell's result
        return [nbformat.v4.new_output("stream", name="stdout", text=result.message + "\n"),
                nbformat.v4.new_output("execute_result", data={"text/plain": repr(float(result.points))},
                                       execution_count=1)]
    message = result.message or "failed"
    return [nbformat.v4.new_output("error", ename="AssertionError", evalue=message,
                                   traceback=["AssertionError: " + line if i == 0 else line
                                              for i, line in enumerate(message.splitlines() or [message])])]


def _case_texts(check: str, function: str, case: dict) -> list[str]:
    """How a hidden case can appear in a message: its call as the grader describes it, its shapes."""
    from resnet_course.grading.cases import block_case, model_case

    texts = []
    try:
        if "block" in check:
            texts.append(block_case(case).describe(function))
        elif "input_shape" in case and "classes" in case:
            texts.append(model_case(case).describe(function))
    except (KeyError, TypeError, ValueError):
        pass
    for key in ("input_shape", "shape"):
        if isinstance(case.get(key), (list, tuple)) and len(case[key]) > 1:
            texts.append(str(tuple(case[key])))
            texts.append(str(list(case[key])))
            texts.append(", ".join(str(d) for d in case[key]))  # inside (None, h, w, c) too
    return texts


def redact_hidden_cases(results: list, cases: dict) -> list:
    """The results with the hidden cells' cases taken out of their messages (feedback goes to students,
    and the hidden cases must stay hidden); the instructor's closing table keeps the full messages."""
    redacted = []
    for result in results:
        cell = cases.get("cells", {}).get(result.grade_id)
        message = result.message or ""
        if result.grade_id.startswith("hidden_") and cell and message:
            texts = [t for case in cell.get("cases", []) for t in _case_texts(cell["check"], cell["function"], case)]
            for text in sorted(set(texts), key=len, reverse=True):
                message = message.replace(text, "[a hidden case]")
        redacted.append(copy.copy(result) if message == result.message else _with_message(result, message))
    return redacted


def _with_message(result, message: str):
    import dataclasses

    return dataclasses.replace(result, message=message)


def _base_notebook(submission: Path | None, released_notebook: Path, notes: list[str]):
    """The submission as a notebook, or the release when the file is not a readable notebook."""
    if submission is not None:
        try:
            nb = nbformat.read(submission, as_version=4)
            nbformat.validate(nb)
            return nb
        except Exception as error:  # any unreadable file is the student's problem, scored 0
            notes.append(f"{submission.name} is not a valid notebook ({type(error).__name__}); "
                         "graded as the release notebook with no answers")
    return nbformat.read(released_notebook, as_version=4)


def record_submission(course_root: Path, assignment: str, notebook_name: str, student: str,
                      submission: Path | None, released: Path, results: list, timestamp: str | None,
                      notes: list[str]) -> tuple[dict[str, float], list[str]]:
    """Write one student's scores to gradebook.db and the autograded notebook.

    Returns the scores recorded (grade id -> points) and the notes, with those added here.

    ``results`` are the verdict's CellResults for every graded cell; ``notes`` (file renamed,
    cells restored, ...) go into the notebook's first cell for the instructor and the student.
    """
    notebook_id = Path(notebook_name).stem
    released_notebook = released / notebook_name
    url = db_url(course_root)
    with Gradebook(url) as gb, warnings.catch_warnings():
        # nbgrader's own update_or_create_submission trips SQLAlchemy's autoflush warnings.
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(student)
        if timestamp:
            gb.update_or_create_submission(assignment, student, timestamp=parse_utc(timestamp))
        else:
            gb.update_or_create_submission(assignment, student)

    notes = list(notes)
    nb = _base_notebook(submission, released_notebook, notes)
    resources = _resources(course_root, assignment, notebook_id, student)
    for preprocessor in (ClearOutput(), DeduplicateIds(), OverwriteKernelspec(), OverwriteCells()):
        nb, resources = preprocessor.preprocess(nb, resources)
    release = nbformat.read(released_notebook, as_version=4)
    _disarm_hidden_test_markers(nb, release)
    restored = _restore_deleted_cells(nb, release)
    if restored:
        notes.append("test cells put back from the assignment: " + ", ".join(restored))
    by_id = {result.grade_id: result for result in results}
    for cell in nb.cells:
        grade_id = _grade_id(cell)
        if grade_id in by_id and cell.cell_type == "code" and cell.metadata["nbgrader"].get("grade"):
            cell.outputs = verdict_outputs(by_id[grade_id])
            cell.execution_count = 1
    if notes:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            "**Grading notes**\n\n" + "\n".join(f"- {note}" for note in notes),
            metadata={"deletable": False, "editable": False}))
    for preprocessor in (SaveAutoGrades(), AssignLatePenalties()):
        nb, resources = preprocessor.preprocess(nb, resources)

    scores = {}
    with Gradebook(url) as gb:
        graded = gb.find_submission_notebook(notebook_id, assignment, student)
        for grade in graded.grades:
            scores[grade.name] = grade.auto_score
    for result in results:
        if result.grade_id in scores and abs((scores[result.grade_id] or 0) - result.points) > 1e-9:
            raise GradebookError(f"{student}/{assignment}: nbgrader recorded {scores[result.grade_id]} for "
                                 f"{result.grade_id}, the verdict was {result.points}")

    target = course_root / "autograded" / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.ipynb"):
        old.unlink()
    nbformat.write(nb, target / notebook_name)
    if timestamp:
        (target / "timestamp.txt").write_text(timestamp)
    return scores, notes


def temporary_release_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="resnet-course-release-")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
