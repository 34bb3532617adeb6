"""Where a dataset's files are, and getting them when they are not there.

``find_source`` looks for a usable copy in the data directory; ``fetch`` downloads what is
missing: SIGNS and CIFAR-10 from public mirrors with pooch (hash checked, file moved into
place only once it matches), FER-2013 through kagglehub when it is installed and has
Kaggle credentials. When neither works, the error says where it looked, where to get the
files by hand and where to put them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from resnet_course.datasets.core import (
    DATA_ENV_VAR,
    DISPLAY_NAMES,
    DatasetNotFoundError,
    DatasetSource,
    check_name,
    first_line,
    resolve_data_dir,
)

FER2013_KAGGLE_DATASET = "msambare/fer2013"
FER2013_KAGGLE_PAGES = (
    "https://www.kaggle.com/datasets/msambare/fer2013",
    "https://www.kaggle.com/competitions/"
    "challenges-in-representation-learning-facial-expression-recognition-challenge/data",
)
DOWNLOAD_TIMEOUT_SECONDS = 60


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


# ---------------------------------------------------------------------------------------
# Finding a local copy
# ---------------------------------------------------------------------------------------


def _dataset_folders(name: str, root: Path) -> list[Path]:
    # A root that is itself the dataset's folder is accepted as well.
    folders = [root / name]
    if not folders[0].is_dir() and root.is_dir():
        folders.append(root)
    return folders


def image_folder_root(folder: Path) -> Path | None:
    """``folder`` when it holds the ``train/`` and ``test/`` image folders, else None."""
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
    root = image_folder_root(folder)
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


def find_source(name: str, data_dir: str | os.PathLike | None = None) -> DatasetSource:
    """The local copy of dataset ``name`` that the loaders would read, without downloading.

    Raises :class:`DatasetNotFoundError` saying where it looked and how to get the data."""
    name = check_name(name)
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
        urls = "; ".join(f"{f.filename} from {f.urls[0]}" for f in REMOTE_FILES[name] if f.urls)
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
    name = check_name(name)
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


def find_or_fetch(name: str, data_dir, download: bool) -> DatasetSource:
    """``fetch`` when ``download`` is true, else ``find_source``."""
    return fetch(name, data_dir) if download else find_source(name, data_dir)


def _download(remote: RemoteFile, target: Path, name: str, folders: Sequence[Path]) -> Path:
    """Download ``remote`` into ``target`` with pooch: a progress bar, the hash checked,
    and the file moved into place only once it matches, so an interrupted or corrupted
    download never leaves a file that loads. Mirrors are tried in order."""
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
        downloader = pooch.HTTPDownloader(progressbar=True, timeout=DOWNLOAD_TIMEOUT_SECONDS)
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
            failures.append(f"{url}: {first_line(exc)}")
            continue
        return Path(path)
    tried = "; ".join(failures) if failures else "no download address is known"
    raise DatasetNotFoundError(
        _not_found_message(name, folders, f"Could not download {remote.filename} ({tried}).")
    )


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
            f"kagglehub could not download {FER2013_KAGGLE_DATASET}: {first_line(exc)}. "
            + _fer2013_manual_instructions(target)
        ) from None
    candidates = [downloaded] + sorted(p for p in downloaded.glob("*") if p.is_dir())
    root = next((c for c in candidates if image_folder_root(c) is not None), None)
    if root is None:
        raise DatasetNotFoundError(
            f"kagglehub downloaded {FER2013_KAGGLE_DATASET} to {downloaded}, but it has no "
            "train/ and test/ folders. " + _fer2013_manual_instructions(target)
        )
    # Copied into a staging folder first, so that an interrupted copy leaves no half
    # dataset where the loaders look.
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

