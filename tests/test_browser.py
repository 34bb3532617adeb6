"""What a student sees in JupyterLab, checked in a real browser (headless Chromium).

JupyterLab runs on 127.0.0.1 (a free port, a token) over a temporary copy of the released
notebook 01, with this venv's kernel. The test writes a wrong identity block into the exercise
cell, runs it and the test cell, and checks that the visible output is the grader's diagnosis
alone: no traceback, no frames of the grader's own files. Then a correct block: "All tests passed.".
A screenshot of each goes into the test's tmp_path (and into $RESNET_COURSE_SCREENSHOTS when set).

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and Playwright for Python (the
``test`` extra); Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}
RUN_TIMEOUT_MS = 180_000  # a cell on a busy 2-core machine (the setup cell loads TensorFlow)


def _solution_source(grade_id: str) -> str:
    nb = nbformat.read(ROOT / "solutions" / "01-identity-block" / "identity_block.ipynb", as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab serving a copy of notebooks/01-identity-block; yields (base URL, token)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

    course = tmp_path / "course"
    shutil.copytree(ROOT / "notebooks" / "01-identity-block", course / "01-identity-block")
    port, token = _free_port(), secrets.token_hex(16)
    jupyter_home = tmp_path / "jupyter"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(jupyter_home / "config"),  # no user settings, no news pop-up
        "JUPYTER_RUNTIME_DIR": str(jupyter_home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(jupyter_home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(jupyter_home / "workspaces"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the notebook itself must keep TensorFlow quiet
    # no "get notified about Jupyter news?" toast over the outputs
    news = jupyter_home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={course}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(command, cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text())
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _cell(page, text: str):
    """The notebook cell whose source contains ``text``."""
    return page.locator(".jp-Notebook .jp-Cell").filter(has=page.locator(".jp-InputArea", has_text=text)).first


def _focus_editor(cell, attempts: int = 5) -> None:
    """Click into ``cell``'s editor until it has the keyboard focus. A key pressed before
    that goes to whichever cell was active: the wrong cell runs, and the wait for this
    cell's prompt times out."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    editor = cell.locator(".cm-editor")
    for attempt in range(attempts):
        cell.locator(".cm-content").click()
        try:
            expect(editor).to_have_class(re.compile(r"\bcm-focused\b"), timeout=5_000)
            return
        except (AssertionError, PlaywrightTimeout):
            if attempt == attempts - 1:
                raise


def _run(page, cell) -> None:
    """Run ``cell`` (Shift+Enter in its editor) and wait until the kernel is idle again."""
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.text_content()
    _focus_editor(cell)
    page.keyboard.press("Shift+Enter")
    # the prompt goes from [n] (or [ ]) to [*] while it runs, then to a new [m]
    page.wait_for_function(
        "([el, before]) => /\\[\\d+\\]/.test(el.textContent) && el.textContent !== before",
        arg=[prompt.element_handle(), before], timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=RUN_TIMEOUT_MS)


def _replace_source(page, cell, source: str) -> None:
    _focus_editor(cell)
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(source)  # as a paste: no auto-indent, no bracket closing


def _screenshot(page, cell, path: Path) -> None:
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(path))
    extra = os.environ.get("RESNET_COURSE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


def test_student_sees_the_diagnosis_alone_then_all_tests_passed(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    correct = _solution_source("identity_block")
    wrong = correct.replace("layers.Conv2D(F2, (f, f)", "layers.Conv2D(F2, (1, 1)")
    assert wrong != correct

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport=VIEWPORT)
        try:
            page = browser.new_page()
            page.goto(f"{base}/lab/tree/01-identity-block/identity_block.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)

            setup = _cell(page, "COURSE_VERSION")
            imports = _cell(page, "from resnet_course.grading import")
            exercise = _cell(page, "def identity_block(")
            test = _cell(page, "check_identity_block(identity_block)")
            for cell in (setup, imports):
                _run(page, cell)
            start_up = setup.locator(".jp-OutputArea").inner_text() + imports.locator(".jp-OutputArea").inner_text()
            assert "absl" not in start_up and "cuda" not in start_up.lower(), start_up

            _replace_source(page, exercise, wrong)
            _run(page, exercise)
            _run(page, test)
            shown = test.locator(".jp-OutputArea").inner_text()
            _screenshot(page, test, tmp_path / "01-wrong-block.png")
            assert "res1a_branch2b" in shown and "Hint:" in shown, shown
            internals = [w for w in ("Traceback", "grading/", "checks.py", "AssertionError") if w in shown]
            assert not internals, f"the grader's internals are visible ({internals}):\n{shown}"

            _replace_source(page, exercise, correct)
            _run(page, exercise)
            _run(page, test)
            shown = test.locator(".jp-OutputArea").inner_text()
            _screenshot(page, test, tmp_path / "02-correct-block.png")
            assert shown.strip() == "All tests passed.", shown
        finally:
            browser.close()
