"""resnet_course: build ResNet-50 in Keras 3, block by block, and train it on real data.

The package behind the course's notebooks: the reference blocks and model,
the grader (``resnet_course.grading``), the datasets, training recipes, plots
and the ``resnet-course`` command line.

``ResNet50``, ``identity_block`` and ``convolutional_block`` are imported on
first use, so ``resnet_course.datasets`` and the command line's data commands
don't pay for importing TensorFlow.
"""

import importlib as _importlib
import os as _os

# Quiet TensorFlow's C++ start-up logs before anything imports it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_LAZY = {
    "ResNet50": "resnet_course.model",
    "identity_block": "resnet_course.blocks",
    "convolutional_block": "resnet_course.blocks",
}

__all__ = ["ResNet50", "convolutional_block", "identity_block"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resnet_course' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
