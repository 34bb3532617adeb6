"""Swap a model's layers for faster subclasses for training, and back to Keras' own for saving.

The training-speed layers (``resnet_course.fused_batchnorm``, ``resnet_course.torch_kernels``)
subclass a Keras layer and keep its name, config and weights; only the arithmetic's kernels
differ. A model is built from plain Keras layers (what students write and the grader
compares), swapped for training, and swapped back before it is saved, so that a saved model
loads with Keras alone.
"""

from __future__ import annotations

from typing import Callable, Iterator

import keras


def swap_layers(model: keras.Model, replacement: Callable[[keras.layers.Layer], type | None]) -> keras.Model:
    """A copy of ``model`` (nested models included) in which every layer for which
    ``replacement(layer)`` returns a class is rebuilt as that class from its config; same weights."""

    def clone(layer):
        target = replacement(layer) or layer.__class__
        return target.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


_TRAINING_LAYERS: set[type] = set()


def training_layer(cls: type) -> type:
    """Class decorator: ``cls`` is a training-speed subclass of a Keras layer, which
    ``with_keras_layers`` turns back into that Keras layer."""
    _TRAINING_LAYERS.add(cls)
    return cls


def keras_base(cls: type) -> type:
    """The Keras layer class that ``cls`` (one of the training layers) subclasses."""
    return next(base for base in cls.__mro__ if base.__module__.startswith("keras."))


def is_training_layer(layer: keras.layers.Layer) -> bool:
    """True for a training-speed swap of a Keras layer (a class marked with ``training_layer``)."""
    return type(layer) in _TRAINING_LAYERS


def with_keras_layers(model: keras.Model) -> keras.Model:
    """``model`` with every training-speed layer turned back into its Keras class (a copy; for
    saving), or ``model`` itself when it has none."""
    if not any(is_training_layer(layer) for layer in all_layers(model)):
        return model
    return swap_layers(model, lambda layer: keras_base(type(layer)) if is_training_layer(layer) else None)


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model``, the layers of nested models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
