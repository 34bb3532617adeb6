"""The cache of decoded arrays, so that a dataset is decoded once and then loads in a
fraction of a second.

Each entry is a folder of ``.npy`` files and a ``meta.json`` under ``RESNET_COURSE_CACHE``
(default: the user's cache folder, e.g. ``~/.cache/resnet-course``), never beside the
source, which may be read-only. The entry's name covers the source's path, sizes and
modification times and ``LOADER_VERSION``, so a changed source is decoded again. Entries
are written into a temporary folder and renamed into place, so that a reader never sees
half of one; an unreadable entry is removed and decoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from resnet_course.datasets.core import DatasetSource

# Bump when decoding changes, so that caches written by older code are rebuilt.
LOADER_VERSION = 1

CACHE_ENV_VAR = "RESNET_COURSE_CACHE"
# A staging folder this old was left by a process that died while writing it.
ABANDONED_AFTER_SECONDS = 86400

Arrays = dict[str, np.ndarray]


def resolve_cache_dir() -> Path:
    """Where decoded arrays are cached: ``$RESNET_COURSE_CACHE``, else the user's cache
    folder (``~/.cache/resnet-course`` on Linux)."""
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("resnet-course", appauthor=False))


def _file_state(path: Path) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _tree_state(root: Path) -> list:
    # Every file's name, size and time: a changed, added or removed image invalidates.
    state = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                else:
                    stat = entry.stat()
                    state.append([os.path.relpath(entry.path, root), stat.st_size, stat.st_mtime_ns])
    state.sort()
    return state


def cache_entry(source: DatasetSource) -> Path:
    """The cache folder for ``source`` in its current state."""
    resolved = str(source.path.resolve())
    place = hashlib.sha256(f"{source.name}|{source.form}|{resolved}".encode()).hexdigest()[:10]
    state = _tree_state(source.path) if source.path.is_dir() else _file_state(source.path)
    version = hashlib.sha256(json.dumps([LOADER_VERSION, resolved, state]).encode()).hexdigest()[:16]
    return resolve_cache_dir() / f"{source.name}-{source.form}-{place}-{version}"


def read_cache(entry: Path) -> Arrays | None:
    """The arrays cached in ``entry``, or None when there are none (or they are unreadable,
    in which case the entry is removed with a warning)."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {
            key: np.load(entry / f"{key}.npy", allow_pickle=False) for key in meta["arrays"]
        }
        for key in arrays:
            if key.startswith("x_") and len(arrays[key]) != len(arrays["y_" + key[2:]]):
                raise ValueError(f"{key} and y_{key[2:]} differ in length")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"ignoring unreadable cache {entry} ({exc}); decoding again", stacklevel=4)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return arrays


def write_cache(entry: Path, arrays: Arrays, source: DatasetSource) -> None:
    """Write the arrays into a temporary folder and rename it into place, so that a reader
    never sees half a cache; then remove older entries for the same source. A cache that
    cannot be written is a warning, not an error: the arrays are still returned."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    except OSError as exc:
        warnings.warn(f"cannot write the dataset cache in {entry.parent} ({exc})", stacklevel=4)
        return
    try:
        for key, array in arrays.items():
            np.save(staging / f"{key}.npy", array, allow_pickle=False)
        meta = {
            "arrays": list(arrays),
            "dataset": source.name,
            "form": source.form,
            "source": str(source.path.resolve()),
            "loader_version": LOADER_VERSION,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        os.rename(staging, entry)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not (entry / "meta.json").is_file():  # not merely beaten to it by another process
            warnings.warn(f"cannot write the dataset cache {entry} ({exc})", stacklevel=4)
        return
    place_prefix = entry.name.rsplit("-", 1)[0] + "-"
    for stale in entry.parent.glob(place_prefix + "*"):
        # Another process may be writing a .tmp- folder now; one a day old was abandoned.
        staging_folder = ".tmp-" in stale.name
        abandoned = staging_folder and time.time() - stale.stat().st_mtime > ABANDONED_AFTER_SECONDS
        if stale != entry and (not staging_folder or abandoned):
            shutil.rmtree(stale, ignore_errors=True)


def cached_arrays(source: DatasetSource, decode: Callable[[DatasetSource], Arrays], *,
                  use_cache: bool) -> tuple[Arrays, Path | None]:
    """``(arrays, cache entry)``: the decoded arrays of ``source``, from the cache when it
    is current, else from ``decode`` (and then cached). With ``use_cache=False``: decoded,
    and the entry is None."""
    if not use_cache:
        return decode(source), None
    entry = cache_entry(source)
    arrays = read_cache(entry)
    if arrays is None:
        arrays = decode(source)
        write_cache(entry, arrays, source)
    return arrays, entry
