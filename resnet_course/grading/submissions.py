"""Find each student's notebook for an assignment, as students really hand them in.

nbgrader's layout: ``submitted/<student>/<assignment>/*.ipynb``. The notebook graded is chosen by
this rule, and any choice other than the exact name is noted for the student and the instructor:

1. the assignment's notebook name exactly (``identity_block.ipynb``);
2. else a name that is the same once case, spaces, dashes and copy marks are ignored
   (``Identity_Block.ipynb``, ``identity_block (1).ipynb``, ``Copy of identity-block.ipynb``);
3. else the folder's only notebook, whatever its name.

Among several notebooks of the same rank the most recently modified one is graded (then the
first by name); the others are listed in the note. Folders named ``.ipynb_checkpoints`` are ignored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path


# Browser download numbers " (1)", Jupyter's "-Copy1", Drive's "Copy of ", "[2]".
_COPY_MARKS = re.compile(r"(^copy[\s_-]+of[\s_-]+|\s*\(\d+\)|[\s_-]*copy\d*$|[\s_-]*\[\d+\])", re.IGNORECASE)


@dataclass
class Submission:
    student: str
    folder: Path
    notebook: Path | None
    notes: list[str] = field(default_factory=list)
    timestamp: str | None = None

    def digest(self) -> str:
        """What identifies this hand-in: the graded file's bytes and the timestamp."""
        digest = hashlib.sha256((self.timestamp or "").encode())
        if self.notebook is not None:
            digest.update(self.notebook.read_bytes())
        return digest.hexdigest()


def normalised_name(name: str) -> str:
    stem = Path(name).stem.lower()
    stem = _COPY_MARKS.sub("", stem)
    return re.sub(r"[\s_\-.]+", "_", stem).strip("_")


def choose_notebook(folder: Path, expected: str) -> tuple[Path | None, list[str]]:
    """The notebook to grade in ``folder`` for the notebook name ``expected``, and notes."""
    notebooks = sorted(p for p in folder.rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts and p.is_file())
    if not notebooks:
        return None, [f"no notebook was handed in (expected {expected})"]
    exact = [p for p in notebooks if p.name == expected]
    similar = [p for p in notebooks if normalised_name(p.name) == normalised_name(expected)]
    for rank in (exact, similar, notebooks if len(notebooks) == 1 else []):
        if rank:
            chosen = max(rank, key=lambda p: (p.stat().st_mtime, [-ord(c) for c in p.name]))
            notes = []
            shown = chosen.relative_to(folder)
            if chosen.name != expected:
                notes.append(f"'{shown}' was graded as {expected}")
            others = [str(p.relative_to(folder)) for p in notebooks if p != chosen]
            if others:
                notes.append(f"other notebooks in the hand-in were not graded: {', '.join(others)}")
            return chosen, notes
    names = ", ".join(str(p.relative_to(folder)) for p in notebooks)
    return None, [f"no notebook named like {expected} was handed in (found: {names})"]


def submission_timestamp(folder: Path) -> str | None:
    """nbgrader's timestamp.txt for a submission folder, if the student's folder has one."""
    path = folder / "timestamp.txt"
    if path.is_file():
        text = path.read_text(errors="replace").strip()
        return text or None
    return None


def find_submissions(course_root: Path, assignment: str, expected: str,
                     students: list[str] | None = None) -> list[Submission]:
    """Every student with a folder ``submitted/<student>/<assignment>/``, sorted by id."""
    submitted = course_root / "submitted"
    if students:
        missing = [s for s in students if not (submitted / s / assignment).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"no submission of {assignment} for {', '.join(missing)}: expected "
                f"submitted/<student>/{assignment}/ under {course_root}")
        folders = [submitted / s / assignment for s in students]
    else:
        folders = sorted(p for p in submitted.glob(f"*/{assignment}") if p.is_dir()) if submitted.is_dir() else []
    found = []
    for folder in folders:
        notebook, notes = choose_notebook(folder, expected)
        found.append(Submission(folder.parent.name, folder, notebook, notes, submission_timestamp(folder)))
    return found
