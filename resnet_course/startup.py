"""Start TensorFlow without its C++ start-up log lines, keeping every other line on stderr.

>>> from resnet_course import startup
>>> startup.import_tensorflow_quietly()     # the notebooks' setup cell calls this

TensorFlow 2.16+ logs through absl from its shared libraries while they load, before absl's
logging is initialised: those lines (``WARNING: All log messages before absl::InitializeLog() is
called ...``, ``cudart_stub.cc ... Could not find cuda drivers``, ``port.cc ... oneDNN custom
operations are on``, and ``failed call to cuInit`` when the first op looks for a GPU on a machine
without one) are written by C++ straight to file descriptor 2, once per library, and
``TF_CPP_MIN_LOG_LEVEL`` does not stop them. In a notebook, ipykernel forwards fd 2 into the cell's
output as a red box. This module points fd 2 at a temporary file while TensorFlow is imported,
then writes back every line that isn't one of these known start-up lines, so real errors and
warnings still show.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
import tempfile
from typing import Iterator

__all__ = ["STARTUP_NOISE", "configured_backend", "filtered_stderr", "keras_without_tensorflow", "import_tensorflow_quietly", "is_startup_noise"]

#: One line of TensorFlow's load-time logging (absl's pre-init notice, INFO lines and the
#: instruction-set notice). Warnings and errors (``W``/``E``/``F`` lines) are kept.
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:. ]+\d+ \S+:\d+\] .*"
    r"|W\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] .*"
    r"|E\d{4} [\d:. ]+\d+ cuda_(dnn|fft|blas|executor)\.cc:\d+\] Unable to register .* factory.*"
    r"|E\d{4} [\d:. ]+\d+ cuda_(platform|executor|diagnostics)\.cc:\d+\] failed call to cuInit: .*"
    r"|To enable the following instructions: .*)$"
)


def is_startup_noise(line: str) -> bool:
    """Whether ``line`` (without its newline) is one of TensorFlow's load-time log lines."""
    return bool(STARTUP_NOISE.match(line.rstrip("\r\n")))


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture what C++ code writes to fd 2 inside the block, then write back the lines that
    aren't TensorFlow's start-up noise (to ``sys.stderr``, so a notebook shows them as usual).

    Python's own ``sys.stderr`` is left alone: tracebacks and Python warnings go where they always go.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (a closed or redirected stream)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_startup_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def configured_backend() -> str:
    """The backend Keras will load, read as Keras reads it, without importing Keras:
    ``KERAS_BACKEND``, else ``keras.json`` in ``KERAS_HOME`` (default ``~/.keras``), else tensorflow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    import json
    from pathlib import Path

    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def import_tensorflow_quietly() -> None:
    """Import Keras (and TensorFlow first, when Keras will run on it) with TensorFlow's start-up
    log lines left out.

    On the JAX or PyTorch backend TensorFlow is not imported. Does nothing when Keras is already
    imported; an import error is raised as usual, with whatever TensorFlow wrote to stderr shown.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later INFO logs, after absl is initialised
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return
    on_tensorflow = configured_backend() == "tensorflow" and importlib.util.find_spec("tensorflow") is not None
    with filtered_stderr():
        if on_tensorflow:
            tensorflow = importlib.import_module("tensorflow")
            # Looking for devices now logs "failed call to cuInit" here, on a machine without a GPU,
            # instead of in the first cell that runs a layer.
            tensorflow.config.list_physical_devices()
        importlib.import_module("keras")


@contextlib.contextmanager
def keras_without_tensorflow() -> Iterator[None]:
    """Inside: Keras, running on JAX or PyTorch, does not import TensorFlow just to ask whether
    it is installed (it does so to seed it, and on every config serialization: cloning and
    saving a model). Elsewhere, or once TensorFlow is imported, nothing changes.

    Keras asks through one shared lazy module whose availability it caches; this answers "not
    installed" for the duration and then forgets the answer again."""
    import keras
    from keras.src.utils import module_utils

    lazy = getattr(module_utils, "tensorflow", None)
    if (keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules
            or lazy is None or getattr(lazy, "_available", None) is not None):
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        if lazy.module is None:
            lazy._available = None
