"""resnet_course.training.devices: --devices parsing, device plans, and multi-device training.

The slow tests train a small ResNet (with batch norms) in a subprocess per Keras backend,
on one device and on two virtual CPU devices, and compare the results. Run this file as
a script (``python tests/test_devices.py OUT.npz``, KERAS_BACKEND set) to run that worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_course.training.devices import (
    JAX_STRATEGY, MULTI_DEVICE_BACKENDS, SINGLE_DEVICE, TF_STRATEGY, XLA_DEVICE_COUNT_FLAG, DevicePlan, parse_devices, plan_devices,
    virtual_cpu_devices_env,
)

ROOT = Path(__file__).resolve().parents[1]
BATCH, EXAMPLES, EPOCHS, LEARNING_RATE = 8, 32, 2, 0.01
# One device and two compute the same float32 arithmetic; only the order of a few sums
# differs (the gradients' all-reduce, the batch norms' moments over the split batch), a
# rounding error of about 1e-7 a step. At this small learning rate it does not grow:
# measured max |difference| of the weights after 8 steps: 3e-8 (jax), 6e-8 (tensorflow),
# 2.4e-7 for a wider model. Batch norms with per-device statistics (tensorflow without
# prepare_model) differ by 1.2e-3, far outside.
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5
UNSYNCHRONIZED_MIN_DIFFERENCE = 10 * WEIGHT_ATOL


# --- parsing and validation (fast) ------------------------------------------------


@pytest.mark.parametrize("value, expected", [("all", "all"), (" ALL ", "all"), ("1", 1), ("2", 2), (3, 3)])
def test_parse_devices_accepts_all_and_positive_numbers(value, expected):
    assert parse_devices(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "1.5", 0, -2, 1.0, True, None])
def test_parse_devices_rejects_anything_else(value):
    with pytest.raises(ValueError, match=r"--devices takes 'all' or a positive number, got"):
        parse_devices(value)


def test_one_device_plan_on_the_running_backend():
    import keras

    plan = plan_devices("1", batch_size=7)
    assert plan.backend == keras.backend.backend()
    assert (plan.count, plan.strategy_name, plan.distributed, plan.batch_multiple) == (1, SINGLE_DEVICE, False, 1)
    assert len(plan.names) == 1 and plan.kind in ("cpu", "gpu", "tpu") and plan.available >= 1
    info = plan.to_dict()
    assert info["count"] == 1 and info["strategy"] == SINGLE_DEVICE and info["names"] == list(plan.names)
    json.dumps(info)
    with plan.scope():
        pass


def test_more_devices_than_exist_names_the_count_and_virtual_devices():
    import keras

    if keras.backend.backend() not in MULTI_DEVICE_BACKENDS:
        pytest.skip(f"{keras.backend.backend()} trains on one device: the refusal is tested below")
    with pytest.raises(ValueError, match=r"Asked for 64 devices, but the \w+ backend sees \d") as error:
        plan_devices(64)
    assert "configure_virtual_cpus(64)" in str(error.value)
    assert f"XLA_FLAGS={XLA_DEVICE_COUNT_FLAG}=64" in str(error.value)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_several_devices_on_a_backend_without_distribution_is_refused(backend):
    with pytest.raises(ValueError, match=rf"one device only with the {backend} backend.*jax or tensorflow"):
        plan_devices(2, backend=backend)


def test_a_backend_other_than_keras_is_refused():
    import keras

    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    with pytest.raises(ValueError, match=rf"Keras runs the {keras.backend.backend()} backend.*KERAS_BACKEND={other}"):
        plan_devices(1, backend=other)
    with pytest.raises(ValueError, match="Unknown Keras backend 'mxnet'"):
        plan_devices(1, backend="mxnet")


@pytest.mark.parametrize("batch_size, suggestions", [(30, "28 or 32"), (3, "4")])
def test_batch_size_must_divide_among_the_devices(batch_size, suggestions):
    plan = DevicePlan(backend="jax", count=4, names=("cpu:0", "cpu:1", "cpu:2", "cpu:3"), kind="cpu",
                      strategy_name=JAX_STRATEGY, available=4)
    assert plan.batch_multiple == 4
    with pytest.raises(ValueError, match=rf"batch size {batch_size} does not divide among 4 devices.*"
                                         rf"multiple of 4 \(e.g. {suggestions}\)"):
        plan.check_batch_size(batch_size)
    plan.check_batch_size(32)
    with pytest.raises(ValueError, match="batch size must be a positive int"):
        plan.check_batch_size(0)


def test_virtual_cpu_env_replaces_an_earlier_device_count_and_keeps_other_flags():
    env = virtual_cpu_devices_env(4, {"XLA_FLAGS": f"--xla_dump_to=/tmp/x {XLA_DEVICE_COUNT_FLAG}=2"})
    assert env == {"XLA_FLAGS": f"--xla_dump_to=/tmp/x {XLA_DEVICE_COUNT_FLAG}=4"}
    assert virtual_cpu_devices_env(2, {}) == {"XLA_FLAGS": f"{XLA_DEVICE_COUNT_FLAG}=2"}
    with pytest.raises(ValueError, match="positive int"):
        virtual_cpu_devices_env(0)


# --- training on one device and on two (slow, one subprocess per backend) ----------


def _run_worker(backend: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{backend}.npz"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}


def _max_weight_difference(results: dict, a: str, b: str) -> float:
    keys = sorted(k for k in results if k.startswith(f"{a}/weight"))
    assert keys, f"no weights saved for {a}"
    return max(float(np.abs(results[k] - results[k.replace(a, b, 1)]).max()) for k in keys)


def _assert_same_training(results: dict, one: str, several: str) -> None:
    assert _max_weight_difference(results, one, "initial") > 100 * WEIGHT_ATOL, "training did not move the weights"
    difference = _max_weight_difference(results, one, several)
    print(f"{one} vs {several}: max weight difference {difference:.2e}, losses {results[f'{one}/loss']} "
          f"vs {results[f'{several}/loss']}")
    assert difference <= WEIGHT_ATOL
    np.testing.assert_allclose(results[f"{several}/loss"], results[f"{one}/loss"], rtol=LOSS_RTOL)


@pytest.mark.slow
def test_jax_trains_the_same_on_two_devices_as_on_one(tmp_path):
    results = _run_worker("jax", tmp_path)
    assert str(results["2-tfdata/strategy"]) == JAX_STRATEGY and int(results["2-tfdata/count"]) == 2
    # DataParallel runs the step on the global batch, so batch norm needs no synchronizing.
    _assert_same_training(results, "1-tfdata", "2-tfdata")


@pytest.mark.slow
def test_tensorflow_trains_the_same_on_two_devices_as_on_one(tmp_path):
    results = _run_worker("tensorflow", tmp_path)
    assert str(results["2-tfdata/strategy"]) == TF_STRATEGY and int(results["2-tfdata/count"]) == 2
    _assert_same_training(results, "1-tfdata", "2-tfdata")
    _assert_same_training(results, "1-tfdata", "2-pydataset")
    # Without prepare_model each replica normalizes with its own half batch's statistics.
    unsynchronized = _max_weight_difference(results, "1-tfdata", "2-unsynchronized")
    print(f"1-tfdata vs 2-unsynchronized: max weight difference {unsynchronized:.2e}")
    assert unsynchronized > UNSYNCHRONIZED_MIN_DIFFERENCE


@pytest.mark.slow
def test_torch_trains_on_one_device_and_refuses_two(tmp_path):
    results = _run_worker("torch", tmp_path)
    assert "jax" in str(results["refused"]) and "tensorflow" in str(results["refused"])
    assert int(results["all/count"]) == 1
    assert np.isfinite(results["1-numpy/loss"]).all()
    assert _max_weight_difference(results, "1-numpy", "initial") > 100 * WEIGHT_ATOL


# --- resnet-course train --devices 2 (slow: a CI-profile run in a subprocess) ------------


def _in_this_backends_pass(backend: str) -> None:
    """`make test` runs this file once per Keras backend: each backend's run happens in its pass."""
    import keras

    if keras.backend.backend() != backend:
        pytest.skip(f"runs in the KERAS_BACKEND={backend} pass of make test")


TRAIN_ON_TWO_DEVICES = """
import json, os, sys
from resnet_course.training.devices import configure_virtual_cpus
configure_virtual_cpus(2, os.environ["KERAS_BACKEND"])
from resnet_course.cli import main
from resnet_course.training.budget import KeepToBudget
ticks = iter(range(10**6))
KeepToBudget.clock = staticmethod(lambda: 60.0 * next(ticks))  # each epoch takes a minute: 5 fit in 5 minutes
code = main(["train", "--dataset", "signs", "--profile", "ci", "--out", sys.argv[1], "--devices", "2",
             "--epochs", "6", "--time-budget", "5"])
import keras
model = keras.saving.load_model(os.path.join(sys.argv[1], "model.keras"))
print(json.dumps({"code": code, "synchronized": [layer.synchronized for layer in model.get_layer("ResNet50").layers
                                                 if isinstance(layer, keras.layers.BatchNormalization)]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend, strategy", [("jax", JAX_STRATEGY), ("tensorflow", TF_STRATEGY)])
def test_train_command_on_two_devices(backend, strategy, tmp_path):
    """`resnet-course train --devices 2` on two virtual CPU devices: the run says so in its output
    and metrics.json, and the saved model loads with plain (unsynchronized) batch norms. A time
    budget's speed measurement runs on the two devices too, and so does the step traced again
    when epochs slower than planned (by a clock that says each takes a minute) shorten the run."""
    _in_this_backends_pass(backend)
    from test_training import _write_signs  # the small learnable SIGNS stand-in of the training tests

    data = _write_signs(tmp_path / "data" / "signs").parent
    env = {**os.environ, "KERAS_BACKEND": backend, "RESNET_COURSE_PROFILE": "ci", "RESNET_COURSE_DATA": str(data)}
    done = subprocess.run([sys.executable, "-c", TRAIN_ON_TWO_DEVICES, str(tmp_path / "run")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and result["synchronized"] and not any(result["synchronized"])
    assert f"Data-parallel on 2 devices (cpu:0, cpu:1) with {strategy}" in done.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["devices"]["count"] == 2 and metrics["devices"]["strategy"] == strategy
    assert metrics["backend"]["backend"] == backend and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["n_test"] == 24  # the test predictions count every image (outside the devices' scope)
    assert "Time budget 5 min: training steps run at" in done.stdout and "all 6 epochs fit" in done.stdout
    assert metrics["epochs"] == 5 and metrics["time_budget"]["epochs"] == 6
    assert [change["epochs"] for change in metrics["time_budget"]["replanned"]] == [5]
    assert np.isfinite(metrics["test_loss"])


# --- the worker (runs in the subprocess) --------------------------------------------


def _worker(out: str) -> None:
    import keras

    from resnet_course.model import ResNet50, scaled_filters
    from resnet_course.training.devices import configure_virtual_cpus

    backend = keras.backend.backend()
    results = {}
    if backend == "torch":
        with pytest.raises(ValueError) as refused:
            plan_devices(2)
        results["refused"] = str(refused.value)
        results["all/count"] = plan_devices("all").count
        runs = [(1, "numpy", True)]  # numpy arrays: no TensorFlow to import
    else:
        configure_virtual_cpus(2)
        runs = [(1, "tfdata", True), (2, "tfdata", True)]
        if backend == "tensorflow":
            runs += [(2, "pydataset", True), (2, "unsynchronized", False)]

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (EXAMPLES, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, EXAMPLES)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return EXAMPLES // BATCH

        def __getitem__(self, i):
            return x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]

    for devices, data, prepare in runs:
        name = f"{devices}-{data}"
        plan = plan_devices(devices, batch_size=BATCH)
        keras.utils.set_random_seed(0)
        with plan.scope():
            model = keras.Sequential([
                keras.layers.Rescaling(1 / 255),
                ResNet50((16, 16, 3), 10, filters=scaled_filters(0.125)[:1], identity_blocks=(0,),
                         stem="small", stem_pool=False, pooling="global", seed=0),
            ])
            model.build((None, 16, 16, 3))
            if prepare:
                plan.prepare_model(model)
            if devices == 1:
                for i, w in enumerate(model.get_weights()):
                    results[f"initial/weight{i:03d}"] = w
            model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="sparse_categorical_crossentropy",
                          jit_compile=backend == "jax")
            if data == "numpy":
                history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
            else:
                history = model.fit(_dataset(data, Batches, x, y), epochs=EPOCHS, shuffle=False, verbose=0)
        results[f"{name}/loss"] = np.array(history.history["loss"])
        results[f"{name}/strategy"] = plan.strategy_name
        results[f"{name}/count"] = plan.count
        for i, w in enumerate(model.get_weights()):
            results[f"{name}/weight{i:03d}"] = w
    np.savez(out, **results)


def _dataset(data: str, batches, x, y):
    if data == "pydataset":
        return batches()
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


if __name__ == "__main__":
    _worker(sys.argv[1])
