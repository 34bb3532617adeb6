"""resnet_course: build ResNet-50 in Keras 3, block by block, and train it on real data.

The package behind the course's notebooks: the reference blocks and model,
the grader (``resnet_course.grading``), the datasets, training recipes, plots
and the ``resnet-course`` command line.
"""

import os as _os

# Quiet TensorFlow's C++ start-up logs before anything imports it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from resnet_course.blocks import convolutional_block, identity_block  # noqa: E402
from resnet_course.model import ResNet50  # noqa: E402

__all__ = ["ResNet50", "convolutional_block", "identity_block"]
__version__ = "0.1.0"
