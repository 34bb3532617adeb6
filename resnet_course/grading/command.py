"""``resnet-course grade ASSIGNMENT``: grade every submission, with scores no student code decides.

Run from the course root (the folder holding ``nbgrader_config.py``)::

    resnet-course grade 01-identity-block                 # every student in submitted/
    resnet-course grade 01-identity-block --student alice --student bob
    resnet-course grade 03-resnet50 --workers 4           # 4 sandboxed children at a time
    resnet-course grade 03-resnet50 --cluster tcp://scheduler:8786
    resnet-course grade 01-identity-block --force         # grade again those already graded

What one run does, in order: back the gradebook up and take checksums of the course files;
record the assignment in gradebook.db from solutions/ (through a temporary release folder);
draw the hidden cases from the seed; for each submission, extract the program from the notebook
(read as JSON, never run here), run it in a sandboxed child (``sandbox``), score what it hands back
(``verdict``), check the course files and the gradebook, and record the scores through nbgrader's
API (``gradebook``); then write the review file and print the closing table.

The seed: ``--seed N``, else ``c.ResnetCourseGrading.seed`` in nbgrader_config.py, else the seed
this assignment's earlier run stored in ``grading/<assignment>/seed.txt``, else a new random one
(stored there, so that a resumed run draws the same hidden cases).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

from resnet_course.grading.integrity import IntegrityError, IntegrityGuard
from resnet_course.grading.review import (
    same_as_solution,
    similar_answers,
    summary,
    write_review,
)
from resnet_course.grading.runner import (
    SandboxTask,
    TaskOutcome,
    closing_table,
    default_workers,
    run_tasks,
    thread_budget,
)
from resnet_course.grading.sandbox import (
    PLAIN_MODE_CAVEATS,
    Limits,
    SandboxError,
    available_mode,
    plain_mode_problem,
)
from resnet_course.grading.submissions import Submission, find_submissions

EXIT_INTEGRITY = 3


def course_root_here(start: Path | None = None) -> Path:
    root = (start or Path.cwd()).resolve()
    if not (root / "nbgrader_config.py").is_file():
        raise FileNotFoundError(
            f"{root} has no nbgrader_config.py: run resnet-course grade from the course root "
            "(the folder with nbgrader_config.py, solutions/ and submitted/)")
    return root


def _configured_seed(course_root: Path) -> int | None:
    """``c.ResnetCourseGrading.seed`` from the instructor's nbgrader_config.py, if set."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_root)).load_config()
    section = config.get("ResnetCourseGrading", {})
    seed = section.get("seed") if hasattr(section, "get") else None
    return int(seed) if seed is not None else None


def resolve_seed(course_root: Path, assignment: str, seed: int | None) -> tuple[int, str]:
    """The seed of the hidden cases, and where it came from."""
    stored = course_root / "grading" / assignment / "seed.txt"
    if seed is not None:
        found, origin = seed, "--seed"
    elif (configured := _configured_seed(course_root)) is not None:
        found, origin = configured, "c.ResnetCourseGrading.seed in nbgrader_config.py"
    elif stored.is_file():
        found, origin = int(stored.read_text().strip()), f"{stored.relative_to(course_root)} (an earlier run)"
    else:
        found, origin = secrets.randbelow(2**31), "new random seed"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(f"{found}\n")
    return found, origin


def _marker(course_root: Path, assignment: str, student: str) -> Path:
    return course_root / "grading" / assignment / "graded" / f"{student}.json"


def already_graded(course_root: Path, assignment: str, submission: Submission) -> dict[str, float] | None:
    """The recorded scores if this very hand-in was graded and the gradebook still holds them."""
    marker = _marker(course_root, assignment, submission.student)
    if not marker.is_file():
        return None
    try:
        saved = json.loads(marker.read_text())
    except ValueError:
        return None
    if saved.get("digest") != submission.digest():
        return None
    from nbgrader.api import Gradebook, MissingEntry

    from resnet_course.grading import gradebook as book

    try:
        with Gradebook(book.db_url(course_root)) as gb:
            notebook = gb.find_submission_notebook(saved["notebook"], assignment, submission.student)
            recorded = {grade.name: grade.auto_score for grade in notebook.grades}
    except MissingEntry:
        return None
    return recorded if recorded == saved.get("scores") else None


def _build_task(assignment: str, submission: Submission, cases: dict, limits: Limits, mode: str,
                course_root: Path) -> SandboxTask:
    from resnet_course.grading.program import build_program, static_flags

    if submission.notebook is None:
        return SandboxTask(assignment, submission.student, None, cases, [], limits, mode, str(course_root),
                           build_error=submission.notes[-1] if submission.notes else "no notebook")
    try:
        program = build_program(assignment, submission.notebook, solutions=course_root / "solutions")
    except Exception as error:  # an unreadable hand-in scores 0 with the reason; the run goes on
        return SandboxTask(assignment, submission.student, None, cases, [], limits, mode, str(course_root),
                           build_error=f"{submission.notebook.name} could not be read: {error}")
    flags = list(static_flags(assignment, program))
    return SandboxTask(assignment, submission.student, program, cases, flags, limits, mode, str(course_root))


def _answer_text(notebook: Path | None, solution_ids: set[str]) -> str:
    """The student's answer cells (by the release's grade ids), for the similarity check."""
    if notebook is None:
        return ""
    import nbformat

    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:
        return ""
    return "\n\n".join(cell.source for cell in nb.cells
                       if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") in solution_ids)


def _release_answers(released_notebook: Path) -> tuple[set[str], str]:
    import nbformat

    nb = nbformat.read(released_notebook, as_version=4)
    cells = [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    return {c.metadata.nbgrader.grade_id for c in cells}, "\n\n".join(c.source for c in cells)


def _solution_answers(course_root: Path, assignment: str, notebook_name: str, ids: set[str]) -> str:
    return _answer_text(course_root / "solutions" / assignment / notebook_name, ids)


def grade_assignment(course_root: Path, assignment: str, students: list[str] | None = None, workers: int = 1,
                     cluster: str | None = None, force: bool = False, seed: int | None = None,
                     limits: Limits | None = None, mode: str | None = None, progress: bool = True,
                     out=sys.stdout) -> dict[str, dict[str, float]]:
    """Grade ASSIGNMENT's submissions; returns student -> grade id -> points (graded and kept)."""
    from tqdm import tqdm

    from resnet_course.grading import gradebook as book
    from resnet_course.grading.assignments import ASSIGNMENTS, assignment_spec
    from resnet_course.grading.cases import draw_cases

    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment!r}: choose one of {', '.join(sorted(ASSIGNMENTS))}")
    if not (course_root / "solutions" / assignment).is_dir():
        raise FileNotFoundError(f"{course_root / 'solutions' / assignment} is missing: the gradebook is "
                                "recorded from the assignment's source notebook there")
    spec = assignment_spec(assignment)
    mode = mode or available_mode()
    if mode == "plain":
        problem = plain_mode_problem()
        if problem:
            raise SandboxError(problem)
        print(f"warning: {PLAIN_MODE_CAVEATS}", file=out)
    if workers < 1:
        raise ValueError(f"--workers must be 1 or more, not {workers}")
    limits = limits or Limits(threads=1 if cluster else thread_budget(workers))
    work = course_root / "grading" / assignment
    guard = IntegrityGuard(course_root, work / "backups")
    print(f"Gradebook backed up to {guard.backup_path.relative_to(course_root)}", file=out)

    with book.temporary_release_dir() as release_tmp:
        released = book.record_assignment(course_root, assignment, Path(release_tmp))
        guard.accept_gradebook()
        guard.check("after recording the assignment")
        seed, origin = resolve_seed(course_root, assignment, seed)
        print(f"Hidden cases drawn from seed {seed} ({origin})", file=out)
        cases = draw_cases(assignment, seed)

        submissions = find_submissions(course_root, assignment, spec.notebook, students)
        kept: dict[str, dict[str, float]] = {}
        todo: list[Submission] = []
        for submission in submissions:
            previous = None if force else already_graded(course_root, assignment, submission)
            if previous is not None:
                kept[submission.student] = previous
            else:
                todo.append(submission)
        if kept:
            print(f"Kept {len(kept)} student(s) already graded (use --force to grade them again)", file=out)
        by_student = {s.student: s for s in todo}
        tasks = [_build_task(assignment, s, cases, limits, mode, course_root) for s in todo]
        flags = {task.student: task.flags for task in tasks}
        graded: dict[str, list] = {}
        scores: dict[str, dict[str, float]] = dict(kept)
        started = time.monotonic()
        where = f"the Dask cluster at {cluster}" if cluster else f"{max(1, workers)} worker(s)"
        print(f"Grading {len(tasks)} submission(s) of {assignment} on {where} ({mode} sandbox)", file=out)
        bar = tqdm(total=len(tasks), desc=assignment, unit="student", disable=not progress, file=sys.stderr)
        try:
            for outcome in run_tasks(tasks, workers, cluster):
                submission = by_student[outcome.student]
                guard.check(f"before recording {outcome.student}")
                notes = list(submission.notes) + ([outcome.reason] if outcome.reason else [])
                scores[outcome.student], notes = book.record_submission(
                    course_root, assignment, spec.notebook, outcome.student, submission.notebook, released,
                    book.redact_hidden_cases(outcome.results, cases), submission.timestamp, notes)
                guard.accept_gradebook()
                guard.check(f"after recording {outcome.student}")
                submission.notes = notes
                _write_marker(course_root, assignment, submission, spec.notebook, scores[outcome.student],
                              seed, outcome)
                graded[outcome.student] = outcome.results
                bar.update(1)
        finally:
            bar.close()
        guard.check("at the end of the run")
        elapsed = time.monotonic() - started

        review = _write_review(course_root, assignment, spec.notebook, released, flags)
    print(closing_table(assignment, graded, kept), file=out)
    print(f"\nGraded {len(graded)} submission(s) in {elapsed:.1f} s", file=out)
    print(review, file=out)
    return scores


def _write_review(course_root: Path, assignment: str, notebook_name: str, released: Path,
                  flags_now: dict[str, list]) -> str:
    """The review file over every submission of the assignment (this run's and earlier runs')."""
    everyone = find_submissions(course_root, assignment, notebook_name)
    ids, stub = _release_answers(released / notebook_name)
    flags, notes = {}, {}
    for submission in everyone:
        student = submission.student
        flags[student] = flags_now[student] if student in flags_now else _flags_of(course_root, assignment,
                                                                                     submission)
        marker = _marker(course_root, assignment, student)
        try:
            notes[student] = json.loads(marker.read_text()).get("notes", submission.notes)
        except (OSError, ValueError):
            notes[student] = submission.notes
    answers = {s.student: _answer_text(s.notebook, ids) for s in everyone}
    pairs = similar_answers(answers, ignore=(stub,))
    copies = same_as_solution(answers, _solution_answers(course_root, assignment, notebook_name, ids))
    path = write_review(course_root / "grading" / assignment / "review.md", assignment, flags, notes, pairs, copies)
    return summary(flags, pairs, copies, path.relative_to(course_root))


def _flags_of(course_root: Path, assignment: str, submission: Submission) -> list:
    from resnet_course.grading.program import build_program, static_flags

    if submission.notebook is None:
        return []
    try:
        program = build_program(assignment, submission.notebook, solutions=course_root / "solutions")
    except Exception:  # noqa: BLE001 - an unreadable notebook has no code to flag
        return []
    return list(static_flags(assignment, program))


def _write_marker(course_root: Path, assignment: str, submission: Submission, notebook_name: str,
                  scores: dict[str, float], seed: int, outcome: TaskOutcome) -> None:
    marker = _marker(course_root, assignment, submission.student)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({
        "digest": submission.digest(), "notebook": Path(notebook_name).stem, "scores": scores,
        "seed": seed, "seconds": round(outcome.seconds, 2), "sandbox": outcome.mode,
        "reason": outcome.reason, "notes": submission.notes, "graded_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=1))


def _run_grade(args: argparse.Namespace) -> int:
    root = course_root_here()
    workers = args.workers or default_workers()
    # On a cluster each Dask worker process runs one sandbox: one TensorFlow thread each.
    limits = Limits(wall_seconds=args.timeout, memory_bytes=int(args.memory_gb * 1024**3),
                    threads=1 if args.cluster else thread_budget(workers))
    try:
        grade_assignment(root, args.assignment, args.student or None, workers, args.cluster, args.force,
                         args.seed, limits, progress=not args.no_progress)
    except IntegrityError as error:
        print(f"\nINTEGRITY CHECK FAILED: {error}", file=sys.stderr)
        return EXIT_INTEGRITY
    except SandboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def add_grade_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register ``resnet-course grade`` on the command line's subcommands."""
    grade = subcommands.add_parser(
        "grade", help="grade submissions in sandboxes and record the scores in nbgrader's gradebook",
        description="Grade submitted/<student>/ASSIGNMENT/ from the course root: each submission runs in "
        "its own sandboxed process; scores go into gradebook.db and autograded/ through nbgrader's API "
        "(nbgrader export, generate_feedback and formgrader work as usual); a review file lists flagged "
        "and near-identical answers.",
    )
    grade.add_argument("assignment", metavar="ASSIGNMENT", help="a folder of solutions/, e.g. 01-identity-block")
    grade.add_argument("--student", action="append", metavar="ID", help="grade only this student (repeatable)")
    grade.add_argument("--workers", type=int, default=None, metavar="N",
                       help="sandboxed submissions at a time on this machine (default: one per core, "
                       "at most one per 2 GB of memory)")
    grade.add_argument("--cluster", metavar="ADDRESS",
                       help="run the submissions on the Dask scheduler at ADDRESS (tcp://host:8786)")
    grade.add_argument("--force", action="store_true", help="grade again students already graded")
    grade.add_argument("--seed", type=int, default=None,
                       help="seed of the hidden cases (default: c.ResnetCourseGrading.seed in "
                       "nbgrader_config.py, else the assignment's stored seed, else a new one)")
    grade.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                       help="wall-clock limit per submission (default: 600)")
    grade.add_argument("--memory-gb", type=float, default=6.0, metavar="GB",
                       help="address-space limit per submission (default: 6)")
    grade.add_argument("--no-progress", action="store_true", help="no progress bar")
    grade.set_defaults(handler=_run_grade)
