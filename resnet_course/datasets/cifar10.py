"""CIFAR-10: 60,000 32x32 colour images in 10 classes.

Read from the official python version (``cifar-10-python.tar.gz``, with :mod:`tarfile`, or
its extracted ``cifar-10-batches-py/``), from ``train/<class>/`` and ``test/<class>/``
image folders, or from a zip of them. The pickled batches are read with a restricted
unpickler that refuses every global outside numpy's array reconstructors, so a tampered
file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from resnet_course.datasets import images
from resnet_course.datasets.cache import cached_arrays
from resnet_course.datasets.core import (
    CIFAR10_CLASS_NAMES,
    DatasetError,
    DatasetSource,
    as_labels,
    first_line,
    splits_of,
)
from resnet_course.datasets.download import find_or_fetch

BATCH_NAMES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")


def load_cifar10(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, cache: bool = True
):
    """CIFAR-10: 50,000 training and 10,000 test images, 32x32 RGB, 10 classes.

    Returns ``(x_train, y_train), (x_test, y_test), class_names``. A missing copy is
    downloaded (the official tarball) unless ``download=False``; ``cache=False`` decodes
    without reading or writing the cache."""
    arrays, _ = read_arrays(find_or_fetch("cifar10", data_dir, download), use_cache=cache)
    splits = splits_of(arrays)
    return splits["train"], splits["test"], list(CIFAR10_CLASS_NAMES)


def read_arrays(source: DatasetSource, *, use_cache: bool = True):
    """``(arrays, cache entry)`` for a CIFAR-10 source: ``x_train``, ``y_train``,
    ``x_test``, ``y_test``."""
    return cached_arrays(source, DECODERS[source.form], use_cache=use_cache)


def list_images(source: DatasetSource) -> images.ImageListing:
    """The images of an image-zip or image-folder source, by split, without decoding."""
    if source.form == "image-zip":
        return images.list_zip("cifar10", source.path)
    return images.list_folder("cifar10", source.path)


# ---------------------------------------------------------------------------------------
# The pickled batches
# ---------------------------------------------------------------------------------------


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 batch may name: numpy's array reconstructors (under
    their NumPy 1 and NumPy 2 module names) and, for Python 3 protocol-2 pickles of bytes,
    ``_codecs.encode``. Nothing that can run arbitrary code."""
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy 1
        from numpy.core import multiarray, numeric
    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches while refusing every global outside an allow-list, so a
    tampered file cannot run code."""

    allowed_globals: dict[tuple[str, str], object] = {}

    def find_class(self, module: str, name: str):
        if not BatchUnpickler.allowed_globals:
            BatchUnpickler.allowed_globals = _numpy_pickle_globals()
        try:
            return self.allowed_globals[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists, numbers and bytes"
            ) from None


def _unpickle_batch(stream, where: str) -> dict[str, object]:
    try:
        # The official batches were pickled by Python 2: their strings load as bytes.
        content = BatchUnpickler(stream, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, OSError, zlib.error) as exc:
        raise DatasetError(f"{where} is not a readable CIFAR-10 batch: {first_line(exc)}") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{where} holds a {type(content).__name__}, expected a dict")
    return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)): v for k, v in content.items()}


def _batch_arrays(content: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", "labels"):
        if key not in content:
            found = ", ".join(sorted(content)) or "none"
            raise DatasetError(f"{where} has no key {key!r} (found: {found})")
    data = content["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", type(data).__name__)
        raise DatasetError(f"{where}: 'data' has shape {shape}, expected (n, 3072)")
    if data.dtype != np.uint8:
        raise DatasetError(f"{where}: 'data' has dtype {data.dtype}, expected uint8")
    labels = as_labels(content["labels"], f"{where} ['labels']", 10, len(data))
    # Rows are channel-major (1024 red, 1024 green, 1024 blue values): to NHWC.
    pixels = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return pixels, labels


def _check_meta(content: dict, where: str) -> None:
    names = content.get("label_names")
    if names is None:
        return
    names = [n.decode("latin-1") if isinstance(n, bytes) else str(n) for n in names]
    if names != list(CIFAR10_CLASS_NAMES):
        raise DatasetError(
            f"{where}: label_names {names} differ from CIFAR-10's {list(CIFAR10_CLASS_NAMES)}"
        )


def _assemble(batches: dict[str, tuple[np.ndarray, np.ndarray]], where: str):
    missing = [b for b in BATCH_NAMES + ("test_batch",) if b not in batches]
    if missing:
        raise DatasetError(
            f"{where} lacks {', '.join(missing)}: the official CIFAR-10 python version has "
            "data_batch_1 to data_batch_5 and test_batch"
        )
    return {
        "x_train": np.concatenate([batches[b][0] for b in BATCH_NAMES]),
        "y_train": np.concatenate([batches[b][1] for b in BATCH_NAMES]),
        "x_test": batches["test_batch"][0],
        "y_test": batches["test_batch"][1],
    }


def _decode_batches(source: DatasetSource) -> dict[str, np.ndarray]:
    batches = {}
    for name in BATCH_NAMES + ("test_batch",):
        path = source.path / name
        if path.is_file():
            with open(path, "rb") as stream:
                batches[name] = _batch_arrays(_unpickle_batch(stream, str(path)), str(path))
    meta_path = source.path / "batches.meta"
    if meta_path.is_file():
        with open(meta_path, "rb") as stream:
            _check_meta(_unpickle_batch(stream, str(meta_path)), str(meta_path))
    return _assemble(batches, str(source.path))


def _decode_tarball(source: DatasetSource) -> dict[str, np.ndarray]:
    wanted = set(BATCH_NAMES + ("test_batch", "batches.meta"))
    batches = {}
    try:
        with tarfile.open(source.path, "r:gz") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in wanted:
                    continue
                where = f"{source.path}!{member.name}"
                # Read the member whole, so a truncated archive fails here, as an archive.
                payload = archive.extractfile(member).read()
                content = _unpickle_batch(io.BytesIO(payload), where)
                if base == "batches.meta":
                    _check_meta(content, where)
                else:
                    batches[base] = _batch_arrays(content, where)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(
            f"{source.path} is not a readable .tar.gz ({first_line(exc)}): it may be "
            "truncated. Delete it and run `resnet-course data fetch cifar10`."
        ) from None
    return _assemble(batches, str(source.path))


DECODERS = {
    "cifar-batches": _decode_batches,
    "cifar-tarball": _decode_tarball,
    "image-folder": lambda source: images.decode_folder("cifar10", source.path),
    "image-zip": lambda source: images.decode_zip("cifar10", source.path),
}
