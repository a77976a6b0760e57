"""Build the model a projection adapter describes: its encoder (shared, not copied) plus the saved head.

    model = load_adapter_model("head")                      # the encoder named in the folder + the saved head
    model = load_adapter_model("head", encoder=my_encoder)  # a loaded encoder (a LoRA PeftModel of it works too)
"""

from __future__ import annotations

import inspect
import os

from torch import nn
from transformers import AutoModel, AutoTokenizer

from hf_projections.modeling.adapter_fields import ADAPTER_FIELDS, MODEL_CLASSES, check_encoder_width, model_config
from hf_projections.modeling.adapter_files import load_head_tensors, read_adapter_config, read_adapter_tensors
from hf_projections.modeling.adapter_format import ADAPTER_KEY_PREFIXES, HUB_KEYS


def find_tokenizer(*names: str | None):
    """The tokenizer of the first name that has one (None when none does: call ``set_tokenizer`` then)."""
    for name in names:
        if name:
            try:
                return AutoTokenizer.from_pretrained(name)
            except (OSError, ValueError):
                continue
    return None


def load_encoder(name: str, **kwargs) -> nn.Module:
    """``AutoModel.from_pretrained(name)``, its BERT-style pooler dropped where the class can go without one (never
    used for token states, and unused parameters break DistributedDataParallel), as ``from_backbone`` does."""
    encoder = AutoModel.from_pretrained(name, **kwargs)
    if getattr(encoder, "pooler", None) is not None and "add_pooling_layer" in inspect.signature(type(encoder)).parameters:
        encoder.pooler = None
    return encoder


def model_around_encoder(encoder: nn.Module, fields: dict, backbone_name: str | None = None, tokenizer=None):
    """A ``ColBERTModel`` (or ``DenseEmbeddingModel``) whose backbone is ``encoder`` itself (shared, not copied), with
    a fresh head as the fields describe, on the encoder's device and dtype (a head built on the meta device, under
    PEFT's ``low_cpu_mem_usage``, stays there until its weights are assigned)."""
    config = model_config(fields, backbone_config=encoder.config.to_dict(), backbone_name=backbone_name)
    check_encoder_width(fields, config.hidden_size, f"encoder {type(encoder).__name__}")
    model = MODEL_CLASSES[config.model_type][1](config, backbone=encoder)
    reference = next(encoder.parameters())
    for name in ADAPTER_KEY_PREFIXES:
        module = getattr(model, name, None)
        if module is not None and all(p.device.type != "meta" for p in module.parameters()):
            module.to(device=reference.device, dtype=reference.dtype)
    if tokenizer is not None:
        model.set_tokenizer(tokenizer)
    return model


def load_adapter_model(path: str | os.PathLike, encoder: nn.Module | None = None, tokenizer=None, **kwargs):
    """The model a projection adapter folder describes: ``encoder`` (default: ``base_model_name_or_path`` loaded with
    ``AutoModel``) plus the saved head, checked tensor by tensor.

    Args:
        path: a local adapter folder or a Hub id.
        encoder: a loaded encoder to use (shared, not copied).
        tokenizer: default: the encoder's (by ``base_model_name_or_path``, else ``encoder.name_or_path``).
        **kwargs: ``revision``, ``token``, ``cache_dir``, ``local_files_only``, ``subfolder`` for the adapter files;
            anything else (``dtype``, ...) goes to ``AutoModel.from_pretrained`` for the encoder.
    """
    path = os.fspath(path)
    hub_kwargs = {k: kwargs.pop(k) for k in HUB_KEYS if k in kwargs}
    description = read_adapter_config(path, **hub_kwargs)
    base = description.get("base_model_name_or_path")
    if encoder is None:
        if not base:
            raise ValueError(f"{path}: adapter_config.json names no base_model_name_or_path; pass encoder=")
        shared = {k: hub_kwargs[k] for k in ("token", "cache_dir", "local_files_only") if k in hub_kwargs}
        if description.get("revision"):
            shared["revision"] = description["revision"]
        encoder = load_encoder(base, **shared, **kwargs)
    if tokenizer is None:
        tokenizer = find_tokenizer(base, getattr(encoder, "name_or_path", None))
    fields = {name: description[name] for name in ADAPTER_FIELDS}
    model = model_around_encoder(encoder, fields, backbone_name=base, tokenizer=tokenizer)
    tensors = read_adapter_tensors(path, **hub_kwargs)
    load_head_tensors(model, tensors, path)
    model.eval()
    return model
