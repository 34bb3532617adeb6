"""What a student sees around the exercises: a quiet TensorFlow start, one line for an unwritten
exercise in a "Try it" cell, and setup cells pinned to the package's version."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from resnet_course import notebook, startup


def test_try_it_prints_one_line_for_the_unwritten_stub(capsys):
    def identity_block():
        raise NotImplementedError()

    with notebook.try_it("identity_block"):
        identity_block()
    assert capsys.readouterr().out == (
        "identity_block isn't written yet: write it in the cell above, then run this cell again.\n")


def test_try_it_reports_a_missing_result_only_while_the_exercise_is_unwritten(capsys):
    def resnet50():
        raise NotImplementedError()

    with notebook.try_it("ResNet50_demo", where="in section 3"):
        model = resnet50()  # noqa: F841
    with notebook.try_it("ResNet50_demo", where="in section 3"):
        undefined_model_name  # noqa: B018, F821  (the cell above never made it)
    assert capsys.readouterr().out.count("ResNet50_demo isn't written yet: write it in section 3") == 2

    with notebook.try_it("ResNet50_demo"):
        pass  # written now: a NameError is a real error again
    with pytest.raises(NameError):
        with notebook.try_it("ResNet50_demo"):
            undefined_model_name  # noqa: B018, F821


def test_try_it_lets_real_errors_through():
    with pytest.raises(ValueError, match="wrong shape"):
        with notebook.try_it("identity_block"):
            raise ValueError("wrong shape")
    with pytest.raises(NotImplementedError, match="not supported by this backend"):
        with notebook.try_it("identity_block"):
            raise NotImplementedError("not supported by this backend")
    with pytest.raises(NameError):
        with notebook.try_it("never_tried"):
            undefined_name  # noqa: B018, F821


def test_startup_noise_is_recognised_and_real_lines_are_not():
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796035894.677534   11346 port.cc:153] oneDNN custom operations are on. You may see",
        "I0000 00:00:1796035894.679578   11346 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
        "E0000 00:00:1796035965.239430   13418 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    ]
    real = [
        "E0000 00:00:1796035965.239430   13418 op_kernel.cc:1830] OP_REQUIRES failed: out of memory",
        "W0000 00:00:1796035965.239430   13418 loop.cc:1] Local rendezvous is aborting",
        "Traceback (most recent call last):",
        "ModuleNotFoundError: No module named 'tensorflow'",
    ]
    assert all(startup.is_startup_noise(line) for line in noise)
    assert not any(startup.is_startup_noise(line) for line in real)


@pytest.mark.slow
def test_tensorflow_starts_quietly_and_real_stderr_still_shows():
    """In a fresh process (TensorFlow is loaded once per process): nothing of TensorFlow's start-up
    on stderr, while a C++ error line written to fd 2 inside the filter, and Python's stderr, show."""
    code = textwrap.dedent("""
        import os, sys
        from resnet_course import startup
        startup.import_tensorflow_quietly()
        import keras, numpy as np
        keras.layers.Conv2D(2, 1)(np.zeros((1, 4, 4, 3), "float32"))
        with startup.filtered_stderr():
            os.write(2, b"E0000 00:00:1.0 1 kernel.cc:9] a real error\\n")
        print("python stderr line", file=sys.stderr)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["E0000 00:00:1.0 1 kernel.cc:9] a real error", "python stderr line"]


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _notebooks():
    return sorted((ROOT / "solutions").glob("*/*.ipynb")) + sorted((ROOT / "notebooks").glob("*/*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_setup_cell_pins_the_package_version_and_starts_quietly(path):
    """The setup cell installs the version the notebook belongs to (the tag v<version> on Colab)."""
    import re

    import nbformat

    import resnet_course

    pyproject = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert resnet_course.__version__ == pyproject, "resnet_course.__version__ and pyproject.toml disagree"
    nb = nbformat.read(path, as_version=4)
    setup = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    pinned = re.search(r'^COURSE_VERSION = "([^"]+)"', setup.source, re.M)
    assert pinned and pinned.group(1) == resnet_course.__version__, (
        f"{path.name}: the setup cell pins {pinned and pinned.group(1)}, the package is {resnet_course.__version__}")
    assert "@v{COURSE_VERSION}" in setup.source and "--quiet" not in setup.source
    assert "startup.import_tensorflow_quietly()" in setup.source
    assert "Run All" in nb.cells[0].source and "YOUR CODE HERE" in nb.cells[0].source


def test_feedback_html_shows_the_diagnosis_wrapped_and_no_hidden_test_code():
    """A failed hidden-test cell as autograde leaves it (source and traceback with the hidden
    cases), through nbgrader_config.py's feedback preprocessors and nbgrader's feedback template."""
    from pathlib import Path

    import nbformat
    import nbgrader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests
    from traitlets.config import Config

    from resnet_course.feedback import FeedbackView

    hidden = ("check_identity_block(identity_block, cases=[\n"
              "    BlockCase((4, 4, 1024), 3, (256, 256, 1024), 4, 'f'),\n])")
    source = f"X = 1\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS"
    diagnosis = ("identity_block failed on case 2 of 3: identity_block(X, f=3, filters=[256, 256, 1024], stage=4, "
                 "block='f') with X = keras.Input(shape=(4, 4, 1024)).\nHint: use kernel_size=(f, f).")
    cell = nbformat.v4.new_code_cell(source, metadata={"nbgrader": {
        "grade": True, "grade_id": "hidden_tests_identity_block", "locked": True, "points": 3, "score": 0.0,
        "schema_version": 3, "solution": False, "task": False}})
    cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue=diagnosis, traceback=[
        "Traceback (most recent call last)", f"----> 3 {hidden}",
        "File /work/main/resnet_course/grading/checks.py:192, in _compare_or_fail(ctx)",
        f"AssertionError: {diagnosis}"])]
    nb = nbformat.v4.new_notebook(cells=[cell])

    formgrader = Path(nbgrader.__file__).parent / "server_extensions" / "formgrader"
    config = Config()  # as nbgrader's GenerateFeedback sets up its exporter
    config.HTMLExporter.template_name = "feedback"
    config.HTMLExporter.extra_template_basedirs = [str(formgrader / "templates")]
    config.HTMLExporter.extra_template_paths = [
        str(formgrader / "static" / "node_modules" / "bootstrap" / "dist" / "css")]
    exporter = HTMLExporter(config=config)
    for preprocessor in (ClearHiddenTests, CSSHTMLHeaderPreprocessor, FeedbackView):
        exporter.register_preprocessor(preprocessor, enabled=True)
    html, _ = exporter.from_notebook_node(nb, resources={"nbgrader": {
        "notebook": "identity_block", "score": 0.0, "max_score": 3.0, "late_penalty": 0.0}})

    assert "identity_block failed on case 2 of 3" in html and "Hint: use kernel_size" in html
    assert "BlockCase" not in html and "HIDDEN TESTS" not in html and "grading/checks.py" not in html
    assert "white-space: pre-wrap" in html


def test_grader_failure_renders_as_the_diagnosis_alone():
    from resnet_course.grading.messages import Failure

    failure = Failure("identity_block failed on case 1 of 3: ...\nLayer 'res1a_branch2b' has kernel_size (1, 1)\n"
                      "Hint: use kernel_size=(f, f).", text="...", hint="use kernel_size=(f, f).")
    lines = failure._render_traceback_()
    assert lines[0] == "\x1b[31midentity_block failed on case 1 of 3: ...\x1b[0m"
    assert lines[1:] == ["Layer 'res1a_branch2b' has kernel_size (1, 1)", "Hint: use kernel_size=(f, f)."]


def test_ipython_shows_a_grader_failure_without_its_traceback(capsys):
    """IPython asks the exception for _render_traceback_ (as ipykernel does for a notebook's cell)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell(
        "from resnet_course.grading.messages import Failure\n"
        "def check():\n"
        "    raise Failure('identity_block failed on case 1 of 3: ...\\nHint: use (f, f).', text='', hint='')\n"
        "check()")
    shown = capsys.readouterr().out
    assert isinstance(result.error_in_exec, AssertionError)
    assert "identity_block failed on case 1 of 3" in shown and "Hint: use (f, f)." in shown
    assert "Traceback" not in shown and "def check" not in shown
