"""The grading sandbox, integrity guard, submission finding and review file, on small programs.

The programs here are plain Python (no Keras), so each sandboxed run takes a fraction of a
second; the full round trip with real submissions is in test_grade_command.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from resnet_course.grading import sandbox
from resnet_course.grading.integrity import IntegrityError, IntegrityGuard, course_file_checksums
from resnet_course.grading.review import normalise_code, same_as_solution, similar_answers, write_review
from resnet_course.grading.runner import _unsafe_output
from resnet_course.grading.submissions import choose_notebook, normalised_name

MODE = sandbox.available_mode()
needs_bwrap = pytest.mark.skipif(MODE != "bwrap", reason="bubblewrap (bwrap) is not installed or not usable here")


@pytest.fixture
def course(tmp_path) -> Path:
    root = tmp_path / "course"
    (root / "solutions" / "01-identity-block").mkdir(parents=True)
    (root / "solutions" / "01-identity-block" / "identity_block.ipynb").write_text("{}")
    (root / "nbgrader_config.py").write_text("c = get_config()\n")
    (root / "submitted" / "alice" / "01-identity-block").mkdir(parents=True)
    (root / "submitted" / "alice" / "01-identity-block" / "identity_block.ipynb").write_text("alice's work")
    db = sqlite3.connect(root / "gradebook.db")
    db.executescript("CREATE TABLE grade (id TEXT PRIMARY KEY, auto_score FLOAT, manual_score FLOAT, "
                     "extra_credit FLOAT); INSERT INTO grade VALUES ('g1', 5, NULL, NULL);")
    db.commit()
    db.close()
    return root


def _run(course: Path, tmp_path: Path, code: str, limits: sandbox.Limits | None = None, mode: str = MODE):
    work = tmp_path / f"work-{time.monotonic_ns()}"
    work.mkdir()
    (work / "program.py").write_text(textwrap.dedent(code))
    result = sandbox.run_in_sandbox(["program.py"], work, course, limits or sandbox.Limits(wall_seconds=60), mode)
    return result, work


@needs_bwrap
def test_child_sees_only_its_folder_and_the_environment(course, tmp_path):
    result, work = _run(course, tmp_path, f"""
        import os, socket, sys
        print("uid", os.getuid())
        for path in [{str(course)!r}, {str(course / 'gradebook.db')!r}, {str(course / 'submitted')!r}]:
            print(path, "visible" if os.path.exists(path) else "absent")
        try:
            open({sandbox._package_dir().joinpath('__init__.py').as_posix()!r}, "a").write("# hacked")
            print("package writable")
        except OSError as error:
            print("package read-only", type(error).__name__)
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=3)
            print("network")
        except OSError:
            print("no network")
        import resnet_course
        open("out/ok", "w").write("written")
    """)
    log = result.log_tail
    assert result.returncode == 0, log
    assert f"{course} absent" in log and "gradebook.db absent" in log and "submitted absent" in log
    assert "package read-only" in log and "no network" in log
    if os.geteuid() == 0:
        assert "uid 65534" in log
    assert (work / "out" / "ok").read_text() == "written"


@needs_bwrap
def test_killing_the_grader_and_detached_processes_do_not_outlive_the_child(course, tmp_path):
    marker = f"{time.monotonic_ns() % 10**6 + 10**6}"
    result, _ = _run(course, tmp_path, f"""
        import os, signal, subprocess
        subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            os.execvp("sleep", ["sleep", "{marker}"])
        for target in (os.getppid(), 1):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError as error:
                print("kill", target, type(error).__name__)
    """)
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout
    assert left.strip() == "", f"processes outlived the sandbox: {left}"


@needs_bwrap
def test_timeout_and_memory_limit(course, tmp_path):
    result, _ = _run(course, tmp_path, "while True:\n    pass\n", sandbox.Limits(wall_seconds=2))
    assert result.reason == "timed out after 2 s"
    result, _ = _run(course, tmp_path, """
        try:
            block = bytearray(8 * 1024**3)
        except MemoryError:
            print("MemoryError")
    """, sandbox.Limits(wall_seconds=30, memory_bytes=2 * 1024**3))
    assert "MemoryError" in result.log_tail


@pytest.mark.skipif(sandbox.plain_mode_problem() is not None, reason="the plain mode can't run here: "
                    + str(sandbox.plain_mode_problem()))
def test_plain_mode_limits_user_and_leftovers(course, tmp_path):
    result, work = _run(course, tmp_path, """
        import os, subprocess
        print("uid", os.getuid())
        subprocess.Popen(["sleep", "1234567"], start_new_session=True)
        open("out/ok", "w").write("x")
    """, mode="plain")
    assert (work / "out" / "ok").exists()
    assert result.killed_leftovers, "the detached sleep was not found"
    if os.geteuid() == 0:
        assert "uid 65534" in result.log_tail


def test_integrity_guard_restores_the_gradebook(course, tmp_path):
    guard = IntegrityGuard(course, tmp_path / "backups")
    guard.check("at the start")
    db = sqlite3.connect(course / "gradebook.db")
    db.executescript("UPDATE grade SET manual_score = 25; CREATE TRIGGER zero AFTER INSERT ON grade "
                     "BEGIN UPDATE grade SET auto_score = 0; END;")
    db.commit()
    db.close()
    with pytest.raises(IntegrityError, match="trigger 'zero'.*manual_score"):
        guard.check("after alice")
    db = sqlite3.connect(course / "gradebook.db")
    assert db.execute("SELECT manual_score FROM grade").fetchall() == [(None,)]
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (0,)
    db.close()


def test_rows_pointing_nowhere_are_refused(course, tmp_path):
    db = sqlite3.connect(course / "gradebook.db")
    db.executescript("CREATE TABLE student (id TEXT PRIMARY KEY); CREATE TABLE submitted_assignment "
                     "(id TEXT PRIMARY KEY, student_id TEXT REFERENCES student(id)); "
                     "INSERT INTO submitted_assignment VALUES ('s1', 'nobody');")
    db.commit()
    db.close()
    with pytest.raises(IntegrityError, match="submitted_assignment points to a missing student row"):
        IntegrityGuard(course, tmp_path / "backups")


def test_integrity_guard_sees_course_file_changes(course, tmp_path):
    guard = IntegrityGuard(course, tmp_path / "backups")
    before = course_file_checksums(course)
    with open(course / "nbgrader_config.py", "a") as f:
        f.write("import os; os.system('echo pwned')\n")
    with pytest.raises(IntegrityError, match="nbgrader_config.py changed"):
        guard.check("after bob")
    assert course_file_checksums(course) != before


def test_tampered_gradebook_is_refused_before_grading(course, tmp_path):
    db = sqlite3.connect(course / "gradebook.db")
    db.execute("CREATE VIEW everything AS SELECT * FROM grade")
    db.commit()
    db.close()
    with pytest.raises(IntegrityError, match="view 'everything'"):
        IntegrityGuard(course, tmp_path / "backups")


def test_output_with_links_or_special_files_is_not_read(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    assert _unsafe_output(out) is None
    (out / "model.json").symlink_to("/etc/passwd")
    assert "symbolic link" in _unsafe_output(out)
    (out / "model.json").unlink()
    os.mkfifo(out / "pipe")
    assert "special file" in _unsafe_output(out)


@pytest.mark.parametrize("name", ["identity_block (1).ipynb", "Identity_Block.ipynb", "Copy of identity-block.ipynb",
                                  "identity_block-Copy1.ipynb"])
def test_renamed_notebooks_map_to_the_assignments_notebook(tmp_path, name):
    assert normalised_name(name) == "identity_block"
    (tmp_path / name).write_text("{}")
    (tmp_path / "notes.ipynb").write_text("{}")
    chosen, notes = choose_notebook(tmp_path, "identity_block.ipynb")
    assert chosen == tmp_path / name
    assert any("graded as identity_block.ipynb" in note for note in notes)
    assert any("notes.ipynb" in note for note in notes)


def test_choice_rule_exact_name_first_then_newest(tmp_path):
    for name in ("identity_block (2).ipynb", "identity_block (1).ipynb"):
        (tmp_path / name).write_text("{}")
    os.utime(tmp_path / "identity_block (2).ipynb", (1, 1))
    chosen, _ = choose_notebook(tmp_path, "identity_block.ipynb")
    assert chosen.name == "identity_block (1).ipynb"  # the newest of the same rank
    (tmp_path / "identity_block.ipynb").write_text("{}")
    os.utime(tmp_path / "identity_block.ipynb", (0, 0))
    chosen, notes = choose_notebook(tmp_path, "identity_block.ipynb")
    assert chosen.name == "identity_block.ipynb" and not any("graded as" in n for n in notes)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    chosen, notes = choose_notebook(tmp_path / ".ipynb_checkpoints", "identity_block.ipynb")
    assert chosen is None and "no notebook" in notes[0]


def test_near_identical_answers_are_paired(tmp_path):
    answer = "def f(X):\n    Y = layers.Conv2D(4, 1)(X)\n    return layers.Add()([X, Y])\n"
    answers = {
        "ann": answer,
        "ben": "# my own work\n" + answer.replace("    return", "\n    return"),  # comments, blank lines
        "cat": "def f(X):\n    return X\n",
        "dan": "# YOUR CODE HERE\nraise NotImplementedError()",
        "eva": "# YOUR CODE HERE\nraise NotImplementedError()",
    }
    pairs = similar_answers(answers, ignore=("# YOUR CODE HERE\nraise NotImplementedError()",))
    assert [(p.first, p.second) for p in pairs] == [("ann", "ben")]
    assert pairs[0].similarity == 100.0
    assert normalise_code("x = 1  # one\n\n\ny = 2\n") == "x = 1\ny = 2"
    assert [name for name, _ in same_as_solution(answers, answer)] == ["ann", "ben"]
    path = write_review(tmp_path / "review.md", "01", {"cat": []}, {"cat": ["renamed"]}, pairs, [])
    text = path.read_text()
    assert "| ann | ben | 100.0 |" in text and "**cat**: renamed" in text


def test_grade_is_a_subcommand():
    from resnet_course.cli import build_parser

    args = build_parser().parse_args(["grade", "01-identity-block", "--student", "a", "--student", "b",
                                      "--workers", "2", "--seed", "7"])
    assert (args.assignment, args.student, args.workers, args.seed) == ("01-identity-block", ["a", "b"], 2, 7)


def test_grade_outside_a_course_root_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    from resnet_course.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["grade", "01-identity-block"]) == 2
    assert "no nbgrader_config.py" in capsys.readouterr().err


def test_unknown_submission_is_a_clear_error(tmp_path):
    from resnet_course.grading.submissions import find_submissions

    with pytest.raises(FileNotFoundError, match="no submission of 01-identity-block for zoe"):
        find_submissions(tmp_path, "01-identity-block", "identity_block.ipynb", ["zoe"])


def test_hidden_cases_are_redacted_from_student_facing_messages():
    from dataclasses import dataclass

    from resnet_course.grading.cases import draw_cases
    from resnet_course.grading.gradebook import redact_hidden_cases

    @dataclass(frozen=True)
    class Result:
        grade_id: str
        points: float
        max_points: float
        passed: bool
        message: str

    cases = draw_cases("01-identity-block", 5)
    hidden = cases["cells"]["hidden_tests_identity_block"]["cases"][0]
    shape = tuple(hidden["input_shape"])
    described = (f"identity_block(X, f={hidden['f']}, filters={hidden['filters']}, stage={hidden['stage']}, "
                 f"block={hidden['block']!r}) with X = keras.Input(shape={shape})")
    visible = Result("test_identity_block", 0.0, 5.0, False, "failed on identity_block(X, f=2) shape (4, 4, 6)")
    failed = Result("hidden_tests_identity_block", 0.0, 3.0, False,
                    f"identity_block failed on case 1 of 3: {described}:\n  output (None, {', '.join(map(str, shape))})")
    kept, redacted = redact_hidden_cases([visible, failed], cases)
    assert kept == visible
    assert redacted.message.startswith("identity_block failed on case 1 of 3: [a hidden case]:")
    assert described not in redacted.message and str(shape) not in redacted.message
