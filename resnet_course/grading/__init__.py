"""The course's grader: checks a student's blocks and ResNet-50 against the reference.

>>> from resnet_course.grading import check_identity_block
>>> check_identity_block(identity_block)        # doctest: +SKIP
All tests passed.

Each check builds the student's function on symbolic ``keras.Input`` tensors
for several cases, builds the reference (``resnet_course.blocks`` and
``resnet_course.model``) on the same cases, and compares the two graphs in
data-flow order (the main path, then the shortcut, then the Add and what
follows it):

1. an exception raised in the student's code: reported with the case and the
   student's own line;
2. each layer's type and the settings that change its result (filters,
   kernel, strides, padding, batch-norm axis, activation ...), so a missing,
   extra or misplaced layer is reported where it first happens;
3. the names of the convs, batch norms, paddings, poolings, Flatten and the
   classifier (activations and Adds may be named freely);
4. the number of parameters (total, trainable and non-trainable);
5. the wiring (what feeds the Add);
6. the numbers: the reference's weights (with random batch-norm statistics)
   are copied into the student's layers, and the two models must compute the
   same outputs in inference and in training mode.

Every expected value is computed live from the reference, never pasted, so
the grader follows the library's versions. Equivalent styles pass:
``layers.ReLU()``, ``Activation('relu')`` or ``keras.activations.relu(X)``;
``Add()``, ``layers.add``, ``keras.ops.add`` or ``X + X_shortcut``, with the
Add's inputs in either order; ints or tuples for kernel sizes and strides;
any names on activations and Adds; ``Dense(classes)`` followed by
``Activation('softmax')``.

Only the Keras 3 API is used (and numpy), so the grader runs on the
TensorFlow, JAX and PyTorch backends.

The modules: ``cases`` (the calls checked, and the hidden ones drawn at grade time), ``graph``
(reading a model's layers in data-flow order), ``messages`` (wording), ``comparison`` and
``diagnosis`` (finding and explaining the first difference), ``calls`` and ``exception_messages``
(exceptions from the student's code), ``checks`` (the checks). Trusted grading, where student code
runs in another process: ``assignments``, ``program``, ``collect`` (the child's side), ``handback``
and ``allowlist`` (reading what the child wrote), ``verdict``.

The public names load lazily, so that the grading child process (``collect``) does not import the
reference implementation.
"""

from __future__ import annotations

import importlib as _importlib

__all__ = [
    "BlockCase",
    "ModelCase",
    "IDENTITY_BLOCK_CASES",
    "CONVOLUTIONAL_BLOCK_CASES",
    "RESNET50_CASES",
    "check_identity_block",
    "check_convolutional_block",
    "check_resnet50",
    "PASSED",
]

_HOMES = {
    "BlockCase": "cases",
    "ModelCase": "cases",
    "IDENTITY_BLOCK_CASES": "cases",
    "CONVOLUTIONAL_BLOCK_CASES": "cases",
    "RESNET50_CASES": "cases",
    "check_identity_block": "checks",
    "check_convolutional_block": "checks",
    "check_resnet50": "checks",
    "PASSED": "checks",
}


def __getattr__(name):
    if name in _HOMES:
        value = getattr(_importlib.import_module(f"resnet_course.grading.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resnet_course.grading' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
