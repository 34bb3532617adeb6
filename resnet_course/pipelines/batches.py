"""The backend-neutral input path: batches as NumPy arrays from a ``keras.utils.PyDataset``.

Keras feeds a PyDataset to TensorFlow, JAX and PyTorch alike, without importing TensorFlow.
Every batch is a function of (seed, epoch, batch index) alone: the same seed gives the same
shuffling and augmentation, and each epoch a new one, whatever order batches are asked for.
"""

from __future__ import annotations

import keras
import numpy as np

from resnet_course.pipelines.arrays import Normalization, one_hot
from resnet_course.pipelines.augmentation import Augmentation

__all__ = ["ArrayBatches"]


class ArrayBatches(keras.utils.PyDataset):
    """Batches of ``(images, labels)`` (or images alone when ``y`` is None) from in-memory arrays.

    Images come out float32, normalised by ``normalization``; with ``augmentation`` and
    ``shuffle_seed`` set, each epoch draws a new order and new augmentations (``on_epoch_end``
    moves to the next epoch; Keras calls it after every epoch of ``fit``). Labels are int64
    class indices, or float32 one-hot rows when ``num_classes`` is given."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, batch_size: int, *,
                 normalization: Normalization, augmentation: Augmentation | None = None,
                 num_classes: int | None = None, shuffle_seed: int | None = None,
                 drop_remainder: bool = False, batch_multiple: int = 1):
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y = x, None if y is None else np.asarray(y, np.int64)
        self.batch_size = batch_size
        self.normalization = normalization
        self.augmentation = augmentation if augmentation and not augmentation.is_identity else None
        self.num_classes = num_classes
        self.shuffle_seed = shuffle_seed
        self.drop_remainder = drop_remainder
        # Data-parallel JAX splits every batch evenly among its devices: batches are cut to a
        # multiple of the device count (at most multiple - 1 images left out of a pass).
        self.batch_multiple = batch_multiple
        self.epoch = 0
        self._order = self._epoch_order()

    def __len__(self) -> int:
        if self.drop_remainder or len(self.x) % self.batch_size < self.batch_multiple:
            return len(self.x) // self.batch_size
        return -(-len(self.x) // self.batch_size)

    def _epoch_order(self) -> np.ndarray:
        if self.shuffle_seed is None:
            return np.arange(len(self.x))
        return np.random.default_rng([self.shuffle_seed, self.epoch]).permutation(len(self.x))

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        # Sorted indices read the arrays in memory order; the batch's order doesn't matter.
        chosen = np.sort(self._order[index * self.batch_size:(index + 1) * self.batch_size])
        chosen = chosen[:len(chosen) - len(chosen) % self.batch_multiple]
        images = self.normalization.scale(self.x[chosen])
        if self.augmentation is not None:
            seed = [self.shuffle_seed or 0, self.epoch, index]
            images = self.augmentation.apply(images, np.random.default_rng(seed))
        images = self.normalization.standardize(images)
        if self.y is None:
            return images
        labels = self.y[chosen]
        return images, (one_hot(labels, self.num_classes) if self.num_classes else labels)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._epoch_order()

    def mirrored(self) -> "ArrayBatches":
        """The same batches of the horizontally mirrored images (unshuffled, unaugmented)."""
        return ArrayBatches(self.x[:, :, ::-1], self.y, self.batch_size, normalization=self.normalization,
                            num_classes=self.num_classes, drop_remainder=self.drop_remainder,
                            batch_multiple=self.batch_multiple)
