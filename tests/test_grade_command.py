"""``resnet-course grade`` for real: a temporary course, honest work, typical mistakes and attacks.

The course folder holds a copy of the repository's nbgrader_config.py and solutions/ (01 and 02);
the submissions are built from the release notebooks/ and the solutions. Each attack below was
measured to change scores or course files under plain ``nbgrader autograde`` (issue 12); here each
must score what the work deserves and leave every course file as it was. Then the same
submissions graded with one worker and on a Dask LocalCluster must give identical grades, and
``nbgrader export``/``generate_feedback`` must work on what the command recorded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import pytest

from resnet_course.grading import sandbox
from resnet_course.grading.integrity import course_file_checksums, gradebook_state

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sandbox.available_mode() != "bwrap" and sandbox.plain_mode_problem() is not None,
                       reason="no sandbox can run here: " + str(sandbox.plain_mode_problem())),
]

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = {"01-identity-block": "identity_block.ipynb", "02-convolutional-block": "convolutional_block.ipynb"}
SEED = 5
MAX = 10.0
#: Enough for 01 and 02 on a busy 2-core machine; the endless loop gets its own short run.
TIMEOUT = 240
LOOP_TIMEOUT = 20
MEMORY_GB = 4
SLEEP_MARK = "7654321"  # the detached processes' sleep argument, to look for them afterwards

WRONG_BLOCK = "def identity_block(X, f, filters, stage, block):\n    return X\n"


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _solution_code(assignment: str) -> str:
    source = nbformat.read(ROOT / "solutions" / assignment / ASSIGNMENTS[assignment], as_version=4)
    (cell,) = [c for c in source.cells if _grade_id(c) == ASSIGNMENTS[assignment].removesuffix(".ipynb")]
    return "\n".join(line for line in cell.source.splitlines() if "### BEGIN SOLUTION" not in line
                     and "### END SOLUTION" not in line)


def _release(assignment: str):
    return nbformat.read(ROOT / "notebooks" / assignment / ASSIGNMENTS[assignment], as_version=4)


def _with_answer(assignment: str, answer: str | None, edit=None):
    nb = _release(assignment)
    answer_id = ASSIGNMENTS[assignment].removesuffix(".ipynb")
    for cell in nb.cells:
        if _grade_id(cell) == answer_id and answer is not None:
            cell.source = answer
    if edit:
        edit(nb)
    return nb


def _guarded(*statements: str) -> str:
    """Each attack in its own try block, so one failing doesn't stop the next."""
    return "\n".join(f"try:\n    {s}\nexcept BaseException as error:\n    print('attack failed:', error)"
                     .replace("\n    ", "\n    ").replace(";; ", "\n    ") for s in statements)


def _damage(course: Path) -> str:
    package = sandbox._package_dir()
    db = course / "gradebook.db"
    return _guarded(
        "import sqlite3;; db = sqlite3.connect('../../../gradebook.db');; "
        "db.execute('UPDATE grade SET manual_score = 25');; db.commit()",
        f"import sqlite3;; db = sqlite3.connect({str(db)!r});; db.execute('UPDATE grade SET manual_score = 25');; "
        "db.execute('CREATE TRIGGER zero AFTER UPDATE ON grade BEGIN UPDATE grade SET auto_score = 0; END');; "
        "db.commit()",
        f"open({str(db)!r}, 'w').close()",
        "open('../../../gradebook.db', 'w').close()",
        f"open({str(PACKAGE_SNAPSHOT / 'resnet_course' / 'grading' / 'verdict.py')!r}, 'a').write('# hacked')",
        f"open({str(package / 'grading' / 'verdict.py')!r}, 'a').write('# hacked')",
        f"open({str(course / 'nbgrader_config.py')!r}, 'a').write('\\nimport os; os.system(\"touch /tmp/pwned\")\\n')",
    )


def _processes() -> str:
    """Attempts to kill the grader and to outlive the run: they fail in the sandbox, and score 0."""
    return _guarded(
        "import os, signal;; os.kill(os.getppid(), signal.SIGKILL)",
        "import os, signal;; os.kill(-1, signal.SIGKILL)",
        f"import subprocess;; subprocess.Popen(['sleep', '{SLEEP_MARK}'], start_new_session=True)",
        f"import os;; pid = os.fork();; os.setsid() if pid == 0 else None;; "
        f"os.execvp('sleep', ['sleep', '{SLEEP_MARK}']) if pid == 0 else None",
    )


def _cheats() -> str:
    return _guarded(
        "def check_identity_block(*args, **kwargs):\n        print('All tests passed.')",
        "import resnet_course.grading.checks as checks;; checks.check_identity_block = lambda *a, **k: None",
        "import resnet_course.grading.calls as calls;; calls.call_block = lambda *a, **k: None",
        "import numpy;; numpy.allclose = lambda *a, **k: True;; numpy.testing.assert_allclose = lambda *a, **k: None",
        "import keras;; keras.Model.count_params = lambda self: 71552",
        "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])",
        "import os;; exec('def check_identity_block(*a, **k): pass') "
        "if os.environ.get('NBGRADER_EXECUTION') == 'autograde' else None",
    )


def _leak() -> str:
    """Prints the cases and what it can of the gradebook; the marker is built at run time, so only
    the child's output could carry it into the feedback (the student's own code is shown there)."""
    return _guarded(
        "print('LEAK' + 'MARK', open('cases.json').read())",
        "print('LEAK' + 'MARK', open('../../../gradebook.db', 'rb').read()[:1000])",
        "import sys;; print('LEAK' + 'MARK', '### BEGIN ' + 'HIDDEN TESTS', file=sys.stderr)",
        "print('### BEGIN HIDDEN TESTS')  # an unpaired marker in the student's own code",
    )


def _drop_test_cells(nb):
    nb.cells = [c for c in nb.cells if not (_grade_id(c) or "").startswith(("test_", "hidden_tests_"))]


def _no_relu_and_edited_test(nb):
    for cell in nb.cells:
        if _grade_id(cell) == "identity_block":
            line = '    X = layers.Activation("relu", name="res" + str(stage) + block + "_relu")(X)\n'
            assert line in cell.source
            cell.source = cell.source.replace(line, "")
        if _grade_id(cell) == "test_identity_block":
            cell.source = 'print("All tests passed.")'


def _stride_on_the_middle_conv(code: str) -> str:
    old_a = 'strides=(s, s), padding="valid", name=conv_name_base + "2a"'
    old_b = 'strides=(1, 1), padding="same", name=conv_name_base + "2b"'
    assert old_a in code and old_b in code
    return (code.replace(old_a, 'strides=(1, 1), padding="valid", name=conv_name_base + "2a"')
            .replace(old_b, 'strides=(s, s), padding="same", name=conv_name_base + "2b"'))


def submissions(course: Path) -> dict[str, dict[str, tuple[str, object, float]]]:
    """student -> assignment -> (file name, notebook, expected score)."""
    one, two = "01-identity-block", "02-convolutional-block"
    good = _solution_code(one)
    name = ASSIGNMENTS[one]
    alice_nb = _with_answer(one, good)
    alice_cell = next(i for i, c in enumerate(alice_nb.cells) if _grade_id(c) == "identity_block")
    classmate = (f"import json\nexec(json.load(open({str(course / 'submitted/alice' / one / name)!r}))"
                 f"['cells'][{alice_cell}]['source'])\n")
    return {
        "alice": {one: (name, alice_nb, MAX), two: (ASSIGNMENTS[two], _with_answer(two, _solution_code(two)), MAX)},
        "bob": {one: (name, _release(one), 0.0), two: (ASSIGNMENTS[two], _release(two), 0.0)},
        "carol": {two: (ASSIGNMENTS[two], _with_answer(two, _stride_on_the_middle_conv(_solution_code(two))), 2.0)},
        "eve": {one: (name, _with_answer(one, good, _no_relu_and_edited_test), 2.0)},
        "mallory_cheats": {one: (name, _with_answer(one, WRONG_BLOCK + "\n" + _cheats()), 0.0)},
        "mallory_damage": {one: (name, _with_answer(one, good + "\n\n" + _damage(course)), MAX)},
        "mallory_kill": {one: (name, _with_answer(one, good + "\n\n" + _processes()), 0.0)},
        "mallory_reference": {one: (name, _with_answer(
            one, "from resnet_course.blocks import identity_block as reference\n\n"
                 "def identity_block(X, f, filters, stage, block):\n"
                 "    return reference(X, f, filters, stage, block)\n"), 0.0)},
        "mallory_classmate": {one: (name, _with_answer(one, classmate), 0.0)},
        "mallory_leak": {one: (name, _with_answer(one, good + "\n\n" + _leak()), MAX)},
        "renamed": {one: ("identity_block (1).ipynb", alice_nb, MAX)},
        "capital": {one: ("Identity_Block.ipynb", _with_answer(one, good, _drop_test_cells), MAX)},
        "crash": {one: (name, _with_answer(one, "import ctypes\nctypes.string_at(0)\n" + good), 0.0)},
        "hog": {one: (name, _with_answer(one, good.replace(
            '    conv_name_base = "res"', '    hog = [bytes(256 * 1024**2) for _ in range(64)]\n'
                                         '    conv_name_base = "res"')), 0.0)},
        "loop": {one: (name, _with_answer(one, "while True:\n    pass\n" + good), 0.0)},
    }


#: graded in a separate run with a short wall-clock limit
LOOPING = ["loop"]
#: graded again with one worker and on a Dask cluster: same grades expected
PARALLEL_SUBSET = ["alice", "bob", "eve", "mallory_cheats"]


def make_course(root: Path, students: list[str] | None = None) -> Path:
    root.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    for assignment in ASSIGNMENTS:
        shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for student, work in submissions(root).items():
        if students is not None and student not in students:
            continue
        for assignment, (filename, nb, _) in work.items():
            folder = root / "submitted" / student / assignment
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / filename)
            (folder / "timestamp.txt").write_text("2025-01-15 12:00:00.000000 UTC")
    return root


@pytest.fixture(scope="module", autouse=True)
def package_snapshot(tmp_path_factory):
    """A frozen copy of the package for the grading commands: the integrity check stops a run when the
    package source changes, and someone may be editing the working tree while the suite runs."""
    global PACKAGE_SNAPSHOT
    folder = tmp_path_factory.mktemp("package")
    shutil.copytree(sandbox._package_dir(), folder / "resnet_course",
                    ignore=shutil.ignore_patterns("__pycache__"))
    PACKAGE_SNAPSHOT = folder
    yield folder


PACKAGE_SNAPSHOT: Path | None = None


def grade(course: Path, assignment: str, *args: str) -> str:
    """``resnet-course grade`` in ``course`` (with the package snapshot); returns what it printed."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_SNAPSHOT)}
    done = subprocess.run([sys.executable, "-m", "resnet_course", "grade", assignment, "--seed", str(SEED),
                           "--no-progress", "--memory-gb", str(MEMORY_GB), *args],
                          cwd=course, capture_output=True, text=True, timeout=3600, env=env)
    assert done.returncode == 0, f"grade {assignment} {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-5000:]}"
    return done.stdout


def gradebook_scores(course: Path) -> dict[tuple[str, str], float]:
    db = sqlite3.connect(course / "gradebook.db")
    rows = db.execute(
        "SELECT student.id, assignment.name, SUM(grade.auto_score) FROM grade "
        "JOIN submitted_notebook ON grade.notebook_id = submitted_notebook.id "
        "JOIN submitted_assignment ON submitted_notebook.assignment_id = submitted_assignment.id "
        "JOIN student ON submitted_assignment.student_id = student.id "
        "JOIN assignment ON submitted_assignment.assignment_id = assignment.id "
        "GROUP BY student.id, assignment.name").fetchall()
    db.close()
    return {(student, assignment): score for student, assignment, score in rows}


def nbgrader(course: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def course(tmp_path_factory, package_snapshot):
    root = make_course(tmp_path_factory.mktemp("grade") / "course")
    before = course_file_checksums(root, PACKAGE_SNAPSHOT / "resnet_course")
    logs = {}
    for assignment in ASSIGNMENTS:
        everyone = sorted(p.name for p in (root / "submitted").iterdir() if (p / assignment).is_dir())
        honest = [s for s in everyone if s not in LOOPING]
        logs[assignment] = grade(root, assignment, "--workers", "2", "--timeout", str(TIMEOUT),
                                 *[arg for s in honest for arg in ("--student", s)])
        looping = [s for s in everyone if s in LOOPING]
        if looping:
            logs[assignment] += grade(root, assignment, "--timeout", str(LOOP_TIMEOUT),
                                      *[arg for s in looping for arg in ("--student", s)])
    after = course_file_checksums(root, PACKAGE_SNAPSHOT / "resnet_course")
    return {"root": root, "before": before, "after": after, "logs": logs}


def test_every_score_exactly(course):
    root = course["root"]
    expected = {(student, assignment): score for student, work in submissions(root).items()
                for assignment, (_, _, score) in work.items()}
    assert gradebook_scores(root) == expected


def test_grades_csv_from_nbgrader_export(course):
    root = course["root"]
    nbgrader(root, "export", "--to=grades.csv")
    with open(root / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    found = {(row["student_id"], row["assignment"]): (float(row["score"]), float(row["max_score"])) for row in rows}
    work = submissions(root)
    expected = {(student, assignment): (work[student][assignment][2] if assignment in work[student] else 0.0, MAX)
                for student in work for assignment in ASSIGNMENTS}
    assert found == expected


def test_course_files_and_gradebook_untouched(course):
    root = course["root"]
    assert course["after"] == course["before"]
    state = gradebook_state(root / "gradebook.db")
    assert not [entry for entry in state.schema if entry[0] in ("trigger", "view")]
    db = sqlite3.connect(root / "gradebook.db")
    assert db.execute("SELECT count(*) FROM grade WHERE manual_score IS NOT NULL OR extra_credit IS NOT NULL"
                      ).fetchone() == (0,)
    db.close()
    assert not Path("/tmp/pwned").exists()


def test_nothing_outlives_the_sandbox(course):
    left = subprocess.run(["pgrep", "-f", f"sleep {SLEEP_MARK}"], capture_output=True, text=True).stdout
    assert left.strip() == "", f"processes left by a submission: {left}"


def test_zeros_come_with_their_reasons(course):
    log = course["logs"]["01-identity-block"]
    assert "crash" in log and "SIGSEGV" in log
    assert "loop" in log and f"timed out after {LOOP_TIMEOUT} s" in log
    assert "hog" in log and "MemoryError" in log
    assert "mallory_reference" in log


def test_review_file_flags_and_pairs(course):
    review = (course["root"] / "grading" / "01-identity-block" / "review.md").read_text()
    assert "| mallory_reference | reference_use |" in review
    assert "| mallory_cheats | ipython |" in review
    assert "| mallory_classmate |" in review and "file_access" in review
    assert "| mallory_damage | file_access | identity_block |" in review
    assert ("| mallory_kill | process_control | identity_block | starts, signals or kills processes with "
            "os.kill()") in review
    assert "| crash | native | identity_block | calls ctypes.string_at()" in review
    # alice's notebook is renamed's notebook byte for byte
    assert "| alice | renamed | 100.0 |" in review
    assert "**renamed**: 'identity_block (1).ipynb' was graded as identity_block.ipynb" in review
    assert "**capital**:" in review and "test cells put back" in review


def test_feedback_shows_the_graders_messages_and_nothing_hidden(course):
    root = course["root"]
    nbgrader(root, "generate_feedback", "01-identity-block")

    def feedback(student):
        (path,) = (root / "feedback" / student / "01-identity-block").glob("*.html")
        return path.read_text()

    assert "All tests passed." in feedback("alice") and "10.0 / 10.0" in feedback("alice")
    assert "missing final ReLU" in feedback("eve")
    from resnet_course.grading.cases import block_case, draw_cases

    hidden = [block_case(case).describe("identity_block") for grade_id, cell in
              draw_cases("01-identity-block", SEED)["cells"].items() if grade_id.startswith("hidden_")
              for case in cell["cases"]]
    for student in ("alice", "bob", "eve", "mallory_leak", "mallory_cheats", "crash"):
        html = feedback(student)
        assert "BEGIN HIDDEN TESTS" not in html and "LEAKMARK" not in html, student
        assert "71_552" not in html and "71,552" not in html, student  # a hidden test's expected value
        assert not [text for text in hidden if text in html], student  # the hidden cases drawn


def test_autograded_notebook_restores_tests_and_shows_the_verdict(course):
    root = course["root"]
    nb = nbformat.read(root / "autograded" / "capital" / "01-identity-block" / "identity_block.ipynb", as_version=4)
    cells = {_grade_id(c): c for c in nb.cells if _grade_id(c)}
    assert {"test_identity_block", "hidden_tests_identity_block", "hidden_tests_identity_block_shapes"} <= set(cells)
    nb = nbformat.read(root / "autograded" / "eve" / "01-identity-block" / "identity_block.ipynb", as_version=4)
    cell = next(c for c in nb.cells if _grade_id(c) == "test_identity_block")
    assert cell.source == "# NBVAL_CHECK_OUTPUT\ncheck_identity_block(identity_block)"
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    assert "missing final ReLU" in error.evalue


def test_interrupted_run_resumes_and_force_grades_again(course):
    root = course["root"]
    log = grade(root, "01-identity-block", "--student", "alice", "--student", "bob")
    assert "Kept 2 student(s) already graded" in log and "Grading 0 submission(s)" in log
    log = grade(root, "01-identity-block", "--student", "bob", "--force")
    assert "Grading 1 submission(s)" in log
    assert gradebook_scores(root)[("bob", "01-identity-block")] == 0.0


def test_one_worker_and_a_dask_cluster_give_identical_grades(course, tmp_path):
    from dask.distributed import LocalCluster

    reference = {key: value for key, value in gradebook_scores(course["root"]).items()
                 if key[0] in PARALLEL_SUBSET and key[1] == "01-identity-block"}
    single = make_course(tmp_path / "single", PARALLEL_SUBSET)
    grade(single, "01-identity-block", "--workers", "1", "--timeout", str(TIMEOUT))
    assert {k: v for k, v in gradebook_scores(single).items() if k[1] == "01-identity-block"} == reference

    clustered = make_course(tmp_path / "cluster", PARALLEL_SUBSET)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        log = grade(clustered, "01-identity-block", "--cluster", cluster.scheduler_address, "--timeout", str(TIMEOUT))
    assert "Dask cluster" in log
    assert {k: v for k, v in gradebook_scores(clustered).items() if k[1] == "01-identity-block"} == reference


def _checksum_the_snapshot(monkeypatch):
    """In-process runs checksum the frozen package copy, not a working tree someone may be editing."""
    from resnet_course.grading import integrity

    monkeypatch.setattr(integrity, "_package_dir", lambda: PACKAGE_SNAPSHOT / "resnet_course")


def test_grade_assignment_in_process_reports_a_table(tmp_path, monkeypatch):
    """The Python API the command wraps: same scores, and the closing table per exercise."""
    from resnet_course.grading.command import grade_assignment

    _checksum_the_snapshot(monkeypatch)
    root = make_course(tmp_path / "api", ["bob"])
    output = io.StringIO()
    with redirect_stdout(output):
        scores = grade_assignment(root, "01-identity-block", seed=SEED, progress=False, out=output)
    assert sum(scores["bob"].values()) == 0.0
    text = output.getvalue()
    assert "identity_block" in text and "0/10" in text and "NotImplementedError" in text
    assert json.loads((root / "grading" / "01-identity-block" / "graded" / "bob.json").read_text())["seed"] == SEED


def test_a_course_file_changed_during_the_run_stops_it_and_restores_the_gradebook(tmp_path, monkeypatch):
    """No submission can do this (the sandbox has no course root): the check is a tripwire, tested by
    changing the config from outside while a result comes in."""
    from resnet_course.grading import command
    from resnet_course.grading.integrity import IntegrityError
    from resnet_course.grading.runner import TaskOutcome, zero_results

    _checksum_the_snapshot(monkeypatch)
    root = make_course(tmp_path / "tripwire", ["bob"])
    with redirect_stdout(io.StringIO()):
        command.grade_assignment(root, "01-identity-block", seed=SEED, progress=False, out=io.StringIO())
    before = sqlite3.connect(root / "gradebook.db")
    dump = list(before.iterdump())
    before.close()

    def tampered_run(tasks, workers=1, cluster=None):
        for task in tasks:
            with open(root / "nbgrader_config.py", "a") as config:
                config.write("\nc.Exchange.root = '/tmp'\n")
            yield TaskOutcome(task.student, zero_results(task.assignment, "fake"), None, 0.0)

    monkeypatch.setattr(command, "run_tasks", tampered_run)
    with pytest.raises(IntegrityError, match=r"nbgrader_config.py changed.*restored from"):
        command.grade_assignment(root, "01-identity-block", force=True, seed=SEED, progress=False,
                                 out=io.StringIO())
    after = sqlite3.connect(root / "gradebook.db")
    assert list(after.iterdump()) == dump
    after.close()
