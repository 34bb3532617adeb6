"""FER-2013: 48x48 greyscale faces labelled with seven emotions.

Read from the original ``fer2013.csv`` (columns emotion, pixels, Usage, in any order), from
the Kaggle image folders ``train/<emotion>/Training_*.jpg`` and
``test/<emotion>/{PublicTest,PrivateTest}_*.jpg``, or from the zip Kaggle serves. Labels
always follow the CSV's emotion order, whatever form the data comes in.

The CSV is read with pandas and its pixel fields with ``numpy.loadtxt`` (by worker
processes, in chunks of rows). A file those strict readers refuse is read again row by row
with the :mod:`csv` module, which either accepts it (extra spaces, say) or names the row
and what is wrong with it.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from resnet_course.datasets import images
from resnet_course.datasets.cache import cached_arrays
from resnet_course.datasets.core import (
    FER2013_CLASS_NAMES,
    FER2013_TEST_SPLITS,
    IMAGE_SHAPES,
    DatasetError,
    DatasetSource,
    chunks,
    map_in_processes,
    splits_of,
)
from resnet_course.datasets.download import find_or_fetch

# The Usage column's values and the splits they name.
USAGES = {"Training": "train", "PublicTest": "PublicTest", "PrivateTest": "PrivateTest"}
PIXELS_PER_IMAGE = 48 * 48
# Below this many rows, starting worker processes costs more than it saves.
PARALLEL_MIN_ROWS = 2048
CSV_COLUMNS = ("emotion", "pixels", "usage")


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
    split = check_test_split(test_split)
    arrays, _ = read_arrays(find_or_fetch("fer2013", data_dir, download), use_cache=cache)
    splits = splits_of(arrays)
    return splits["train"], splits[split], list(FER2013_CLASS_NAMES)


def check_test_split(test_split: str) -> str:
    """``"PrivateTest"`` or ``"PublicTest"``, whatever the case of ``test_split``."""
    for split in FER2013_TEST_SPLITS:
        if str(test_split).lower() == split.lower():
            return split
    raise DatasetError(
        f"test_split={test_split!r} is not a FER-2013 test split: use 'PrivateTest' (the "
        "test set) or 'PublicTest' (commonly the validation set)"
    )


def read_arrays(source: DatasetSource, *, use_cache: bool = True):
    """``(arrays, cache entry)`` for a FER-2013 source: ``x_train``, ``y_train``,
    ``x_PrivateTest``, ``y_PrivateTest``, ``x_PublicTest``, ``y_PublicTest``."""
    return cached_arrays(source, DECODERS[source.form], use_cache=use_cache)


# ---------------------------------------------------------------------------------------
# Image folders and the Kaggle zip
# ---------------------------------------------------------------------------------------


def split_of_image(split_folder: str, file_name: str, where: str) -> str:
    """The split of an image in the Kaggle layout: everything in train/ is Training; a
    test image's name starts with its Usage (PublicTest_ or PrivateTest_)."""
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


def list_images(source: DatasetSource) -> images.ImageListing:
    """The images of an image-zip or image-folder source, by split, without decoding."""
    if source.form == "image-zip":
        return images.list_zip("fer2013", source.path, split_of_image)
    return images.list_folder("fer2013", source.path, split_of_image)


# ---------------------------------------------------------------------------------------
# The original CSV
# ---------------------------------------------------------------------------------------


# FER-2013 is ASCII; latin-1 decodes any byte, so a stray one is reported, not fatal.
ENCODING = "latin-1"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as Excel writes
        raw = raw[3:]
    return raw


def _header_columns(raw: bytes, path: Path) -> tuple[str, ...]:
    """The CSV's column names, lower-cased: some order of emotion, pixels and usage."""
    header = raw.split(b"\n", 1)[0].rstrip(b"\r").decode(ENCODING)
    names = tuple(name.strip().lower() for name in next(csv.reader([header]), []))
    if sorted(names) != sorted(CSV_COLUMNS):
        raise DatasetError(
            f"{path}: header {header[:80]!r} is not FER-2013's; expected the three columns "
            "emotion,pixels,Usage"
        )
    return names


def _decode_csv(source: DatasetSource) -> dict[str, np.ndarray]:
    path = source.path
    raw = _read_bytes(path)
    columns = _header_columns(raw, path)
    try:
        labels, splits, pixels = _read_csv_strictly(raw, columns)
    except ValueError:  # pandas' ParserError is a ValueError too
        labels, splits, pixels = _read_csv_row_by_row(raw.decode(ENCODING), columns, path)
    if not len(labels):
        raise DatasetError(f"{path} has a header but no rows of data")
    pixels = pixels.reshape((-1,) + IMAGE_SHAPES["fer2013"])
    arrays = {}
    for split in ("train",) + FER2013_TEST_SPLITS:
        mask = splits == split
        arrays[f"x_{split}"] = pixels[mask]
        arrays[f"y_{split}"] = labels[mask]
    return arrays


def _read_csv_strictly(raw: bytes, columns: tuple[str, ...]):
    """``(labels, splits, pixels)`` of a well-formed CSV: pandas splits the rows and
    ``numpy.loadtxt`` reads the pixel fields. Raises ValueError on anything irregular."""
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding=ENCODING,
                        skipinitialspace=True, index_col=False, engine="c")
    frame.columns = columns
    emotions = frame["emotion"].str.strip()
    if not emotions.isin([str(i) for i in range(len(FER2013_CLASS_NAMES))]).all():
        raise ValueError("an emotion is not 0-6")
    splits = frame["usage"].str.strip().map(USAGES)
    if splits.isna().any():
        raise ValueError("a Usage is not Training, PublicTest or PrivateTest")
    rows = frame["pixels"].tolist()
    if not rows:
        return np.empty((0,), np.int64), np.empty((0,), object), np.empty((0, PIXELS_PER_IMAGE), np.uint8)
    tasks = chunks(len(rows))
    parts = None
    if len(rows) >= PARALLEL_MIN_ROWS:
        parts = map_in_processes(_parse_pixels_in_worker, tasks, initializer=_share_pixel_rows,
                                 initargs=(rows,))
    if parts is None:
        parts = [_parse_pixels(rows[start:stop]) for start, stop in tasks]
    return emotions.astype(np.int64).to_numpy(), splits.to_numpy(object), np.concatenate(parts)


def _parse_pixels(rows: list[str]) -> np.ndarray:
    """Rows of exactly 2304 single-space-separated integers 0-255, as uint8; ValueError
    for anything else."""
    pixels = np.loadtxt(rows, dtype=np.uint8, delimiter=" ", ndmin=2)
    if pixels.shape[1:] != (PIXELS_PER_IMAGE,):
        raise ValueError(f"{pixels.shape[1]} pixel values per row, expected {PIXELS_PER_IMAGE}")
    return pixels


# The CSV's pixel fields, shared with forked worker processes by the pool's initializer.
_worker_rows: list[str] = []


def _share_pixel_rows(rows: list[str]) -> None:
    global _worker_rows
    _worker_rows = rows


def _parse_pixels_in_worker(bounds: tuple[int, int]) -> np.ndarray:
    start, stop = bounds
    return _parse_pixels(_worker_rows[start:stop])


def _read_csv_row_by_row(text: str, columns: tuple[str, ...], path: Path):
    """``(labels, splits, pixels)``, row by row with the csv module: any whitespace between
    pixel values, and an error naming the row for anything wrong."""
    index = {name: i for i, name in enumerate(columns)}
    labels, splits, pixels = [], [], []
    reader = csv.reader(io.StringIO(text))
    next(reader)  # the header, already checked
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue  # a blank line
        line = reader.line_num
        where = f"{path}, row {line - 1} (line {line})"
        if len(fields) != len(CSV_COLUMNS):
            raise DatasetError(f"{where}: expected 3 comma-separated fields (emotion,pixels,Usage)")
        emotion = fields[index["emotion"]].strip()
        if not (emotion.isascii() and emotion.isdigit() and int(emotion) < len(FER2013_CLASS_NAMES)):
            raise DatasetError(f"{where}: emotion {emotion!r} is not an integer 0-6")
        usage = fields[index["usage"]]
        if usage.strip() not in USAGES:
            raise DatasetError(
                f"{where}: unknown Usage {usage!r}; expected Training, PublicTest or PrivateTest"
            )
        values = fields[index["pixels"]].split()
        if len(values) != PIXELS_PER_IMAGE:
            raise DatasetError(
                f"{where}: {len(values)} pixel values, expected {PIXELS_PER_IMAGE} (48x48)"
            )
        bad = next((v for v in values if not (v.isascii() and v.isdigit()) or int(v) > 255), None)
        if bad is not None:
            raise DatasetError(f"{where}: pixel value {bad!r} is not an integer 0-255")
        labels.append(int(emotion))
        splits.append(USAGES[usage.strip()])
        pixels.append(np.array(values, dtype=np.uint8))
    pixels = np.stack(pixels) if pixels else np.empty((0, PIXELS_PER_IMAGE), np.uint8)
    return np.array(labels, np.int64), np.array(splits, dtype=object), pixels


DECODERS = {
    "fer-csv": _decode_csv,
    "image-folder": lambda source: images.decode_folder(
        "fer2013", source.path, split_of_image, FER2013_TEST_SPLITS),
    "image-zip": lambda source: images.decode_zip(
        "fer2013", source.path, split_of_image, FER2013_TEST_SPLITS),
}
