"""Feature cache keys: a hash of everything cached states depend on (texts, frozen backbone weights, tokenizer,
query/document settings, layer, storage dtype, backbone precision), so that any change gives a new cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
from torch import nn

from hf_projections.modeling.backbone import backbone_layers

CACHE_FORMAT_VERSION = 1


def text_sha1(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


def _hash_tensors(digest, named_tensors) -> None:
    for name, tensor in named_tensors:
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tuple(data.shape)}|{data.dtype}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def backbone_fingerprint(backbone: nn.Module, layer: int | tuple[int, ...] | None) -> str:
    """sha256 of the weights (and buffers) the cached states depend on: all of them for ``layer=None``, else
    everything except layers ``layer..L-1`` (so a top-k-trained model still matches its layer cache); for several
    layers, everything below the highest."""
    excluded: set[int] = set()
    if isinstance(layer, tuple):
        layer = max(layer)
    if layer is not None:
        for block in backbone_layers(backbone)[layer:]:
            excluded.update(id(t) for t in block.parameters())
            excluded.update(id(t) for t in block.buffers())
    digest = hashlib.sha256(type(backbone).__name__.encode())
    named = [(n, t) for n, t in backbone.named_parameters() if id(t) not in excluded]
    named += [(n, t) for n, t in backbone.named_buffers() if id(t) not in excluded]
    _hash_tensors(digest, sorted(named, key=lambda item: item[0]))
    attention = getattr(getattr(backbone, "config", None), "_attn_implementation", None)
    digest.update(f"attn={attention}".encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the full tokenizer definition (fast tokenizers) or of its class and vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        # Truncation/padding state changes with every call; lengths are part of the key on their own.
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True)
    else:
        text = type(tokenizer).__name__ + json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_description(
    model, texts: Sequence[str], is_query: bool, layer: int | tuple[int, ...] | None, dtype: str,
    precision: str = "fp32"
) -> dict:
    """Everything a cache depends on (hashed into its key; also stored in meta.json). ``precision`` is the
    backbone pass's (``fp32`` or ``bf16``); it enters the key only when not fp32, so fp32 keys stay as they were."""
    config = model.config
    texts_digest = hashlib.sha256()
    for text in texts:
        texts_digest.update(text_sha1(text))
    description = {
        "format": CACHE_FORMAT_VERSION,
        "backbone": backbone_fingerprint(model.backbone, layer),
        "tokenizer": tokenizer_fingerprint(model.tokenizer),
        "is_query": bool(is_query),
        "max_length": config.query_max_length if is_query else config.document_max_length,
        "marker": config.query_marker if is_query else config.document_marker,
        "augment": bool(is_query and config.augment_queries),
        "layer": "last" if layer is None else (list(layer) if isinstance(layer, tuple) else int(layer)),
        "dtype": dtype,
        "texts": texts_digest.hexdigest(),
        "n_texts": len(texts),
    }
    if precision != "fp32":
        description["backbone_precision"] = precision
    return description


def cache_key(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]
