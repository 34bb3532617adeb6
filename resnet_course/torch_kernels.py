"""Convolution and max-pooling on the PyTorch backend without layout copies: the same layers.

Keras 3's PyTorch backend turns every channels-last convolution's input into a contiguous
NCHW tensor and then back into channels-last memory before calling ``conv2d`` (two full
copies forward, and their gradients' copies backward), and runs max-pooling on the NCHW
copy. On a 2-core CPU those copies took 18% of a ResNet-50 step and half of a thin
CIFAR-10 network's (``torch.profiler``; see docs/backends.md).

A channels-last (NHWC) tensor seen through ``permute(0, 3, 1, 2)`` *is* what PyTorch calls
an NCHW tensor in ``channels_last`` memory format, which its CPU convolution (oneDNN), its
max-pooling and its batch norm take as they are. ``ChannelsLastConv2D`` and
``ChannelsLastMaxPooling2D`` call them on that view, with the bias folded into the
convolution. They keep the layer's name, config and weights; on the other backends, or for
a layout or padding these kernels cannot take, they are Keras' layers.

``TorchReLU`` and ``TorchAdd`` call ``relu`` and ``add`` on the tensors as they are. All four
skip Keras' per-call bookkeeping where it has nothing to do (``layer_swap.DirectCall``): a
ResNet-50 step on PyTorch calls 170 layers eagerly from Python, and that bookkeeping cost
more than the difference to a native torchvision step.

Like ``resnet_course.fused_batchnorm`` this is a training-speed concern: models are built
from plain Keras layers, ``with_torch_kernels`` swaps these in for training, and
``resnet_course.layer_swap.with_keras_layers`` swaps them back before a model is saved.
"""

from __future__ import annotations

import math

import keras

from resnet_course.layer_swap import DirectCall, all_layers, swap_layers, training_layer


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Keras' (TensorFlow's) "same" padding of one axis: (before, after), any odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _torch_padding(layer, spatial_shape, kernel_size, dilation=(1, 1)):
    """The symmetric ``padding`` argument of PyTorch's kernels for ``layer.padding``, or None
    when "same" needs more pixels on one side than the other (or the shape is unknown)."""
    if layer.padding == "valid":
        return (0, 0)
    if any(size is None for size in spatial_shape):
        return None
    pads = [_same_padding(size, k, s, d) for size, k, s, d in zip(spatial_shape, kernel_size, layer.strides, dilation)]
    if any(before != after for before, after in pads):
        return None
    return tuple(before for before, _ in pads)


def _takes_channels_last(layer, inputs) -> bool:
    return (
        keras.backend.backend() == "torch"
        and len(inputs.shape) == 4
        and layer.data_format == "channels_last"
        and getattr(inputs, "device", None) is not None
        and inputs.device.type != "meta"  # Keras traces shapes on the meta device: its own path
    )


def _store_output_channels_first(variable) -> None:
    """Keep a (h, w, in, out) kernel's values in (out, h, w, in) memory order, same shape.

    Its ``permute(3, 2, 0, 1)`` is then PyTorch's channels-last (out, in, h, w) weight without a
    copy, and the weight's gradient comes back in the same order: otherwise every step copies
    every kernel twice (ResNet-50's res5 3x3 kernels: 7 ms each on 2 cores). The variable keeps
    its shape and values; assigning to it copies into this storage."""
    import torch

    value = variable.value
    if value.ndim != 4 or value.device.type == "meta":
        return
    stored = value.detach().permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)
    variable._value = torch.nn.Parameter(stored, requires_grad=value.requires_grad)


@training_layer
@keras.saving.register_keras_serializable(package="resnet_course")
class ChannelsLastConv2D(DirectCall, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` computed by PyTorch's ``conv2d`` on the channels-last tensor as is."""

    def build(self, input_shape):
        super().build(input_shape)
        if keras.backend.backend() == "torch" and not self.lora_enabled:
            _store_output_channels_first(self._kernel)

    def call(self, inputs):
        padding = None
        if (_takes_channels_last(self, inputs) and not self.lora_enabled
                and getattr(self, "quantization_mode", None) is None):
            padding = _torch_padding(self, inputs.shape[1:3], self.kernel_size, self.dilation_rate)
        if padding is None:
            return super().call(inputs)
        import torch
        import torch.nn.functional as F

        x = inputs.permute(0, 3, 1, 2)  # NCHW shape, channels-last memory: no copy
        # (h, w, in, out) -> (out, in, h, w) in channels-last memory: a view of the stored kernel
        # (see _store_output_channels_first), a copy only if something replaced its storage.
        kernel = _in_dtype(self.kernel, x.dtype).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        bias = _in_dtype(self.bias, x.dtype) if self.use_bias else None
        groups = x.shape[1] // kernel.shape[1]
        y = F.conv2d(x, kernel, bias, self.strides, padding, self.dilation_rate, groups).permute(0, 2, 3, 1)
        return self.activation(y) if self.activation is not None else y


@training_layer
@keras.saving.register_keras_serializable(package="resnet_course")
class ChannelsLastMaxPooling2D(DirectCall, keras.layers.MaxPooling2D):
    """``keras.layers.MaxPooling2D`` computed by PyTorch's ``max_pool2d`` on the channels-last tensor."""

    def call(self, inputs):
        padding = None
        if _takes_channels_last(self, inputs):
            padding = _torch_padding(self, inputs.shape[1:3], self.pool_size)
        # PyTorch pads with -inf, at most half the window; Keras pads max-pooling by repeating
        # the edge, which gives the same maxima.
        if padding is None or any(2 * p > k for p, k in zip(padding, self.pool_size)):
            return super().call(inputs)
        import torch.nn.functional as F

        x = inputs.permute(0, 3, 1, 2)
        return F.max_pool2d(x, self.pool_size, self.strides, padding).permute(0, 2, 3, 1)


def _in_dtype(variable, dtype):
    """A variable's tensor in ``dtype`` (its value as is when it already is; under mixed
    precision ``value`` is already cast by Keras' autocast scope)."""
    value = variable.value
    return value if value.dtype == dtype else value.to(dtype)


@training_layer
@keras.saving.register_keras_serializable(package="resnet_course")
class TorchReLU(DirectCall, keras.layers.ReLU):
    """``keras.layers.ReLU`` as PyTorch's ``relu`` when it is the plain one (no slope, cap or
    threshold)."""

    def call(self, inputs):
        if (keras.backend.backend() != "torch" or self.negative_slope or self.max_value is not None
                or self.threshold):
            return super().call(inputs)
        import torch

        return torch.relu(inputs)


@training_layer
@keras.saving.register_keras_serializable(package="resnet_course")
class TorchAdd(DirectCall, keras.layers.Add):
    """``keras.layers.Add`` as PyTorch's ``add`` of same-shape tensors."""

    def call(self, inputs):
        if (keras.backend.backend() != "torch" or not isinstance(inputs, (list, tuple))
                or any(tuple(x.shape) != tuple(inputs[0].shape) for x in inputs)):
            return super().call(inputs)
        output = inputs[0]
        for x in inputs[1:]:
            output = output + x
        return output


_TORCH_KERNELS = {keras.layers.Conv2D: ChannelsLastConv2D, keras.layers.MaxPooling2D: ChannelsLastMaxPooling2D,
                  keras.layers.ReLU: TorchReLU, keras.layers.Add: TorchAdd}


def with_torch_kernels(model: keras.Model) -> keras.Model:
    """``model`` with every ``Conv2D``, ``MaxPooling2D``, ``ReLU`` and ``Add`` computed by this
    module's layers (a copy; names and weights kept). Worth it on the PyTorch backend only; elsewhere
    the layers are Keras'."""
    return swap_layers(model, lambda layer: _TORCH_KERNELS.get(type(layer)))


def uses_torch_kernels(model: keras.Model) -> bool:
    """True when any layer of ``model`` (nested models included) is one of this module's."""
    return any(type(layer) in _TORCH_KERNELS.values() for layer in all_layers(model))


def match_optimizer_to_kernels(model: keras.Model) -> None:
    """Store the compiled ``model``'s optimizer slots for convolution kernels (SGD's momentum,
    Adam's moments) in the kernels' memory order, building the optimizer if needed.

    The optimizer's element-wise updates then walk a kernel, its gradient and its slots in the
    same order; with the slots in Keras' order they were 4x slower than the copies they
    replace. Only the memory order changes, never a value. Call it after ``compile`` on the
    PyTorch backend when the model uses these kernels (``train`` does); elsewhere it does nothing.
    """
    optimizer = getattr(model, "optimizer", None)
    if keras.backend.backend() != "torch" or optimizer is None or not uses_torch_kernels(model):
        return
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    for variable in optimizer.variables:
        if len(variable.shape) == 4:
            _store_output_channels_first(variable)
