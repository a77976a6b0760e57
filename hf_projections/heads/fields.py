"""Typed, validated spec fields: one small class per kind of argument a projection type accepts.

Each head class declares ``fields = {name: Field(...)}``; :func:`validate_args` checks a user's arguments
against them and fills in defaults. Error messages name the field as ``"<type>.<field>"`` and say what is
allowed, e.g. ``"ffn.depth must be an int in 1..4, got 7"``.
"""

import math

from .errors import ProjectionSpecError, ProjectionSpecTypeError


def _type_name(value):
    return type(value).__name__


class Field:
    """Base class: a default value plus a docstring-like ``help`` text."""

    def __init__(self, default, help=""):
        self.default = default
        self.help = help

    def describe_allowed(self):
        """Short human-readable description of the allowed values."""
        raise NotImplementedError

    def validate(self, where, value):
        """Return the normalised value, or raise ``ProjectionSpecError``/``ProjectionSpecTypeError``.

        ``where`` is the dotted field name used in messages (``"ffn.depth"``).
        """
        raise NotImplementedError


class BoolField(Field):
    """A JSON boolean (``True``/``False``); ints and strings are rejected."""

    def describe_allowed(self):
        return "true|false"

    def validate(self, where, value):
        if not isinstance(value, bool):
            raise ProjectionSpecTypeError(f"{where} must be a bool (true|false), got {value!r} ({_type_name(value)})")
        return value


class IntField(Field):
    """An integer in ``low..high`` (inclusive); bools and floats are rejected."""

    def __init__(self, default, low, high, help=""):
        super().__init__(default, help)
        self.low = low
        self.high = high

    def describe_allowed(self):
        return f"int in {self.low}..{self.high}"

    def validate(self, where, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProjectionSpecTypeError(
                f"{where} must be an int in {self.low}..{self.high}, got {value!r} ({_type_name(value)})"
            )
        if not self.low <= value <= self.high:
            raise ProjectionSpecError(f"{where} must be an int in {self.low}..{self.high}, got {value!r}")
        return value


class FloatField(Field):
    """A finite real number in an interval; ints are accepted and converted to float, bools are rejected."""

    def __init__(self, default, low, high, low_inclusive=True, high_inclusive=True, help=""):
        super().__init__(default, help)
        self.low = low
        self.high = high
        self.low_inclusive = low_inclusive
        self.high_inclusive = high_inclusive

    def describe_allowed(self):
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"float in {left}{self.low}, {self.high}{right}"

    def validate(self, where, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProjectionSpecTypeError(
                f"{where} must be a {self.describe_allowed()}, got {value!r} ({_type_name(value)})"
            )
        value = float(value)
        above_low = value >= self.low if self.low_inclusive else value > self.low
        below_high = value <= self.high if self.high_inclusive else value < self.high
        if not (math.isfinite(value) and above_low and below_high):
            raise ProjectionSpecError(f"{where} must be a {self.describe_allowed()}, got {value!r}")
        return value


class ChoiceField(Field):
    """One string out of a fixed list of choices (case-sensitive)."""

    def __init__(self, default, choices, help=""):
        super().__init__(default, help)
        self.choices = tuple(choices)

    def describe_allowed(self):
        return "|".join(self.choices)

    def validate(self, where, value):
        if not isinstance(value, str):
            raise ProjectionSpecTypeError(
                f"{where} must be one of {self.describe_allowed()}, got {value!r} ({_type_name(value)})"
            )
        if value not in self.choices:
            raise ProjectionSpecError(f"{where} must be one of {self.describe_allowed()}, got {value!r}")
        return value


def validate_args(type_name, fields, args):
    """Check ``args`` (a dict without ``"type"``) against ``fields``; return all fields with defaults filled.

    Unknown argument names raise ``ProjectionSpecError`` listing the allowed names. The result keeps the
    declaration order of ``fields`` so resolved specs serialise the same way every time.
    """
    unknown = sorted(name for name in args if name not in fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "(none)"
        names = ", ".join(repr(name) for name in unknown)
        plural = "arguments" if len(unknown) > 1 else "argument"
        raise ProjectionSpecError(f"{type_name}: unknown {plural} {names}; allowed: {allowed}")
    resolved = {}
    for name, field in fields.items():
        value = args.get(name, field.default)
        resolved[name] = field.validate(f"{type_name}.{name}", value)
    return resolved


def check_dims(d_in, d_out):
    """Raise a clear error unless ``d_in`` and ``d_out`` are positive ints (bools rejected)."""
    for where, value in (("d_in", d_in), ("d_out", d_out)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProjectionSpecTypeError(f"{where} must be a positive int, got {value!r} ({_type_name(value)})")
        if value < 1:
            raise ProjectionSpecError(f"{where} must be a positive int, got {value!r}")
