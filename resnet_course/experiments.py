"""The experiment of notebook 01: do gradients reach the first layers of a deep network?

Two networks of the same depth, built with the Keras 3 API:

* a **plain** stack of ``depth`` Dense + ReLU layers, ``a[l] = g(W[l] a[l-1] + b[l])``;
* a **residual** stack of the same ``depth`` Dense layers, grouped in pairs by
  skip connections exactly as in the identity block,
  ``a[l+2] = g(z[l+2] + a[l])``.

Both use Keras' default initializer (Glorot uniform), the same seeds and the
same batch. ``gradient_norms`` computes, for one batch, the L2 norm of the
gradient of the loss with respect to each Dense layer's kernel; the plot shows
them layer by layer on a log scale.

Keras 3 leaves the gradient to the backend, so ``layer_gradient_norms``
dispatches on ``keras.backend.backend()`` (``tf.GradientTape`` for TensorFlow,
``jax.grad`` for JAX, autograd for PyTorch), importing the backend only inside
its branch. The whole experiment takes a few seconds on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from resnet_course.plots import _pyplot, close  # noqa: F401 - close is part of this module's API

#: Depth, width, batch and classes of the notebook's experiment.
DEPTH = 40
WIDTH = 64
BATCH_SIZE = 64
CLASSES = 10


def dense_name(index: int) -> str:
    """Name of the ``index``-th Dense layer (1-based) of the experiment's networks."""
    return f"dense_{index}"


def build_deep_net(depth: int = DEPTH, width: int = WIDTH, *, residual: bool = False,
                   classes: int = CLASSES, seed: int = 0) -> keras.Model:
    """A stack of ``depth`` Dense layers of ``width`` units, plain or residual.

    Plain: ``x -> Dense -> ReLU -> Dense -> ReLU -> ... -> classifier``.
    Residual: the same Dense layers in pairs; each pair is an identity block,
    ``a_out = ReLU(Dense(ReLU(Dense(a_in))) + a_in)``. The input has ``width``
    features, so every shortcut adds tensors of the same shape. The classifier
    (``logits``, not counted in ``depth``) outputs ``classes`` logits.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
        raise ValueError(f"depth must be an int >= 2, got {depth!r}.")
    if residual and depth % 2:
        raise ValueError(f"A residual stack groups its layers in pairs, so depth must be even, got {depth}.")

    def dense(index: int) -> layers.Dense:
        return layers.Dense(
            width,
            name=dense_name(index),
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + index),
        )

    inputs = keras.Input(shape=(width,), name="x")
    a = inputs
    if residual:
        for index in range(1, depth + 1, 2):
            z = dense(index)(a)
            z = layers.ReLU(name=f"relu_{index}")(z)
            z = dense(index + 1)(z)
            z = layers.Add(name=f"skip_{index + 1}")([z, a])
            a = layers.ReLU(name=f"relu_{index + 1}")(z)
    else:
        for index in range(1, depth + 1):
            a = layers.ReLU(name=f"relu_{index}")(dense(index)(a))
    logits = layers.Dense(
        classes, name="logits", kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000)
    )(a)
    return keras.Model(inputs, logits, name=("residual" if residual else "plain") + f"_{depth}")


def _gradients(model: keras.Model, x: np.ndarray, y: np.ndarray, variables: list) -> list[np.ndarray]:
    """Gradients of the mean cross-entropy on (x, y) with respect to ``variables``, per backend."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, variables)
    elif backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_of(trainable_values):
            logits, _ = model.stateless_call(trainable_values, non_trainable, x, training=True)
            return loss_fn(y, logits)

        all_grads = jax.grad(loss_of)(trainable)
        by_id = {id(v): g for v, g in zip(model.trainable_variables, all_grads)}
        grads = [by_id[id(v)] for v in variables]
    elif backend == "torch":
        import torch

        for v in model.trainable_variables:
            v.value.grad = None
        with torch.enable_grad():
            loss = loss_fn(keras.ops.convert_to_tensor(y), model(keras.ops.convert_to_tensor(x), training=True))
            loss.backward()
        grads = [v.value.grad for v in variables]
    else:
        raise NotImplementedError(
            f"gradient_norms supports the tensorflow, jax and torch backends, not {backend!r}."
        )
    return [np.asarray(keras.ops.convert_to_numpy(g)) for g in grads]


def layer_gradient_norms(model: keras.Model, x: np.ndarray, y: np.ndarray, depth: int) -> np.ndarray:
    """L2 norm of the loss's gradient with respect to each Dense layer's kernel, layers 1..depth."""
    kernels = [model.get_layer(dense_name(index)).kernel for index in range(1, depth + 1)]
    return np.array([float(np.linalg.norm(g)) for g in _gradients(model, x, y, kernels)])


def make_batch(batch_size: int = BATCH_SIZE, width: int = WIDTH, classes: int = CLASSES,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One batch of standard-normal inputs and random labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, width)).astype("float32")
    y = rng.integers(0, classes, size=batch_size).astype("int32")
    return x, y


@dataclass(frozen=True)
class GradientNorms:
    """Per-layer gradient norms of the plain and the residual network (index 0 is layer 1)."""

    depth: int
    width: int
    plain: np.ndarray
    residual: np.ndarray

    @property
    def layers(self) -> np.ndarray:
        return np.arange(1, self.depth + 1)

    def ratio(self) -> float:
        """How many times larger the residual net's median gradient norm is than the plain net's."""
        return float(np.median(self.residual) / max(np.median(self.plain), np.finfo("float64").tiny))

    def table(self, every: int = 10) -> str:
        """A small text table of the norms at layer 1 and every ``every`` layers."""
        rows = sorted({1, *range(every, self.depth + 1, every)})
        lines = [f"{'layer':>5}  {'plain':>9}  {'residual':>9}"]
        lines += [f"{i:>5}  {self.plain[i - 1]:9.2e}  {self.residual[i - 1]:9.2e}" for i in rows]
        return "\n".join(lines)


def gradient_norms(depth: int = DEPTH, width: int = WIDTH, *, batch_size: int = BATCH_SIZE,
                   classes: int = CLASSES, seed: int = 0) -> GradientNorms:
    """Run the experiment: per-layer gradient norms of a plain and a residual net of ``depth`` layers."""
    x, y = make_batch(batch_size, width, classes, seed)
    norms = {}
    for residual in (False, True):
        model = build_deep_net(depth, width, residual=residual, classes=classes, seed=seed)
        norms[residual] = layer_gradient_norms(model, x, y, depth)
        del model
    return GradientNorms(depth=depth, width=width, plain=norms[False], residual=norms[True])


def plot_gradient_norms(result: GradientNorms):
    """Gradient norm per layer, plain against residual, on a log scale. Returns the Figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    tiny = np.finfo("float32").tiny  # a norm of exactly 0 cannot sit on a log axis
    ax.semilogy(result.layers, np.maximum(result.plain, tiny), "o-", color="tab:red", ms=4,
                label=f"plain: {result.depth} Dense + ReLU layers")
    ax.semilogy(result.layers, np.maximum(result.residual, tiny), "s-", color="tab:blue", ms=4,
                label=f"residual: the same {result.depth} layers, a skip every 2")
    ax.set_xlabel("layer (1 = next to the input)")
    ax.set_ylabel("‖∂loss/∂W‖ for one batch")
    ax.set_title("Gradient norm of each layer's weights at initialization")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    return fig
