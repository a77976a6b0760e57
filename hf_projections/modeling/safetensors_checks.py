"""Checks on safetensors checkpoints before and after transformers loads them.

A damaged file or a tensor of the wrong shape gets an error naming the file or the tensor (and both shapes), where
safetensors and transformers would name neither. Also copied next to a checkpoint's remote code.
"""

from __future__ import annotations

import json
import os

from safetensors import SafetensorError, safe_open


def add_variant(file_name: str, variant: str | None) -> str:
    """``model.safetensors`` -> ``model.<variant>.safetensors`` (transformers' naming of weight variants)."""
    if variant is None:
        return file_name
    stem, suffix = file_name.rsplit(".", 1)
    return f"{stem}.{variant}.{suffix}"


def check_safetensors_file(path: str) -> None:
    """Read the header of one safetensors file (cheap: no tensor data); a damaged file raises a ``ValueError``
    naming it (safetensors' own 'Error while deserializing header' names no file)."""
    try:
        with safe_open(path, framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path}: not a readable safetensors file ({error}); the file is damaged or incomplete (an interrupted "
            "copy, download or save?): save or download the model again"
        ) from error


def check_local_safetensors(folder: str, variant: str | None = None) -> None:
    """Check the weights of a local checkpoint folder before transformers reads them.

    Checks ``model.safetensors`` when present, else every shard listed in ``model.safetensors.index.json``
    (a missing shard raises ``FileNotFoundError``). Without either file nothing is checked here: transformers
    raises its own error naming the missing ``model.safetensors``.
    """
    single = os.path.join(folder, add_variant("model.safetensors", variant))
    if os.path.isfile(single):
        check_safetensors_file(single)
        return
    index = os.path.join(folder, add_variant("model.safetensors.index.json", variant))
    if not os.path.isfile(index):
        return
    try:
        with open(index, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{index}: not a valid safetensors index (expected JSON with a 'weight_map' of tensor name -> shard "
            f"file): {error!r}"
        ) from error
    for shard in shards:
        path = os.path.join(folder, str(shard))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {index} lists it as a weights shard")
        check_safetensors_file(path)


def mismatched_shapes(entries) -> list[str]:
    """transformers' ``mismatched_keys`` loading info (``(name, checkpoint_shape, model_shape)`` entries) as sorted
    ``"name: checkpoint (65, 32) vs model (64, 32)"`` lines."""
    lines = []
    for entry in entries or ():
        if isinstance(entry, (tuple, list)) and len(entry) >= 3:
            lines.append(f"{entry[0]}: checkpoint {tuple(entry[1])} vs model {tuple(entry[2])}")
        else:  # a bare name: shapes unknown
            lines.append(f"{entry[0] if isinstance(entry, (tuple, list)) else entry}: shape differs from the model's")
    return sorted(lines)
