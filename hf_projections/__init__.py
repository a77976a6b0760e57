"""hf-projections: better final projection heads for ColBERT and embedding models.

Importing the package registers its configs and models with transformers' ``AutoConfig``/``AutoModel``.
"""

from hf_projections.heads import build_projection, describe, init_from_linear, list_projections, resolve_spec
from hf_projections.modeling import (
    ColBERTModel,
    DenseEmbeddingModel,
    DenseProjectionConfig,
    ProjectionConfig,
)

__version__ = "0.1.0"

__all__ = [
    "ColBERTModel",
    "DenseEmbeddingModel",
    "DenseProjectionConfig",
    "ProjectionConfig",
    "build_projection",
    "describe",
    "init_from_linear",
    "list_projections",
    "resolve_spec",
]
