"""Count a Keras model's FLOPs analytically, from its layers' configurations and shapes.

One FLOP is one multiply or one add, so a multiply-accumulate is 2 FLOPs:

* Conv2D: ``2 * kh * kw * (Cin / groups) * Cout * Hout * Wout`` (+ ``Cout * Hout * Wout`` for the bias);
* DepthwiseConv2D: ``2 * kh * kw * Cin * multiplier * Hout * Wout`` (+ bias);
* Dense: ``2 * inputs * units`` (+ ``units`` for the bias).

These are the ``matmul`` FLOPs: the work of the convolutions and dense layers,
which is what a CPU's matrix units do and what achieved GFLOP/s are computed from.
Everything else (bias adds, batch norms, ReLUs, Adds, pooling) is counted
separately as ``other`` FLOPs, to show it is small (about 1% for ResNet-50)
even though it is not small in time (it is memory-bound):

* BatchNormalization: 2 per element (one multiply and one add, the inference form);
* ReLU / Activation: 1 per element; Add: 1 per element per extra input;
* pooling: ``pool_size`` elements per output element (global pooling: one per input element).

Training is counted as 3x the forward matmul FLOPs (the backward pass computes
the gradients of both the inputs and the weights, each as costly as the forward).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

#: Backward = 2x forward for convolutions and dense layers.
TRAINING_FACTOR = 3


@dataclass
class FlopCount:
    """Forward FLOPs of one image."""

    matmul: int = 0  # Conv/Dense multiply-accumulates x 2
    other: int = 0  # biases, batch norms, activations, adds, pooling
    by_layer_type: dict = field(default_factory=dict)

    @property
    def forward(self) -> int:
        return self.matmul + self.other

    @property
    def training(self) -> int:
        """FLOPs of one training step per image: 3x the forward matmul FLOPs."""
        return TRAINING_FACTOR * self.matmul

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(forward=self.forward, training=self.training)
        return d


def _shape(tensor_or_shape) -> tuple:
    shape = getattr(tensor_or_shape, "shape", tensor_or_shape)
    return tuple(shape)


def _elements(shape) -> int:
    """Number of elements of one example (the batch axis dropped)."""
    return math.prod(int(n) for n in shape[1:])


def _layer_flops(layer) -> tuple[int, int]:
    """``(matmul, other)`` forward FLOPs of one call of ``layer`` on one example."""
    kind = type(layer).__name__
    try:
        in_shape = _shape(layer.input)
        out_shape = _shape(layer.output)
    except (AttributeError, ValueError):  # layers never called, or called more than once
        return 0, 0
    if isinstance(layer.input, (list, tuple)):
        in_shapes = [_shape(t) for t in layer.input]
    else:
        in_shapes = [in_shape]
    out_elements = _elements(out_shape)
    config = layer.get_config()

    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        kernel = math.prod(config["kernel_size"])
        cin = int(in_shape[-1]) // int(config.get("groups", 1) or 1)
        matmul = 2 * kernel * cin * out_elements
        return matmul, out_elements if config.get("use_bias", True) else 0
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        kernel = math.prod(config["kernel_size"])
        return 2 * kernel * out_elements, out_elements if config.get("use_bias", True) else 0
    if kind == "Dense":
        units = int(config["units"])
        positions = out_elements // units  # Dense on (batch, ..., features) applies per position
        return 2 * int(in_shape[-1]) * units * positions, out_elements if config.get("use_bias", True) else 0
    if kind == "BatchNormalization" or kind.endswith("BatchNormalization") or kind.endswith("BN"):
        return 0, 2 * out_elements
    if kind in ("ReLU", "Activation", "LeakyReLU", "ELU", "Softmax"):
        return 0, out_elements
    if kind in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        return 0, out_elements * (len(in_shapes) - 1)
    if kind.startswith(("MaxPooling", "AveragePooling")):
        return 0, out_elements * math.prod(config["pool_size"])
    if kind.startswith(("GlobalAveragePooling", "GlobalMaxPooling")):
        return 0, _elements(in_shape)
    return 0, 0


def count_flops(model) -> FlopCount:
    """Forward FLOPs of ``model`` per image, recursing into nested models."""
    count = FlopCount()
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # a nested model
            inner = count_flops(layer)
            count.matmul += inner.matmul
            count.other += inner.other
            for kind, flops in inner.by_layer_type.items():
                count.by_layer_type[kind] = count.by_layer_type.get(kind, 0) + flops
            continue
        matmul, other = _layer_flops(layer)
        count.matmul += matmul
        count.other += other
        if matmul or other:
            kind = type(layer).__name__
            count.by_layer_type[kind] = count.by_layer_type.get(kind, 0) + matmul + other
    return count


def achieved_gflops(flops_per_image: float, images_per_second: float) -> float:
    """GFLOP/s achieved at ``images_per_second`` when each image costs ``flops_per_image``."""
    return flops_per_image * images_per_second / 1e9
