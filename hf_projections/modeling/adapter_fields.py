"""The fields of a projection adapter: what rebuilds a model beside its encoder, checked through the model config.

``adapter_config.json`` holds PEFT's own keys (``adapter_description``) and these fields: the head spec, output and
input dims, layer mix, Matryoshka dims and the ColBERT settings (lengths, markers, query augmentation, pooling).
"""

from __future__ import annotations

from importlib import metadata

from hf_projections.modeling.adapter_format import ADAPTER_TYPE
from hf_projections.modeling.configuration_hf_projections import DenseProjectionConfig, ProjectionConfig
from hf_projections.modeling.modeling_colbert import ColBERTModel
from hf_projections.modeling.modeling_dense import DenseEmbeddingModel

MODEL_CLASSES = {config.model_type: (config, model)
                 for config, model in ((ProjectionConfig, ColBERTModel), (DenseProjectionConfig, DenseEmbeddingModel))}
# What rebuilds the model beside its encoder; d_in is the encoder's hidden size (checked when loading).
ADAPTER_FIELDS = (
    "model_type", "projection", "dim", "d_in", "projection_layers", "layer_mix", "matryoshka_dims",
    "query_max_length", "document_max_length", "query_marker", "document_marker", "augment_queries", "pooling",
    "starbucks_pairs",
)
# The fields ``load_head`` puts onto another model (its tokenisation settings stay its own).
HEAD_FIELDS = ("projection", "dim", "matryoshka_dims", "projection_layers", "layer_mix")
# PEFT's record of the base model class, for AutoPeftModel: the base is the encoder, loaded with AutoModel.
ENCODER_AUTO_MAPPING = {"base_model_class": "AutoModel", "parent_library": "transformers"}


def adapter_fields(config: ProjectionConfig) -> dict:
    """The :data:`ADAPTER_FIELDS` of a model's config."""
    fields = {name: getattr(config, name, None) for name in ADAPTER_FIELDS if name != "d_in"}
    fields["d_in"] = int(config.hidden_size)
    return {name: fields[name] for name in ADAPTER_FIELDS}


def model_config(fields: dict, backbone_config=None, backbone_name: str | None = None) -> ProjectionConfig:
    """The model config the fields describe (``ProjectionConfig`` or ``DenseProjectionConfig`` by ``model_type``);
    its checks raise errors naming the bad field."""
    model_type = fields.get("model_type")
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_CLASSES)}, got {model_type!r}")
    config_class = MODEL_CLASSES[model_type][0]
    kwargs = {k: v for k, v in fields.items() if k not in ("model_type", "d_in") and v is not None}
    for name in ("query_marker", "document_marker", "projection_layers"):  # None is a value here, not "default"
        if name in fields:
            kwargs[name] = fields[name]
    return config_class(backbone_config=backbone_config, backbone_name=backbone_name, **kwargs)


def check_adapter_fields(fields: dict) -> dict:
    """``fields`` checked and normalised (resolved projection spec, sorted Matryoshka dims) through the model config;
    ``d_in`` must be a positive int or None (filled from the encoder)."""
    unknown = sorted(set(fields) - set(ADAPTER_FIELDS))
    if unknown:
        raise ValueError(f"unknown projection adapter fields {unknown}; allowed: {', '.join(ADAPTER_FIELDS)}")
    d_in = fields.get("d_in")
    if d_in is not None and (isinstance(d_in, bool) or not isinstance(d_in, int) or d_in < 1):
        raise ValueError(f"d_in (the encoder's hidden size) must be a positive int or None, got {d_in!r}")
    config = model_config(fields)
    checked = {name: getattr(config, name, None) for name in ADAPTER_FIELDS if name not in ("model_type", "d_in")}
    return {"model_type": config.model_type, "d_in": d_in, **checked}


def peft_version() -> str | None:
    """The installed PEFT version, recorded like PEFT records it (None when PEFT is not installed)."""
    try:
        return metadata.version("peft")
    except metadata.PackageNotFoundError:
        return None


def adapter_description(fields: dict, base_model_name_or_path: str | None, revision: str | None = None) -> dict:
    """The ``adapter_config.json`` of an adapter: PEFT's own keys plus the checked fields."""
    return {
        "base_model_name_or_path": base_model_name_or_path,
        "revision": revision,
        "peft_type": ADAPTER_TYPE,
        "task_type": None,
        "inference_mode": True,
        "auto_mapping": dict(ENCODER_AUTO_MAPPING),
        "peft_version": peft_version(),
        **check_adapter_fields(fields),
    }


def check_encoder_width(fields: dict, hidden_size: int, source: str) -> None:
    """The head was trained on ``d_in``-wide states: refuse an encoder of another width."""
    if fields.get("d_in") is not None and int(fields["d_in"]) != int(hidden_size):
        raise ValueError(f"{source}: d_in={fields['d_in']} (the head's input width) but this encoder's hidden size is "
                         f"{hidden_size}; use the encoder the adapter was trained on")
