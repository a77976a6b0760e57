"""hf-projections: better final projection heads for ColBERT and embedding models.

Importing the package registers its configs and models with transformers' ``AutoConfig``/``AutoModel`` and wires
the integrations into the models' extension points (imported on first use); it also registers the projection head
as a PEFT adapter type (``hf_projection``), so PEFT and ``AutoModel`` load adapter folders once the package is imported.

Layers, lowest first; a module imports only from its own layer or a lower one (``tests/test_layers.py`` checks)::

    atomic, checks, version  standard-library helpers (atomic writes, argument checks)
    heads                    pure PyTorch projection heads, registry, specs
    modeling                 configs, models, backbone layers, MaxSim, head files
    data, retrieval          BEIR sets and training pairs; encoded corpora, exact/ANN search
    evaluation, training     metrics and BEIR evaluation; arguments, recipes, losses, caches, the loop, Trainer
    integrations             sentence-transformers, PEFT (LoRA; the projection adapter), model cards and the Hub, checkpoint import
    sweep, colbertize        grids of heads x seeds, tables, plots, cards; a dense encoder -> a ColBERT model
    cli                      the ``hf-projections`` command
"""

from hf_projections.heads import build_projection, describe, init_from_linear, list_projections, resolve_spec
from hf_projections.modeling import (
    ColBERTModel,
    DenseEmbeddingModel,
    DenseProjectionConfig,
    ProjectionConfig,
)
from hf_projections.modeling.extensions import register_extension
from hf_projections.version import __version__

# Registers the projection head as a PEFT adapter type (``hf_projection``), so PeftModel.from_pretrained,
# get_peft_model and AutoModel.from_pretrained(adapter_folder) know it once the package is imported.
from hf_projections.integrations.projection_adapter import (  # noqa: E402
    ProjectionAdapterConfig,
    load_projection_adapter,
    save_projection_adapter,
)

for _name, _target in (
    ("write_model_card", "hf_projections.integrations.model_card:write_model_card"),
    ("push_to_hub", "hf_projections.integrations.model_card:push_to_hub"),
    ("to_sentence_transformers", "hf_projections.integrations.sentence_transformers:to_sentence_transformers"),
    ("from_sentence_transformers", "hf_projections.integrations.sentence_transformers:from_sentence_transformers"),
    ("load_colbert_checkpoint", "hf_projections.integrations.checkpoints:load_colbert_checkpoint"),
    ("load_projection_adapter", "hf_projections.integrations.projection_adapter:load_projection_adapter"),
):
    register_extension(_name, _target)

__all__ = [
    "ColBERTModel",
    "DenseEmbeddingModel",
    "DenseProjectionConfig",
    "ProjectionAdapterConfig",
    "ProjectionConfig",
    "__version__",
    "build_projection",
    "describe",
    "init_from_linear",
    "list_projections",
    "load_projection_adapter",
    "resolve_spec",
    "save_projection_adapter",
]
