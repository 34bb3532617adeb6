"""The array side of the input pipelines: checks, the validation split, normalisation statistics."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from resnet_course.datasets import CLASS_NAMES, IMAGE_SHAPES

__all__ = ["Normalization", "NormalizationMode", "check_arrays", "one_hot", "split_validation"]

NormalizationMode = Literal["scale", "standardize", "none"]


def split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float = 0.1, *, seed: int = 0, stratify: bool = True
):
    """Split ``(x, y)`` into ``(x_train, y_train), (x_val, y_val)``.

    The same seed always gives the same split; with ``stratify`` each class contributes the
    same fraction of its images. Both parts keep the original order."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    rng = np.random.default_rng(seed)
    if stratify:
        chosen = []
        for label in np.unique(y):
            members = np.flatnonzero(y == label)
            chosen.append(rng.permutation(members)[: int(round(fraction * len(members)))])
        validation = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    else:
        validation = np.sort(rng.permutation(len(y))[: int(round(fraction * len(y)))])
    training = np.setdiff1d(np.arange(len(y)), validation, assume_unique=True)
    return (x[training], y[training]), (x[validation], y[validation])


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become model inputs: ``"scale"`` to [0, 1], ``"standardize"`` to
    zero mean and unit variance per channel (``mean`` and ``std`` of the [0, 1] training
    pixels), or ``"none"`` (float32 in [0, 255])."""

    mode: NormalizationMode = "scale"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def fit(cls, mode: NormalizationMode, x_train: np.ndarray) -> "Normalization":
        if mode not in ("scale", "standardize", "none"):
            raise ValueError(f"normalization must be 'scale', 'standardize' or 'none', got {mode!r}")
        if mode != "standardize":
            return cls(mode)
        channels = x_train.shape[-1]
        total = np.zeros(channels)
        squares = np.zeros(channels)
        # In chunks: a float64 copy of all of CIFAR-10 would take over a gigabyte.
        for start in range(0, len(x_train), 4096):
            chunk = x_train[start:start + 4096].reshape(-1, channels).astype(np.float64) / 255
            total += chunk.sum(axis=0)
            squares += np.square(chunk).sum(axis=0)
        count = max(1, x_train.size // channels)
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
        return cls(mode, tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def scale(self, images: np.ndarray) -> np.ndarray:
        """uint8 -> float32, in [0, 1] unless the mode is ``"none"``."""
        images = np.asarray(images, np.float32)
        return images if self.mode == "none" else images / np.float32(255.0)

    def standardize(self, images: np.ndarray) -> np.ndarray:
        """Apply the per-channel standardisation to scaled images (a no-op otherwise)."""
        if self.mode != "standardize":
            return images
        return (images - np.float32(self.mean)) / np.float32(self.std)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.standardize(self.scale(images))


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]


def check_arrays(name: str, x: np.ndarray, y: np.ndarray | None, what: str) -> None:
    """Raise ValueError, saying what is wrong, unless ``x`` (and ``y``) fit dataset ``name``."""
    expected = IMAGE_SHAPES[name]
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{what}: images have shape {x.shape}, expected (n, {', '.join(map(str, expected))})")
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: images have dtype {x.dtype}, expected uint8 as the loaders return")
    if y is not None:
        if len(y) != len(x):
            raise ValueError(f"{what}: {len(x)} images but {len(y)} labels")
        num_classes = len(CLASS_NAMES[name])
        if len(y) and (np.min(y) < 0 or np.max(y) >= num_classes):
            raise ValueError(f"{what}: labels must be class indices 0-{num_classes - 1}")
