"""Save and load a projection head alone: ``projection.safetensors`` plus ``projection_config.json`` (its spec,
input width, output dim, Matryoshka dims and where it came from), to put onto another model with the same backbone
width. Works on plain models and on PEFT-wrapped ones (the trained copy inside PEFT's ``ModulesToSaveWrapper``),
found by duck typing, so this module does not import PEFT.

    save_head(model, "head")
    load_head(other_model_with_same_backbone_width, "head")
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from hf_projections.heads import build_projection, resolve_spec
from hf_projections.atomic import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

HEAD_MODULE_NAME = "projection"
HEAD_WEIGHTS_NAME = "projection.safetensors"
HEAD_CONFIG_NAME = "projection_config.json"
HEAD_FORMAT = "hf-projections-head"
HEAD_FORMAT_VERSION = 1


def base_model_of(model: nn.Module) -> nn.Module:
    """The hf-projections model inside a ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def head_module(model: nn.Module) -> nn.Module:
    """The active projection head (the trained copy when PEFT wraps it in a ``ModulesToSaveWrapper``)."""
    head = getattr(base_model_of(model), HEAD_MODULE_NAME, None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no projection head")
    copies = getattr(head, "modules_to_save", None)
    if isinstance(copies, nn.ModuleDict):
        active = getattr(head, "active_adapter", None)
        active = active[0] if isinstance(active, (list, tuple)) else active
        if active in copies:
            return copies[active]
        return head.original_module
    return head


def save_head(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Save only the projection head: ``projection.safetensors`` plus ``projection_config.json`` (spec, input
    width, output dim, Matryoshka dims, source model). Works on plain and PEFT-wrapped models."""
    base = base_model_of(model)
    config = base.config
    base.check_single_layer_input("save_head (a head alone, without its layer mix)")
    head = head_module(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in head.state_dict().items()}
    atomic_write(directory / HEAD_WEIGHTS_NAME, lambda temp: save_file(tensors, temp, metadata={"format": "pt"}))
    description = {
        "format": HEAD_FORMAT,
        "version": HEAD_FORMAT_VERSION,
        "projection": config.projection,
        "d_in": int(config.hidden_size),
        "dim": int(config.dim),
        "matryoshka_dims": config.matryoshka_dims,
        "model_type": config.model_type,
        "pooling": getattr(config, "pooling", None),
        "backbone_name": getattr(config, "backbone_name", None),
    }
    atomic_write_json(directory / HEAD_CONFIG_NAME, description)
    return directory


def read_head_config(directory: str | os.PathLike) -> dict:
    """Read and check ``projection_config.json`` of a saved head."""
    path = Path(directory) / HEAD_CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {HEAD_CONFIG_NAME} in {directory}: not a saved head (see save_head)")
    description = json.loads(path.read_text(encoding="utf-8"))
    if description.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path} is not an hf-projections head (format={description.get('format')!r})")
    for key in ("projection", "d_in", "dim"):
        if key not in description:
            raise ValueError(f"{path} is missing {key!r}")
    return description


def load_head(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Replace ``model``'s head by a saved one (spec from JSON, weights from safetensors); returns ``model``.

    The model's config is updated (``projection``, ``dim``, ``matryoshka_dims``) so ``save_pretrained`` then
    writes a complete model. Raises ``ValueError`` when the head's input width differs from the backbone's
    hidden size or when any saved tensor is missing, unexpected or of the wrong shape.
    """
    description = read_head_config(directory)
    base = base_model_of(model)
    if base is not model:
        raise TypeError("load_head works on a plain model; load the head before wrapping it with PEFT")
    config = base.config
    base.check_single_layer_input("load_head (a head alone, without a layer mix)")
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
    reference = next(base.backbone.parameters())
    base.projection = head.to(device=reference.device, dtype=reference.dtype)
    config.projection = spec
    config.dim = int(description["dim"])
    config.matryoshka_dims = description.get("matryoshka_dims")
    return model
