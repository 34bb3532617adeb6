"""Swap a model's layers for faster subclasses for training, and back to Keras' own for saving.

The training-speed layers (``resnet_course.fused_batchnorm``, ``resnet_course.torch_kernels``)
subclass a Keras layer and keep its name, config and weights; only the arithmetic's kernels
differ. A model is built from plain Keras layers (what students write and the grader
compares), swapped for training, and swapped back before it is saved, so that a saved model
loads with Keras alone.

``DirectCall`` lets those layers skip ``Layer.__call__``'s bookkeeping on PyTorch, where a
step runs every layer eagerly from Python (see its docstring).
"""

from __future__ import annotations

from typing import Callable, Iterator

import keras
from keras.src.backend import get_autocast_scope, get_keras_mask
from keras.src.backend.common.stateless_scope import in_stateless_scope
from keras.src.backend.common.symbolic_scope import in_symbolic_scope


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


class DirectCall:
    """Mixin for training layers: on PyTorch, a call that needs none of ``Layer.__call__``'s
    bookkeeping goes straight to the layer's ``call``.

    Keras' ``__call__`` converts the inputs, binds the call signature, resolves the training
    flag and masks, opens name and autocast scopes and runs ``torch.nn.Module``'s hooks:
    0.2-0.3 ms a layer on a 2-core CPU, which the TensorFlow and JAX backends pay once, when
    they trace a step, and PyTorch pays on every layer of every step (ResNet-50: 170 layers).
    The direct call applies when the layer is built and gets one argument of concrete float
    tensors in its compute dtype, unmasked, with ``training`` given if its ``call`` takes it;
    and with no autocasting (mixed precision), stateless or symbolic scope, distribution,
    activity regularizer, rematerialization or quantization. Anything else takes Keras' path.
    """

    def __call__(self, *args, **kwargs):
        if _calls_directly(self, args, kwargs):
            if not self._call_has_training_arg:
                kwargs.pop("training", None)
            return self.call(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def _calls_directly(layer, args, kwargs) -> bool:
    if keras.backend.backend() != "torch" or not layer.built or len(args) != 1:
        return False
    if any(name != "training" for name in kwargs):
        return False
    if layer._call_has_training_arg and kwargs.get("training") is None:
        return False  # Keras resolves it from the outer call or the default
    if (layer.activity_regularizer is not None or getattr(layer, "_remat_mode", None) is not None
            or getattr(layer, "quantization_mode", None) is not None or layer.compute_dtype != layer.variable_dtype):
        return False
    if in_stateless_scope() or in_symbolic_scope() or get_autocast_scope() is not None:
        return False
    if keras.distribution.distribution() is not None:
        return False
    import torch

    dtype = getattr(torch, layer.compute_dtype, None)
    tensors = args[0] if isinstance(args[0], (list, tuple)) else args
    return all(isinstance(t, torch.Tensor) and t.dtype == dtype and t.device.type != "meta"
               and get_keras_mask(t) is None for t in tensors)
