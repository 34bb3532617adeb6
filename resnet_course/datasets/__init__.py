"""The course's three datasets: SIGNS, CIFAR-10 and FER-2013, each with one call.

    from resnet_course.datasets import load_signs, load_cifar10, load_fer2013

    (x_train, y_train), (x_test, y_test), class_names = load_cifar10()

Every loader returns images as ``uint8`` arrays in NHWC layout (SIGNS 64x64x3, CIFAR-10
32x32x3, FER-2013 48x48x1) and labels as ``int64`` class indices into ``class_names``.

Where the data lives
    The data directory is the ``data_dir`` argument, else the environment variable
    ``RESNET_COURSE_DATA``, else ``datasets/`` in the repository. It holds one folder per
    dataset (``signs/``, ``cifar10/``, ``fer2013/``); a ``data_dir`` that is itself such a
    folder works too. Each folder may hold any of these forms (the first one found wins):

    - signs: ``train_signs.h5`` and ``test_signs.h5``.
    - cifar10: ``cifar-10-batches-py/`` (the extracted official batches), the official
      ``cifar-10-python.tar.gz``, image folders ``train/<class>/*`` and ``test/<class>/*``
      (png or jpg), or a ``.zip`` of those folders.
    - fer2013: the original ``fer2013.csv`` (columns emotion, pixels, Usage), the Kaggle
      image folders ``train/<emotion>/Training_*.jpg`` and
      ``test/<emotion>/{PublicTest,PrivateTest}_*.jpg``, or the ``.zip`` Kaggle serves.

    A missing dataset is downloaded on first use where a public source exists (SIGNS,
    CIFAR-10), with its checksum verified; FER-2013 needs a Kaggle account, so it comes
    through ``kagglehub`` when that is installed and configured, and otherwise the error
    says where to get it and where to put it. A user's own copy is accepted when its
    structure is right: checksums are enforced only on what this package downloads.

Caching
    Decoded arrays are cached as ``.npy`` files under ``RESNET_COURSE_CACHE`` (default: the
    user's cache folder, e.g. ``~/.cache/resnet-course``), never beside the source. SIGNS is
    read straight from its HDF5 files, which are already arrays.

Errors
    Bad or missing input raises :class:`DatasetError` (a ``ValueError``) whose message names
    the file (and row, key, member or folder), the problem and what to do about it.

The modules
    ``signs``, ``cifar10``, ``fer2013``: one per dataset, its formats and its loader;
    ``images``: image folders and zips; ``download``: finding a local copy and downloading
    one; ``cache``: the cache of decoded arrays; ``describe``: any dataset by name;
    ``core``: names, shapes, errors and checks that all of them share.

The input pipelines (NumPy batches, or tf.data on TensorFlow) are in
:mod:`resnet_course.pipelines`, which imports this package (never the other way round), so
loading data never imports TensorFlow.
"""

from resnet_course.datasets.cache import CACHE_ENV_VAR, LOADER_VERSION, resolve_cache_dir
from resnet_course.datasets.cifar10 import load_cifar10
from resnet_course.datasets.core import (
    CIFAR10_CLASS_NAMES,
    CLASS_NAMES,
    DATA_ENV_VAR,
    DATASET_NAMES,
    DISPLAY_NAMES,
    FER2013_CLASS_NAMES,
    FER2013_TEST_SPLITS,
    FER2013_TRAIN_SPLIT,
    FORM_DESCRIPTIONS,
    IMAGE_SHAPES,
    SIGNS_CLASS_NAMES,
    DatasetError,
    DatasetNotFoundError,
    DatasetSource,
    resolve_data_dir,
)
from resnet_course.datasets.describe import (
    DatasetInfo,
    SplitSummary,
    describe_dataset,
    load_dataset,
)
from resnet_course.datasets.download import (
    REMOTE_FILES,
    RemoteFile,
    fetch,
    find_source,
)
from resnet_course.datasets.fer2013 import load_fer2013
from resnet_course.datasets.signs import load_signs

__all__ = [
    "CACHE_ENV_VAR",
    "CIFAR10_CLASS_NAMES",
    "CLASS_NAMES",
    "DATA_ENV_VAR",
    "DATASET_NAMES",
    "DISPLAY_NAMES",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSource",
    "FER2013_CLASS_NAMES",
    "FER2013_TEST_SPLITS",
    "FER2013_TRAIN_SPLIT",
    "FORM_DESCRIPTIONS",
    "IMAGE_SHAPES",
    "LOADER_VERSION",
    "REMOTE_FILES",
    "RemoteFile",
    "SIGNS_CLASS_NAMES",
    "SplitSummary",
    "describe_dataset",
    "fetch",
    "find_source",
    "load_cifar10",
    "load_dataset",
    "load_fer2013",
    "load_signs",
    "resolve_cache_dir",
    "resolve_data_dir",
]
