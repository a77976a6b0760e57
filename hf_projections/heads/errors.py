"""Exceptions raised for bad projection specs.

``ProjectionSpecTypeError`` subclasses both ``ValueError`` and ``TypeError`` so that callers that catch
either (``except ValueError`` in config validation, ``except TypeError`` in argument checks) see it.
"""


class ProjectionSpecError(ValueError):
    """A projection spec (type, argument name, argument value or dimension) is invalid."""


class ProjectionSpecTypeError(ProjectionSpecError, TypeError):
    """A projection spec value has the wrong Python type (e.g. ``"yes"`` where a bool is expected)."""
