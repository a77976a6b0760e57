"""Projection heads: pure-PyTorch modules ``(..., d_in) -> (..., d_out)`` built from JSON specs.

Every module here imports only the standard library, torch and sibling modules (``from .x import y``), so the
files can be copied flat next to a checkpoint's remote code.
"""

from .base import ProjectionHead, ResidualHead
from .describe import describe
from .errors import ProjectionSpecError, ProjectionSpecTypeError
from .ffn import FFNProjection
from .glu import GLUProjection
from .hourglass import HourglassProjection
from .linear import LinearProjection
from .linear_init import init_from_linear
from .phm import PHMLinear, PHMProjection
from .presets import PRESETS
from .registry import (
    PROJECTION_TYPES,
    build_projection,
    describe_fields,
    list_projections,
    register_projection,
    resolve_spec,
)
from .tversky import TverskyProjection

__all__ = [
    "PRESETS",
    "PROJECTION_TYPES",
    "FFNProjection",
    "GLUProjection",
    "HourglassProjection",
    "LinearProjection",
    "PHMLinear",
    "PHMProjection",
    "ProjectionHead",
    "ProjectionSpecError",
    "ProjectionSpecTypeError",
    "ResidualHead",
    "TverskyProjection",
    "build_projection",
    "describe",
    "describe_fields",
    "init_from_linear",
    "list_projections",
    "register_projection",
    "resolve_spec",
]
