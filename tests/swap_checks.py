"""The check every training-layer swap (resnet_course.layer_swap) must pass: the swapped copy keeps
the layer names and computes the same outputs, and swapping back gives the original weights."""

from __future__ import annotations

import keras
import numpy as np

to_numpy = keras.ops.convert_to_numpy


def assert_swap_round_trip(model, swapped, swap_back, x, *, modes=(False, True), atol=1e-5):
    """Check ``swapped`` against ``model`` on ``x``, then swap it back (after the calls, which
    move the batch norms' statistics of both alike) and return the swapped-back copy."""
    resnet, swapped_resnet = model.get_layer("ResNet50"), swapped.get_layer("ResNet50")
    assert [layer.name for layer in swapped_resnet.layers] == [layer.name for layer in resnet.layers]
    for mode in modes:
        np.testing.assert_allclose(to_numpy(swapped(x, training=mode)), to_numpy(model(x, training=mode)),
                                   rtol=1e-5, atol=atol)
    back = swap_back(swapped)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    return back
