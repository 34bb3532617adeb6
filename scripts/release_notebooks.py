#!/usr/bin/env python
"""Regenerate the student release, notebooks/, from the nbgrader sources in solutions/.

    python scripts/release_notebooks.py               # rewrite notebooks/ from solutions/
    python scripts/release_notebooks.py --check       # regenerate into a temporary folder, compare, exit 1 on any difference
    python scripts/release_notebooks.py --execute     # first re-run the solution notebooks and save their outputs
    python scripts/release_notebooks.py 03-resnet50   # only these assignments

An assignment is a folder of solutions/ holding notebooks (01-identity-block, ...); they are
found, never listed. Each one goes through ``nbgrader generate_assignment`` (run from the
repository root, so nbgrader_config.py applies) with a throwaway gradebook, into a temporary
folder that then replaces notebooks/<assignment>/. Nothing else is written: notebooks/ is exactly
what nbgrader produces, and the instructors' gradebook.db is left alone.

``--execute`` runs each source notebook top to bottom in the venv's kernel and saves it with its
outputs (what nbval compares), minus TensorFlow's start-up log lines on stderr, with each progress
bar stored as its last state.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "solutions"
RELEASE = ROOT / "notebooks"

#: stderr lines of TensorFlow's and the debugger's start-up, dropped from saved outputs.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:. ]+\d+ \S+:\d+\] .*"
    r"|To enable the following instructions: .*"
    r"|\d+\.\d+s - Debugger warning: .*"
    r"|.*PYDEVD_DISABLE_FILE_VALIDATION.*|.*-Xfrozen_modules=off.*|.*frozen modules.*"
    r"|.*Debugging will proceed.*)$"
)


def assignments(source: Path = SOURCE) -> list[str]:
    """The assignments: the folders of ``source`` that hold notebooks, in course order."""
    return sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def notebooks(assignment: str, source: Path = SOURCE) -> list[Path]:
    return sorted((source / assignment).glob("*.ipynb"))


def quiet_env() -> dict[str, str]:
    """The environment for nbgrader and its kernels: this Python's scripts first on PATH (nbgrader
    runs ``alembic`` from PATH, and the venv need not be activated), fewer TensorFlow logs, no
    debugger warning."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def strip_noise(nb) -> None:
    """Drop TensorFlow's and the debugger's start-up lines from stderr outputs."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = [line for line in output["text"].splitlines(keepends=True) if not NOISE.match(line.rstrip("\n"))]
                if not "".join(lines).strip():
                    continue
                output["text"] = "".join(lines)
            kept.append(output)
        cell["outputs"] = kept


def _as_a_terminal_shows(text: str) -> str:
    """``text`` as a terminal leaves it: on each line, what follows the last carriage return, with
    backspaces applied (Keras' progress bar rewrites its line with them, step after step)."""
    lines = []
    for line in text.split("\n"):
        line = line.split("\r")[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
        kept: list[str] = []
        for char in line:
            if char == "\b":
                if kept:
                    kept.pop()
            else:
                kept.append(char)
        lines.append("".join(kept))
    return "\n".join(lines)


def collapse_progress(nb) -> None:
    """Merge each cell's consecutive stream outputs and keep what a terminal would show of them, so a
    progress bar is stored as its last state per line, not as thousands of updates."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (output.get("output_type") == "stream" and previous is not None
                    and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
                previous["text"] += output["text"]
            else:
                merged.append(output)
        for output in merged:
            if output.get("output_type") == "stream" and ("\r" in output["text"] or "\b" in output["text"]):
                output["text"] = _as_a_terminal_shows(output["text"])
        cell["outputs"] = merged


def execute(path: Path, timeout: int = 600) -> None:
    """Run the notebook ``path`` in its own folder and save it with its outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    old_env = dict(os.environ)
    os.environ.update(quiet_env())
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    strip_noise(nb)
    collapse_progress(nb)
    nbformat.write(nb, path)


def generate(names: list[str], out: Path, source: Path = SOURCE) -> None:
    """``nbgrader generate_assignment`` for the assignments ``names``, into ``out``, with a throwaway gradebook.

    All of them in one nbgrader run (the assignment ``*``) when ``names`` are all the assignments,
    since starting nbgrader costs seconds.
    """
    batches = ["*"] if sorted(names) == assignments(source) else names
    with tempfile.TemporaryDirectory(prefix="release-db-") as db_dir:
        for batch in batches:
            command = [
                sys.executable, "-m", "nbgrader", "generate_assignment", batch, "--force",
                f"--CourseDirectory.source_directory={source}",
                f"--CourseDirectory.release_directory={out}",
                f"--CourseDirectory.db_url=sqlite:///{Path(db_dir) / 'gradebook.db'}",
            ]
            run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=quiet_env())
            if run.returncode != 0:
                raise SystemExit(f"nbgrader generate_assignment {batch} failed:\n{run.stdout}\n{run.stderr}")
    missing = [name for name in names if not (out / name).is_dir()]
    if missing:
        raise SystemExit(f"nbgrader generate_assignment made no release for: {', '.join(missing)}")


def differences(left: Path, right: Path) -> list[str]:
    """Files that differ between the folders ``left`` and ``right`` (byte for byte), or exist in only one."""
    found = []
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__", ".ipynb_checkpoints"])
    stack = [(comparison, Path())]
    while stack:
        cmp, rel = stack.pop()
        found += [f"only in {left.name}/: {rel / n}" for n in cmp.left_only]
        found += [f"only in {right.name}/: {rel / n}" for n in cmp.right_only]
        _, mismatch, errors = filecmp.cmpfiles(left / rel, right / rel, cmp.common_files, shallow=False)
        found += [f"differs: {rel / n}" for n in mismatch + errors]
        stack += [(sub, rel / n) for n, sub in cmp.subdirs.items()]
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", help="assignments to release (default: every folder of solutions/)")
    parser.add_argument("--check", action="store_true",
                        help="don't write notebooks/: regenerate into a temporary folder and report differences")
    parser.add_argument("--execute", action="store_true",
                        help="first re-run the solution notebooks and save their outputs")
    args = parser.parse_args(argv)

    names = args.assignments or assignments()
    unknown = sorted(set(names) - set(assignments()))
    if unknown:
        parser.error(f"no such assignment in solutions/: {', '.join(unknown)}")

    if args.execute:
        for name in names:
            for path in notebooks(name):
                print(f"executing {path.relative_to(ROOT)}", flush=True)
                execute(path)

    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        out = Path(tmp) / "notebooks"
        generate(names, out)
        if args.check:
            problems = []
            for name in names:
                if not (RELEASE / name).is_dir():
                    problems.append(f"missing: notebooks/{name}/")
                else:
                    problems += [f"{name}: {d}" for d in differences(RELEASE / name, out / name)]
            if not args.assignments:
                stale = sorted({p.name for p in RELEASE.iterdir() if p.is_dir()} - set(names)) if RELEASE.is_dir() else []
                problems += [f"stale: notebooks/{name}/ has no source in solutions/" for name in stale]
            if problems:
                print("notebooks/ is not what nbgrader generates from solutions/; run "
                      "`python scripts/release_notebooks.py`:\n  " + "\n  ".join(problems))
                return 1
            print(f"notebooks/ matches solutions/ ({len(names)} assignments).")
            return 0

        RELEASE.mkdir(exist_ok=True)
        for name in names:
            shutil.rmtree(RELEASE / name, ignore_errors=True)
            shutil.copytree(out / name, RELEASE / name)
            print(f"released notebooks/{name}/")
        if not args.assignments:
            for stale in sorted(p for p in RELEASE.iterdir() if p.is_dir() and p.name not in names):
                shutil.rmtree(stale)
                print(f"removed notebooks/{stale.name}/ (no source in solutions/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
