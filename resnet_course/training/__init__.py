"""Training recipes for SIGNS, CIFAR-10 and FER-2013, and the functions behind the command line.

Modules: ``recipes`` (the recipes), ``machine`` (CPU, precision), ``schedules`` (learning
rates, optimizers), ``loop`` (``train``), ``inference`` (``evaluate``, ``predict`` on saved models).

A *recipe* (``Recipe``, a frozen dataclass) holds every choice of a training
run: the model options, augmentation, the optimizer, the learning-rate schedule
with its warm-up, label smoothing, batch size, epochs, numeric precision, the
validation split and the seed. ``recipe(dataset, profile, **overrides)`` returns
the course's recipe for a dataset and a profile:

``quick``
    a laptop CPU, minutes (SIGNS) to half an hour (CIFAR-10, FER-2013).
``full``
    a GPU (or a patient CPU): the full-width network and a long schedule.
``ci``
    a small subset (256 training and 128 test images), one epoch, small
    batches: the same code path in a few seconds, for CI. The environment
    variable ``RESNET_COURSE_PROFILE=ci`` selects it whatever profile the
    caller asked for, so the training notebooks run quickly in CI.

``train(dataset, profile, out_dir)`` trains one recipe and writes to
``out_dir``: ``model.keras`` (the model of the best validation epoch, raw
pixel values 0-255 in, probabilities out), ``best.keras`` (the checkpoint written
during training), ``history.csv``, ``metrics.json``, ``learning_curves.png`` and
``confusion_matrix.png``. The test split is used once, at the end.

``evaluate(model_path, dataset)`` and ``predict(model_path, image_paths)``
work on a saved model. The saved model starts with a ``Rescaling(1/255)``
layer, so it takes raw images with pixel values 0-255: no preprocessing to
repeat. The input pipelines (validation split, augmentation, batching) are
``resnet_course.pipelines``', with ``normalization="none"``.

    >>> from resnet_course.training import recipe
    >>> recipe("signs", "quick").optimizer
    'adamw'
"""

from __future__ import annotations

from resnet_course.training.recipes import (  # noqa: F401
    CHECKPOINT_FILE, CONFUSION_FILE, CURVES_FILE, DATASETS, DATASET_SHAPES, HISTORY_FILE,
    METRICS_FILE, MODEL_FILE, OPTIMIZERS, PRECISIONS, PROFILES, PROFILE_ENV, SCHEDULES, Recipe,
    active_profile, recipe, recipes_table,
)
from resnet_course.training.machine import (  # noqa: F401
    apply_precision, cpu_has_bf16, cpu_info, detect_precision, machine_info, seed_everything,
)
from resnet_course.training.schedules import (  # noqa: F401
    WarmupCosine, learning_rate_schedule, make_optimizer,
)
from resnet_course.training.loop import (  # noqa: F401
    build_model, compile_model, load_dataset, make_eval_dataset, mean_cross_entropy, mirror_symmetric,
    per_class_accuracy, predict_probabilities, save_model, subset, train, training_augmentation,
)
from resnet_course.training.inference import (  # noqa: F401
    evaluate, format_predictions, load_images, load_model, predict,
)
