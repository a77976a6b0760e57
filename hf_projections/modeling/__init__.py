"""transformers classes: configs and models, registered with the Auto classes on import; the backbone as a
stack of layers; MaxSim; saving a head alone."""

from transformers import AutoConfig, AutoModel

from hf_projections.modeling.configuration_hf_projections import DenseProjectionConfig, ProjectionConfig
from hf_projections.modeling.head_files import load_head, read_head_config, save_head
from hf_projections.modeling.maxsim import masked_maxsim, maxsim, pad_token_embeddings
from hf_projections.modeling.modeling_colbert import ColBERTModel, ColBERTOutput
from hf_projections.modeling.modeling_dense import DenseEmbeddingModel, DenseOutput
from hf_projections.modeling.modeling_hf_projections import ProjectionPreTrainedModel

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
    "ProjectionPreTrainedModel",
    "load_head",
    "masked_maxsim",
    "maxsim",
    "pad_token_embeddings",
    "read_head_config",
    "save_head",
]
