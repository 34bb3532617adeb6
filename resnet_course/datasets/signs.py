"""SIGNS: hand signs for the digits 0-5 (the original course's ``train_signs.h5`` and
``test_signs.h5``), read with h5py. The files are already arrays, so they are read
directly, never cached."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from resnet_course.datasets.core import (
    IMAGE_SHAPES,
    SIGNS_CLASS_NAMES,
    DatasetError,
    DatasetSource,
    as_labels,
    check_images,
    first_line,
    splits_of,
)
from resnet_course.datasets.download import find_or_fetch


def load_signs(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, cache: bool = True
):
    """SIGNS: hand signs for the digits 0-5, 1080 training and 120 test images, 64x64 RGB.

    Returns ``(x_train, y_train), (x_test, y_test), class_names``. ``download=False`` raises
    instead of downloading a missing copy; ``cache`` is accepted for symmetry with the
    other loaders (the HDF5 files are read directly)."""
    arrays, _ = read_arrays(find_or_fetch("signs", data_dir, download), use_cache=cache)
    splits = splits_of(arrays)
    return splits["train"], splits["test"], list(SIGNS_CLASS_NAMES)


def read_arrays(source: DatasetSource, *, use_cache: bool = True):
    """``({"x_train": .., "y_train": .., "x_test": .., "y_test": ..}, None)``: the HDF5
    files hold arrays already, so there is no cache entry."""
    arrays = {}
    for split in ("train", "test"):
        x, y = _read_h5(source.path / f"{split}_signs.h5", split)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    return arrays, None


def _read_h5(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(
            f"{path} is not a readable HDF5 file ({first_line(exc)}): it may be truncated "
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
                    f"{path}: cannot read {key!r} ({first_line(exc)}); the file may be truncated"
                ) from None
        if "list_classes" in h5:
            classes = np.asarray(h5["list_classes"][()]).reshape(-1)
            if classes.tolist() != list(range(len(SIGNS_CLASS_NAMES))):
                raise DatasetError(
                    f"{path}: list_classes is {classes.tolist()}, expected the digits 0-5"
                )
    images = np.asarray(arrays[0])
    check_images(images, f"{path} ['{split}_set_x']", IMAGE_SHAPES["signs"])
    labels = as_labels(arrays[1], f"{path} ['{split}_set_y']", len(SIGNS_CLASS_NAMES), len(images))
    return images, labels
