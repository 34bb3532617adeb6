"""The time budget of a training run (resnet_course.training.budget and train's use of it).

The planning is pure arithmetic, tested with given speeds; the measurement and train() run on
the running backend (these tests are in the Makefile's BACKEND_TESTS) with the tiny network of
tests/test_training.py, on its synthetic SIGNS folder.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from resnet_course import training
from resnet_course.training import recipe
from resnet_course.training.budget import SPEED_MARGIN, measure_training_speed, plan_epochs, training_batches
# The training tests' tiny network, their synthetic SIGNS folder (data_dir) and their autouse
# fixture that clears RESNET_COURSE_PROFILE: pytest uses fixtures imported into a test module.
from tests.test_training import TINY, _no_ci_env, data_dir  # noqa: F401


# --- planning ------------------------------------------------------------------------------

def test_plan_counts_training_and_validation():
    # Steps at 150 images/s, epochs at 132 (SPEED_MARGIN): 45,000 training images take 341 s,
    # 5,000 validation images at 3x the speed 12.6 s.
    plan = plan_epochs(30, 14, n_train=45_000, n_validation=5_000, images_per_second=150)
    assert SPEED_MARGIN == pytest.approx(0.88)
    assert plan.seconds_per_epoch == pytest.approx((45_000 + 5_000 / 3) / (150 * 0.88))
    assert plan.epochs == 5  # 5 x 354 s = 29.5 min; 6 would be 35 min
    assert plan.projected_seconds <= 30 * 60 < (plan.epochs + 1) * plan.seconds_per_epoch
    assert "5 of the recipe's 14 epochs fit" in str(plan) and "150 images/s" in str(plan)


def test_plan_never_exceeds_the_recipe_and_trains_at_least_one_epoch():
    fast = plan_epochs(30, 14, n_train=45_000, n_validation=5_000, images_per_second=10_000)
    assert fast.epochs == 14 and "all 14 epochs fit" in str(fast)
    slow = plan_epochs(1, 14, n_train=45_000, n_validation=5_000, images_per_second=10)
    assert slow.epochs == 1 and "over the budget" in str(slow)


@pytest.mark.parametrize("kwargs, message", [
    (dict(images_per_second=0), "images_per_second must be a positive number"),
    (dict(images_per_second=float("nan")), "images_per_second must be a positive number"),
    (dict(minutes=0), "a time budget must be positive minutes"),
])
def test_plan_rejects_impossible_inputs(kwargs, message):
    args = dict(minutes=5, max_epochs=3, n_train=100, n_validation=10, images_per_second=50) | kwargs
    minutes, max_epochs = args.pop("minutes"), args.pop("max_epochs")
    with pytest.raises(ValueError, match=message):
        plan_epochs(minutes, max_epochs, **args)


def test_quick_recipes_have_a_budget_and_the_others_none(monkeypatch):
    assert recipe("signs", "quick").time_budget == 5
    assert recipe("cifar10", "quick").time_budget == recipe("fer2013", "quick").time_budget == 30
    for dataset in training.DATASETS:
        assert recipe(dataset, "full").time_budget == 0 and recipe(dataset, "ci").time_budget == 0
    assert "time_budget" in training.recipes_table()


@pytest.mark.parametrize("value", [-1, float("inf"), "30", True])
def test_invalid_time_budget(value):
    with pytest.raises(ValueError, match="time_budget must be minutes of training"):
        recipe("cifar10", time_budget=value)


# --- measuring and training ----------------------------------------------------------------

def test_compile_model_compiles_as_train_does():
    r = recipe("signs", "ci", precision="float32", label_smoothing=0.2, **TINY)
    model = training.build_model(r)
    training.compile_model(model, r, steps_per_epoch=4)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    assert model.jit_compile == (keras.backend.backend() == "jax")
    assert type(model.optimizer).__name__.lower() == r.optimizer
    # A fresh optimizer each time: train() compiles again after measuring.
    first = model.optimizer
    training.compile_model(model, r, steps_per_epoch=4)
    assert model.optimizer is not first


def test_measuring_the_speed_puts_the_weights_back():
    r = recipe("signs", "ci", precision="float32", **TINY)
    model = training.build_model(r)
    training.compile_model(model, r, steps_per_epoch=4)
    before = [np.array(w) for w in model.get_weights()]
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (n, 64, 64, 3)).astype("float32"), np.eye(6, dtype="float32")[np.arange(n) % 6])
               for n in (4, 4, 2)]
    speed = measure_training_speed(model, training_batches(batches), steps=3, warmup=1)
    assert speed > 0
    after = model.get_weights()
    assert len(after) == len(before)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)  # batch-norm statistics included
    with pytest.raises(ValueError, match="steps must be >= 1"):
        measure_training_speed(model, training_batches(batches), steps=0)


def test_training_batches_cycle_without_moving_an_indexed_pipeline():
    from resnet_course.pipelines.arrays import Normalization
    from resnet_course.pipelines.batches import ArrayBatches

    x = np.arange(5 * 2 * 2 * 3, dtype="uint8").reshape(5, 2, 2, 3)
    pipeline = ArrayBatches(x, np.arange(5) % 2, 2, normalization=Normalization(), shuffle_seed=1)
    order = pipeline._order.copy()
    drawn = [batch for _, batch in zip(range(7), training_batches(pipeline))]
    assert [len(b[0]) for b in drawn] == [2, 2, 1, 2, 2, 1, 2]  # three batches, then again
    np.testing.assert_array_equal(drawn[0][0], drawn[3][0])
    assert pipeline.epoch == 0 and (pipeline._order == order).all()
    iterated = [batch for _, batch in zip(range(5), training_batches(IterableOnly(["a", "b"])))]
    assert iterated == ["a", "b", "a", "b", "a"]


class IterableOnly:
    """An iterable without __getitem__, as a tf.data.Dataset is."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


@pytest.mark.slow  # trains a model
def test_a_tight_budget_trains_fewer_epochs_on_their_own_schedule(data_dir, tmp_path, capsys):
    metrics = training.train("signs", "ci", tmp_path, data_dir=data_dir, verbose=2, epochs=4, time_budget=1e-5,
                             precision="float32", **TINY)
    assert "Time budget 1e-05 min" in capsys.readouterr().out
    assert metrics["epochs"] == 1 and metrics["recipe"]["epochs"] == 1
    budget = metrics["time_budget"]
    assert budget["epochs"] == 1 and budget["max_epochs"] == 4 and budget["images_per_second"] > 0
    # The one-cycle schedule was built for the one epoch trained: it ends near lr / 1e4,
    # not at the peak that a 4-epoch schedule would still be near after one epoch.
    history = (tmp_path / "history.csv").read_text().splitlines()
    last_lr = float(history[-1].split(",")[history[0].split(",").index("learning_rate")])
    assert last_lr < metrics["recipe"]["learning_rate"] / 100
    assert json.loads((tmp_path / "metrics.json").read_text())["time_budget"] == budget


@pytest.mark.slow  # trains a model
def test_a_generous_budget_trains_every_epoch_and_epochs_alone_turn_it_off(data_dir, tmp_path):
    roomy = training.train("signs", "ci", tmp_path / "roomy", data_dir=data_dir, verbose=0, epochs=2,
                           time_budget=60, precision="float32", **TINY)
    assert roomy["epochs"] == 2 and roomy["time_budget"]["epochs"] == 2
    # The quick profile has a budget; asking for epochs trains exactly those.
    exact = training.train("signs", "quick", tmp_path / "exact", data_dir=data_dir, verbose=0, epochs=2,
                           batch_size=16, precision="float32", **TINY)
    assert exact["epochs"] == 2 and exact["time_budget"] is None and exact["recipe"]["time_budget"] == 0


def test_cli_rejects_a_negative_budget_and_writes_nothing(tmp_path, capsys):
    from resnet_course import cli

    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "signs", "--out", str(out), "--time-budget", "-1"])
    assert code != 0
    assert "time_budget must be minutes of training (a number >= 0" in capsys.readouterr().err
    assert not out.exists()
