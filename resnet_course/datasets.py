"""The course's three datasets: SIGNS, CIFAR-10 and FER-2013, each with one call.

    from resnet_course.datasets import load_signs, load_cifar10, load_fer2013

    (x_train, y_train), (x_test, y_test), class_names = load_cifar10()

Every loader returns images as ``uint8`` arrays in NHWC layout (SIGNS 64x64x3, CIFAR-10
32x32x3, FER-2013 48x48x1) and labels as ``int64`` class indices into ``class_names``.

Where the data lives
    The data directory is the ``data_dir`` argument, else the environment variable
    ``RESNET_COURSE_DATA``, else ``datasets/`` in the repository. It holds one folder per
    dataset (``signs/``, ``cifar10/``, ``fer2013/``); a ``data_dir`` that is itself such a
    folder works too. Each folder may hold any of these forms (the first one found wins):

    - signs: ``train_signs.h5`` and ``test_signs.h5``.
    - cifar10: ``cifar-10-batches-py/`` (the extracted official batches), the official
      ``cifar-10-python.tar.gz``, image folders ``train/<class>/*`` and ``test/<class>/*``
      (png or jpg), or a ``.zip`` of those folders.
    - fer2013: the original ``fer2013.csv`` (columns emotion, pixels, Usage), the Kaggle
      image folders ``train/<emotion>/Training_*.jpg`` and
      ``test/<emotion>/{PublicTest,PrivateTest}_*.jpg``, or the ``.zip`` Kaggle serves.

    A missing dataset is downloaded on first use where a public source exists (SIGNS,
    CIFAR-10), with its checksum verified; FER-2013 needs a Kaggle account, so it comes
    through ``kagglehub`` when that is installed and configured, and otherwise the error
    says where to get it and where to put it. A user's own copy is accepted when its
    structure is right: checksums are enforced only on what this module downloads.

Caching
    Decoded arrays are cached as ``.npy`` files under ``RESNET_COURSE_CACHE`` (default: the
    user's cache folder, e.g. ``~/.cache/resnet-course``), never beside the source, which may
    be read-only. The cache key covers the source's path, sizes and modification times and
    the loader version, so a changed source is decoded again. SIGNS is read straight from its
    HDF5 files, which are already arrays.

Errors
    Bad or missing input raises :class:`DatasetError` (a ``ValueError``) whose message names
    the file (and row, key or folder), the problem and what to do about it.

Input pipelines
    ``make_datasets``, ``make_eval_dataset``, ``augmentation_for`` and ``split_validation``
    build ``tf.data`` pipelines; they live in :mod:`resnet_course.pipelines` and can be
    imported from here too (resolved on first use, and left out of ``__all__``), so that
    importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import mmap
import operator
import os
import pickle
import shutil
import struct
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "CACHE_ENV_VAR",
    "CIFAR10_CLASS_NAMES",
    "CLASS_NAMES",
    "DATA_ENV_VAR",
    "DATASET_NAMES",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSource",
    "FER2013_CLASS_NAMES",
    "FER2013_TEST_SPLITS",
    "IMAGE_SHAPES",
    "REMOTE_FILES",
    "RemoteFile",
    "SIGNS_CLASS_NAMES",
    "SplitSummary",
    "describe_dataset",
    "fetch",
    "find_source",
    "load_cifar10",
    "load_dataset",
    "load_fer2013",
    "load_signs",
    "resolve_cache_dir",
    "resolve_data_dir",
]

# Bump when decoding changes, so that caches written by older code are rebuilt.
LOADER_VERSION = 1

DATA_ENV_VAR = "RESNET_COURSE_DATA"
CACHE_ENV_VAR = "RESNET_COURSE_CACHE"

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
FER2013_KAGGLE_DATASET = "msambare/fer2013"
FER2013_KAGGLE_PAGES = (
    "https://www.kaggle.com/datasets/msambare/fer2013",
    "https://www.kaggle.com/competitions/"
    "challenges-in-representation-learning-facial-expression-recognition-challenge/data",
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Below this many images, starting worker processes costs more than it saves.
PARALLEL_MIN_IMAGES = 2048
# FER-2013 CSV rows parsed per task; about 8 MB of text, which keeps temporaries in cache.
CSV_ROWS_PER_TASK = 1024


class DatasetError(ValueError):
    """A dataset is missing, malformed or could not be downloaded; the message says which
    file (and row, key or folder), what is wrong, and what to do."""


class DatasetNotFoundError(DatasetError):
    """No usable copy of a dataset was found, and none could be downloaded."""


# ---------------------------------------------------------------------------------------
# Remote sources
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name on disk, the URLs to try in order, and its hash in
    pooch's ``"<algorithm>:<hex digest>"`` form, which every download must match."""

    filename: str
    urls: tuple[str, ...]
    known_hash: str
    size_bytes: int | None = None


# Public copies of the original course files, pinned to commits so that they cannot
# change under us; the sha256 check rejects any that are not the originals.
_SIGNS_MIRRORS = (
    "https://raw.githubusercontent.com/itsayushthada/Residual-Networks/"
    "e7f3097c4126cc2ab670e057ed24c284cb664e15/datasets/",
    "https://raw.githubusercontent.com/chaitanya-ct/Hand-gesture/"
    "c07a29d6383f0083d00fffb6e5921b71e889c9ec/datasets/",
    "https://raw.githubusercontent.com/ironmanciti/ML_Based_BigData_Analysis_Visualization/"
    "a5b3434c6a3efab4b981bae6a68f616e17391288/datasets/",
)

REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "signs": (
        RemoteFile(
            "train_signs.h5",
            tuple(base + "train_signs.h5" for base in _SIGNS_MIRRORS),
            "sha256:47480709d99f2ea6ae428ecc491fc6f65ff1d05336736dd859d5565e0ad3cf74",
            13_281_872,
        ),
        RemoteFile(
            "test_signs.h5",
            tuple(base + "test_signs.h5" for base in _SIGNS_MIRRORS),
            "sha256:539fb746ed9e947eb244cfca73f4d1b03f9bf5524d609eeed2cd76ddb1b179be",
        ),
    ),
    "cifar10": (
        RemoteFile(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "md5:c58f30108f718f92721af3b95e74349a",
            170_498_071,
        ),
    ),
    "fer2013": (),
}

DOWNLOAD_TIMEOUT_SECONDS = 60


# ---------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The root data directory: ``data_dir``, else ``$RESNET_COURSE_DATA``, else
    ``datasets/`` in the repository (or in the working directory when the package is
    installed outside a checkout)."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    repository = Path(__file__).resolve().parent.parent
    if (repository / "pyproject.toml").is_file():
        return repository / "datasets"
    return Path.cwd() / "datasets"


def resolve_cache_dir() -> Path:
    """Where decoded arrays are cached: ``$RESNET_COURSE_CACHE``, else the user's cache
    folder (``~/.cache/resnet-course`` on Linux)."""
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("resnet-course", appauthor=False))


def _dataset_folders(name: str, root: Path) -> list[Path]:
    # A root that is itself the dataset's folder is accepted as well.
    folders = [root / name]
    if not folders[0].is_dir() and root.is_dir():
        folders.append(root)
    return folders


# ---------------------------------------------------------------------------------------
# Finding a source
# ---------------------------------------------------------------------------------------

FORM_DESCRIPTIONS = {
    "hdf5": "HDF5 files",
    "cifar-batches": "official pickled batches (extracted)",
    "cifar-tarball": "official tarball",
    "image-folder": "image folders",
    "image-zip": "zip of image folders",
    "fer-csv": "original CSV",
}


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


def _image_folder_root(folder: Path) -> Path | None:
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return folder
    return None


def _find_in_folder(name: str, folder: Path) -> DatasetSource | None:
    if not folder.is_dir():
        return None
    if name == "signs":
        if (folder / "train_signs.h5").is_file() and (folder / "test_signs.h5").is_file():
            return DatasetSource(name, "hdf5", folder)
        return None
    if name == "cifar10":
        if (folder / "cifar-10-batches-py" / "data_batch_1").is_file():
            return DatasetSource(name, "cifar-batches", folder / "cifar-10-batches-py")
        if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
            return DatasetSource(name, "cifar-batches", folder)
        if (folder / "cifar-10-python.tar.gz").is_file():
            return DatasetSource(name, "cifar-tarball", folder / "cifar-10-python.tar.gz")
    if name == "fer2013":
        for csv_path in (folder / "fer2013.csv", folder / "fer2013" / "fer2013.csv"):
            if csv_path.is_file():
                return DatasetSource(name, "fer-csv", csv_path)
    if name in ("cifar10", "fer2013"):
        root = _image_folder_root(folder)
        if root is not None:
            return DatasetSource(name, "image-folder", root)
        zips = sorted(p for p in folder.glob("*.zip") if p.is_file())
        if zips:
            return DatasetSource(name, "image-zip", zips[0])
    return None


def _expected_files(name: str) -> str:
    return {
        "signs": "train_signs.h5 and test_signs.h5",
        "cifar10": "cifar-10-python.tar.gz, cifar-10-batches-py/, train/ and test/ image "
        "folders, or a .zip of them",
        "fer2013": "fer2013.csv, train/ and test/ image folders, or the Kaggle .zip",
    }[name]


def _check_name(name: str) -> str:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in CLASS_NAMES:
        raise DatasetError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}"
        )
    return key


def find_source(name: str, data_dir: str | os.PathLike | None = None) -> DatasetSource:
    """The local copy of dataset ``name`` that the loaders would read, without downloading.

    Raises :class:`DatasetNotFoundError` saying where it looked and how to get the data."""
    name = _check_name(name)
    folders = _dataset_folders(name, resolve_data_dir(data_dir))
    for folder in folders:
        source = _find_in_folder(name, folder)
        if source is not None:
            return source
    raise DatasetNotFoundError(_not_found_message(name, folders))


def _not_found_message(name: str, folders: Sequence[Path], reason: str = "") -> str:
    looked = " and ".join(str(folder) for folder in folders)
    target = folders[0]
    message = (
        f"{DISPLAY_NAMES[name]} not found: looked for {_expected_files(name)} in {looked}."
    )
    if reason:
        message += f" {reason}"
    if name == "fer2013":
        message += " " + _fer2013_manual_instructions(target)
    else:
        remote = REMOTE_FILES[name]
        urls = "; ".join(f"{f.filename} from {f.urls[0]}" for f in remote if f.urls)
        message += (
            f" Get {urls} (see datasets/README.md) and put them in {target}, or run "
            f"`resnet-course data fetch {name}`."
        )
    message += (
        f" To use a copy elsewhere, pass data_dir= or set {DATA_ENV_VAR} to the folder "
        f"that holds {name}/."
    )
    return message


def _fer2013_manual_instructions(target: Path) -> str:
    return (
        "FER-2013 needs a (free) Kaggle account, so it cannot be downloaded anonymously. "
        f"Download the image folders from {FER2013_KAGGLE_PAGES[0]} (the zip as it comes, "
        f"or its extracted train/ and test/ folders) or the original fer2013.csv from "
        f"{FER2013_KAGGLE_PAGES[1]}, and put it in {target}. Or install kagglehub "
        "(pip install kagglehub), save your Kaggle API token as ~/.kaggle/kaggle.json (or "
        "set KAGGLE_USERNAME and KAGGLE_KEY) and run `resnet-course data fetch fer2013`."
    )


# ---------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> DatasetSource:
    """Make sure dataset ``name`` is on disk, downloading it into ``<data dir>/<name>/``
    if no local copy is found, and return the source the loaders will read."""
    name = _check_name(name)
    root = resolve_data_dir(data_dir)
    folders = _dataset_folders(name, root)
    for folder in folders:
        source = _find_in_folder(name, folder)
        if source is not None:
            return source
    target = root / name
    if name == "fer2013":
        if not _fetch_fer2013_with_kagglehub(target):
            raise DatasetNotFoundError(_not_found_message(name, folders))
    else:
        # SIGNS may be half there; only what is missing is downloaded.
        missing = [f for f in REMOTE_FILES[name] if not (target / f.filename).is_file()]
        for remote in missing:
            _download(remote, target, name, folders)
    source = _find_in_folder(name, target)
    if source is None:  # the download succeeded but left no loadable form
        raise DatasetNotFoundError(_not_found_message(name, folders))
    return source


def _download(remote: RemoteFile, target: Path, name: str, folders: Sequence[Path]) -> Path:
    """Download ``remote`` into ``target`` with pooch: a progress bar, the hash checked,
    and the file moved into place only once it matches, so an interrupted or corrupted
    download never leaves a file that loads."""
    try:
        import pooch
    except ImportError:
        raise DatasetNotFoundError(
            _not_found_message(name, folders, "pooch is not installed (pip install pooch).")
        ) from None
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetNotFoundError(
            _not_found_message(name, folders, f"Cannot create {target} to download into: {exc}.")
        ) from None
    failures = []
    for url in remote.urls:
        downloader = pooch.HTTPDownloader(
            progressbar=True, timeout=DOWNLOAD_TIMEOUT_SECONDS
        )
        try:
            path = pooch.retrieve(
                url,
                known_hash=remote.known_hash,
                fname=remote.filename,
                path=target,
                downloader=downloader,
            )
        # requests' errors are OSErrors; pooch reports a hash mismatch as a ValueError.
        except (OSError, ValueError) as exc:
            failures.append(f"{url}: {_first_line(exc)}")
            continue
        return Path(path)
    tried = "; ".join(failures) if failures else "no download address is known"
    raise DatasetNotFoundError(
        _not_found_message(
            name, folders, f"Could not download {remote.filename} ({tried})."
        )
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _kaggle_credentials_configured() -> bool:
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    home = Path.home()
    config_dirs = [home / ".kaggle", home / ".config" / "kaggle"]
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        config_dirs.insert(0, Path(os.environ["KAGGLE_CONFIG_DIR"]))
    if os.environ.get("XDG_CONFIG_HOME"):
        config_dirs.append(Path(os.environ["XDG_CONFIG_HOME"]) / "kaggle")
    return any(
        (folder / token).is_file()
        for folder in config_dirs
        for token in ("kaggle.json", "access_token")
    )


def _fetch_fer2013_with_kagglehub(target: Path) -> bool:
    """Download the Kaggle image-folder copy of FER-2013 into ``target`` when kagglehub is
    installed and has credentials; return False when it cannot be tried."""
    try:
        import kagglehub
    except ImportError:
        return False
    if not _kaggle_credentials_configured():
        return False
    try:
        downloaded = Path(kagglehub.dataset_download(FER2013_KAGGLE_DATASET))
    # kagglehub raises many kinds of errors (network, auth, API); all mean the same here.
    except Exception as exc:  # noqa: BLE001
        raise DatasetNotFoundError(
            f"kagglehub could not download {FER2013_KAGGLE_DATASET}: {_first_line(exc)}. "
            + _fer2013_manual_instructions(target)
        ) from None
    candidates = [downloaded] + sorted(p for p in downloaded.glob("*") if p.is_dir())
    root = next((c for c in candidates if _image_folder_root(c) is not None), None)
    if root is None:
        raise DatasetNotFoundError(
            f"kagglehub downloaded {FER2013_KAGGLE_DATASET} to {downloaded}, but it has no "
            "train/ and test/ folders. " + _fer2013_manual_instructions(target)
        )
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kagglehub-", dir=target))
    try:
        for split in ("train", "test"):
            shutil.copytree(root / split, staging / split)
        for split in ("train", "test"):
            os.replace(staging / split, target / split)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_signs(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, cache: bool = True
):
    """SIGNS: hand signs for the digits 0-5, 1080 training and 120 test images, 64x64 RGB.

    Returns ``(x_train, y_train), (x_test, y_test), class_names``. ``download=False`` raises
    instead of downloading a missing copy; ``cache`` is accepted for symmetry with the
    other loaders (the HDF5 files are read directly)."""
    splits, _ = _load_splits("signs", data_dir, download=download, cache=cache)
    return splits["train"], splits["test"], list(SIGNS_CLASS_NAMES)


def load_cifar10(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, cache: bool = True
):
    """CIFAR-10: 50,000 training and 10,000 test images, 32x32 RGB, 10 classes.

    Returns ``(x_train, y_train), (x_test, y_test), class_names``. A missing copy is
    downloaded (the official tarball) unless ``download=False``; ``cache=False`` decodes
    without reading or writing the cache."""
    splits, _ = _load_splits("cifar10", data_dir, download=download, cache=cache)
    return splits["train"], splits["test"], list(CIFAR10_CLASS_NAMES)


def load_fer2013(
    data_dir: str | os.PathLike | None = None,
    test_split: str = "PrivateTest",
    *,
    download: bool = True,
    cache: bool = True,
):
    """FER-2013: 28,709 training faces and 3,589 per test split, 48x48 greyscale, labelled
    with seven emotions in the CSV's order (angry, disgust, fear, happy, sad, surprise,
    neutral).

    ``test_split`` is ``"PrivateTest"`` (the final test set, the default) or
    ``"PublicTest"`` (commonly used for validation). Returns
    ``(x_train, y_train), (x_test, y_test), class_names``."""
    split = _check_fer2013_test_split(test_split)
    splits, _ = _load_splits("fer2013", data_dir, download=download, cache=cache)
    return splits["train"], splits[split], list(FER2013_CLASS_NAMES)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options):
    """``load_signs``, ``load_cifar10`` or ``load_fer2013`` by name, with their options."""
    loaders = {"signs": load_signs, "cifar10": load_cifar10, "fer2013": load_fer2013}
    return loaders[_check_name(name)](data_dir, **options)


def _check_fer2013_test_split(test_split: str) -> str:
    for split in FER2013_TEST_SPLITS:
        if str(test_split).lower() == split.lower():
            return split
    raise DatasetError(
        f"test_split={test_split!r} is not a FER-2013 test split: use 'PrivateTest' (the "
        "test set) or 'PublicTest' (commonly the validation set)"
    )


def _resolve_source(name: str, data_dir, download: bool) -> DatasetSource:
    return fetch(name, data_dir) if download else find_source(name, data_dir)


def _load_splits(name: str, data_dir, *, download: bool, cache: bool):
    """``({split: (x, y)}, cache entry or None)`` for dataset ``name``."""
    source = _resolve_source(name, data_dir, download)
    arrays, entry = _cached_arrays(source, use_cache=cache)
    splits = {}
    for key in arrays:
        if key.startswith("x_"):
            split = key[2:]
            splits[split] = (arrays[key], arrays["y_" + split])
    return splits, entry


# ---------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------


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


def _source_state(source: DatasetSource) -> list:
    if source.path.is_dir():
        return _tree_state(source.path)
    return _file_state(source.path)


def _cache_entry(source: DatasetSource) -> Path:
    resolved = str(source.path.resolve())
    place = hashlib.sha256(f"{source.name}|{source.form}|{resolved}".encode()).hexdigest()[:10]
    state = json.dumps([LOADER_VERSION, resolved, _source_state(source)])
    version = hashlib.sha256(state.encode()).hexdigest()[:16]
    return resolve_cache_dir() / f"{source.name}-{source.form}-{place}-{version}"


def _read_cache(entry: Path) -> dict[str, np.ndarray] | None:
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
        warnings.warn(f"ignoring unreadable cache {entry} ({exc}); decoding again", stacklevel=3)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return arrays


def _write_cache(entry: Path, arrays: dict[str, np.ndarray], source: DatasetSource) -> None:
    """Write the arrays into a temporary folder and rename it into place, so that a reader
    never sees half a cache; then remove older entries for the same source."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    except OSError as exc:
        warnings.warn(f"cannot write the dataset cache in {entry.parent} ({exc})", stacklevel=3)
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
            warnings.warn(f"cannot write the dataset cache {entry} ({exc})", stacklevel=3)
        return
    place_prefix = entry.name.rsplit("-", 1)[0] + "-"
    for stale in entry.parent.glob(place_prefix + "*"):
        # Another process may be writing a .tmp- folder now; one a day old was abandoned.
        abandoned = ".tmp-" in stale.name and time.time() - stale.stat().st_mtime > 86400
        if stale != entry and (".tmp-" not in stale.name or abandoned):
            shutil.rmtree(stale, ignore_errors=True)


def _cached_arrays(source: DatasetSource, *, use_cache: bool):
    """The decoded arrays of ``source``, from the cache when it is current."""
    decode = _DECODERS[source.form]
    if source.form == "hdf5" or not use_cache:  # HDF5 is already arrays: nothing to cache
        return decode(source), None
    entry = _cache_entry(source)
    arrays = _read_cache(entry)
    if arrays is None:
        arrays = decode(source)
        _write_cache(entry, arrays, source)
    return arrays, entry


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------


def _as_labels(raw, where: str, num_classes: int, count: int | None = None) -> np.ndarray:
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


def _check_images(images: np.ndarray, where: str, shape: tuple[int, int, int]) -> np.ndarray:
    if images.ndim != 4 or images.shape[1:] != shape:
        raise DatasetError(
            f"{where}: images have shape {images.shape}, expected (n, {', '.join(map(str, shape))})"
        )
    if images.dtype != np.uint8:
        raise DatasetError(f"{where}: images have dtype {images.dtype}, expected uint8")
    return images


# ---------------------------------------------------------------------------------------
# SIGNS: HDF5
# ---------------------------------------------------------------------------------------


def _decode_signs_h5(source: DatasetSource) -> dict[str, np.ndarray]:
    arrays = {}
    for split in ("train", "test"):
        x, y = _read_signs_h5(source.path / f"{split}_signs.h5", split)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    return arrays


def _read_signs_h5(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(
            f"{path} is not a readable HDF5 file ({_first_line(exc)}): it may be truncated "
            "or not HDF5 at all. Delete it and run `resnet-course data fetch signs`."
        ) from None
    with h5:
        arrays = []
        for key in (f"{split}_set_x", f"{split}_set_y"):
            if key not in h5 or not isinstance(h5[key], h5py.Dataset):
                found = ", ".join(sorted(h5.keys())) or "none"
                raise DatasetError(
                    f"{path} has no dataset {key!r} (found: {found}); a SIGNS {split} file "
                    f"holds {split}_set_x, {split}_set_y and list_classes"
                )
            try:
                arrays.append(h5[key][()])
            except OSError as exc:
                raise DatasetError(
                    f"{path}: cannot read {key!r} ({_first_line(exc)}); the file may be truncated"
                ) from None
        if "list_classes" in h5:
            classes = np.asarray(h5["list_classes"][()]).reshape(-1)
            if classes.tolist() != list(range(len(SIGNS_CLASS_NAMES))):
                raise DatasetError(
                    f"{path}: list_classes is {classes.tolist()}, expected the digits 0-5"
                )
    images = np.asarray(arrays[0])
    _check_images(images, f"{path} ['{split}_set_x']", IMAGE_SHAPES["signs"])
    labels = _as_labels(
        arrays[1], f"{path} ['{split}_set_y']", len(SIGNS_CLASS_NAMES), len(images)
    )
    return images, labels


# ---------------------------------------------------------------------------------------
# CIFAR-10: pickled batches and the tarball
# ---------------------------------------------------------------------------------------

_CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 batch may name: numpy's array reconstructors (under
    their NumPy 1 and NumPy 2 module names) and, for Python 3 protocol-2 pickles of bytes,
    ``_codecs.encode``. Nothing that can run arbitrary code."""
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy 1
        from numpy.core import multiarray, numeric
    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches while refusing every global outside an allow-list, so a
    tampered file cannot run code."""

    allowed_globals: dict[tuple[str, str], object] = {}

    def find_class(self, module: str, name: str):
        try:
            return self.allowed_globals[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists, numbers and bytes"
            ) from None


def _unpickle_batch(stream, where: str) -> dict[str, object]:
    if not _BatchUnpickler.allowed_globals:
        _BatchUnpickler.allowed_globals = _numpy_pickle_globals()
    try:
        # The official batches were pickled by Python 2: their strings load as bytes.
        content = _BatchUnpickler(stream, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, OSError, zlib.error) as exc:
        raise DatasetError(f"{where} is not a readable CIFAR-10 batch: {_first_line(exc)}") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{where} holds a {type(content).__name__}, expected a dict")
    return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)): v for k, v in content.items()}


def _batch_arrays(content: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", "labels"):
        if key not in content:
            found = ", ".join(sorted(content)) or "none"
            raise DatasetError(f"{where} has no key {key!r} (found: {found})")
    data = content["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", type(data).__name__)
        raise DatasetError(f"{where}: 'data' has shape {shape}, expected (n, 3072)")
    if data.dtype != np.uint8:
        raise DatasetError(f"{where}: 'data' has dtype {data.dtype}, expected uint8")
    labels = _as_labels(content["labels"], f"{where} ['labels']", 10, len(data))
    # Rows are channel-major (1024 red, 1024 green, 1024 blue values): to NHWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _check_cifar_meta(content: dict, where: str) -> None:
    names = content.get("label_names")
    if names is None:
        return
    names = [n.decode("latin-1") if isinstance(n, bytes) else str(n) for n in names]
    if names != list(CIFAR10_CLASS_NAMES):
        raise DatasetError(
            f"{where}: label_names {names} differ from CIFAR-10's {list(CIFAR10_CLASS_NAMES)}"
        )


def _assemble_cifar_batches(batches: dict[str, tuple[np.ndarray, np.ndarray]], where: str):
    missing = [b for b in _CIFAR_BATCHES + ("test_batch",) if b not in batches]
    if missing:
        raise DatasetError(
            f"{where} lacks {', '.join(missing)}: the official CIFAR-10 python version has "
            "data_batch_1 to data_batch_5 and test_batch"
        )
    return {
        "x_train": np.concatenate([batches[b][0] for b in _CIFAR_BATCHES]),
        "y_train": np.concatenate([batches[b][1] for b in _CIFAR_BATCHES]),
        "x_test": batches["test_batch"][0],
        "y_test": batches["test_batch"][1],
    }


def _decode_cifar_batches(source: DatasetSource) -> dict[str, np.ndarray]:
    batches = {}
    for name in _CIFAR_BATCHES + ("test_batch",):
        path = source.path / name
        if path.is_file():
            with open(path, "rb") as stream:
                batches[name] = _batch_arrays(_unpickle_batch(stream, str(path)), str(path))
    meta_path = source.path / "batches.meta"
    if meta_path.is_file():
        with open(meta_path, "rb") as stream:
            _check_cifar_meta(_unpickle_batch(stream, str(meta_path)), str(meta_path))
    return _assemble_cifar_batches(batches, str(source.path))


def _decode_cifar_tarball(source: DatasetSource) -> dict[str, np.ndarray]:
    wanted = set(_CIFAR_BATCHES + ("test_batch", "batches.meta"))
    batches = {}
    try:
        with tarfile.open(source.path, "r:gz") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in wanted:
                    continue
                where = f"{source.path}!{member.name}"
                # Read the member whole, so a truncated archive fails here, as an archive.
                payload = archive.extractfile(member).read()
                content = _unpickle_batch(io.BytesIO(payload), where)
                if base == "batches.meta":
                    _check_cifar_meta(content, where)
                else:
                    batches[base] = _batch_arrays(content, where)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(
            f"{source.path} is not a readable .tar.gz ({_first_line(exc)}): it may be "
            "truncated. Delete it and run `resnet-course data fetch cifar10`."
        ) from None
    return _assemble_cifar_batches(batches, str(source.path))


# ---------------------------------------------------------------------------------------
# Image folders and zips (CIFAR-10, FER-2013)
# ---------------------------------------------------------------------------------------


def _image_mode(name: str) -> str:
    return "L" if IMAGE_SHAPES[name][2] == 1 else "RGB"


# JPEG start-of-frame markers (SOF0-SOF15 less DHT 0xC4, JPG 0xC8 and DAC 0xCC): the
# segment that gives precision, height, width and number of components.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """``(precision, height, width, components)`` from a JPEG's frame header, or None when
    ``data`` does not start like a JPEG or the header cannot be found."""
    if data[:2] != b"\xff\xd8":
        return None
    position, size = 2, len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
        elif marker in _JPEG_FRAME_MARKERS:
            if position + 10 > size:
                return None
            header = data[position + 4:position + 10]
            return header[0], (header[1] << 8) | header[2], (header[3] << 8) | header[4], header[5]
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        else:
            position += 2 + ((data[position + 2] << 8) | data[position + 3])
    return None


def _decode_image(data: bytes, where: str, shape: tuple[int, int, int], mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    try:
        if _jpeg_frame(data) == (8, height, width, channels):
            # The header promises exactly the expected size and layout, so PIL's decoder can
            # run without Image.open's Python-level parsing: half the time, same pixels.
            image = Image.frombytes(mode, (width, height), data, "jpeg", mode, "")
            return np.frombuffer(image.tobytes(), np.uint8).reshape(shape)
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as image:
            if image.size != (width, height):
                raise DatasetError(
                    f"{where}: image is {image.size[0]}x{image.size[1]}, expected {width}x{height}"
                )
            if image.mode != mode:
                image = image.convert(mode)
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"cannot read image {where}: {_first_line(exc)}") from None
    return pixels.reshape(shape)


# A zip member, as the worker processes need it: the zip's central directory is read
# once, by the parent, and the members are then read straight from the file.
_ZipMember = tuple  # (name, header_offset, compress_size, file_size, compress_type, crc, flags)
_LOCAL_HEADER = struct.Struct("<4s22xHH")


def _read_zip_member(view, archive: Path, member: _ZipMember, fallback: list) -> bytes:
    name, offset, compressed, size, method, crc, flags = member
    signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(view, offset)
    if signature != b"PK\x03\x04" or flags & 0x1:
        data = None  # unusual or encrypted: let zipfile read it or explain why not
    else:
        start = offset + _LOCAL_HEADER.size + name_length + extra_length
        raw = view[start:start + compressed]
        if method == zipfile.ZIP_STORED:
            data = bytes(raw)
        elif method == zipfile.ZIP_DEFLATED:
            try:
                data = zlib.decompress(raw, -15)
            except zlib.error as exc:
                raise DatasetError(f"{archive}: member {name} is corrupt ({exc})") from None
        else:
            data = None
    if data is None:
        if not fallback:
            fallback.append(zipfile.ZipFile(archive))
        try:
            return fallback[0].read(name)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
            raise DatasetError(f"{archive}: cannot read member {name} ({exc})") from None
    if len(data) != size or zlib.crc32(data) != crc:
        raise DatasetError(f"{archive}: member {name} is corrupt (size or CRC mismatch)")
    return data


def _decode_zip_members(archive: Path, members: list, *, shape, mode: str) -> np.ndarray:
    images = np.empty((len(members),) + tuple(shape), np.uint8)
    fallback: list = []  # a zipfile.ZipFile, opened only for members we cannot read directly
    try:
        with open(archive, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
            for index, member in enumerate(members):
                data = _read_zip_member(view, archive, member, fallback)
                images[index] = _decode_image(data, f"{archive}!{member[0]}", shape, mode)
    finally:
        for opened in fallback:
            opened.close()
    return images


def _decode_files(paths: list, *, shape, mode: str) -> np.ndarray:
    images = np.empty((len(paths),) + tuple(shape), np.uint8)
    for index, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read image {path}: {exc}") from None
        images[index] = _decode_image(data, str(path), shape, mode)
    return images


def _worker_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fork_context():
    """A 'fork' multiprocessing context where it is safe and cheap (Linux), else None.

    Forked workers need no re-import and no ``if __name__ == "__main__"`` guard in a
    student's script; where fork is unavailable or unsafe (macOS, Windows) decoding runs in
    this process, since PIL's Python-level parsing gains nothing from threads."""
    import multiprocessing

    if not sys.platform.startswith("linux"):
        return None
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


def _split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, count, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _decode_all(decode_chunk: Callable, items: list, shape, workers: int | None = None) -> np.ndarray:
    """``decode_chunk(items) -> uint8 array`` over ``items``, on every core available.

    JPEG parsing in PIL is mostly Python, so threads do not help: processes do."""
    workers = _worker_count() if workers is None else workers
    context = _fork_context()
    if workers < 2 or len(items) < PARALLEL_MIN_IMAGES or context is None:
        return decode_chunk(items)
    images = np.empty((len(items),) + tuple(shape), np.uint8)
    # A few chunks per worker balance the load; each result is one pickled array.
    chunks = _split_evenly(len(items), 3 * workers)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [(a, b, pool.submit(decode_chunk, items[a:b])) for a, b in chunks]
            try:
                for a, b, future in futures:
                    images[a:b] = future.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    except DatasetError:
        raise
    except (OSError, RuntimeError) as exc:  # no fork or semaphores here, a worker killed
        warnings.warn(f"decoding in one process: worker processes failed ({exc})", stacklevel=3)
        return decode_chunk(items)
    return images


# An image-folder or zip source's images: split -> [(file name, label, reference)], where
# a reference is a file path or a zip member.
_ImageListing = dict


def _fer2013_split_of(file_name: str, split_folder: str, where: str) -> str:
    if split_folder == "train":
        return "train"
    for usage in FER2013_TEST_SPLITS:
        if file_name.startswith(usage + "_"):
            return usage
    raise DatasetError(
        f"{where}: cannot tell whether this test image is PublicTest or PrivateTest; "
        "FER-2013's test images are named PublicTest_*.jpg or PrivateTest_*.jpg, as in the "
        "Kaggle copy"
    )


def _listing_from_entries(
    name: str, entries: Iterable[tuple[str, str, str | None, object]], where: str, folder_sep: str
) -> _ImageListing:
    """Group ``(split folder, class folder, file name, reference)`` entries by split; a
    None file name marks a class folder that exists. Checks that every class folder is
    present and non-empty."""
    class_index = {class_name.lower(): i for i, class_name in enumerate(CLASS_NAMES[name])}
    folder_labels: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, int], int] = {}
    splits: dict[str, list] = {}
    for split_folder, class_folder, file_name, reference in entries:
        label = folder_labels.get((split_folder, class_folder))
        if label is None:
            label = class_index.get(class_folder.lower())
            if label is None:
                raise DatasetError(
                    f"{where}{folder_sep}{split_folder}/{class_folder}/: unknown class folder "
                    f"{class_folder!r}; {DISPLAY_NAMES[name]}'s class folders are "
                    f"{', '.join(CLASS_NAMES[name])}"
                )
            folder_labels[(split_folder, class_folder)] = label
            counts.setdefault((split_folder, label), 0)
        if file_name is None or not file_name.lower().endswith(IMAGE_SUFFIXES):
            continue
        counts[(split_folder, label)] += 1
        split = split_folder
        if name == "fer2013":
            split = _fer2013_split_of(
                file_name, split_folder, f"{where}{folder_sep}{split_folder}/{class_folder}/{file_name}"
            )
        splits.setdefault(split, []).append((file_name, label, reference))
    for split_folder in ("train", "test"):
        for label, class_name in enumerate(CLASS_NAMES[name]):
            count = counts.get((split_folder, label))
            place = f"{where}{folder_sep}{split_folder}/{class_name}/"
            if count is None:
                raise DatasetError(
                    f"{place} is missing: {DISPLAY_NAMES[name]} needs one folder per class "
                    f"in train/ and test/ ({', '.join(CLASS_NAMES[name])})"
                )
            if count == 0:
                raise DatasetError(f"{place} is an empty class folder (no .png or .jpg images)")
    # By file name first, so the classes interleave: a split taken from the end of the
    # arrays (as Keras' validation_split does) is not all one class.
    for items in splits.values():
        items.sort(key=operator.itemgetter(0, 1))
    return splits


def _list_zip(name: str, archive: Path) -> _ImageListing:
    try:
        with zipfile.ZipFile(archive) as opened:
            infos = opened.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(
            f"{archive} is not a readable zip ({_first_line(exc)}): it may be truncated"
        ) from None

    def entries():
        for info in infos:
            parts = info.filename.split("/")
            if info.is_dir():
                parts = parts[:-1] + [None]
            # train/<class>/<file>, possibly under one top folder; skip macOS metadata.
            if len(parts) < 3 or parts[-3] not in ("train", "test"):
                continue
            if any(p.startswith(("__MACOSX", ".")) for p in parts if p):
                continue
            member = (info.filename, info.header_offset, info.compress_size, info.file_size,
                      info.compress_type, info.CRC, info.flag_bits)
            yield parts[-3], parts[-2], parts[-1], member

    return _listing_from_entries(name, entries(), str(archive), "!")


def _list_folder(name: str, root: Path) -> _ImageListing:
    def entries():
        for split_folder in ("train", "test"):
            with os.scandir(root / split_folder) as classes:
                for class_entry in sorted(classes, key=lambda e: e.name):
                    if not class_entry.is_dir() or class_entry.name.startswith("."):
                        continue
                    yield split_folder, class_entry.name, None, None
                    with os.scandir(class_entry.path) as files:
                        for file_entry in files:
                            if file_entry.is_file() and not file_entry.name.startswith("."):
                                yield split_folder, class_entry.name, file_entry.name, file_entry.path

    return _listing_from_entries(name, entries(), str(root), "/")


def _decode_listing(name: str, listing: _ImageListing, decode_chunk: Callable) -> dict[str, np.ndarray]:
    """Decode every split of ``listing`` in one parallel pass and cut it back into splits."""
    order = [split for split in ("train", "test") + FER2013_TEST_SPLITS if split in listing]
    references = [ref for split in order for _, _, ref in listing[split]]
    images = _decode_all(decode_chunk, references, IMAGE_SHAPES[name])
    arrays = {}
    start = 0
    for split in order:
        items = listing[split]
        arrays[f"x_{split}"] = images[start:start + len(items)]
        arrays[f"y_{split}"] = np.array([label for _, label, _ in items], np.int64)
        start += len(items)
    if name == "fer2013":
        for usage in FER2013_TEST_SPLITS:  # a split with no images is still a split
            arrays.setdefault(f"x_{usage}", np.empty((0,) + IMAGE_SHAPES[name], np.uint8))
            arrays.setdefault(f"y_{usage}", np.empty((0,), np.int64))
    return arrays


def _decode_image_zip(source: DatasetSource) -> dict[str, np.ndarray]:
    listing = _list_zip(source.name, source.path)
    # A partial of a module-level function pickles, so worker processes can receive it.
    decode_chunk = functools.partial(_decode_zip_members, source.path,
                                     shape=IMAGE_SHAPES[source.name], mode=_image_mode(source.name))
    return _decode_listing(source.name, listing, decode_chunk)


def _decode_image_folder(source: DatasetSource) -> dict[str, np.ndarray]:
    listing = _list_folder(source.name, source.path)
    decode_chunk = functools.partial(_decode_files, shape=IMAGE_SHAPES[source.name],
                                     mode=_image_mode(source.name))
    return _decode_listing(source.name, listing, decode_chunk)


# ---------------------------------------------------------------------------------------
# FER-2013: the original CSV
# ---------------------------------------------------------------------------------------

_FER_USAGES = {
    b"Training": "train",
    b"PublicTest": "PublicTest",
    b"PrivateTest": "PrivateTest",
}
_FER_PIXELS = 48 * 48


def _csv_header(raw: bytes, path: Path) -> tuple[int, dict[str, int]]:
    end = raw.find(b"\n")
    end = len(raw) if end < 0 else end
    names = [n.strip().strip(b'"').strip().lower() for n in raw[:end].rstrip(b"\r").split(b",")]
    columns = {n.decode("latin-1"): i for i, n in enumerate(names)}
    missing = [c for c in ("emotion", "pixels", "usage") if c not in columns]
    if missing or len(names) != 3:
        header = raw[:end].rstrip(b"\r").decode("latin-1")[:80]
        raise DatasetError(
            f"{path}: header {header!r} is not FER-2013's; expected the three columns "
            "emotion,pixels,Usage"
        )
    return end + 1, columns


def _scan_csv_rows(raw: bytes, path: Path):
    """Find each row's fields without copying them: emotion and Usage as bytes, pixel
    fields as (start, stop) offsets into ``raw``, and each row's line number."""
    position, columns = _csv_header(raw, path)
    emotions, usages, starts, stops, lines = [], [], [], [], []
    size = len(raw)
    line = 1
    find, rfind = raw.find, raw.rfind
    while position < size:
        end = find(b"\n", position)
        end = size if end < 0 else end
        line += 1
        stop = end - 1 if end > position and raw[end - 1] == 13 else end  # CRLF
        if raw[position:stop].strip():
            first = find(b",", position, stop)
            last = rfind(b",", position, stop)
            if first < 0 or first == last or find(b",", first + 1, last) >= 0:
                raise DatasetError(
                    f"{path}, row {line - 1} (line {line}): expected 3 comma-separated fields "
                    "(emotion,pixels,Usage)"
                )
            bounds = ((position, first), (first + 1, last), (last + 1, stop))
            emotions.append(raw[slice(*bounds[columns["emotion"]])])
            usages.append(raw[slice(*bounds[columns["usage"]])])
            start, pixel_stop = bounds[columns["pixels"]]
            if raw[start:start + 1] == b'"' and raw[pixel_stop - 1:pixel_stop] == b'"':
                start, pixel_stop = start + 1, pixel_stop - 1
            starts.append(start)
            stops.append(pixel_stop)
            lines.append(line)
        position = end + 1
    return emotions, usages, np.array(starts, np.int64), np.array(stops, np.int64), lines


def _parse_pixel_rows_exactly(raw: bytes, starts, stops, lines, path: Path) -> np.ndarray:
    """The slow, forgiving parser: any whitespace between values, and an error naming the
    row for anything else. Used for chunks the fast parser rejects."""
    rows = np.empty((len(starts), _FER_PIXELS), np.uint8)
    for index, (start, stop, line) in enumerate(zip(starts, stops, lines)):
        values = raw[start:stop].split()
        where = f"{path}, row {line - 1} (line {line})"
        if len(values) != _FER_PIXELS:
            raise DatasetError(
                f"{where}: {len(values)} pixel values, expected {_FER_PIXELS} (48x48)"
            )
        bad = next((v for v in values if not v.isdigit() or int(v) > 255), None)
        if bad is not None:
            raise DatasetError(
                f"{where}: pixel value {bad.decode('latin-1')!r} is not an integer 0-255"
            )
        rows[index] = np.array(values, dtype=np.int64)
    return rows


def _parse_pixel_rows(raw: bytes, starts, stops, lines, path: Path) -> np.ndarray:
    """Parse rows of space-separated pixel values with whole-array NumPy operations (which
    release the GIL, so chunks parse in parallel threads). Any row that is not exactly
    2304 single-space-separated integers of 1-3 digits sends the chunk to the slow parser,
    which either accepts it or names the row."""
    count = len(starts)
    lengths = stops - starts
    # Three leading spaces let every value look back three bytes; each row ends in a space.
    text = np.empty(int(lengths.sum()) + count + 3, np.uint8)
    text[:3] = 32
    source = np.frombuffer(raw, np.uint8)
    offset = 3
    for start, stop in zip(starts.tolist(), stops.tolist()):
        text[offset:offset + stop - start] = source[start:stop]
        offset += stop - start
        text[offset] = 32
        offset += 1
    row_ends = 3 + np.cumsum(lengths + 1) - 1
    is_space = text == 32
    spaces = np.flatnonzero(is_space)
    value_ends = spaces[3:]  # the space after each value
    value_lengths = np.diff(spaces[2:]) - 1
    digit_count = np.count_nonzero((text - np.uint8(48)) <= 9)
    per_row = np.diff(np.searchsorted(spaces, row_ends, side="right"), prepend=3)
    regular = (
        digit_count + spaces.size == text.size
        and value_lengths.size == count * _FER_PIXELS
        and (per_row == _FER_PIXELS).all()
        and value_lengths.min(initial=1) >= 1
        and value_lengths.max(initial=1) <= 3
    )
    if regular:
        digits = text & np.uint8(15)  # '0'-'9' -> 0-9, and a space -> 0
        last = value_ends - 1
        values = np.take(digits, last).astype(np.uint16)
        values += np.uint16(10) * np.take(digits, last - 1)  # a space there adds 0
        hundreds = np.take(digits, last - 2)
        hundreds[value_lengths < 3] = 0  # that byte belongs to the previous value
        values += np.uint16(100) * hundreds
        if values.max(initial=0) <= 255:
            return values.astype(np.uint8).reshape(count, _FER_PIXELS)
    return _parse_pixel_rows_exactly(raw, starts, stops, lines, path)


def _decode_fer_csv(source: DatasetSource) -> dict[str, np.ndarray]:
    path = source.path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as Excel writes
        raw = b"   " + raw[3:]
    emotions, usages, starts, stops, lines = _scan_csv_rows(raw, path)
    if not emotions:
        raise DatasetError(f"{path} has a header but no rows of data")
    labels = np.empty(len(emotions), np.int64)
    for index, field in enumerate(emotions):
        value = field.strip().strip(b'"')
        if not value.isdigit() or int(value) >= len(FER2013_CLASS_NAMES):
            raise DatasetError(
                f"{path}, row {lines[index] - 1} (line {lines[index]}): emotion "
                f"{value.decode('latin-1')!r} is not an integer 0-6"
            )
        labels[index] = int(value)
    splits = np.empty(len(usages), dtype=object)
    for index, field in enumerate(usages):
        split = _FER_USAGES.get(field.strip().strip(b'"'))
        if split is None:
            raise DatasetError(
                f"{path}, row {lines[index] - 1} (line {lines[index]}): unknown Usage "
                f"{field.decode('latin-1')!r}; expected Training, PublicTest or PrivateTest"
            )
        splits[index] = split

    images = np.empty((len(starts), _FER_PIXELS), np.uint8)
    chunks = _split_evenly(len(starts), max(1, -(-len(starts) // CSV_ROWS_PER_TASK)))

    def parse(bounds):
        a, b = bounds
        images[a:b] = _parse_pixel_rows(raw, starts[a:b], stops[a:b], lines[a:b], path)

    with ThreadPoolExecutor(max_workers=max(1, _worker_count())) as pool:
        for _ in pool.map(parse, chunks):  # re-raises the first row error
            pass
    images = images.reshape((-1,) + IMAGE_SHAPES["fer2013"])
    arrays = {}
    for split in ("train",) + FER2013_TEST_SPLITS:
        mask = splits == split
        arrays[f"x_{split}"] = images[mask]
        arrays[f"y_{split}"] = labels[mask]
    return arrays


_DECODERS: dict[str, Callable[[DatasetSource], dict[str, np.ndarray]]] = {
    "hdf5": _decode_signs_h5,
    "cifar-batches": _decode_cifar_batches,
    "cifar-tarball": _decode_cifar_tarball,
    "image-folder": _decode_image_folder,
    "image-zip": _decode_image_zip,
    "fer-csv": _decode_fer_csv,
}


# ---------------------------------------------------------------------------------------
# Describing a dataset (for `resnet-course data info`)
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    """Shapes, dtypes and per-class counts of one split."""

    x_shape: tuple[int, ...]
    x_dtype: str
    y_shape: tuple[int, ...]
    y_dtype: str
    class_counts: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What ``describe_dataset`` found: the source, each split, and the cache entry."""

    name: str
    source: DatasetSource
    class_names: tuple[str, ...]
    splits: dict[str, SplitSummary]
    cache_entry: Path | None

    def format(self) -> str:
        lines = [f"{DISPLAY_NAMES[self.name]} ({self.name}): {self.source.describe()}"]
        lines.append(f"  classes ({len(self.class_names)}): {', '.join(self.class_names)}")
        width = max(len(split) for split in self.splits)
        for split, summary in self.splits.items():
            lines.append(
                f"  {split:<{width}}  x {summary.x_shape} {summary.x_dtype}, "
                f"y {summary.y_shape} {summary.y_dtype}; per class: "
                + " ".join(str(c) for c in summary.class_counts)
            )
        if self.cache_entry is None:
            lines.append("  cache: none (the HDF5 files are read directly)")
        else:
            lines.append(f"  cache: {self.cache_entry}")
        return "\n".join(lines)


def describe_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False
) -> DatasetInfo:
    """Load dataset ``name`` (through the cache) and summarise every split. Raises
    :class:`DatasetError` when it is missing or malformed."""
    name = _check_name(name)
    source = _resolve_source(name, data_dir, download)
    arrays, entry = _cached_arrays(source, use_cache=True)
    num_classes = len(CLASS_NAMES[name])
    splits = {}
    for key, images in arrays.items():
        if not key.startswith("x_"):
            continue
        labels = arrays["y_" + key[2:]]
        splits[key[2:]] = SplitSummary(
            tuple(images.shape), str(images.dtype), tuple(labels.shape), str(labels.dtype),
            tuple(int(c) for c in np.bincount(labels, minlength=num_classes)),
        )
    return DatasetInfo(name, source, CLASS_NAMES[name], splits, entry)


# ---------------------------------------------------------------------------------------
# tf.data pipelines, imported on first use so that loading never pays for TensorFlow
# ---------------------------------------------------------------------------------------

_PIPELINE_NAMES = (
    "Augmentation", "InputPipelines", "augmentation_for", "make_datasets",
    "make_eval_dataset", "split_validation",
)


def __getattr__(attribute: str):
    if attribute in _PIPELINE_NAMES:
        from resnet_course import pipelines

        return getattr(pipelines, attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
