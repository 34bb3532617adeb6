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
from resnet_course.training.budget import (
    SPEED_MARGIN, epochs_that_still_fit, measure_training_speed, plan_epochs, training_batches,
)
from resnet_course.training.schedules import WarmupCosine
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


# --- keeping to the budget while training -------------------------------------------------

def test_epochs_that_still_fit():
    # 30 min budget, 10 min gone after 5 of 20 planned epochs.
    assert epochs_that_still_fit(1800, 600, 5, 20, seconds_per_epoch=60) == 20  # 15 x 60 s = 15 min: fits
    assert epochs_that_still_fit(1800, 600, 5, 20, seconds_per_epoch=100) == 17  # 12 x 100 s fit in 20 min
    assert epochs_that_still_fit(1800, 1790, 5, 20, seconds_per_epoch=100) == 5  # none: stop where it is
    assert epochs_that_still_fit(1800, 2000, 5, 20, seconds_per_epoch=100) == 5  # already over
    with pytest.raises(ValueError, match="seconds_per_epoch must be a positive number"):
        epochs_that_still_fit(1800, 600, 5, 20, seconds_per_epoch=0)


class _Clock:
    """A clock that moves on by ``tick`` seconds whenever it is read."""

    def __init__(self, tick):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


@pytest.mark.slow  # trains a model
def test_epochs_slower_than_planned_end_the_run_on_time_with_its_schedule_rebuilt(
        data_dir, tmp_path, capsys, monkeypatch):
    from resnet_course.training import budget, loop

    # The steps time as very fast (all 8 epochs fit in 5 minutes), but each epoch takes
    # 60 s by the keeper's clock: after four (three timed after the first: 4 min), one more fits.
    monkeypatch.setattr(loop, "measure_training_speed", lambda *args, **kwargs: 1e9)
    monkeypatch.setattr(budget.KeepToBudget, "clock", staticmethod(_Clock(60.0)))
    metrics = training.train("signs", "ci", tmp_path, data_dir=data_dir, verbose=2, epochs=8, time_budget=5,
                             precision="float32", **TINY)
    out = capsys.readouterr().out
    assert "all 8 epochs fit" in out
    assert "Epochs take 60 s here" in out and "the run ends after epoch 5 instead of 8" in out
    assert metrics["epochs"] == 5 and metrics["recipe"]["epochs"] == 5
    assert metrics["time_budget"]["epochs"] == 8  # the plan, kept as it was made
    assert metrics["time_budget"]["replanned"] == [
        dict(after_epoch=4, seconds_per_epoch=60.0, elapsed_seconds=240.0, epochs=5, previous_epochs=8)]
    # The schedule was rebuilt for 5 epochs: the last one ends near lr / 1e4, where the
    # 8-epoch schedule would still be above half the peak.
    history = (tmp_path / "history.csv").read_text().splitlines()
    rates = [float(row.split(",")[history[0].split(",").index("learning_rate")]) for row in history[1:]]
    assert len(rates) == 5 and rates[-1] < metrics["recipe"]["learning_rate"] / 100
    assert json.loads((tmp_path / "metrics.json").read_text())["time_budget"]["replanned"][0]["epochs"] == 5


@pytest.mark.slow  # trains a model
def test_a_run_with_no_time_left_stops_after_the_epoch_it_is_in(data_dir, tmp_path, capsys, monkeypatch):
    from resnet_course.training import budget, loop

    monkeypatch.setattr(loop, "measure_training_speed", lambda *args, **kwargs: 1e9)
    monkeypatch.setattr(budget.KeepToBudget, "clock", staticmethod(_Clock(100.0)))  # 4 epochs: 400 s of 6 min
    metrics = training.train("signs", "ci", tmp_path, data_dir=data_dir, verbose=2, epochs=6, time_budget=6,
                             precision="float32", **TINY)
    assert "the run stops now, after epoch 4 of 6" in capsys.readouterr().out
    assert metrics["epochs"] == 4 and metrics["time_budget"]["replanned"][0]["epochs"] == 4


@pytest.mark.slow  # trains a model
def test_epochs_faster_than_planned_early_on_lengthen_the_run_up_to_the_recipes_epochs(
        data_dir, tmp_path, capsys, monkeypatch):
    from resnet_course.training import budget, loop

    # Planned: 16 of the recipe's 20 epochs in 5 minutes. By the keeper's clock an epoch takes
    # 10 s: after four (a quarter of the 16), all 20 fit, and the run goes on to 20.
    monkeypatch.setattr(loop, "plan_epochs", lambda minutes, max_epochs, **kwargs: budget.EpochPlan(
        minutes=minutes, max_epochs=max_epochs, epochs=16, images_per_second=100.0, seconds_per_epoch=18.0))
    monkeypatch.setattr(loop, "measure_training_speed", lambda *args, **kwargs: 100.0)
    monkeypatch.setattr(budget.KeepToBudget, "clock", staticmethod(_Clock(10.0)))
    metrics = training.train("signs", "ci", tmp_path, data_dir=data_dir, verbose=2, epochs=20, time_budget=5,
                             precision="float32", **TINY)
    out = capsys.readouterr().out
    assert "Epoch 1/16" in out and "Epoch 20/20" in out  # the bar counts to the planned end, then the new one
    assert "5 min hold 20 epochs, so the run ends after epoch 20 instead of 16" in out
    assert metrics["epochs"] == 20 and metrics["recipe"]["epochs"] == 20
    assert [(c["after_epoch"], c["previous_epochs"], c["epochs"]) for c in metrics["time_budget"]["replanned"]] \
        == [(4, 16, 20)]
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]] == list(range(1, 21))
    rates = [float(row.split(",")[history[0].split(",").index("learning_rate")]) for row in history[1:]]
    assert rates[-1] < metrics["recipe"]["learning_rate"] / 100  # the stretched schedule ends at its end
    assert rates[15] > metrics["recipe"]["learning_rate"] / 100  # not at the 16-epoch schedule's end


def _cifar_schedule(epochs: int):
    """The CIFAR-10 quick recipe's one-cycle schedule (2 warm-up epochs) for ``epochs`` of 10 steps."""
    from resnet_course.training.schedules import learning_rate_schedule

    return learning_rate_schedule(recipe("cifar10", "quick", epochs=epochs), steps_per_epoch=10)


def test_a_short_plan_is_lengthened_when_its_epochs_run_faster(monkeypatch):
    from resnet_course.training import budget

    # 12 of 30 epochs planned in 30 minutes; they take 10 s. The first decision, after epoch 4, is
    # past the first quarter of 12 epochs, but stretching the cosine to 30 epochs there raises
    # the rate by 9%: the run goes on to 30.
    plan = budget.EpochPlan(minutes=30, max_epochs=30, epochs=12, images_per_second=100.0, seconds_per_epoch=140.0)
    keeper = budget.KeepToBudget(plan, _cifar_schedule)
    model = _FakeModel()
    keeper.set_model(model)
    monkeypatch.setattr(budget.KeepToBudget, "clock", staticmethod(_Clock(10.0)))
    keeper.on_train_begin()
    for epoch in range(4):
        model.optimizer.iterations = 10 * (epoch + 1)
        keeper.on_epoch_end(epoch)
    assert [(c["after_epoch"], c["previous_epochs"], c["epochs"]) for c in keeper.changes] == [(4, 12, 30)]
    assert keeper.epochs == 30 and isinstance(model.optimizer.learning_rate, WarmupCosine)
    assert model.optimizer.learning_rate.total_steps == 300


@pytest.mark.parametrize("done, end", [(4, 30), (6, 16), (8, 13), (11, 12)])
def test_a_run_is_lengthened_only_as_far_as_its_learning_rate_rises_by_a_quarter(done, end):
    from resnet_course.training import budget

    plan = budget.EpochPlan(minutes=30, max_epochs=30, epochs=12, images_per_second=100.0, seconds_per_epoch=140.0)
    keeper = budget.KeepToBudget(plan, _cifar_schedule)
    keeper.set_model(_FakeModel())
    keeper.model.optimizer.iterations = 10 * done
    assert keeper._latest_gentle_end(30) == end
    step = 10 * done
    now = float(_cifar_schedule(12)(step))
    assert float(_cifar_schedule(end)(step)) <= budget.MAX_RATE_RISE * now
    if end < 30:  # one epoch more would raise the rate by more than a quarter
        assert float(_cifar_schedule(end + 1)(step)) > budget.MAX_RATE_RISE * now


def test_a_constant_rate_run_is_lengthened_at_any_point():
    from resnet_course.training import budget

    plan = budget.EpochPlan(minutes=30, max_epochs=30, epochs=12, images_per_second=100.0, seconds_per_epoch=140.0)
    keeper = budget.KeepToBudget(plan, lambda epochs: 0.01)
    keeper.set_model(_FakeModel())
    keeper.model.optimizer.iterations = 110
    assert keeper._latest_gentle_end(30) == 30


def test_a_shortened_run_is_not_lengthened_again(monkeypatch):
    from resnet_course.training import budget

    # Epochs of 50 s after the first: after four, 34 more fit in the 1700 s left (38 of 40).
    # Then one of 10 s: the mean (40 s) would hold 47, but the run stays shortened.
    plan = budget.EpochPlan(minutes=1880 / 60, max_epochs=60, epochs=40, images_per_second=100.0,
                            seconds_per_epoch=45.0)
    keeper = budget.KeepToBudget(plan, lambda epochs: None)
    keeper.set_model(_FakeModel())
    monkeypatch.setattr(budget.KeepToBudget, "clock", staticmethod(iter([0, 10, 60, 110, 160, 170]).__next__))
    keeper.on_train_begin()
    for epoch in range(5):
        keeper.on_epoch_end(epoch)
    assert [(c["after_epoch"], c["previous_epochs"], c["epochs"]) for c in keeper.changes] == [(4, 40, 38)]
    assert keeper.epochs == 38 and not keeper.model.stop_training


class _FakeModel:
    """What the keeper touches of a model: its optimizer's rate, its step, ``stop_training``."""

    stop_training = False

    def __init__(self):
        self.optimizer = type("Optimizer", (), {"learning_rate": None, "iterations": 0})()

    def make_train_function(self, force=False):
        pass


def test_the_steps_after_a_shortening_take_the_rebuilt_schedules_rates(monkeypatch):
    """The compiled step (traced on TensorFlow and JAX) must use the new schedule, not only the
    optimizer's reported rate: plain SGD on a loss whose gradient is 1 lowers the weight by
    exactly the rate of each step."""
    from resnet_course.training import budget
    from resnet_course.training.schedules import WarmupCosine

    steps_per_epoch, peak = 2, 0.1

    def schedule(epochs):
        return WarmupCosine(peak, epochs * steps_per_epoch, steps_per_epoch, initial_lr=peak / 25, final_lr=peak / 1e4)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(schedule(8)), loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    plan = budget.EpochPlan(minutes=5, max_epochs=8, epochs=8, images_per_second=1e9, seconds_per_epoch=1.0)
    keeper = budget.KeepToBudget(plan, schedule)
    monkeypatch.setattr(budget.KeepToBudget, "clock", staticmethod(_Clock(60.0)))
    x = np.ones((4, 1), "float32")
    history = model.fit(x, np.zeros((4, 1), "float32"), batch_size=2, epochs=8, shuffle=False, verbose=0,
                        callbacks=[keeper])
    assert len(history.history["loss"]) == 5 and keeper.epochs == 5
    old, new = schedule(8), schedule(5)
    rates = [float(keras.ops.convert_to_numpy(old(i))) for i in range(8)]  # four epochs, then the new end
    rates += [float(keras.ops.convert_to_numpy(new(i))) for i in range(8, 10)]
    kernel = float(np.asarray(model.get_weights()[0]).ravel()[0])
    assert kernel == pytest.approx(-sum(rates), rel=1e-5)
    stale = sum(float(keras.ops.convert_to_numpy(old(i))) for i in range(10))
    assert abs(kernel + stale) > 0.05  # what the 8-epoch schedule would have given
