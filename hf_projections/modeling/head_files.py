"""Save and load a projection head alone, to put onto another model with the same backbone width.

``save_head`` writes a projection adapter folder (``adapter_files``: ``adapter_config.json`` naming the backbone,
``adapter_model.safetensors`` with the head and layer-mix tensors, a small ``config.json``), which PEFT,
``AutoModel.from_pretrained`` and ``load_head`` read. ``load_head`` also reads the first format
(``projection_config.json`` + ``projection.safetensors``). Works on plain models and on PEFT-wrapped ones (the trained
copy inside PEFT's ``ModulesToSaveWrapper``, or a projection adapter's active head), found by duck typing, so this
module does not import PEFT.

    save_head(model, "head")
    load_head(other_model_with_same_backbone_width, "head")
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

from safetensors.torch import load_file
from torch import nn

from hf_projections.heads import build_projection, resolve_spec
from hf_projections.heads.layer_mix import build_layer_mix
from hf_projections.modeling.adapter_fields import (
    HEAD_FIELDS,
    adapter_description,
    adapter_fields,
    check_encoder_width,
    model_config,
)
from hf_projections.modeling.adapter_files import (
    active_module,
    adapter_tensors,
    load_head_tensors,
    read_adapter_config,
    read_adapter_tensors,
    write_adapter_folder,
)
from hf_projections.modeling.adapter_format import ADAPTER_CONFIG_NAME

logger = logging.getLogger(__name__)

HEAD_MODULE_NAME = "projection"
# The first head-only format, still read by load_head.
HEAD_WEIGHTS_NAME = "projection.safetensors"
HEAD_CONFIG_NAME = "projection_config.json"
HEAD_FORMAT = "hf-projections-head"


def base_model_of(model: nn.Module) -> nn.Module:
    """The hf-projections model inside a ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def head_module(model: nn.Module) -> nn.Module:
    """The active projection head (the trained copy when PEFT wraps it in a ``ModulesToSaveWrapper``, the active
    adapter's head inside a projection adapter)."""
    head = active_module(base_model_of(model), HEAD_MODULE_NAME)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no projection head")
    return head


def save_head(model: nn.Module, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Save only the projection head (and its layer mix) as a projection adapter: ``adapter_config.json`` (spec,
    dims, layer mix, ColBERT settings, ``base_model_name_or_path`` = the backbone's name), ``adapter_model.safetensors``
    and a small ``config.json``. Works on plain and PEFT-wrapped models; ``load_head``, ``PeftModel.from_pretrained``
    and ``AutoModel.from_pretrained`` read the folder. ``base_model_name_or_path``: the encoder to load it onto
    (default: the model's ``backbone_name``)."""
    base = base_model_of(model)
    name = base_model_name_or_path or getattr(base.config, "backbone_name", None)
    description = adapter_description(adapter_fields(base.config), name)
    return write_adapter_folder(directory, description, adapter_tensors(base))


def read_head_config(directory: str | os.PathLike) -> dict:
    """Read and check ``projection_config.json`` of a head saved in the first format."""
    path = Path(directory) / HEAD_CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"no {ADAPTER_CONFIG_NAME} or {HEAD_CONFIG_NAME} in {directory}: not a saved head (see save_head)"
        )
    description = json.loads(path.read_text(encoding="utf-8"))
    if description.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path} is not an hf-projections head (format={description.get('format')!r})")
    for key in ("projection", "d_in", "dim"):
        if key not in description:
            raise ValueError(f"{path} is missing {key!r}")
    return description


def load_head(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Replace ``model``'s head (and layer mix) by a saved one; returns ``model``.

    Reads a projection adapter folder (``save_head``, ``save_projection_adapter``) or an older head folder
    (``projection_config.json`` + ``projection.safetensors``). The model's config is updated (``projection``,
    ``dim``, ``matryoshka_dims``, ``projection_layers``, ``layer_mix``; its tokenisation settings stay) so
    ``save_pretrained`` then writes a complete model. Raises ``ValueError`` when the head's input width differs from
    the backbone's hidden size or when any saved tensor is missing, unexpected or of the wrong shape (named).
    """
    base = base_model_of(model)
    if base is not model:
        raise TypeError("load_head works on a plain model; load the head before wrapping it with PEFT")
    if not (Path(directory) / ADAPTER_CONFIG_NAME).exists():
        return _load_legacy_head(model, directory)
    config = model.config
    description = read_adapter_config(directory)
    check_encoder_width(description, config.hidden_size, str(directory))
    if description["model_type"] != config.model_type:
        logger.warning("loading a head saved from a %s model into a %s model", description["model_type"], config.model_type)
    fields = {**adapter_fields(config), **{name: description[name] for name in HEAD_FIELDS}}
    new_config = model_config(fields, backbone_config=config.backbone_config)
    layers = new_config.projection_layers
    parts = SimpleNamespace(
        projection=build_projection(new_config.projection, new_config.projection_input_size, new_config.dim),
        layer_mix=build_layer_mix(new_config.layer_mix, len(layers)) if layers else None,
    )
    load_head_tensors(parts, read_adapter_tensors(directory), str(directory))
    reference = next(model.backbone.parameters())
    model.projection = parts.projection.to(device=reference.device, dtype=reference.dtype)
    model.layer_mix = parts.layer_mix.to(device=reference.device, dtype=reference.dtype) if layers else None
    for name in HEAD_FIELDS:
        setattr(config, name, getattr(new_config, name))
    return model


def _load_legacy_head(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """``load_head`` for a folder of the first format (``projection_config.json`` + ``projection.safetensors``)."""
    description = read_head_config(directory)
    config = model.config
    model.check_single_layer_input("load_head (a head alone, without a layer mix)")
    if int(description["d_in"]) != int(config.hidden_size):
        raise ValueError(
            f"the saved head takes inputs of width {description['d_in']} but this backbone's hidden size is "
            f"{config.hidden_size}; load it onto a backbone of the same width"
        )
    if description.get("model_type") not in (None, config.model_type):
        logger.warning("loading a head saved from a %s model into a %s model", description["model_type"], config.model_type)
    spec = resolve_spec(description["projection"])
    head = build_projection(spec, int(description["d_in"]), int(description["dim"]))
    state = load_file(str(Path(directory) / HEAD_WEIGHTS_NAME))
    expected = head.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in state.items() if k not in expected]
    problems += [
        f"{k}: saved {tuple(state[k].shape)} but the spec builds {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise ValueError(f"saved head in {directory} does not match its spec {spec['type']!r}: " + "; ".join(problems))
    head.load_state_dict(state)
    reference = next(model.backbone.parameters())
    model.projection = head.to(device=reference.device, dtype=reference.dtype)
    config.projection = spec
    config.dim = int(description["dim"])
    config.matryoshka_dims = description.get("matryoshka_dims")
    return model
