"""The projection head as a PEFT adapter type (``hf_projection``): a trained head that attaches to its encoder.

Importing this module (``import hf_projections`` does) registers the type with PEFT, so the usual PEFT calls work::

    peft_model = get_peft_model(encoder, ProjectionAdapterConfig(projection="ffn2-x2-res", dim=128))
    peft_model.encode_queries(["what causes scurvy?"])      # a ColBERTModel around the encoder; only the head trains
    peft_model.save_pretrained("adapter")                   # adapter_config.json, adapter_model.safetensors, config.json
    PeftModel.from_pretrained(AutoModel.from_pretrained(name), "adapter")
    AutoModel.from_pretrained("adapter")                    # a ColBERTModel: the encoder it names + the head
    save_projection_adapter(trained_colbert_model, "adapter")   # the same folder from a trained model
    load_projection_adapter("adapter")                      # a plain ColBERTModel

The tuner wraps the encoder in a ``ColBERTModel`` (or ``DenseEmbeddingModel``) whose backbone *is* the encoder, and
puts the head (and layer mix) inside :class:`ProjectionAdapterLayer` modules, so PEFT selects, saves and loads only
their tensors. One projection adapter per model. LoRA combines with it as the encoder: ``get_peft_model(lora_encoder,
ProjectionAdapterConfig(...))`` trains both and each ``save_pretrained`` keeps its own tensors;
``PeftModel.from_pretrained(PeftModel.from_pretrained(encoder, lora_dir), head_dir)`` loads them back. PEFT holds one
tuner type per ``PeftModel``, so the two are never adapters of one ``PeftModel``; ``apply_lora``'s LoRA (trained on a
``ColBERTModel``) loads onto ``load_projection_adapter(head_dir)`` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from peft import PeftConfig
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from hf_projections.integrations.peft_registry import add_peft_type, register_tuner
from hf_projections.integrations.projection_adapter_layer import ProjectionAdapterLayer, adapter_layer
from hf_projections.modeling.adapter_fields import (
    ADAPTER_FIELDS,
    ENCODER_AUTO_MAPPING,
    check_adapter_fields,
)
from hf_projections.modeling.adapter_files import check_tensors, write_adapter_folder
from hf_projections.modeling.adapter_format import ADAPTER_METHOD, ADAPTER_PREFIX, ADAPTER_SLOTS, ADAPTER_TYPE
from hf_projections.modeling.adapter_models import find_tokenizer, load_adapter_model, model_around_encoder
from hf_projections.modeling.head_files import base_model_of, save_head
from hf_projections.modeling.modeling_hf_projections import ProjectionPreTrainedModel


@dataclass
class ProjectionAdapterConfig(PeftConfig):
    """PEFT config of a projection adapter: what rebuilds the model beside its encoder.

    Args:
        model_type: ``"hf_projections_colbert"`` (``ColBERTModel``) or ``"hf_projections_dense"``.
        projection: a preset name or ``{"type": ..., **args}`` spec; stored resolved.
        dim: output dimension. ``d_in``: the encoder's hidden size (None: read from the encoder by ``get_peft_model``).
        projection_layers / layer_mix: layer-mix input (``[-1, -2]``, ``"scalar"`` or ``"concat"``), or None.
        matryoshka_dims, query_max_length, document_max_length, query_marker, document_marker, augment_queries,
        pooling, starbucks_pairs: as in ``ProjectionConfig``; the defaults are the measured head-mode recipe (a
        ``linear`` head, no marker tokens, no ``[MASK]`` query padding), not ColBERT's, except the head input: None
        (the last layer), since that is what None means in a saved ``adapter_config.json``; pass
        ``projection_layers=[-1, -2, -3]`` for the recipe's scalar mix.
    """

    model_type: str = field(default="hf_projections_colbert", metadata={"help": "the hf-projections model type"})
    projection: Union[str, dict] = field(default="linear", metadata={"help": "head preset name or spec"})
    dim: int = field(default=128, metadata={"help": "output dimension"})
    d_in: Optional[int] = field(default=None, metadata={"help": "the encoder's hidden size"})
    projection_layers: Optional[list[int]] = field(default=None, metadata={"help": "layer-mix input layers"})
    layer_mix: str = field(default="scalar", metadata={"help": "scalar or concat"})
    matryoshka_dims: Optional[list[int]] = field(default=None, metadata={"help": "nested output dims"})
    query_max_length: int = 32
    document_max_length: int = 180
    # The head-mode recipe measured here (training/recipes.py), not ColBERT's habits: plain queries and documents.
    query_marker: Optional[str] = None
    document_marker: Optional[str] = None
    augment_queries: bool = False
    pooling: str = "mean"
    starbucks_pairs: Optional[list[list[int]]] = None

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = add_peft_type(ADAPTER_TYPE)
        for name, value in check_adapter_fields(self.fields()).items():
            setattr(self, name, value)

    def fields(self) -> dict:
        """The model fields (``ADAPTER_FIELDS``) as a dict."""
        return {name: getattr(self, name) for name in ADAPTER_FIELDS}

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Write ``adapter_config.json`` and the ``config.json`` that lets ``AutoModel.from_pretrained`` load the
        folder as a ``ColBERTModel`` (both atomically; ``PeftModel.save_pretrained`` writes the weights)."""
        # PEFT would record the wrapper (ColBERTModel) as the base model class; the base is the encoder.
        description = {**self.to_dict(), "auto_mapping": dict(ENCODER_AUTO_MAPPING)}
        write_adapter_folder(save_directory, description)


class ProjectionAdapterModel(BaseTuner):
    """PEFT tuner: wraps an encoder in a ``ColBERTModel`` around it (shared, not copied) whose head is the adapter.

    ``self.model`` is that ``ColBERTModel``, so a ``PeftModel`` reaches ``encode_queries``, ``encode_documents`` and
    ``score`` through attribute access; the encoder is frozen, the head (and layer mix) train.
    """

    prefix = ADAPTER_PREFIX
    tuner_layer_cls = ProjectionAdapterLayer
    target_module_mapping: dict = {}
    # The adapter wraps the encoder rather than changing it in place, so PEFT's inject_adapter_in_model (and
    # transformers' model.load_adapter, built on it) cannot give it back: refuse them with PEFT's own message.
    uses_shared_state = True

    def __getattr__(self, name: str) -> Any:
        # BaseTuner forwards missing attributes to the model; before BaseTuner.__init__ has set peft_config, a LoRA
        # PeftModel encoder would lend its own, and this adapter's config would be written into the LoRA's.
        if name == "peft_config":
            return nn.Module.__getattr__(self, name)
        return super().__getattr__(name)

    def inject_adapter(self, model: nn.Module, adapter_name: str, autocast_adapter_dtype: bool = True,
                       low_cpu_mem_usage: bool = False, state_dict=None) -> None:
        config = self.peft_config[adapter_name]
        if any(isinstance(module, ProjectionAdapterLayer) for module in model.modules()):
            raise ValueError("this model already has a projection adapter; one per model (load another on another "
                             "copy of the encoder)")
        if isinstance(base_model_of(model), ProjectionPreTrainedModel):
            raise TypeError(f"get_peft_model needs the encoder, got a {type(base_model_of(model)).__name__}: pass its "
                            ".backbone, or save its head with save_projection_adapter(model, folder)")
        name = config.base_model_name_or_path or getattr(model, "name_or_path", None) or None
        fields = config.fields()
        wrapped = model_around_encoder(model, fields, backbone_name=name)
        if config.d_in is None:
            config.d_in = int(wrapped.config.hidden_size)
        if config.base_model_name_or_path is None:  # a LoRA PeftModel encoder: the name of the model inside it
            config.base_model_name_or_path = name
        tokenizer = find_tokenizer(getattr(model, "name_or_path", None), name)
        if tokenizer is not None:
            wrapped.set_tokenizer(tokenizer)
        for role in ADAPTER_SLOTS:
            module = getattr(wrapped, role, None)
            if module is not None:
                setattr(wrapped, role, adapter_layer(role, adapter_name, module))
        self.model = wrapped
        self._mark_only_adapters_as_trainable(wrapped)
        self.set_adapter(adapter_name, inference_mode=config.inference_mode)

    def _create_and_replace(self, *args, **kwargs):  # required by BaseTuner; inject_adapter does the work
        raise NotImplementedError("the projection adapter wraps the whole encoder; it replaces no target module")

    # ----------------------------------------------------------------- state dicts (keys without the adapter name)

    @classmethod
    def _adapter_prefixes(cls, model: nn.Module, adapter_name: str) -> list[str]:
        return [f"{name}.{layer.adapter_layer_names[0]}.{adapter_name}"
                for name, layer in model.named_modules() if isinstance(layer, ProjectionAdapterLayer)]

    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        """Only this adapter's head and layer-mix tensors (a LoRA encoder inside keeps its own adapter)."""
        prefixes = cls._adapter_prefixes(model, adapter_name)
        return {k: v for k, v in state_dict.items() if any(k.startswith(p + ".") for p in prefixes)}

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        for slot in ADAPTER_SLOTS.values():
            key = key.replace(f"{slot}.{adapter_name}.", f"{slot}.")
        return key

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """Checkpoint keys -> model keys, after checking every head tensor is there with the model's shape."""
        prefixes = cls._adapter_prefixes(model, adapter_name)
        targets = {cls._remove_adapter_name_from_key(k, adapter_name): (k, v.shape) for k, v in model.state_dict().items()
                   if any(k.startswith(p + ".") for p in prefixes)}
        check_tensors(state_dict, {k: shape for k, (_, shape) in targets.items()}, "projection adapter")
        return {targets[k][0]: v for k, v in state_dict.items()}

    # ----------------------------------------------------------------- unloading

    def merge_and_unload(self, *args, **kwargs) -> ProjectionPreTrainedModel:
        """The plain model: its head (and layer mix) are the active adapter's modules."""
        model = self.model
        for role in ADAPTER_SLOTS:
            layer = getattr(model, role, None)
            if isinstance(layer, ProjectionAdapterLayer):
                setattr(model, role, layer.active_module())
        return model

    def unload(self) -> nn.Module:
        """The encoder alone."""
        return self.model.backbone


register_tuner(ADAPTER_METHOD, ProjectionAdapterConfig, ProjectionAdapterModel, ADAPTER_PREFIX)


def save_projection_adapter(model: nn.Module, directory: str | os.PathLike,
                            base_model_name_or_path: str | None = None) -> Path:
    """Save a trained model's head (and layer mix) as a projection adapter folder, atomically.

    Args:
        model: a ``ColBERTModel``/``DenseEmbeddingModel``, plain or inside a ``PeftModel`` (LoRA with the head in
            ``modules_to_save``, or a projection adapter): the active head is saved.
        directory: the folder (``adapter_config.json``, ``adapter_model.safetensors``, ``config.json``).
        base_model_name_or_path: the encoder to load it onto; default ``model.config.backbone_name``.
    """
    base = base_model_of(model)
    if not isinstance(base, ProjectionPreTrainedModel):
        raise TypeError(f"save_projection_adapter needs an hf-projections model, got {type(base).__name__}")
    return save_head(base, directory, base_model_name_or_path)


def load_projection_adapter(directory: str | os.PathLike, encoder: nn.Module | None = None, **kwargs):
    """The model a projection adapter describes: ``encoder`` (default: ``base_model_name_or_path``, loaded with
    ``AutoModel``; a LoRA ``PeftModel`` of the encoder works too) plus the saved head, checked tensor by tensor.

    ``kwargs``: ``tokenizer``; ``revision``, ``token``, ``cache_dir``, ``local_files_only``, ``subfolder`` for the
    adapter files; anything else (``dtype``, ...) goes to ``AutoModel.from_pretrained`` for the encoder.
    """
    return load_adapter_model(directory, encoder=encoder, **kwargs)
