"""transformers classes: configs and models, registered with the Auto classes on import."""

from transformers import AutoConfig, AutoModel

from hf_projections.modeling.configuration_hf_projections import DenseProjectionConfig, ProjectionConfig
from hf_projections.modeling.modeling_hf_projections import (
    ColBERTModel,
    ColBERTOutput,
    DenseEmbeddingModel,
    DenseOutput,
    masked_maxsim,
    maxsim,
    pad_token_embeddings,
)

for _config, _model in ((ProjectionConfig, ColBERTModel), (DenseProjectionConfig, DenseEmbeddingModel)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)

__all__ = [
    "ColBERTModel",
    "ColBERTOutput",
    "DenseEmbeddingModel",
    "DenseOutput",
    "DenseProjectionConfig",
    "ProjectionConfig",
    "masked_maxsim",
    "maxsim",
    "pad_token_embeddings",
]
