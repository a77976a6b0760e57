"""Write and read projection adapter folders without PEFT (JSON + safetensors; the format is in ``adapter_format``).

``save_head``/``load_head`` use these from this layer; ``hf_projections.integrations.projection_adapter`` registers the
same folder as a PEFT adapter type.

    write_adapter_folder("head", adapter_description(adapter_fields(model.config), "bert-base-uncased"),
                         adapter_tensors(model))
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hf_projections.atomic import atomic_write_json, staged_directory
from hf_projections.modeling.adapter_fields import ADAPTER_FIELDS, MODEL_CLASSES, check_adapter_fields, model_config
from hf_projections.modeling.adapter_format import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_KEY_PREFIXES,
    ADAPTER_SLOTS,
    ADAPTER_TYPE,
    ADAPTER_WEIGHTS_NAME,
    FULL_WEIGHTS,
    HUB_KEYS,
)
from hf_projections.modeling.configuration_hf_projections import ProjectionConfig
from hf_projections.modeling.safetensors_checks import check_safetensors_file


def active_module(model: nn.Module, name: str) -> nn.Module | None:
    """``model.<name>`` (``projection`` or ``layer_mix``) as it computes now: the trained copy inside PEFT's
    ``ModulesToSaveWrapper``, the active adapter's module inside a projection adapter layer, else the module."""
    module = getattr(model, name, None)
    if module is None:
        return None
    for container in ("modules_to_save", ADAPTER_SLOTS.get(name)):
        copies = getattr(module, container, None) if container else None
        if isinstance(copies, nn.ModuleDict):
            active = getattr(module, "active_adapter", None)
            active = active[0] if isinstance(active, (list, tuple)) and active else active
            if active in copies:
                return copies[active]
            original = getattr(module, "original_module", None)
            if original is None:
                raise ValueError(f"{name}: no active adapter ({active!r} not in {sorted(copies)})")
            return original
    return module


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The head's (and layer mix's) tensors under their adapter key names, on the CPU and contiguous."""
    tensors = {}
    for name, prefix in ADAPTER_KEY_PREFIXES.items():
        module = active_module(model, name)
        if module is not None:
            tensors.update({prefix + key: value.detach().to("cpu").contiguous()
                            for key, value in module.state_dict().items()})
    return tensors


def write_adapter_folder(directory: str | os.PathLike, description: dict,
                         tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``adapter_config.json``, ``config.json`` and (given ``tensors``) ``adapter_model.safetensors``, each
    atomically. A folder holding a full model (``model.safetensors``) is refused: its ``config.json`` would go."""
    directory = Path(directory)
    full = [name for name in FULL_WEIGHTS if (directory / name).exists()]
    if full:
        raise ValueError(f"{directory} holds a full model ({full[0]}); save the projection adapter to its own folder")
    fields = {name: description[name] for name in ADAPTER_FIELDS}
    config = model_config(fields, backbone_name=description.get("base_model_name_or_path"))
    config.architectures = [MODEL_CLASSES[config.model_type][1].__name__]
    with staged_directory(directory) as staging:
        atomic_write_json(Path(staging) / ADAPTER_CONFIG_NAME, description)
        atomic_write_json(Path(staging) / "config.json", config.to_dict())
        if tensors is not None:
            save_file(tensors, str(Path(staging) / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def _resolve(path: str, name: str, hub_kwargs: dict) -> str:
    """A file of a local adapter folder or (downloaded) of a Hub repository."""
    subfolder = hub_kwargs.get("subfolder") or ""
    if os.path.isdir(path):
        local = os.path.join(path, subfolder, name)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"{local} is missing: not a saved projection adapter (see save_projection_adapter)")
        return local
    from huggingface_hub import hf_hub_download

    return hf_hub_download(path, name, **{k: hub_kwargs[k] for k in HUB_KEYS if k in hub_kwargs})


def read_adapter_config(path: str | os.PathLike, **hub_kwargs) -> dict:
    """``adapter_config.json`` of a projection adapter, checked (``peft_type``, every field present and valid)."""
    config_path = _resolve(os.fspath(path), ADAPTER_CONFIG_NAME, hub_kwargs)
    description = json.loads(Path(config_path).read_text(encoding="utf-8"))
    if description.get("peft_type") != ADAPTER_TYPE:
        raise ValueError(f"{config_path}: peft_type is {description.get('peft_type')!r}, not a projection adapter "
                         f"({ADAPTER_TYPE!r})")
    missing = [name for name in ("projection", "dim") if description.get(name) is None]
    if missing:
        raise ValueError(f"{config_path} is missing {missing}")
    known = {name: description[name] for name in ADAPTER_FIELDS if name in description}
    return {**description, **check_adapter_fields({"model_type": ProjectionConfig.model_type, **known})}


def read_adapter_tensors(path: str | os.PathLike, **hub_kwargs) -> dict[str, torch.Tensor]:
    """The tensors of ``adapter_model.safetensors`` (a damaged file raises a ``ValueError`` naming it)."""
    weights = _resolve(os.fspath(path), ADAPTER_WEIGHTS_NAME, hub_kwargs)
    check_safetensors_file(weights)
    return load_file(weights)


def check_tensors(found: dict, expected: dict, source: str) -> None:
    """Raise a ``ValueError`` naming every missing, unexpected or wrongly shaped tensor.

    Args:
        found: tensor name -> tensor (what the file holds).
        expected: tensor name -> shape (what the model built from the config holds).
        source: what the tensors came from, for the message.
    """
    problems = [f"missing {k} {tuple(shape)}" for k, shape in expected.items() if k not in found]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in found.items() if k not in expected]
    problems += [f"{k}: saved {tuple(found[k].shape)} but the config builds {tuple(shape)}"
                 for k, shape in expected.items() if k in found and tuple(found[k].shape) != tuple(shape)]
    if problems:
        raise ValueError(f"{source}: the adapter weights do not match its config: " + "; ".join(problems))


def load_head_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load adapter-keyed tensors into ``model.projection`` (and ``model.layer_mix``), checked strictly first."""
    modules = {name: getattr(model, name) for name in ADAPTER_KEY_PREFIXES if getattr(model, name, None) is not None}
    expected = {ADAPTER_KEY_PREFIXES[name] + key: value.shape
                for name, module in modules.items() for key, value in module.state_dict().items()}
    check_tensors(tensors, expected, source)
    for name, module in modules.items():
        prefix = ADAPTER_KEY_PREFIXES[name]
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
