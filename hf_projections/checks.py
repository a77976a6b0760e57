"""Argument checks shared by configs, training arguments and sweep settings.

Each check returns the value when it is allowed and otherwise raises a ``ValueError`` naming the argument, what
is allowed and what was given. ``bool`` is never accepted as a number (``True`` is an ``int`` in Python, but never a
count here). Standard library only, so it can be copied next to a checkpoint's remote code.
"""

from __future__ import annotations

import math
from typing import Any


def is_int(value: Any) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a finite ``int``/``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def non_negative_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 0."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def positive_number(name: str, value: Any) -> float:
    """``value`` if it is a finite number > 0."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def non_negative_number(name: str, value: Any) -> float:
    """``value`` if it is a finite number >= 0."""
    if not is_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def one_of(name: str, value: Any, allowed: tuple) -> Any:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value
