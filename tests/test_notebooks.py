"""The assignments under nbgrader, for real: the release, validate, and a full grading round trip.

* notebooks/ is exactly what ``nbgrader generate_assignment`` makes from solutions/;
* ``nbgrader validate`` passes on every solution notebook, and ``validate --invert`` confirms
  every released notebook fails its tests as shipped;
* a grading round trip in a temporary course folder: release, submissions from five students,
  ``autograde``, ``generate_feedback`` and ``export``, every score checked exactly.

Assignments are the folders of solutions/. The round trip uses 01-03, whose students'
mistakes it writes, and the training notebooks 04-06 for two students: the solutions (full
marks) and the untouched release (zero). The training notebooks need the real data
(``RESNET_COURSE_DATA``): where a dataset is missing, its notebook is left out of validate and
of the round trip, and ``test_training_notebooks_have_their_data`` says so as a skip. nbgrader
and its kernels always run with ``RESNET_COURSE_PROFILE=ci``: one epoch on 256 images.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

# nbgrader round trips and notebook runs: minutes.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("release_notebooks", ROOT / "scripts" / "release_notebooks.py")
release_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(release_notebooks)

ASSIGNMENTS = release_notebooks.assignments()
ROUND_TRIP = ["01-identity-block", "02-convolutional-block", "03-resnet50"]
#: The training notebooks and their datasets.
TRAINING = {"04-signs": "signs", "05-cifar10": "cifar10", "06-fer2013": "fer2013"}


def _missing_data() -> dict[str, str]:
    """Training assignment -> why its dataset can't be found (no download is tried)."""
    from resnet_course import datasets

    missing = {}
    for assignment, dataset in TRAINING.items():
        try:
            datasets.find_source(dataset)
        except datasets.DatasetError as error:
            missing[assignment] = str(error).split(". ")[0]
    return missing


MISSING_DATA = _missing_data()
#: The assignments validate runs.
VALIDATED = [name for name in ASSIGNMENTS if name not in MISSING_DATA]
#: nbgrader's own autograde round trip: the block and model notebooks. The course grades with
#: `resnet-course grade` (tests/test_grade_*.py, every assignment); this keeps nbgrader's path
#: working for the notebooks whose cells it can run in seconds.
GRADED = ROUND_TRIP
#: Seconds per cell in the round trip: short, so the student whose code loops forever costs
#: little; the longest honest cell (the grader on ResNet-50) takes about 10 s on 2 cores.
CELL_TIMEOUT = 60
MAX_SCORE = 10.0


def _nbgrader_command(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_ci_env(),
    )


def _ci_env() -> dict[str, str]:
    """nbgrader's environment, inherited by its kernels: the training notebooks train the ci profile."""
    env = release_notebooks.quiet_env()
    env["RESNET_COURSE_PROFILE"] = "ci"
    return env


def _finish(process: subprocess.Popen, timeout: int = 900) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"{' '.join(process.args[2:])} ran over {timeout} s:\n{output[-6000:]}") from None
    assert process.returncode == 0, f"{' '.join(process.args[2:])} failed ({process.returncode}):\n{output[-6000:]}"
    return output


def run_nbgrader(*args: str, cwd: Path, timeout: int = 900) -> str:
    """Run ``nbgrader ARGS`` in ``cwd`` (where its nbgrader_config.py is); return stdout and stderr."""
    return _finish(_nbgrader_command(*args, cwd=cwd), timeout)


def notebook_of(folder: Path) -> Path:
    (path,) = sorted(folder.glob("*.ipynb"))
    return path


def validation_results(output: str) -> dict[str, str]:
    """nbgrader validate's verdict per notebook, from its log ("Validating '<path>'") and report."""
    parts = re.split(r"\[ValidateApp \| INFO\] Validating '([^']+)'", output)
    return {Path(path).name: text for path, text in zip(parts[1::2], parts[2::2])}


def test_assignments_are_found():
    assert ASSIGNMENTS[:3] == ROUND_TRIP
    for name in ASSIGNMENTS:
        assert re.fullmatch(r"\d\d-[a-z0-9-]+", name), f"solutions/{name}: name assignments NN-name, in course order"


def test_training_notebooks_are_assignments():
    assert [name for name in ASSIGNMENTS if name not in ROUND_TRIP] == list(TRAINING)


def test_training_notebooks_have_their_data():
    if MISSING_DATA:
        pytest.skip("left out of validate and the round trip, no data (set RESNET_COURSE_DATA): "
                    + "; ".join(f"{name}: {why}" for name, why in MISSING_DATA.items()))


def test_release_matches_solutions():
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release_notebooks.py"), "--check"],
        cwd=ROOT, capture_output=True, text=True, env=release_notebooks.quiet_env(),
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_release_has_no_solutions_or_hidden_tests():
    for name in ASSIGNMENTS:
        nb = nbformat.read(notebook_of(ROOT / "notebooks" / name), as_version=4)
        text = "\n".join(cell.source for cell in nb.cells)
        assert "### BEGIN SOLUTION" not in text and "### BEGIN HIDDEN TESTS" not in text
        assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
                assert "raise NotImplementedError()" in cell.source


@pytest.fixture(scope="module")
def validations() -> dict[str, tuple[list[str], str]]:
    """``nbgrader validate`` on the solutions and ``validate --invert`` on the release, run side by side."""
    solutions = [str(notebook_of(ROOT / "solutions" / name)) for name in VALIDATED]
    release = [str(notebook_of(ROOT / "notebooks" / name)) for name in VALIDATED]
    processes = {
        "solutions": (solutions, _nbgrader_command("validate", *solutions, cwd=ROOT)),
        "release": (release, _nbgrader_command("validate", "--invert", *release, cwd=ROOT)),
    }
    return {key: (paths, _finish(process)) for key, (paths, process) in processes.items()}


def test_validate_passes_on_solutions(validations):
    paths, output = validations["solutions"]
    results = validation_results(output)
    assert sorted(results) == sorted(Path(p).name for p in paths), output[-3000:]
    for name, text in results.items():
        assert "Success! Your notebook passes all the tests." in text, f"{name}:\n{text}"


def test_validate_invert_on_release(validations):
    paths, output = validations["release"]
    results = validation_results(output)
    assert sorted(results) == sorted(Path(p).name for p in paths), output[-3000:]
    for name, text in results.items():
        assert "Success! The notebook does not pass any tests." in text, f"{name} passes tests as shipped:\n{text}"


# --- the grading round trip ---------------------------------------------------------------


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _student_code(source: str) -> str:
    """A solution cell as a student would write it: without nbgrader's markers."""
    return "\n".join(line for line in source.splitlines() if "### BEGIN SOLUTION" not in line
                     and "### END SOLUTION" not in line)


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the solution changed: {old!r} is no longer in it; update the round trip's mistake"
    return text.replace(old, new)


def _submission(course: Path, assignment: str, *, solved: bool, edit=None):
    """The released notebook, with the solutions filled in when ``solved``, then ``edit(cells)``."""
    nb = nbformat.read(notebook_of(course / "release" / assignment), as_version=4)
    if solved:
        source = nbformat.read(notebook_of(course / "solutions" / assignment), as_version=4)
        solutions = {_grade_id(c): c.source for c in source.cells if c.metadata.get("nbgrader", {}).get("solution")}
        for cell in nb.cells:
            if _grade_id(cell) in solutions:
                cell.source = _student_code(solutions[_grade_id(cell)])
    if edit:
        edit({_grade_id(c): c for c in nb.cells if _grade_id(c)})
    return nb


def _stride_on_the_middle_conv(cells):
    """Carol's mistake (ResNet v1.5): the stride on the fxf conv instead of the first 1x1 conv."""
    cell = cells["convolutional_block"]
    cell.source = _replace(cell.source, 'strides=(s, s), padding="valid", name=conv_name_base + "2a"',
                           'strides=(1, 1), padding="valid", name=conv_name_base + "2a"')
    cell.source = _replace(cell.source, 'strides=(1, 1), padding="same", name=conv_name_base + "2b"',
                           'strides=(s, s), padding="same", name=conv_name_base + "2b"')


def _loops_forever(cells):
    """Dave tries things out with a loop that never ends, before his function."""
    cell = cells["identity_block"]
    cell.source = "n = 0\nwhile n < 3:  # forgot n += 1\n    pass\n\n" + cell.source


def _no_final_relu_and_edited_test(cells):
    """Eve forgets the ReLU after the Add, and makes the visible test print success."""
    cell = cells["identity_block"]
    cell.source = _replace(cell.source, 'X = layers.Activation("relu", name="res" + str(stage) + block + "_relu")(X)',
                           "")
    cells["test_identity_block"].source = 'print("All tests passed.")'


#: student -> assignment -> (solved, edit); assignments a student leaves out score zero.
SUBMISSIONS = {
    "alice": {name: (True, None) for name in ROUND_TRIP},
    "bob": {name: (False, None) for name in ROUND_TRIP},
    "carol": {"02-convolutional-block": (True, _stride_on_the_middle_conv)},
    "dave": {"01-identity-block": (True, _loops_forever)},
    "eve": {"01-identity-block": (True, _no_final_relu_and_edited_test)},
}
#: Exact scores: 10 points per assignment (visible test 5, hidden tests 3 + 2; 06: 5 + 2 + 3).
EXPECTED_SCORES = {
    "alice": {name: 10.0 for name in ROUND_TRIP},
    "bob": {name: 0.0 for name in ROUND_TRIP},
    # the grader catches the stride (0 + 0); shapes and parameter counts can't see it (2)
    "carol": {"01-identity-block": 0.0, "02-convolutional-block": 2.0, "03-resnet50": 0.0},
    # the loop times out, the function is never defined: every test fails
    "dave": {"01-identity-block": 0.0, "02-convolutional-block": 0.0, "03-resnet50": 0.0},
    # the restored visible test fails (0), the grader's hidden cases fail (0), shapes pass (2)
    "eve": {"01-identity-block": 2.0, "02-convolutional-block": 0.0, "03-resnet50": 0.0},
}


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course folder: release, submissions, autograde, feedback and export, done once."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    for name in GRADED:
        shutil.copytree(ROOT / "solutions" / name, root / "solutions" / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    run_nbgrader("generate_assignment", "*", cwd=root)

    for student, assignments in SUBMISSIONS.items():
        for assignment, (solved, edit) in assignments.items():
            folder = root / "submitted" / student / assignment
            folder.mkdir(parents=True)
            nb = _submission(root, assignment, solved=solved, edit=edit)
            nbformat.write(nb, folder / notebook_of(root / "release" / assignment).name)
            (folder / "timestamp.txt").write_text("2025-01-15 12:00:00.000000 UTC")

    # A short cell timeout: Dave's loop costs little.
    log = ""
    for name in GRADED:
        log += run_nbgrader("autograde", name, f"--ExecutePreprocessor.timeout={CELL_TIMEOUT}", cwd=root, timeout=1800)
    (root / "autograde.log").write_text(log)
    run_nbgrader("generate_feedback", "*", cwd=root)
    run_nbgrader("export", "--to=grades.csv", cwd=root)
    return root


def _autograded(course: Path, student: str, assignment: str):
    return nbformat.read(notebook_of(course / "autograded" / student / assignment), as_version=4)


def _feedback(course: Path, student: str, assignment: str) -> str:
    (path,) = (course / "feedback" / student / assignment).glob("*.html")
    return path.read_text()


def test_release_in_the_course_folder(course):
    for name in GRADED:
        released = course / "release" / name / notebook_of(ROOT / "notebooks" / name).name
        assert released.read_bytes() == notebook_of(ROOT / "notebooks" / name).read_bytes()


def test_every_score_exactly(course):
    with open(course / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    found = {(row["student_id"], row["assignment"]): (float(row["score"]), float(row["max_score"])) for row in rows}
    expected = {(student, assignment): (score, MAX_SCORE)
                for student, scores in EXPECTED_SCORES.items() for assignment, score in scores.items()}
    assert found == expected


def test_hidden_tests_ran_at_grading(course):
    nb = _autograded(course, "alice", "01-identity-block")
    hidden = [c for c in nb.cells if (_grade_id(c) or "").startswith("hidden_tests")]
    assert len(hidden) == 2
    assert all("### BEGIN HIDDEN TESTS" in c.source for c in hidden)
    assert "All tests passed." in "".join(o.get("text", "") for o in hidden[0].outputs)


def test_full_marks_feedback(course):
    for assignment in GRADED:
        html = _feedback(course, "alice", assignment)
        assert "All tests passed." in html
        assert "10.0 / 10.0" in html


def test_feedback_keeps_the_hidden_tests_hidden(course):
    html = _feedback(course, "alice", "01-identity-block")
    assert "HIDDEN TESTS" not in html and "BlockCase((4, 4, 1024)" not in html


def test_untouched_release_scores_zero_without_crashing(course):
    for assignment in GRADED:
        nb = _autograded(course, "bob", assignment)
        errors = [o.ename for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert "NotImplementedError" in errors
        assert "NotImplementedError" in _feedback(course, "bob", assignment)


def test_typical_mistake_gets_partial_marks_and_the_graders_message(course):
    html = _feedback(course, "carol", "02-convolutional-block")
    assert "convolutional_block failed on case 1 of 3" in html
    assert "ResNet v1.5" in html  # the grader explains where the stride went
    assert "2.0 / 10.0" in html or "2 / 10" in html


def test_infinite_loop_times_out_and_the_run_goes_on(course):
    nb = _autograded(course, "dave", "01-identity-block")
    cells = {_grade_id(c): c for c in nb.cells if _grade_id(c)}
    errors = [o for o in cells["identity_block"].outputs if o.output_type == "error"]
    assert errors and errors[-1].ename in ("CellTimeoutError", "KeyboardInterrupt"), errors
    # the cells after it ran: the function was never defined
    test_errors = [o.ename for o in cells["test_identity_block"].outputs if o.output_type == "error"]
    assert test_errors == ["NameError"]
    assert cells["test_identity_block"].execution_count is not None


def test_edited_test_cell_is_restored_and_graded(course):
    nb = _autograded(course, "eve", "01-identity-block")
    released = nbformat.read(notebook_of(course / "release" / "01-identity-block"), as_version=4)
    original = next(c for c in released.cells if _grade_id(c) == "test_identity_block").source
    cell = next(c for c in nb.cells if _grade_id(c) == "test_identity_block")
    assert cell.source == original != 'print("All tests passed.")'
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    assert error.evalue.startswith("identity_block failed on case 1 of 3")  # the grader's AssertionError
    assert "missing final ReLU" in error.evalue
    html = _feedback(course, "eve", "01-identity-block")
    assert "identity_block failed on case 1 of 3" in html


def test_feedback_for_every_submission(course):
    for student, assignments in SUBMISSIONS.items():
        for assignment in assignments:
            html = _feedback(course, student, assignment)
            assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()



def test_nbgrader_commands_never_touch_the_committed_release(tmp_path):
    """`nbgrader generate_assignment --force` empties its release folder first; run without the venv
    on PATH it then fails (alembic is not found). The committed notebooks/ must survive both that
    and a successful run: nbgrader's release folder is release/, never notebooks/."""
    name = "01-identity-block"
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    for folder in ("solutions", "notebooks"):
        shutil.copytree(ROOT / folder / name, tmp_path / folder / name)
    committed = notebook_of(tmp_path / "notebooks" / name)
    before = committed.read_bytes()

    without_venv = _ci_env()
    without_venv["PATH"] = "/usr/bin:/bin"
    failed = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force"],
                            cwd=tmp_path, env=without_venv, capture_output=True, text=True)
    assert committed.read_bytes() == before, failed.stdout + failed.stderr

    run_nbgrader("generate_assignment", name, "--force", cwd=tmp_path)
    assert committed.read_bytes() == before
    assert notebook_of(tmp_path / "release" / name).read_bytes() == before
