"""Any dataset by name: ``load_dataset``, and ``describe_dataset`` (what
``resnet-course data info`` prints: the source, each split's shapes and per-class counts,
and the cache entry)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from resnet_course.datasets import cifar10, fer2013, signs
from resnet_course.datasets.core import (
    CLASS_NAMES,
    DISPLAY_NAMES,
    DatasetSource,
    check_name,
)
from resnet_course.datasets.download import find_or_fetch

# The module that reads each dataset; each has load_<name> and read_arrays(source).
MODULES = {"signs": signs, "cifar10": cifar10, "fer2013": fer2013}
LOADERS = {
    "signs": signs.load_signs,
    "cifar10": cifar10.load_cifar10,
    "fer2013": fer2013.load_fer2013,
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options):
    """``load_signs``, ``load_cifar10`` or ``load_fer2013`` by name, with their options."""
    return LOADERS[check_name(name)](data_dir, **options)


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
    name = check_name(name)
    source = find_or_fetch(name, data_dir, download)
    arrays, entry = MODULES[name].read_arrays(source, use_cache=True)
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
