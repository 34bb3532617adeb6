"""What every module of the datasets package shares: the datasets' names, classes and image
shapes, the error types, the data directory, the description of a copy found on disk, and
the checks that turn malformed arrays into clear errors, and the process pool that decodes
large datasets."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

DATA_ENV_VAR = "RESNET_COURSE_DATA"

DATASET_NAMES = ("signs", "cifar10", "fer2013")
SIGNS_CLASS_NAMES = ("0", "1", "2", "3", "4", "5")
# The label order of the official CIFAR-10 batches.
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# The emotion index of the original fer2013.csv, whatever form the data comes in.
FER2013_CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CLASS_NAMES = {
    "signs": SIGNS_CLASS_NAMES,
    "cifar10": CIFAR10_CLASS_NAMES,
    "fer2013": FER2013_CLASS_NAMES,
}
IMAGE_SHAPES = {"signs": (64, 64, 3), "cifar10": (32, 32, 3), "fer2013": (48, 48, 1)}
DISPLAY_NAMES = {"signs": "SIGNS", "cifar10": "CIFAR-10", "fer2013": "FER-2013"}

# FER-2013's Usage values: the train split, then the two test splits.
FER2013_TRAIN_SPLIT = "Training"
FER2013_TEST_SPLITS = ("PrivateTest", "PublicTest")

FORM_DESCRIPTIONS = {
    "hdf5": "HDF5 files",
    "cifar-batches": "official pickled batches (extracted)",
    "cifar-tarball": "official tarball",
    "image-folder": "image folders",
    "image-zip": "zip of image folders",
    "fer-csv": "original CSV",
}


class DatasetError(ValueError):
    """A dataset is missing, malformed or could not be downloaded; the message says which
    file (and row, key or folder), what is wrong, and what to do."""


class DatasetNotFoundError(DatasetError):
    """No usable copy of a dataset was found, and none could be downloaded."""


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """A copy of a dataset found on disk.

    ``form`` is one of ``FORM_DESCRIPTIONS``; ``path`` is the file (tarball, zip, CSV) or
    folder (HDF5 pair, batches, image folders) that holds it."""

    name: str
    form: str
    path: Path

    def describe(self) -> str:
        return f"{FORM_DESCRIPTIONS[self.form]} at {self.path}"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The root data directory: ``data_dir``, else ``$RESNET_COURSE_DATA``, else
    ``datasets/`` in the repository (or in the working directory when the package is
    installed outside a checkout)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    repository = Path(__file__).resolve().parent.parent.parent
    if (repository / "pyproject.toml").is_file():
        return repository / "datasets"
    return Path.cwd() / "datasets"


def check_name(name: str) -> str:
    """The canonical name of dataset ``name`` ("CIFAR-10" -> "cifar10"), or a clear error."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in CLASS_NAMES:
        raise DatasetError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}"
        )
    return key


def first_line(exc: BaseException) -> str:
    """An exception's message, one line long, for use inside our own messages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def as_labels(raw, where: str, num_classes: int, count: int | None = None) -> np.ndarray:
    """``raw`` as ``int64`` class indices, or an error naming ``where`` and the first bad label."""
    labels = np.asarray(raw)
    if labels.ndim == 2 and 1 in labels.shape:  # the course's (1, m) row vectors
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise DatasetError(f"{where}: labels have shape {labels.shape}, expected (n,)")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels have dtype {labels.dtype}, expected integers")
    if count is not None and labels.shape[0] != count:
        raise DatasetError(
            f"{where}: {labels.shape[0]} labels for {count} images; they must match"
        )
    if labels.size:
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise DatasetError(
                f"{where}: label {labels[bad[0]]} at index {bad[0]} is out of range "
                f"0-{num_classes - 1} ({bad.size} such labels)"
            )
    return labels.astype(np.int64)


def check_images(images: np.ndarray, where: str, shape: tuple[int, int, int]) -> np.ndarray:
    """``images`` if it is a uint8 ``(n, *shape)`` array, else an error naming ``where``."""
    if images.ndim != 4 or images.shape[1:] != shape:
        raise DatasetError(
            f"{where}: images have shape {images.shape}, expected (n, {', '.join(map(str, shape))})"
        )
    if images.dtype != np.uint8:
        raise DatasetError(f"{where}: images have dtype {images.dtype}, expected uint8")
    return images


def splits_of(arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"x_train": .., "y_train": .., ...}`` as ``{"train": (x, y), ...}``."""
    return {
        key[2:]: (images, arrays["y_" + key[2:]])
        for key, images in arrays.items()
        if key.startswith("x_")
    }


def worker_count() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fork_context():
    """A 'fork' multiprocessing context where it is safe and cheap (Linux), else None.

    Forked workers need no re-import, no ``if __name__ == "__main__"`` guard in a student's
    script, and inherit the pool initializer's arguments without copying them."""
    import multiprocessing

    if not sys.platform.startswith("linux"):
        return None
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


def chunks(count: int, per_worker: int = 3) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges that cut ``range(count)`` into a few tasks per worker, so
    that the workers finish at about the same time."""
    size = max(1, -(-count // (per_worker * worker_count())))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def map_in_processes(function: Callable, tasks: Sequence, *, initializer: Callable | None = None,
                     initargs: tuple = ()) -> list | None:
    """``[function(task) for task in tasks]``, computed by worker processes (each set up
    once by ``initializer(*initargs)``), or None where that is not possible: a single core,
    no 'fork' on this platform, or workers that could not start (with a warning). The
    caller then does the work itself. Errors raised by ``function`` are raised here."""
    workers = worker_count()
    context = _fork_context()
    if workers < 2 or context is None:
        return None
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer,
                                 initargs=initargs) as pool:
            return list(pool.map(function, tasks))
    except (OSError, RuntimeError) as exc:  # no semaphores here, a worker killed
        warnings.warn(f"decoding in one process: worker processes failed ({exc})", stacklevel=3)
        return None
