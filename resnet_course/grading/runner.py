"""Grading tasks: one sandboxed child per submission, run in parallel or on a Dask cluster.

A task (``SandboxTask``) holds only data: the program ``build_program`` extracted from the
notebook, the cases and the flags. ``grade_in_sandbox`` runs on a worker (a local process pool's
process, or a Dask worker): it writes the program and cases into a fresh private folder, runs
``python -m resnet_course.grading.collect`` there in the sandbox, checks that what came back is
only plain files, and scores it with ``verdict.score`` (trusted code, never the student's). The
coordinating process alone writes the gradebook (``command``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from resnet_course.grading.sandbox import Limits, run_in_sandbox

#: The most the child may hand back, all files together; more scores 0 (protects the grader).
MAX_OUTPUT_BYTES = 2 * 1024**3
#: The most files the child may hand back (the grader writes a few per case).
MAX_OUTPUT_FILES = 10_000
#: Exit codes meaning the child was killed by a signal: bwrap reports 128 + the signal.
_SIGNAL_EXIT = 128


@dataclass
class SandboxTask:
    assignment: str
    student: str
    program: str | None
    cases: dict
    flags: list
    limits: Limits
    mode: str | None = None
    course_root: str = "/nonexistent"
    #: Why there is no program (the notebook could not be read), scored 0 with this reason.
    build_error: str | None = None


@dataclass
class TaskOutcome:
    student: str
    results: list
    reason: str | None
    seconds: float
    mode: str | None = None
    log_tail: str = ""
    killed_leftovers: list[int] = field(default_factory=list)


def zero_results(assignment: str, reason: str) -> list:
    """Every graded cell of the assignment at 0 points, with ``reason``."""
    from resnet_course.grading.assignments import assignment_spec
    from resnet_course.grading.verdict import CellResult

    spec = assignment_spec(assignment)
    return [CellResult(grade_id=cell.grade_id, points=0.0, max_points=float(cell.points), passed=False,
                       message=reason)
            for exercise in spec.exercises for cell in exercise.cells]


def _unsafe_output(outdir: Path) -> str | None:
    """Why the child's output folder can't be read safely (links, special files, size), or None."""
    total = count = 0
    for folder, dirs, files in os.walk(outdir, followlinks=False):
        count += len(dirs) + len(files)
        if count > MAX_OUTPUT_FILES:
            return f"the submission's output holds over {MAX_OUTPUT_FILES} files: not read"
        for name in dirs + files:
            info = os.lstat(os.path.join(folder, name))
            if stat.S_ISLNK(info.st_mode):
                return f"the submission's output holds a symbolic link ({name}): not read"
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                return f"the submission's output holds a special file ({name}): not read"
            if stat.S_ISREG(info.st_mode):
                if info.st_nlink > 1:
                    return f"the submission's output holds a hard link ({name}): not read"
                total += info.st_size
    if total > MAX_OUTPUT_BYTES:
        return f"the submission's output is {total / 1024**3:.1f} GiB, over the {MAX_OUTPUT_BYTES / 1024**3:.0f} GiB allowed"
    return None


def _child_failure(returncode: int | None, reason: str | None, mode: str) -> str | None:
    """A reason to score the whole submission 0: timeout, a kill, a crash of the interpreter."""
    if reason:
        return f"the submission's code was stopped: {reason}"
    if returncode is None:
        return None
    if mode == "bwrap" and returncode > _SIGNAL_EXIT and returncode - _SIGNAL_EXIT < 65:
        import signal

        number = returncode - _SIGNAL_EXIT
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        hint = " (memory limit?)" if number == signal.SIGKILL else ""
        return f"the submission's code crashed the grading process: killed by {name}{hint}"
    return None


def grade_in_sandbox(task: SandboxTask) -> TaskOutcome:
    """Run one submission in the sandbox and score what it handed back (runs on a worker)."""
    from resnet_course import startup

    startup.import_tensorflow_quietly()  # once per worker: no C++ start-up lines in the grader's output
    from resnet_course.grading.verdict import score

    started = time.monotonic()
    if task.program is None:
        reason = task.build_error or "no notebook to grade"
        return TaskOutcome(task.student, zero_results(task.assignment, reason), reason,
                           time.monotonic() - started)
    workdir = Path(tempfile.mkdtemp(prefix="resnet-course-grade-"))
    try:
        (workdir / "program.py").write_text(task.program)
        (workdir / "cases.json").write_text(json.dumps(task.cases))
        ran = run_in_sandbox(["-m", "resnet_course.grading.collect", "program.py", "cases.json", "out"],
                             workdir, Path(task.course_root), task.limits, task.mode)
        outdir = workdir / "out"
        failure = _child_failure(ran.returncode, ran.reason, ran.mode) or _unsafe_output(outdir)
        if failure:
            results = zero_results(task.assignment, failure)
        else:
            results = list(score(task.assignment, task.cases, outdir, flags=task.flags))
        return TaskOutcome(task.student, results, failure, time.monotonic() - started, ran.mode,
                           ran.log_tail, ran.killed_leftovers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _local_results(tasks: list[SandboxTask], workers: int) -> Iterator[TaskOutcome]:
    # spawn: each worker starts clean (no forked TensorFlow state); workers are reused, so each
    # imports Keras once.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: set[Future] = {pool.submit(grade_in_sandbox, task) for task in tasks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def _dask_results(tasks: list[SandboxTask], address: str) -> Iterator[TaskOutcome]:
    try:
        from dask.distributed import Client, as_completed
    except ImportError as error:
        raise ValueError("--cluster needs Dask: pip install 'resnet_course[grading]'") from error
    with Client(address, timeout="60s") as client:
        futures = [client.submit(grade_in_sandbox, task, pure=False, key=f"grade-{task.assignment}-{index}")
                   for index, task in enumerate(tasks)]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)


def run_tasks(tasks: list[SandboxTask], workers: int = 1, cluster: str | None = None) -> Iterator[TaskOutcome]:
    """Outcomes in the order they finish: a local process pool, or the Dask cluster at ``cluster``."""
    if not tasks:
        return iter(())
    if cluster:
        return _dask_results(tasks, cluster)
    return _local_results(tasks, max(1, workers))


def default_workers() -> int:
    """Sandboxes at a time by default: one per core, as far as memory allows (about 2 GB each)."""
    try:
        memory_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024**3
    except (ValueError, OSError):
        memory_gb = 4.0
    return max(1, min(os.cpu_count() or 1, int(memory_gb // 2)))


def thread_budget(workers: int) -> int:
    """TensorFlow threads per child: the machine's cores shared between the workers."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def exercise_totals(assignment: str, results: Iterable) -> dict[str, tuple[float, float, list[str]]]:
    """Exercise -> (points, max points, reasons of the cells that scored less than full)."""
    from resnet_course.grading.assignments import assignment_spec

    by_id = {result.grade_id: result for result in results}
    totals = {}
    for exercise in assignment_spec(assignment).exercises:
        points = maximum = 0.0
        reasons: list[str] = []
        for cell in exercise.cells:
            result = by_id.get(cell.grade_id)
            maximum += float(cell.points)
            if result is None:
                reasons.append(f"{cell.grade_id}: not graded")
                continue
            points += float(result.points)
            if result.points < result.max_points:
                first_line = (result.message or "failed").strip().splitlines()[0] if result.message else "failed"
                reasons.append(f"{cell.grade_id}: {first_line[:160]}")
        totals[exercise.name] = (points, maximum, reasons)
    return totals


def closing_table(assignment: str, rows: dict[str, list], skipped: dict[str, dict[str, float]],
                  width: Callable[[], int] = lambda: 100) -> str:
    """Per student and exercise: points / max, the total, and the reason for every lost point."""
    from resnet_course.grading.assignments import assignment_spec

    exercises = [exercise.name for exercise in assignment_spec(assignment).exercises]
    header = ["student", *exercises, "total"]
    lines = []
    body = []
    for student in sorted(set(rows) | set(skipped)):
        if student in rows:
            totals = exercise_totals(assignment, rows[student])
            cells = [f"{totals[name][0]:g}/{totals[name][1]:g}" for name in exercises]
            total = sum(t[0] for t in totals.values())
            maximum = sum(t[1] for t in totals.values())
            reasons = [f"{name}: {reason}" for name in exercises for reason in totals[name][2]]
            body.append([student, *cells, f"{total:g}/{maximum:g}"])
            lines += [f"  {student}: {reason}" for reason in reasons]
        else:
            body.append([student, *["(kept)"] * len(exercises), f"{sum(skipped[student].values()):g}"])
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    table = [" | ".join(str(v).ljust(w) for v, w in zip(header, widths)),
             "-+-".join("-" * w for w in widths)]
    table += [" | ".join(str(v).ljust(w) for v, w in zip(row, widths)) for row in body]
    if lines:
        table += ["", "Points lost, and why:", *lines]
    return "\n".join(table)
