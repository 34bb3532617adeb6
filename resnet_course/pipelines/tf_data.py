"""The tf.data input path, for the TensorFlow backend (where it is the fastest feed).

The same batches as ``batches.ArrayBatches`` (the same policy, normalisation and labels),
built from TensorFlow ops in tf.data's own threads: augmentation works on whole batches and
overlaps the training step. Imported only when a TensorFlow-backend run asks for it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from resnet_course.pipelines.arrays import Normalization
from resnet_course.pipelines.augmentation import Augmentation

__all__ = ["augment_tensor", "cut_to_multiple", "eval_dataset", "normalize_tensor", "train_dataset"]


def augment_tensor(augmentation: Augmentation, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Augment a float batch ``[batch, height, width, channels]``; ``seed`` is a shape
    [2] integer tensor, so the same seed gives the same augmentation."""
    if augmentation.is_identity:
        return images
    shift_seed, zoom_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    )
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    max_shift, max_zoom = augmentation.max_shift, augmentation.max_zoom
    if max_shift or max_zoom:
        shifts = tf.random.stateless_uniform(
            [batch, 2], shift_seed, -max_shift, max_shift
        ) * tf.constant([height, width], tf.float32)
        if max_zoom:
            scales = tf.random.stateless_uniform([batch, 1], zoom_seed, 1 - max_zoom, 1 + max_zoom)
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
    if augmentation.horizontal_flip:
        flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if augmentation.crop:
        augmentation.check_fits(height, width)
        # A seed of its own, so that adding a crop leaves the shifts and flips as they were.
        crop_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 3)
        positions = tf.constant([height - augmentation.crop + 1, width - augmentation.crop + 1], tf.float32)
        corners = tf.cast(tf.floor(tf.random.stateless_uniform([batch, 2], crop_seed) * positions), tf.int64)
        window = tf.range(augmentation.crop, dtype=tf.int64)
        images = tf.gather(images, corners[:, :1] + window, axis=1, batch_dims=1)
        images = tf.gather(images, corners[:, 1:] + window, axis=2, batch_dims=1)
    return images


def scale_tensor(normalization: Normalization, images: tf.Tensor) -> tf.Tensor:
    images = tf.cast(images, tf.float32)
    return images if normalization.mode == "none" else images / 255.0


def standardize_tensor(normalization: Normalization, images: tf.Tensor) -> tf.Tensor:
    if normalization.mode != "standardize":
        return images
    mean = tf.constant(normalization.mean, tf.float32)
    return (images - mean) / tf.constant(normalization.std, tf.float32)


def normalize_tensor(normalization: Normalization, images: tf.Tensor) -> tf.Tensor:
    return standardize_tensor(normalization, scale_tensor(normalization, images))


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


def _encode(labels: tf.Tensor, num_classes: int | None) -> tf.Tensor:
    return tf.one_hot(labels, num_classes) if num_classes else labels


def eval_dataset(x: np.ndarray, y: np.ndarray | None, batch_size: int, *, normalization: Normalization,
                 num_classes: int | None = None) -> tf.data.Dataset:
    """Unshuffled, unaugmented batches over ``x`` (and ``y``), preprocessed and prefetched."""
    dataset = _batched(x, y, batch_size, shuffle_seed=None)
    if y is None:
        dataset = dataset.map(lambda images: normalize_tensor(normalization, images),
                              num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(
            lambda images, labels: (normalize_tensor(normalization, images), _encode(labels, num_classes)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, normalization: Normalization,
                  augmentation: Augmentation, num_classes: int | None, seed: int,
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """Shuffled (every epoch anew), augmented, preprocessed, prefetched training batches."""
    batches = _batched(x, y, batch_size, shuffle_seed=seed, drop_remainder=drop_remainder)
    # One stateless seed pair per batch, different every epoch yet reproducible.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def preprocess(batch, batch_seed):
        images, labels = batch
        images = scale_tensor(normalization, images)
        images = standardize_tensor(normalization, augment_tensor(augmentation, images, batch_seed))
        return images, _encode(labels, num_classes)

    return (
        tf.data.Dataset.zip((batches, seeds))
        .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def cut_to_multiple(dataset: tf.data.Dataset, multiple: int) -> tf.data.Dataset:
    """Every batch cut to a multiple of ``multiple`` (empty ones dropped); as is for 1."""
    if multiple == 1:
        return dataset

    def size(batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0]

    def cut(*batch):
        keep = size(batch) // multiple * multiple
        kept = tf.nest.map_structure(lambda tensor: tensor[:keep], batch)
        return kept if len(batch) > 1 else kept[0]

    return dataset.map(cut).filter(lambda *batch: size(batch) > 0)
