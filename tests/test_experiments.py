"""The gradient-norm experiment of notebook 01: the networks, the numbers, the plot, the time."""

import time

import keras
import numpy as np
import pytest

from resnet_course import experiments


@pytest.fixture(scope="module")
def timed():
    start = time.perf_counter()
    result = experiments.gradient_norms()
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def result(timed):
    return timed[0]


def dense_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense) and layer.name != "logits"]


@pytest.mark.parametrize("residual", [False, True])
def test_the_two_networks_have_the_same_layers(residual):
    model = experiments.build_deep_net(10, 16, residual=residual, classes=4)
    dense = dense_layers(model)
    assert [layer.name for layer in dense] == [f"dense_{i}" for i in range(1, 11)]
    assert all(layer.kernel.shape == (16, 16) for layer in dense)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == (5 if residual else 0)
    assert model.output_shape == (None, 4)
    # same depth, same parameters: only the wiring differs
    plain = experiments.build_deep_net(10, 16, residual=not residual, classes=4)
    assert model.count_params() == plain.count_params() == 10 * (16 * 16 + 16) + 16 * 4 + 4


def test_skip_connections_wrap_pairs_of_layers():
    model = experiments.build_deep_net(4, 8, residual=True)
    add = model.get_layer("skip_2")
    sources = {tensor._keras_history.operation.name for tensor in add.input}
    assert sources == {"dense_2", "x"}  # the second Dense of the pair, and the block's input


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="depth must be even"):
        experiments.build_deep_net(5, 8, residual=True)
    with pytest.raises(ValueError, match="depth must be an int >= 2"):
        experiments.build_deep_net(1, 8)


def test_plain_gradients_vanish_residual_gradients_do_not(result):
    assert result.plain.shape == result.residual.shape == (experiments.DEPTH,)
    assert np.all(np.isfinite(result.plain)) and np.all(np.isfinite(result.residual))
    # every layer of the plain net gets a tiny gradient; every layer of the residual net a healthy one
    assert result.plain.max() < 1e-4
    assert result.residual.min() > 1e-1
    # and the first layer, farthest from the loss, is not starved in the residual net
    assert result.residual[0] > 0.1 * result.residual[-1]
    assert result.ratio() > 1e4


def test_the_experiment_is_reproducible():
    first = experiments.gradient_norms(depth=6, width=8)
    second = experiments.gradient_norms(depth=6, width=8)
    np.testing.assert_allclose(first.plain, second.plain, rtol=1e-5)
    np.testing.assert_allclose(first.residual, second.residual, rtol=1e-5)


def test_it_runs_well_under_a_minute(timed):
    seconds = timed[1]
    assert seconds < 30, f"the experiment took {seconds:.1f} s"


def test_table_and_plot(result):
    table = result.table().splitlines()
    assert table[0].split() == ["layer", "plain", "residual"]
    assert [int(line.split()[0]) for line in table[1:]] == [1, 10, 20, 30, 40]
    fig = experiments.plot_gradient_norms(result)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 2
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), result.plain)
    experiments.close(fig)


def test_gradients_match_a_finite_difference():
    """The backend dispatch computes the true gradient (checked on a tiny net)."""
    model = experiments.build_deep_net(2, 3, classes=2, seed=1)
    x, y = experiments.make_batch(4, 3, 2, seed=1)
    (grad,) = experiments._gradients(model, x, y, [model.get_layer("dense_1").kernel])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernel = model.get_layer("dense_1").kernel
    original = np.array(keras.ops.convert_to_numpy(kernel.value), dtype="float64")
    eps = 1e-3
    for i, j in [(0, 0), (1, 2), (2, 1)]:
        values = []
        for sign in (1, -1):
            changed = original.copy()
            changed[i, j] += sign * eps
            kernel.assign(changed.astype("float32"))
            values.append(float(loss_fn(y, model(x, training=True))))
        kernel.assign(original.astype("float32"))
        assert grad[i, j] == pytest.approx((values[0] - values[1]) / (2 * eps), abs=2e-3)
