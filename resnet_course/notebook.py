"""Helpers for the notebooks' "Try it" cells.

>>> from resnet_course.notebook import try_it
>>> with try_it("identity_block"):          # doctest: +SKIP
...     block = keras.Model(X, identity_block(X, 3, [64, 64, 256], 2, "b"))
identity_block isn't written yet: write it in the cell above, then run this cell again.

A released notebook's exercise starts as ``raise NotImplementedError()``. A "Try it" cell that
calls it would stop *Run All* with a traceback, out of sight, before the test cell; inside
``try_it`` it prints one line instead and *Run All* goes on to the test cell, which fails (and
scores 0) until the exercise is written. Any other error in the student's code is raised as usual.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["try_it", "unwritten_message"]

#: exercises whose last "Try it" cell found them unwritten (cleared once one runs through)
_unwritten: set[str] = set()


def unwritten_message(exercise: str, where: str = "in the cell above") -> str:
    return f"{exercise} isn't written yet: write it {where}, then run this cell again."


@contextlib.contextmanager
def try_it(exercise: str, where: str = "in the cell above") -> Iterator[None]:
    """Run a "Try it" cell's code; if ``exercise`` is still the ``raise NotImplementedError()``
    stub (a bare ``NotImplementedError``), print one line saying so instead of a traceback.

    A later cell that reads a result the unwritten exercise never made (a ``NameError``, e.g.
    ``model`` in 03 when ``ResNet50`` isn't written) prints the same line, while ``exercise`` is
    known to be unwritten. ``where`` says where the exercise is written, for cells further down.
    """
    try:
        yield
    except NotImplementedError as error:
        if error.args:  # the stub raises it bare; one with a message comes from a library
            raise
        _unwritten.add(exercise)
        print(unwritten_message(exercise, where))
    except NameError:
        if exercise not in _unwritten:
            raise
        print(unwritten_message(exercise, where))
    else:
        _unwritten.discard(exercise)
