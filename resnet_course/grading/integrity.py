"""Tripwires around a grading run: the course files and the gradebook must not change behind its back.

Before the run the gradebook is backed up (SQLite's online backup) and a *baseline* is taken:

* checksums (SHA-256) of ``nbgrader_config.py``, every file of ``solutions/`` and of the installed
  ``resnet_course`` package's source;
* the gradebook's schema (its tables, indexes; no triggers or views may exist), and every
  ``manual_score``/``extra_credit`` already given by a human grader.

The same snapshot is taken again before and after each submission is recorded; any difference
stops the run with ``IntegrityError``, after the backup has been put back.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from resnet_course.grading.sandbox import _package_dir

#: Files and folders never checksummed: caches that Python itself rewrites.
_IGNORED_PARTS = ("__pycache__", ".ipynb_checkpoints", ".pytest_cache")


class IntegrityError(RuntimeError):
    """A course file or the gradebook changed during grading: the run stops, the backup is restored."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def course_file_checksums(course_root: Path, package_dir: Path | None = None) -> dict[str, str]:
    """SHA-256 of the config, solutions/ and the package source (default: the one imported), by path."""
    files: list[Path] = []
    config = course_root / "nbgrader_config.py"
    if config.exists():
        files.append(config)
    for folder in (course_root / "solutions", package_dir or _package_dir()):
        if folder.is_dir():
            files += [p for p in folder.rglob("*") if p.is_file()
                      and not any(part in _IGNORED_PARTS for part in p.parts)]
    # Extra files appearing in these folders count as a difference too.
    return {str(path): _sha256(path) for path in sorted(files)}


@dataclass(frozen=True)
class GradebookState:
    """What grading must never change in gradebook.db."""

    schema: tuple[tuple[str, str, str], ...]
    human_scores: tuple[tuple, ...]
    #: rows whose foreign keys point nowhere (PRAGMA foreign_key_check): rows nbgrader never wrote
    foreign_rows: tuple[tuple, ...] = ()

    def differences(self, other: GradebookState) -> list[str]:
        found = []
        if self.schema != other.schema:
            before, after = set(self.schema), set(other.schema)
            for kind, name, _ in sorted(after - before):
                found.append(f"gradebook.db: {kind} {name!r} appeared")
            for kind, name, _ in sorted(before - after):
                found.append(f"gradebook.db: {kind} {name!r} disappeared or changed")
        if self.human_scores != other.human_scores:
            changed = set(self.human_scores) ^ set(other.human_scores)
            found.append(f"gradebook.db: manual_score/extra_credit changed on {len(changed)} row(s), "
                         f"e.g. {sorted(changed, key=str)[:3]}")
        return found


def gradebook_state(db_path: Path) -> GradebookState:
    """The schema and the human-given scores, read without going through any trigger or view."""
    if not db_path.exists():
        return GradebookState((), ())
    uri = f"file:{db_path}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        schema = tuple(db.execute(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name").fetchall())
        foreign = tuple(tuple(row) for row in db.execute("PRAGMA foreign_key_check"))
        human = []
        for table in ("grade", "comment"):
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            wanted = [c for c in ("manual_score", "extra_credit", "manual_comment") if c in columns]
            if wanted:
                human += [(table, *row) for row in db.execute(
                    f"SELECT id, {', '.join(wanted)} FROM {table} ORDER BY id")]
    db.close()
    return GradebookState(schema, tuple(human), foreign)


def forbidden_objects(state: GradebookState) -> list[str]:
    """Triggers and views have no place in nbgrader's gradebook: they mean tampering."""
    found = [f"gradebook.db: {kind} {name!r} exists" for kind, name, _ in state.schema
             if kind in ("trigger", "view")]
    found += [f"gradebook.db: row {rowid} of {table} points to a missing {parent} row"
              for table, rowid, parent, _ in state.foreign_rows[:5]]
    return found


@dataclass
class Baseline:
    checksums: dict[str, str]
    gradebook: GradebookState


class IntegrityGuard:
    """Backs the gradebook up, then checks the course against the baseline around each submission."""

    def __init__(self, course_root: Path, backup_dir: Path):
        self.course_root = course_root
        self.db_path = course_root / "gradebook.db"
        backup_dir.mkdir(parents=True, exist_ok=True)
        self.backup_path = backup_dir / f"gradebook.backup-{time.strftime('%Y%m%d-%H%M%S')}.db"
        self._backup()
        self.baseline = self._snapshot()
        problems = forbidden_objects(self.baseline.gradebook)
        if problems:
            raise IntegrityError("the gradebook was tampered with before this run: " + "; ".join(problems)
                                 + f". Restore it from a backup (this run's copy: {self.backup_path}).")

    def _backup(self) -> None:
        if not self.db_path.exists():
            return
        source = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        target = sqlite3.connect(self.backup_path)
        with target:
            source.backup(target)
        source.close()
        target.close()

    def _snapshot(self) -> Baseline:
        return Baseline(course_file_checksums(self.course_root), gradebook_state(self.db_path))

    def check(self, when: str) -> None:
        """Compare with the baseline; on any difference restore the gradebook and raise."""
        now = self._snapshot()
        problems = forbidden_objects(now.gradebook) + now.gradebook.differences(self.baseline.gradebook)
        old, new = self.baseline.checksums, now.checksums
        problems += [f"{path} changed" for path in sorted(old.keys() & new.keys()) if old[path] != new[path]]
        problems += [f"{path} appeared" for path in sorted(new.keys() - old.keys())]
        problems += [f"{path} disappeared" for path in sorted(old.keys() - new.keys())]
        if problems:
            restored = self.restore()
            raise IntegrityError(
                f"grading stopped {when}: " + "; ".join(problems[:20])
                + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else "")
                + (f". gradebook.db was restored from {self.backup_path}" if restored
                   else ". There was no gradebook.db to restore")
                + ". Find out what changed these files before grading again.")

    def accept_gradebook(self) -> None:
        """After the grader's own write: that schema and those human scores are the new baseline."""
        self.baseline = Baseline(self.baseline.checksums, gradebook_state(self.db_path))
        problems = forbidden_objects(self.baseline.gradebook)
        if problems:
            self.restore()
            raise IntegrityError("; ".join(problems))

    def restore(self) -> bool:
        if not self.backup_path.exists():
            return False
        for suffix in ("-wal", "-shm", "-journal"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)
        shutil.copyfile(self.backup_path, self.db_path)
        return True
