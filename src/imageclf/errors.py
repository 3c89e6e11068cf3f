"""The project's one error base class, and how an error becomes one line for a person.

Every error this code raises on purpose is a :class:`ModelError` (plus the built-in type callers
already catch: ``ValueError`` for bad input, ``RuntimeError`` for a broken model or service), so
one ``except ModelError`` catches all of them and nothing else.

Example:
    >>> try:
    ...     decode_image(b"not an image")
    ... except ModelError as err:
    ...     print(first_line(err))
    This file is not an image that can be read ...
"""
from __future__ import annotations

__all__ = ["ModelError", "first_line"]


class ModelError(Exception):
    """Base of every error the classifier, the Space, training and the scripts raise on purpose."""

def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): one line for a person.

    Example:
        >>> first_line(ValueError("bad size\\nsee the docs"))
        'bad size'
    """
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
