"""Tests of resnet_course.training on a small synthetic SIGNS folder (the real h5 format).

They run the real ``train()`` code path with the ci profile and a tiny network
(``width=1/16``, no identity blocks), so each training takes a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from resnet_course import training
from resnet_course.pipelines import Augmentation
from resnet_course.training import Recipe, WarmupCosine, recipe

TINY = dict(width=0.0625, identity_blocks=(0, 0, 0, 0))
OUTPUTS = ("model.keras", "best.keras", "metrics.json", "history.csv", "learning_curves.png", "confusion_matrix.png")


def _write_signs(folder, n_train=72, n_test=24, seed=0):
    """A fake SIGNS folder: images whose brightness encodes the class (learnable), in the real h5 layout."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, prefix in (("train_signs.h5", n_train, "train"), ("test_signs.h5", n_test, "test")):
        y = np.arange(n) % 6
        x = (rng.integers(0, 40, size=(n, 64, 64, 3)) + (y * 40)[:, None, None, None]).astype(np.uint8)
        with h5py.File(folder / name, "w") as f:
            f.create_dataset(f"{prefix}_set_x", data=x)
            f.create_dataset(f"{prefix}_set_y", data=y.astype(np.int64))
            f.create_dataset("list_classes", data=np.arange(6, dtype=np.int64))
    return folder


@pytest.fixture(autouse=True)
def _no_ci_env(monkeypatch):
    """`make test` sets RESNET_COURSE_PROFILE=ci; tests choose their profile explicitly."""
    monkeypatch.delenv(training.PROFILE_ENV, raising=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    _write_signs(root / "signs")
    return root


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = training.train("signs", "ci", out, data_dir=data_dir, verbose=0, seed=3, precision="float32", **TINY)
    return out, metrics


# --- recipes ---------------------------------------------------------------------------


def test_every_recipe_exists_and_is_frozen():
    for dataset in training.DATASETS:
        for profile in training.PROFILES:
            r = recipe(dataset, profile)
            assert isinstance(r, Recipe) and r.dataset == dataset and r.profile == profile
            assert r.bn_momentum <= 0.9 and r.label_smoothing > 0 and r.warmup_epochs > 0
    with pytest.raises(dataclasses_frozen_error()):
        recipe("signs").epochs = 3


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_small_images_keep_their_resolution():
    assert recipe("cifar10", "quick").stem_pool is False
    for dataset in ("cifar10", "fer2013"):
        assert recipe(dataset, "full").stem_pool is False and recipe(dataset, "full").width == 1.0
    # CIFAR-10 keeps all 32x32 positions into stage 2 (the small stem); the others keep ResNet-50's.
    assert recipe("cifar10", "quick").stem == recipe("cifar10", "full").stem == "small"
    assert {recipe(d, p).stem for d in ("signs", "fer2013") for p in ("quick", "full")} == {"imagenet"}
    resnet = training.build_model(recipe("cifar10", "full")).get_layer("ResNet50")
    assert resnet.get_layer("res2a_relu").output.shape[1:3] == (32, 32)
    # The CIFAR-10 quick recipe trains on 24x24 windows of them (tested on whole images); the
    # others train on whole images.
    assert recipe("cifar10", "quick").crop == 24 and recipe("cifar10", "quick").pooling == "global"
    assert {recipe(d, p).crop for d in ("signs", "fer2013") for p in ("quick", "full")} == {0}


def test_overrides_and_none_overrides():
    r = recipe("cifar10", "quick", epochs=3, batch_size=None, width=0.5)
    assert (r.epochs, r.batch_size, r.width) == (3, recipe("cifar10", "quick").batch_size, 0.5)
    with pytest.raises(TypeError, match="unknown override"):
        recipe("signs", "quick", learning_rat=0.1)


def test_ci_profile_and_environment(monkeypatch):
    r = recipe("signs", "ci")
    assert r.epochs == 1 and r.train_subset and r.test_subset and r.batch_size <= 32
    monkeypatch.setenv(training.PROFILE_ENV, "ci")
    assert recipe("cifar10", "full").profile == "ci"
    monkeypatch.setenv(training.PROFILE_ENV, "bogus")
    with pytest.raises(ValueError, match="RESNET_COURSE_PROFILE"):
        recipe("signs", "quick")


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="mnist"), "Unknown dataset 'mnist'"),
    (dict(profile="slow"), "Unknown profile 'slow'"),
])
def test_unknown_dataset_or_profile(kwargs, message, tmp_path):
    args = dict(dataset="signs", profile="quick") | kwargs
    with pytest.raises(ValueError, match=message):
        recipe(**args)
    with pytest.raises(ValueError, match=message):
        training.train(args["dataset"], args["profile"], tmp_path, verbose=0)


def test_invalid_recipe_fields():
    with pytest.raises(ValueError, match="optimizer"):
        recipe("signs", optimizer="rmsprop")
    with pytest.raises(ValueError, match="epochs"):
        recipe("signs", epochs=0)
    with pytest.raises(ValueError, match="Unknown stem 'cifar'; choose one of imagenet, small"):
        recipe("cifar10", stem="cifar")
    with pytest.raises(ValueError, match="stem_filters must be a positive int, got 0"):
        recipe("cifar10", stem_filters=0)


def test_the_cifar10_quick_recipe_has_a_16_filter_stem_and_the_others_resnet50s():
    assert recipe("cifar10", "quick").model_options()["stem_filters"] == 16
    assert all(recipe(dataset, profile).stem_filters == 64 for dataset, profile in
               [("signs", "quick"), ("signs", "full"), ("cifar10", "full"), ("fer2013", "quick"), ("fer2013", "full")])
    with pytest.raises(ValueError, match="crop=40 is larger than cifar10's 32x32 images; use a crop of at most 32"):
        recipe("cifar10", crop=40)
    with pytest.raises(ValueError, match=r"crop=48 .* needs pooling='global'"):
        recipe("signs", crop=48, pooling="avg_pool")
    with pytest.raises(ValueError, match="crop must be a window size"):
        recipe("cifar10", crop=-2)


def test_recipes_table():
    table = training.recipes_table()
    assert table.count("\n") == 1 + 2 * len(training.DATASETS)


# --- schedule and precision -------------------------------------------------------------


def test_warmup_cosine_schedule_shape_and_serialisation():
    s = WarmupCosine(0.1, total_steps=100, warmup_steps=10, initial_lr=0.004, final_lr=0.0)
    lrs = np.array([float(s(step)) for step in range(0, 120)])
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(0.1)
    assert np.all(np.diff(lrs[10:100]) <= 1e-9)
    assert lrs[55] == pytest.approx(0.05, abs=0.01)
    assert lrs[100] == pytest.approx(0.0, abs=1e-6) and lrs[119] == pytest.approx(0.0, abs=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(again, WarmupCosine) and again.get_config() == s.get_config()


def test_learning_rate_schedules():
    r = recipe("signs", "quick", schedule="constant")
    assert training.learning_rate_schedule(r, 10) == r.learning_rate
    one = training.learning_rate_schedule(recipe("signs", "quick"), 10)
    assert one.total_steps == 10 * recipe("signs", "quick").epochs
    assert float(one(0)) < one.peak_lr


def test_cpu_bf16_detection(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16\n")
    assert training.cpu_has_bf16(info)
    info.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert not training.cpu_has_bf16(info)
    assert not training.cpu_has_bf16(tmp_path / "missing")
    info.write_text("processor : 0\nmodel name : Some CPU 9000\nflags : fpu avx512f\n\n"
                    "processor : 1\nmodel name : Some CPU 9000\nflags : fpu avx512f\n")
    assert training.cpu_info(info) == ("Some CPU 9000", {"fpu", "avx512f"})
    assert training.cpu_info(tmp_path / "missing")[1] == set()
    assert training.detect_precision() in ("float32", "mixed_bfloat16", "mixed_float16")


def test_model_takes_raw_pixels_and_keeps_canonical_names():
    model = training.build_model(recipe("fer2013", "quick", **TINY))
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    resnet = model.get_layer("ResNet50")
    assert resnet.get_layer("conv1") and resnet.get_layer("fc7")
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)


# --- training end to end -----------------------------------------------------------------


@pytest.mark.slow  # trains a model
def test_train_writes_every_output(trained):
    out, metrics = trained
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    written = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "train_seconds", "epochs", "per_class_accuracy", "recipe", "class_names",
                "best_epoch", "best_val_accuracy", "precision", "n_train", "n_validation", "n_test"):
        assert key in written, key
    assert written["epochs"] == 1 and written["profile"] == "ci"
    assert 0.0 <= written["test_accuracy"] <= 1.0 and written["train_seconds"] > 0
    assert set(written["per_class_accuracy"]) == {str(i) for i in range(6)}
    assert written["recipe"]["width"] == TINY["width"] and written["recipe"]["seed"] == 3
    assert written["n_train"] + written["n_validation"] == 72 and written["n_test"] == 24
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(header)
    assert metrics == written


@pytest.mark.slow  # trains a model
def test_same_seed_same_result(data_dir, trained, tmp_path):
    _, first = trained
    again = training.train("signs", "ci", tmp_path, data_dir=data_dir, verbose=0, seed=3, precision="float32",
                           **TINY)
    for key in ("test_accuracy", "test_loss", "val_accuracy_per_epoch", "per_class_accuracy"):
        assert again[key] == first[key], key


@pytest.mark.slow  # trains a model
def test_training_learns(data_dir, tmp_path):
    metrics = training.train("signs", "ci", tmp_path, data_dir=data_dir, verbose=0, epochs=6, batch_size=8,
                             augment=False, learning_rate=3e-3, precision="float32", **TINY)
    assert metrics["epochs"] == 6
    assert metrics["test_accuracy"] > 0.4  # chance: 1/6


@pytest.mark.slow  # trains a model
def test_environment_selects_ci_and_precision_policy_is_restored(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(training.PROFILE_ENV, "ci")
    before = keras.mixed_precision.global_policy().name
    metrics = training.train("signs", "full", tmp_path, data_dir=data_dir, verbose=0, precision="mixed_bfloat16",
                             **TINY)
    assert metrics["profile"] == "ci" and metrics["epochs"] == 1 and metrics["precision"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before
    assert math.isfinite(metrics["test_loss"])


@pytest.mark.slow  # trains a model
def test_saved_model_loads_without_custom_objects(trained):
    out, _ = trained
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert model.input_shape == (None, 64, 64, 3)


@pytest.mark.slow  # trains a model
def test_evaluate(trained, data_dir):
    out, metrics = trained
    result = training.evaluate(out / "model.keras", "signs", data_dir=data_dir)
    assert result["n_test"] == 24 and result["class_names"] == metrics["class_names"]
    assert result["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert np.array(result["confusion_matrix"]).sum() == 24
    with pytest.raises(FileNotFoundError, match="No model file"):
        training.evaluate(out / "nope.keras", "signs", data_dir=data_dir)
    with pytest.raises(ValueError, match="Unknown dataset"):
        training.evaluate(out / "model.keras", "imagenet", data_dir=data_dir)


@pytest.mark.slow  # trains a model
def test_flip_test_time_augmentation(trained, data_dir, capsys):
    out, metrics = trained
    assert metrics["test_accuracy_flip_tta"] is None  # SIGNS: a mirrored hand is the other hand
    with pytest.raises(ValueError, match="mirrored hand sign"):
        training.evaluate(out / "model.keras", "signs", data_dir=data_dir, flip_tta=True)
    from resnet_course import cli

    assert cli.main(["evaluate", str(out / "model.keras"), "--dataset", "signs", "--flip-tta",
                     "--data-dir", str(data_dir)]) != 0
    assert "Flip test-time augmentation does not suit signs" in capsys.readouterr().err
    assert training.mirror_symmetric("cifar10") and training.mirror_symmetric("fer2013")

    model = training.load_model(out / "model.keras")
    x = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3)).astype("uint8")
    y = np.arange(5) % 6
    both = training.predict_probabilities(model, x, y, 6, 4, flip_tta=True)
    expected = (model.predict(x.astype("float32"), verbose=0) + model.predict(x[:, :, ::-1].astype("float32"),
                                                                              verbose=0)) / 2
    np.testing.assert_allclose(both, expected, rtol=1e-5, atol=1e-6)
    plain = training.predict_probabilities(model, x, y, 6, 4)
    np.testing.assert_allclose(plain, model.predict(x.astype("float32"), verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # trains a model
def test_cli_evaluate_prints_accuracy(trained, data_dir, capsys):
    from resnet_course import cli

    out, metrics = trained
    assert cli.main(["evaluate", str(out / "model.keras"), "--dataset", "signs", "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"test accuracy {metrics['test_accuracy']:.4f} on 24 images" in printed


@pytest.mark.slow  # trains a model
def test_predict_top3(trained, tmp_path):
    out, metrics = trained
    paths = []
    for i, (mode, size) in enumerate((("RGB", (64, 64)), ("L", (100, 80)), ("RGBA", (30, 40)))):
        path = tmp_path / f"image{i}.png"
        Image.new(mode, size, color=200 if mode == "L" else (200,) * len(mode)).save(path)
        paths.append(path)
    results = training.predict(out / "model.keras", paths, top=3)
    assert len(results) == 3
    for top in results:
        assert len(top) == 3
        names, probs = zip(*top)
        assert set(names) <= set(metrics["class_names"])
        assert list(probs) == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    assert len(training.predict(out / "model.keras", paths[0], top=10)[0]) == 6


@pytest.mark.slow  # trains a model
def test_predict_matches_the_model_on_the_same_pixels(trained, tmp_path):
    out, _ = trained
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = tmp_path / "exact.png"
    Image.fromarray(pixels).save(path)
    model = training.load_model(out / "model.keras")
    expected = model.predict(pixels[None].astype("float32"), verbose=0)[0]
    name, prob = training.predict(out / "model.keras", [path], top=1)[0][0]
    assert prob == pytest.approx(float(expected.max()), rel=1e-5)


@pytest.mark.slow  # trains a model
def test_predict_clear_errors(trained, tmp_path):
    out, _ = trained
    with pytest.raises(FileNotFoundError, match="No image file"):
        training.predict(out / "model.keras", [tmp_path / "missing.png"])
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="Cannot read"):
        training.predict(out / "model.keras", [bad])
    with pytest.raises(FileNotFoundError, match="No model file"):
        training.predict(tmp_path / "missing.keras", [bad])


@pytest.mark.slow  # trains a model
def test_training_on_crops_tests_on_whole_images(data_dir, tmp_path):
    r = recipe("signs", "ci", crop=40, pooling="global", **TINY)
    policy = training.training_augmentation(r)
    assert policy.crop == 40 and policy.max_shift == 0  # the window's position is the shift
    assert policy.max_zoom == training.training_augmentation(dataclasses.replace(r, crop=0)).max_zoom > 0
    assert training.training_augmentation(dataclasses.replace(r, augment=False)) == Augmentation(crop=40)
    metrics = training.train("signs", "ci", tmp_path, data_dir=data_dir, verbose=0, precision="float32",
                             crop=40, pooling="global", **TINY)
    assert metrics["recipe"]["crop"] == 40 and metrics["input_shape"] == [64, 64, 3]
    model = training.load_model(tmp_path / "model.keras")
    assert model.input_shape == (None, None, None, 3)  # trained on 40x40 windows, tested on 64x64 images
    assert training.evaluate(tmp_path / "model.keras", "signs", data_dir)["n_test"] == metrics["n_test"]
    # predict resizes to the size the model was tested at (metrics.json), as it does for a fixed-size model.
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "exact.png")
    Image.fromarray(pixels).resize((50, 30)).save(tmp_path / "small.png")
    expected = model.predict(pixels[None].astype("float32"), verbose=0)[0]
    top = training.predict(tmp_path / "model.keras", [tmp_path / "exact.png", tmp_path / "small.png"], top=1)
    assert top[0][0][1] == pytest.approx(float(expected.max()), rel=1e-5) and len(top) == 2
    # Without its metrics.json the model keeps the images' size, and says so when they differ.
    (tmp_path / "metrics.json").unlink()
    assert len(training.predict(tmp_path / "model.keras", [tmp_path / "exact.png"], top=1)) == 1
    with pytest.raises(ValueError, match="different sizes .*resize them to one size first"):
        training.predict(tmp_path / "model.keras", [tmp_path / "exact.png", tmp_path / "small.png"])


@pytest.mark.slow  # trains a model
def test_greyscale_model_converts_colour_images(data_dir, tmp_path):
    r = recipe("fer2013", "ci", **TINY)
    model = training.build_model(r)
    training.save_model(model, tmp_path / "model.keras")
    path = tmp_path / "colour.png"
    Image.new("RGB", (64, 64), color=(10, 200, 30)).save(path)
    top = training.predict(tmp_path / "model.keras", [path], top=2, class_names=list("abcdefg"))[0]
    assert len(top) == 2 and all(name in "abcdefg" for name, _ in top)
