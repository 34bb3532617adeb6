"""The input pipeline's overhead: ``fit`` from in-memory arrays against ``fit`` from tf.data.

The same compiled model, batch size and number of steps, trained by
``model.fit`` in alternating rounds from

* ``arrays``: in-memory float32 arrays (already scaled to [0, 1], no augmentation):
  the least input work Keras can do;
* ``pipeline``: the course's tf.data pipeline with augmentation, i.e.
  ``resnet_course.pipelines.make_datasets`` when it is available (on the data
  ``resnet_course.datasets.load_signs`` returns), otherwise a stand-in built
  here with the same kind of augmentation (random shift, zoom and rotation as
  Keras preprocessing layers mapped over batches, then prefetch).

Images/s are timed inside ``fit`` by a callback, from the end of the
``skip``-th batch to the end of the last (so ``fit``'s own start-up, which
both pay, is excluded; it is reported separately as ``fit_s``).
overhead = 1 - pipeline images/s / arrays images/s.
"""

from __future__ import annotations

import gc
import time

import numpy as np


class _BatchClock:
    """A Keras callback recording the time at the end of every training batch."""

    def __new__(cls):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter())

        return Clock()


def steady_images_per_second(times, batch_size: int, skip: int) -> float:
    """Images/s between the end of batch ``skip`` and the end of the last batch."""
    if len(times) <= skip + 1:
        raise ValueError(f"need more than {skip + 1} batches to time, got {len(times)}")
    return (len(times) - 1 - skip) * batch_size / (times[-1] - times[skip])


def load_data(dataset: str = "signs", data_dir=None):
    """``(x_train, y_train), source``: the course's loader, or the training module's fallback."""
    try:
        from resnet_course import datasets

        (x, y), _, _ = datasets.load_dataset(dataset, data_dir)
        return (x, y), "resnet_course.datasets.load_dataset"
    except (ImportError, AttributeError):
        from resnet_course import training

        (x, y), _, _ = training.load_dataset(dataset, data_dir)
        return (x, y), "resnet_course.training.load_dataset"


def build_pipeline(dataset: str, x, y, batch_size: int, seed: int = 0):
    """``(tf.data.Dataset of (float images in [0, 1], int labels), description)``; repeats forever."""
    import tensorflow as tf

    try:
        from resnet_course.pipelines import make_datasets
    except ImportError as exc:
        reason = f"stand-in ({exc})"
    else:
        data = make_datasets(dataset, x, y, batch_size=batch_size, augment=True, seed=seed, drop_remainder=True)
        return data.train.repeat(), (
            f"resnet_course.pipelines.make_datasets({dataset!r}, x, y, batch_size={batch_size}, augment=True, "
            f"drop_remainder=True).train.repeat() (augmentation {data.augmentation})"
        )

    from keras import layers

    augment = [
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed),
        layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 1),
        layers.RandomRotation(0.03, fill_mode="nearest", seed=seed + 2),
    ]

    def augment_batch(images, labels):
        images = tf.cast(images, tf.float32) / 255.0
        for layer in augment:
            images = layer(images, training=True)
        return images, labels

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
    ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).repeat().batch(batch_size, drop_remainder=True)
    ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return ds, reason + ": shuffle, batch, map(shift+zoom+rotation), prefetch"


def measure(
    dataset: str = "signs",
    data_dir=None,
    *,
    batch_size: int = 32,
    steps: int = 12,
    skip: int = 2,
    rounds: int = 3,
    precision: str = "float32",
    classes: int | None = None,
    log=print,
) -> dict:
    """Round-robin ``fit`` from arrays and from the pipeline; see the module docstring."""
    import keras

    from bench_throughput import _compile, build_ours

    start = time.perf_counter()
    (x, y), loader = load_data(dataset, data_dir)
    load_s = time.perf_counter() - start
    classes = classes or int(np.max(y)) + 1
    x_float = x.astype("float32") / 255.0
    y = np.asarray(y, dtype="int32")
    pipeline, pipeline_note = build_pipeline(dataset, x, y, batch_size)

    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy(precision)
        model, options = build_ours(x.shape[1:], classes)
        _compile(model)
    finally:
        keras.mixed_precision.set_global_policy(previous)

    # Enough array batches per fit call: repeat the arrays when the dataset is small.
    needed = steps * batch_size
    reps = -(-needed // len(x_float))
    xa, ya = (np.concatenate([x_float] * reps), np.concatenate([y] * reps)) if reps > 1 else (x_float, y)

    def fit_arrays(clock):
        model.fit(xa, ya, batch_size=batch_size, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
                  callbacks=[clock])

    def fit_pipeline(clock):
        model.fit(pipeline, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])

    # Warm-up: trace the train function and start the pipeline's threads.
    fit_arrays(_BatchClock())
    fit_pipeline(_BatchClock())

    variants = [("arrays", fit_arrays), ("pipeline", fit_pipeline)]
    result = {
        "dataset": dataset, "loader": loader, "load_s": load_s, "pipeline": pipeline_note,
        "batch_size": batch_size, "steps": steps, "skip": skip, "rounds": rounds, "precision": precision,
        "model_options": options, "input_shape": list(x.shape[1:]),
        "ips": {name: [] for name, _ in variants}, "fit_s": {name: [] for name, _ in variants},
    }
    for r in range(rounds):
        for name, fit in variants if r % 2 == 0 else variants[::-1]:
            clock = _BatchClock()
            t0 = time.perf_counter()
            fit(clock)
            result["fit_s"][name].append(time.perf_counter() - t0)
            ips = steady_images_per_second(clock.times, batch_size, skip)
            result["ips"][name].append(ips)
            log(f"  pipeline round {r + 1}/{rounds} {name:8s} {ips:7.1f} img/s")
    medians = {name: float(np.median(v)) for name, v in result["ips"].items()}
    result["ips_median"] = medians
    result["overhead"] = overhead(medians["pipeline"], medians["arrays"])
    # The two were timed side by side in each round: the per-round ratios cancel slow drifts in load.
    per_round = [overhead(p, a) for p, a in zip(result["ips"]["pipeline"], result["ips"]["arrays"]) if a]
    result["overhead_per_round"] = per_round
    result["overhead_paired"] = float(np.median(per_round)) if per_round else None
    del model
    keras.backend.clear_session()
    gc.collect()
    return result


def overhead(pipeline_ips: float, array_ips: float) -> float:
    """The pipeline's overhead: 1 - pipeline images/s / arrays images/s (negative: the pipeline was faster)."""
    return 1.0 - pipeline_ips / array_ips
