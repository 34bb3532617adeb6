"""tf.data input pipelines for the course's datasets.

    from resnet_course.datasets import load_cifar10
    from resnet_course.pipelines import make_datasets

    (x_train, y_train), (x_test, y_test), class_names = load_cifar10()
    data = make_datasets("cifar10", x_train, y_train, batch_size=128)
    model.fit(data.train, validation_data=data.validation, epochs=30)
    model.evaluate(data.eval_dataset(x_test, y_test))

``make_datasets`` takes a deterministic, stratified validation split from the training
data, scales the images to [0, 1] (or standardises them), augments the training batches
with the dataset's policy (``augmentation_for``), and batches and prefetches so that the
model never waits on input. Everything after the uint8 arrays runs as TensorFlow ops in
tf.data's own threads; augmentation works on whole batches.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import tensorflow as tf

from resnet_course.datasets import CLASS_NAMES, DATASET_NAMES, IMAGE_SHAPES

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "InputPipelines",
    "Normalization",
    "augmentation_for",
    "make_datasets",
    "make_eval_dataset",
    "split_validation",
]

NormalizationMode = Literal["scale", "standardize", "none"]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """A random geometric augmentation, drawn independently for each image of a batch.

    ``max_shift``: the largest translation, as a fraction of height and width (0.125 on a
    32-pixel image is CIFAR-10's classic pad-4-and-crop). Without zoom the shift is a whole
    number of pixels, so pixels are moved, not blurred. ``max_zoom``: the largest zoom in or
    out, as a fraction (0.1 draws a scale in [0.9, 1.1]). ``horizontal_flip``: mirror half
    the images. Areas shifted in from outside the image are black."""

    max_shift: float = 0.0
    max_zoom: float = 0.0
    horizontal_flip: bool = False

    def __post_init__(self):
        if not 0 <= self.max_shift < 1 or not 0 <= self.max_zoom < 1:
            raise ValueError(
                f"max_shift and max_zoom must be fractions in [0, 1), got {self.max_shift} "
                f"and {self.max_zoom}"
            )

    @property
    def is_identity(self) -> bool:
        return self.max_shift == 0 and self.max_zoom == 0 and not self.horizontal_flip

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Augment a float batch ``[batch, height, width, channels]``; ``seed`` is a shape
        [2] integer tensor, so the same seed gives the same augmentation."""
        if self.is_identity:
            return images
        shift_seed, zoom_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
        )
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        if self.max_shift or self.max_zoom:
            shifts = tf.random.stateless_uniform(
                [batch, 2], shift_seed, -self.max_shift, self.max_shift
            ) * tf.constant([height, width], tf.float32)
            if self.max_zoom:
                scales = tf.random.stateless_uniform(
                    [batch, 1], zoom_seed, 1 - self.max_zoom, 1 + self.max_zoom
                )
            else:
                shifts = tf.round(shifts)
                scales = tf.ones([batch, 1])
            # crop_and_resize's box coordinate 1.0 is the last pixel, hence size - 1.
            centres = 0.5 + shifts / tf.constant([height - 1, width - 1], tf.float32)
            half_extent = 0.5 / scales
            boxes = tf.concat([centres - half_extent, centres + half_extent], axis=1)
            images = tf.image.crop_and_resize(
                images, boxes, tf.range(batch), [height, width], extrapolation_value=0.0
            )
        if self.horizontal_flip:
            flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        return images


# Per dataset: CIFAR-10 and FER-2013 are mirror-symmetric; a mirrored hand sign is a
# different hand, so SIGNS gets small shifts and zoom instead.
AUGMENTATIONS = {
    "cifar10": Augmentation(max_shift=4 / 32, horizontal_flip=True),
    "fer2013": Augmentation(max_shift=5 / 48, horizontal_flip=True),
    "signs": Augmentation(max_shift=0.1, max_zoom=0.1),
}


def augmentation_for(name: str) -> Augmentation:
    """The training augmentation policy for dataset ``name``."""
    return AUGMENTATIONS[_dataset_name(name)]


def _dataset_name(name: str) -> str:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    return name


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

    def scale(self, images: tf.Tensor) -> tf.Tensor:
        """uint8 -> float32, in [0, 1] unless the mode is ``"none"``."""
        images = tf.cast(images, tf.float32)
        return images if self.mode == "none" else images / 255.0

    def standardize(self, images: tf.Tensor) -> tf.Tensor:
        """Apply the per-channel standardisation to scaled images (a no-op otherwise)."""
        if self.mode != "standardize":
            return images
        return (images - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return self.standardize(self.scale(images))


@dataclasses.dataclass(frozen=True)
class InputPipelines:
    """What ``make_datasets`` builds.

    ``train`` yields augmented, shuffled batches ``(images, labels)``, reshuffled every
    epoch; ``validation`` (None when there is no validation data) and ``eval_dataset(...)``
    yield the same preprocessing without augmentation. ``x_val``/``y_val`` are the
    validation arrays as loaded (uint8, int64). Labels are int64 class indices, or float32
    one-hot vectors when ``one_hot``."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    x_val: np.ndarray
    y_val: np.ndarray
    normalization: Normalization
    augmentation: Augmentation
    batch_size: int
    num_classes: int
    one_hot: bool
    train_size: int
    steps_per_epoch: int
    validation_steps: int

    def eval_dataset(self, x: np.ndarray, y: np.ndarray | None = None, *, batch_size: int | None = None):
        """A pipeline for ``x`` (and ``y``) preprocessed exactly like the validation data."""
        return make_eval_dataset(
            x, y, batch_size=batch_size or self.batch_size, normalization=self.normalization,
            one_hot=self.one_hot, num_classes=self.num_classes,
        )


def _check_arrays(name: str, x: np.ndarray, y: np.ndarray | None, what: str) -> None:
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


def _batched(x: np.ndarray, y: np.ndarray | None, batch_size: int, *, shuffle_seed: int | None,
             drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of ``(x, y)`` gathered from in-memory tensors by index, so that shuffling
    moves indices rather than images and every batch is one gather."""
    images = tf.constant(x)
    labels = tf.constant(np.asarray(y, np.int64)) if y is not None else None
    indices = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        indices = indices.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    indices = indices.batch(batch_size, drop_remainder=drop_remainder)
    if labels is None:
        return indices.map(lambda i: tf.gather(images, i))
    return indices.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)))


def make_eval_dataset(
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = 32,
    normalization: Normalization | NormalizationMode = "scale",
    one_hot: bool = False,
    num_classes: int | None = None,
) -> tf.data.Dataset:
    """An unshuffled, unaugmented pipeline over ``x`` (and ``y``): batched, preprocessed,
    prefetched. Pass the training pipelines' ``normalization`` so the statistics match."""
    if not isinstance(normalization, Normalization):
        if normalization == "standardize":
            raise ValueError("pass the fitted Normalization from make_datasets(...).normalization")
        normalization = Normalization.fit(normalization, x)
    if one_hot and num_classes is None:
        raise ValueError("one_hot labels need num_classes")
    dataset = _batched(x, y, batch_size, shuffle_seed=None)
    if y is None:
        dataset = dataset.map(normalization, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(
            lambda images, labels: (normalization(images), _encode(labels, one_hot, num_classes)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _encode(labels: tf.Tensor, one_hot: bool, num_classes: int | None) -> tf.Tensor:
    return tf.one_hot(labels, num_classes) if one_hot else labels


def make_datasets(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    batch_size: int = 32,
    validation_fraction: float = 0.1,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    augment: bool | Augmentation = True,
    normalization: NormalizationMode = "scale",
    one_hot: bool = False,
    seed: int = 0,
    stratify: bool = True,
    drop_remainder: bool = False,
) -> InputPipelines:
    """Training and validation pipelines for dataset ``name`` from the loaders' arrays.

    The validation set is ``validation_data`` when given (e.g. FER-2013's PublicTest),
    else a ``validation_fraction`` of ``x_train`` split off with ``split_validation`` (by
    ``seed``, stratified). ``augment`` is True for ``augmentation_for(name)``, False for
    none, or an ``Augmentation``. ``normalization`` statistics come from the training part
    only. The same ``seed`` gives the same split, shuffling and augmentation."""
    name = _dataset_name(name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    _check_arrays(name, x_train, y_train, "x_train/y_train")
    if validation_data is not None:
        x_val, y_val = validation_data
        _check_arrays(name, x_val, y_val, "validation_data")
        x_fit, y_fit = x_train, np.asarray(y_train)
    else:
        (x_fit, y_fit), (x_val, y_val) = split_validation(
            x_train, y_train, validation_fraction, seed=seed, stratify=stratify
        )
    if len(x_fit) == 0:
        raise ValueError("no training images left after the validation split")
    if augment is True:
        augmentation = augmentation_for(name)
    elif augment is False or augment is None:
        augmentation = Augmentation()
    else:
        augmentation = augment
    num_classes = len(CLASS_NAMES[name])
    norm = Normalization.fit(normalization, x_fit)

    batches = _batched(x_fit, y_fit, batch_size, shuffle_seed=seed, drop_remainder=drop_remainder)
    # One stateless seed pair per batch, different every epoch yet reproducible.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def preprocess(batch, batch_seed):
        images, labels = batch
        images = norm.standardize(augmentation(norm.scale(images), batch_seed))
        return images, _encode(labels, one_hot, num_classes)

    train = (
        tf.data.Dataset.zip((batches, seeds))
        .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = None
    if len(x_val):
        validation = make_eval_dataset(
            x_val, y_val, batch_size=batch_size, normalization=norm, one_hot=one_hot,
            num_classes=num_classes,
        )
    steps = len(x_fit) // batch_size if drop_remainder else -(-len(x_fit) // batch_size)
    return InputPipelines(
        train=train,
        validation=validation,
        x_val=x_val,
        y_val=np.asarray(y_val, np.int64),
        normalization=norm,
        augmentation=augmentation,
        batch_size=batch_size,
        num_classes=num_classes,
        one_hot=one_hot,
        train_size=len(x_fit),
        steps_per_epoch=steps,
        validation_steps=-(-len(x_val) // batch_size),
    )
