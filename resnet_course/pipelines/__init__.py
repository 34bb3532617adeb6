"""Input pipelines for the course's datasets, on every Keras backend.

    from resnet_course.datasets import load_cifar10
    from resnet_course.pipelines import make_datasets

    (x_train, y_train), (x_test, y_test), class_names = load_cifar10()
    data = make_datasets("cifar10", x_train, y_train, batch_size=128)
    model.fit(data.train, validation_data=data.validation, epochs=30)
    model.evaluate(data.eval_dataset(x_test, y_test))

``make_datasets`` takes a deterministic, stratified validation split from the training
data, scales the images to [0, 1] (or standardises them), augments the training batches
with the dataset's policy (``augmentation_for``), and batches them. Two engines serve the
same batches: ``"tf.data"`` (``tf_data``: TensorFlow ops in tf.data's threads, overlapping
the training step; the fastest feed on the TensorFlow backend) and ``"numpy"``
(``batches.ArrayBatches``, a ``keras.utils.PyDataset``: no TensorFlow import, for JAX and
PyTorch). ``engine="auto"`` picks tf.data on the TensorFlow backend and NumPy otherwise.
Modules: ``augmentation`` (the policies), ``arrays`` (split, normalisation), ``batches``,
``tf_data``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

from resnet_course.datasets import CLASS_NAMES
from resnet_course.pipelines.arrays import (
    Normalization, NormalizationMode, check_arrays, split_validation,
)
from resnet_course.pipelines.augmentation import (
    AUGMENTATIONS, Augmentation, augmentation_for, dataset_name,
)

__all__ = [
    "AUGMENTATIONS",
    "ENGINES",
    "Augmentation",
    "InputPipelines",
    "Normalization",
    "augmentation_for",
    "choose_engine",
    "make_datasets",
    "make_eval_dataset",
    "split_validation",
]

Engine = Literal["auto", "tf.data", "numpy"]
ENGINES = ("auto", "tf.data", "numpy")


def choose_engine(engine: Engine = "auto") -> str:
    """``tf.data`` or ``numpy``: ``auto`` is tf.data on Keras' TensorFlow backend, else NumPy."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    import keras

    return "tf.data" if keras.backend.backend() == "tensorflow" else "numpy"


@dataclasses.dataclass(frozen=True)
class InputPipelines:
    """What ``make_datasets`` builds.

    ``train`` yields augmented, shuffled batches ``(images, labels)``, reshuffled every
    epoch; ``validation`` (None when there is no validation data) and ``eval_dataset(...)``
    yield the same preprocessing without augmentation. Each is a ``tf.data.Dataset`` or a
    ``keras.utils.PyDataset`` (``engine``); ``model.fit`` and ``model.predict`` take both.
    ``x_val``/``y_val`` are the validation arrays as loaded (uint8, int64). Labels are int64
    class indices, or float32 one-hot vectors when ``one_hot``."""

    train: Any
    validation: Any
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
    engine: str = "numpy"

    def eval_dataset(self, x: np.ndarray, y: np.ndarray | None = None, *, batch_size: int | None = None):
        """A pipeline for ``x`` (and ``y``) preprocessed exactly like the validation data."""
        return make_eval_dataset(
            x, y, batch_size=batch_size or self.batch_size, normalization=self.normalization,
            one_hot=self.one_hot, num_classes=self.num_classes, engine=self.engine,
        )


def make_eval_dataset(
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = 32,
    normalization: Normalization | NormalizationMode = "scale",
    one_hot: bool = False,
    num_classes: int | None = None,
    engine: Engine = "auto",
    batch_multiple: int = 1,
):
    """Unshuffled, unaugmented batches over ``x`` (and ``y``), preprocessed. Pass the training
    pipelines' ``normalization`` so the statistics match. ``batch_multiple``: cut every batch
    to a multiple of this (data-parallel JAX needs batches that divide among its devices)."""
    if not isinstance(normalization, Normalization):
        if normalization == "standardize":
            raise ValueError("pass the fitted Normalization from make_datasets(...).normalization")
        normalization = Normalization.fit(normalization, x)
    if one_hot and num_classes is None:
        raise ValueError("one_hot labels need num_classes")
    classes = num_classes if one_hot else None
    if choose_engine(engine) == "tf.data":
        from resnet_course.pipelines import tf_data

        dataset = tf_data.eval_dataset(x, y, batch_size, normalization=normalization, num_classes=classes)
        return tf_data.cut_to_multiple(dataset, batch_multiple)
    from resnet_course.pipelines.batches import ArrayBatches

    return ArrayBatches(x, y, batch_size, normalization=normalization, num_classes=classes,
                        batch_multiple=batch_multiple)


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
    engine: Engine = "auto",
    batch_multiple: int = 1,
) -> InputPipelines:
    """Training and validation pipelines for dataset ``name`` from the loaders' arrays.

    The validation set is ``validation_data`` when given (e.g. FER-2013's PublicTest),
    else a ``validation_fraction`` of ``x_train`` split off with ``split_validation`` (by
    ``seed``, stratified). ``augment`` is True for ``augmentation_for(name)``, False for
    none, or an ``Augmentation``. ``normalization`` statistics come from the training part
    only. The same ``seed`` gives the same split, shuffling and augmentation (within one
    engine: the two draw their random numbers differently). ``engine``: see the module.
    ``batch_multiple``: every batch is cut to a multiple of it (``DevicePlan.batch_multiple``)."""
    name = dataset_name(name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    engine = choose_engine(engine)
    check_arrays(name, x_train, y_train, "x_train/y_train")
    if validation_data is not None:
        x_val, y_val = validation_data
        check_arrays(name, x_val, y_val, "validation_data")
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
    classes = num_classes if one_hot else None

    if engine == "tf.data":
        from resnet_course.pipelines import tf_data

        train = tf_data.cut_to_multiple(
            tf_data.train_dataset(x_fit, y_fit, batch_size, normalization=norm, augmentation=augmentation,
                                  num_classes=classes, seed=seed, drop_remainder=drop_remainder),
            batch_multiple)
    else:
        from resnet_course.pipelines.batches import ArrayBatches

        train = ArrayBatches(x_fit, y_fit, batch_size, normalization=norm, augmentation=augmentation,
                             num_classes=classes, shuffle_seed=seed, drop_remainder=drop_remainder,
                             batch_multiple=batch_multiple)
    validation = None
    if len(x_val):
        validation = make_eval_dataset(x_val, y_val, batch_size=batch_size, normalization=norm,
                                       one_hot=one_hot, num_classes=num_classes, engine=engine,
                                       batch_multiple=batch_multiple)
    drops_last = drop_remainder or len(x_fit) % batch_size < batch_multiple
    steps = len(x_fit) // batch_size if drops_last else -(-len(x_fit) // batch_size)
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
        engine=engine,
    )
