"""The one registry of projection types, spec resolution and the ``build_projection`` factory.

A spec is a preset name (``"ffn2-x2-res"``) or a JSON-serialisable dict ``{"type": ..., **args}``. A dict whose
``type`` is a preset name starts from that preset and overrides the given fields
(``{"type": "ffn2-x2-res", "dropout": 0.1}``). ``resolve_spec`` returns the full dict with every default
filled in; heads keep it as ``head.spec`` so ``build_projection(head.spec, d_in, d_out)`` rebuilds them.
"""

from .errors import ProjectionSpecError, ProjectionSpecTypeError
from .ffn import FFNProjection
from .fields import check_dims, validate_args
from .glu import GLUProjection
from .hourglass import HourglassProjection
from .linear import LinearProjection
from .phm import PHMProjection
from .presets import PRESETS
from .tversky import TverskyProjection

PROJECTION_TYPES = {}


def register_projection(cls):
    """Register a head class (a ``base.ProjectionHead`` subclass with ``type_name`` and ``fields``).

    Usable as a class decorator. Re-registering a name replaces nothing: it raises ``ValueError``.
    """
    name = getattr(cls, "type_name", "")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a non-empty string type_name to be registered")
    if name in PROJECTION_TYPES and PROJECTION_TYPES[name] is not cls:
        raise ValueError(f"projection type {name!r} is already registered by {PROJECTION_TYPES[name].__name__}")
    PROJECTION_TYPES[name] = cls
    return cls


for _cls in (LinearProjection, FFNProjection, GLUProjection, PHMProjection, TverskyProjection, HourglassProjection):
    register_projection(_cls)


def _unknown_type_message(name):
    return (
        f"unknown projection type {name!r}; known types: {', '.join(sorted(PROJECTION_TYPES))}; "
        f"presets: {', '.join(sorted(PRESETS))}"
    )


def resolve_spec(spec):
    """Preset name or (partial) spec dict -> full spec dict ``{"type": ..., every field: value}``.

    Raises ``ProjectionSpecError`` (a ``ValueError``) for unknown types/presets, unknown arguments and
    out-of-range values, and ``ProjectionSpecTypeError`` (a ``ValueError`` and ``TypeError``) for values of the
    wrong type; messages name the field (``"ffn.depth must be an int in 1..4, got 7"``).
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ProjectionSpecTypeError(
            f"projection spec must be a preset name (str) or a dict with a 'type', got {type(spec).__name__}"
        )
    if "type" not in spec:
        raise ProjectionSpecError(f"projection spec is missing 'type'; known types: {', '.join(sorted(PROJECTION_TYPES))}")
    name = spec["type"]
    if not isinstance(name, str):
        raise ProjectionSpecTypeError(f"projection spec 'type' must be a str, got {name!r} ({type(name).__name__})")
    args = {key: value for key, value in spec.items() if key != "type"}
    if name not in PROJECTION_TYPES:
        if name not in PRESETS:
            raise ProjectionSpecError(_unknown_type_message(name))
        preset = dict(PRESETS[name])
        name = preset.pop("type")
        args = {**preset, **args}
    non_str = [key for key in args if not isinstance(key, str)]
    if non_str:
        raise ProjectionSpecTypeError(f"{name}: argument names must be strings, got {non_str[0]!r}")
    cls = PROJECTION_TYPES[name]
    return {"type": name, **validate_args(name, cls.fields, args)}


def build_projection(spec, d_in, d_out):
    """Build the head for ``spec`` mapping ``(..., d_in) -> (..., d_out)``.

    The module has ``.spec`` (resolved, JSON-serialisable), ``.d_in`` and ``.d_out``. Parameters are initialised
    from torch's global RNG, so ``torch.manual_seed(s)`` before two builds gives identical heads.
    """
    check_dims(d_in, d_out)
    resolved = resolve_spec(spec)
    return PROJECTION_TYPES[resolved["type"]](d_in, d_out, resolved)


def list_projections():
    """``{"types": {type: {arg: default}}, "presets": {preset: resolved spec}}``."""
    types = {name: {arg: field.default for arg, field in cls.fields.items()} for name, cls in sorted(PROJECTION_TYPES.items())}
    presets = {name: resolve_spec(name) for name in PRESETS}
    return {"types": types, "presets": presets}


def describe_fields(type_name):
    """``{arg: {"default": ..., "allowed": "...", "help": "..."}}`` for one registered type (for docs / CLIs)."""
    if type_name not in PROJECTION_TYPES:
        raise ProjectionSpecError(_unknown_type_message(type_name))
    return {
        arg: {"default": field.default, "allowed": field.describe_allowed(), "help": field.help}
        for arg, field in PROJECTION_TYPES[type_name].fields.items()
    }
