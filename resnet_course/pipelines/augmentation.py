"""The training augmentations: random shifts, zoom, horizontal flips and crops, per dataset.

One ``Augmentation`` describes a policy; ``apply`` runs it on a NumPy batch (the input path
of every backend) and ``resnet_course.pipelines.tf_data`` runs the same policy as TensorFlow
ops inside tf.data. Both sample the same geometry: a pixel shift (whole pixels without zoom),
a zoom about the shifted centre, a mirror, with black where the image moved in from outside,
and optionally a random crop of that.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from resnet_course.datasets import DATASET_NAMES

__all__ = ["AUGMENTATIONS", "Augmentation", "augmentation_for", "dataset_name"]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A random geometric augmentation, drawn independently for each image of a batch.

    ``max_shift``: the largest translation, as a fraction of height and width (0.125 on a
    32-pixel image is CIFAR-10's classic pad-4-and-crop). Without zoom the shift is a whole
    number of pixels, so pixels are moved, not blurred. ``max_zoom``: the largest zoom in or
    out, as a fraction (0.1 draws a scale in [0.9, 1.1]). ``horizontal_flip``: mirror half
    the images. Areas shifted in from outside the image are black. ``crop``: then cut a
    random ``crop`` x ``crop`` window (whole pixels, anywhere inside the image) out of each
    image, so the batch comes out smaller than it went in; 0 keeps whole images. A network
    with global pooling trains on the windows and is tested on whole images."""

    max_shift: float = 0.0
    max_zoom: float = 0.0
    horizontal_flip: bool = False
    crop: int = 0

    def __post_init__(self):
        if not 0 <= self.max_shift < 1 or not 0 <= self.max_zoom < 1:
            raise ValueError(
                f"max_shift and max_zoom must be fractions in [0, 1), got {self.max_shift} "
                f"and {self.max_zoom}"
            )
        if isinstance(self.crop, bool) or not isinstance(self.crop, (int, np.integer)) or self.crop < 0:
            raise ValueError(f"crop must be a window size in pixels (an int >= 0; 0: no crop), got {self.crop!r}")

    @property
    def is_identity(self) -> bool:
        return self.max_shift == 0 and self.max_zoom == 0 and not self.horizontal_flip and not self.crop

    def check_fits(self, height: int, width: int) -> None:
        """Fail clearly when the crop window is larger than the images."""
        if self.crop > min(height, width):
            raise ValueError(
                f"a {self.crop}x{self.crop} crop does not fit in {height}x{width} images: "
                f"use crop <= {min(height, width)}, or 0 for whole images"
            )

    def __call__(self, images: np.ndarray, seed) -> np.ndarray:
        """Augment a float NumPy batch ``[batch, height, width, channels]`` reproducibly: the
        same ``seed`` (an int or a sequence of ints) gives the same augmentation. The tf.data
        engine's version is ``resnet_course.pipelines.tf_data.augment_tensor``."""
        return self.apply(np.asarray(images, np.float32), np.random.default_rng(seed))

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a float32 NumPy batch with random numbers from ``rng`` (a new array)."""
        if self.is_identity:
            return images
        batch, height, width = images.shape[:3]
        augmented = images
        if self.max_shift or self.max_zoom:
            shifts = rng.uniform(-self.max_shift, self.max_shift, (batch, 2)) * (height, width)
            if self.max_zoom:
                scales = rng.uniform(1 - self.max_zoom, 1 + self.max_zoom, (batch, 1))
            else:
                shifts = np.round(shifts)
                scales = np.ones((batch, 1))
            augmented = _shift_and_zoom(images, shifts, scales)
        if self.horizontal_flip:
            flip = rng.uniform(size=batch) < 0.5
            if augmented is images:
                augmented = images.copy()  # never change the caller's batch
            augmented[flip] = augmented[flip, :, ::-1]
        if self.crop:
            self.check_fits(height, width)
            tops = rng.integers(0, height - self.crop + 1, batch)
            lefts = rng.integers(0, width - self.crop + 1, batch)
            window = np.arange(self.crop)
            rows = (tops[:, None] + window)[:, :, None]
            cols = (lefts[:, None] + window)[:, None, :]
            augmented = augmented[np.arange(batch)[:, None, None], rows, cols]
        return augmented


def _shift_and_zoom(images: np.ndarray, shifts: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Resample each image at ``centre + shift`` with zoom ``scale`` (bilinear, black outside).

    Output pixel i reads input row ``(1 - 1/scale) * (size - 1) / 2 + shift + i / scale``,
    the same sampling as ``tf.image.crop_and_resize`` with the boxes tf_data draws."""
    batch, height, width, _ = images.shape
    if np.all(scales == 1) and np.all(shifts == np.round(shifts)):
        return _shift_whole_pixels(images, shifts.astype(np.int64))
    rows = _sample_positions(height, shifts[:, 0:1], scales)  # [batch, height]
    cols = _sample_positions(width, shifts[:, 1:2], scales)  # [batch, width]
    row0, row_weight, row_inside = _neighbours(rows, height)
    col0, col_weight, col_inside = _neighbours(cols, width)
    b = np.arange(batch)[:, None, None]
    out = np.zeros_like(images)
    for dy, wy in ((0, 1 - row_weight), (1, row_weight)):
        r = np.minimum(row0 + dy, height - 1)[:, :, None]
        for dx, wx in ((0, 1 - col_weight), (1, col_weight)):
            c = np.minimum(col0 + dx, width - 1)[:, None, :]
            weight = (wy[:, :, None] * wx[:, None, :]).astype(images.dtype)
            out += weight[..., None] * images[b, r, c]
    inside = row_inside[:, :, None] & col_inside[:, None, :]
    out[~inside] = 0.0
    return out


def _shift_whole_pixels(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Output pixel (i, j) is input pixel (i + dy, j + dx), black outside: one gather."""
    batch, height, width, _ = images.shape
    rows = np.arange(height)[None, :] + shifts[:, 0:1]
    cols = np.arange(width)[None, :] + shifts[:, 1:2]
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    b = np.arange(batch)[:, None, None]
    out = images[b, np.clip(rows, 0, height - 1)[:, :, None], np.clip(cols, 0, width - 1)[:, None, :]]
    out[~inside] = 0.0
    return out


def _sample_positions(size: int, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (1 - 1 / scale) * (size - 1) / 2 + shift + np.arange(size)[None, :] / scale


def _neighbours(positions: np.ndarray, size: int):
    """The lower neighbour index, the upper one's weight, and whether the position is inside."""
    inside = (positions >= 0) & (positions <= size - 1)
    clipped = np.clip(positions, 0, size - 1)
    lower = np.floor(clipped).astype(np.int64)
    return lower, clipped - lower, inside


# Per dataset: CIFAR-10 and FER-2013 are mirror-symmetric; a mirrored hand sign is a
# different hand, so SIGNS gets small shifts and zoom instead.
AUGMENTATIONS = {
    "cifar10": Augmentation(max_shift=4 / 32, horizontal_flip=True),
    "fer2013": Augmentation(max_shift=5 / 48, horizontal_flip=True),
    "signs": Augmentation(max_shift=0.1, max_zoom=0.1),
}


def augmentation_for(name: str) -> Augmentation:
    """The training augmentation policy for dataset ``name``."""
    return AUGMENTATIONS[dataset_name(name)]


def dataset_name(name: str) -> str:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    return name
