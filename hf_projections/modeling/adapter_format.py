"""Names of the projection adapter format, and how ``from_pretrained`` tells an adapter folder from a full model.

A projection adapter is a trained head (and its layer mix) saved as a PEFT adapter beside the encoder it was trained
on (see ``adapter_files`` and ``hf_projections.integrations.projection_adapter``)::

    adapter_config.json        PEFT config: peft_type "HF_PROJECTION", base_model_name_or_path (the encoder),
                               the head spec, dims, layer mix and the ColBERT settings
    adapter_model.safetensors  the head's tensors only, under PEFT's key names (ADAPTER_KEY_PREFIXES)
    config.json                the model config without its backbone: its model_type makes AutoModel pick ColBERTModel

Also copied next to a checkpoint's remote code (standard library and transformers only).
"""

from __future__ import annotations

import json
import os

# The PeftType value, the method name registered with PEFT and its parameter-name prefix.
ADAPTER_TYPE = "HF_PROJECTION"
ADAPTER_METHOD = "hf_projection"
ADAPTER_PREFIX = "hf_projection_"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
# Model attribute -> the attribute that holds it, per adapter name, inside the PEFT layer that replaces it.
ADAPTER_SLOTS = {"projection": "hf_projection_head", "layer_mix": "hf_projection_layer_mix"}
# Model attribute -> the key prefix of its tensors in adapter_model.safetensors (PEFT keeps "base_model.model.").
ADAPTER_KEY_PREFIXES = {name: f"base_model.model.{name}.{slot}." for name, slot in ADAPTER_SLOTS.items()}
# A folder holding one of these is a full model, never an adapter (and an adapter may not be written into it).
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
# The keyword arguments that address adapter files on the Hub (or in its cache).
HUB_KEYS = ("revision", "token", "cache_dir", "local_files_only", "subfolder")


def adapter_type_of(config_path: str) -> str | None:
    """The ``peft_type`` in an ``adapter_config.json`` (None when the file is not a JSON object)."""
    try:
        with open(config_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data.get("peft_type") if isinstance(data, dict) else None


def is_projection_adapter(name_or_path: str, hub_kwargs: dict | None = None) -> bool:
    """True when ``name_or_path`` (a local folder or a Hub id) is a projection adapter rather than a full model:
    its ``adapter_config.json`` has ``peft_type`` ``HF_PROJECTION`` (a local folder also holds no full
    ``model.safetensors``, which would win)."""
    hub_kwargs = dict(hub_kwargs or {})
    subfolder = hub_kwargs.get("subfolder") or ""
    if os.path.isdir(name_or_path):
        folder = os.path.join(name_or_path, subfolder)
        if any(os.path.isfile(os.path.join(folder, name)) for name in FULL_WEIGHTS):
            return False
        config_path = os.path.join(folder, ADAPTER_CONFIG_NAME)
        return os.path.isfile(config_path) and adapter_type_of(config_path) == ADAPTER_TYPE
    from transformers.utils import find_adapter_config_file

    try:
        config_path = find_adapter_config_file(name_or_path, **{k: hub_kwargs[k] for k in HUB_KEYS if k in hub_kwargs})
    except (OSError, ValueError):
        return False
    return config_path is not None and adapter_type_of(config_path) == ADAPTER_TYPE
