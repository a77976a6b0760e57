"""Encoding from a feature cache: the model's current head (and, for a layer cache, its top layers) on cached
states, with no backbone pass over the frozen part."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from hf_projections.training.arguments import precision_flags
from hf_projections.training.feature_cache import FeatureCache

logger = logging.getLogger(__name__)


def is_multi_vector(model) -> bool:
    """True for ColBERT-style models (token embeddings), False for pooled single-vector models."""
    return not hasattr(model, "pool")


def cached_hidden_states(model, hidden: torch.Tensor, mask: torch.Tensor,
                         layer: int | tuple[int, ...] | None) -> torch.Tensor:
    """What the head reads, from cached states: identity for ``last_hidden_state`` caches; for a layer cache the
    remaining layers ``layer..L-1`` of ``model.backbone``, `(batch, tokens, hidden_size)` in and out; for a layer-mix
    cache (a tuple of layers) the model's layer mix of the states stored side by side, `(batch, tokens,
    len(layer) * hidden_size)` in, `(batch, tokens, projection_input_size)` out."""
    if layer is None:
        return hidden
    if isinstance(layer, tuple):
        return model.layer_mix(list(hidden.chunk(len(layer), dim=-1)))
    return model.forward_from_layer(hidden, mask, layer)


def mixed_layers(model) -> tuple[int, ...] | None:
    """The block counts a layer-mix head reads (``config.projection_layers`` resolved), or None for a one-layer head:
    the layers a head-mode cache must hold side by side."""
    config = model.config
    return tuple(config.resolved_projection_layers()) if getattr(config, "projection_layers", None) else None


def check_cache_matches_model(model, layer: int | tuple[int, ...] | None, what: str) -> None:
    """Raise naming ``what`` when cached states at ``layer`` are not what the model's head reads: a layer-mix
    head needs a cache of exactly its ``projection_layers``, a one-layer head a one-layer cache."""
    wanted = mixed_layers(model)
    if (layer if isinstance(layer, tuple) else None) == wanted:
        return
    reads = f"projection_layers={model.config.projection_layers} (block counts {list(wanted)})" if wanted else "one layer"
    held = list(layer) if isinstance(layer, tuple) else layer
    raise ValueError(
        f"{what}: the cache holds layer(s) {held}, but the model's head reads {reads}; build the cache from this "
        "model (build_feature_cache(..., layer=cache_layer_for_mode(model, 'head')))"
    )


def autocast_context(device: torch.device, precision: str):
    """A factory of the forward pass's autocast context: bf16 when ``precision`` asks for it (``bf16``; ``auto``: a GPU
    with bf16), on a GPU or a CPU (fast with AMX tiles or AVX512-BF16), else none (fp32). fp16 needs a loss scaler that
    this loop does not have, so it trains in fp32."""
    # on a CPU only an explicit bf16 autocasts (``auto`` means fp32 there, as in the Trainer path)
    flags = precision_flags(precision) if device.type == "cuda" else {"bf16": precision == "bf16", "fp16": False}
    if flags["fp16"]:
        logger.warning("the cached loop has no fp16 loss scaler: training in fp32 (use precision='bf16')")
    if flags["bf16"] and device.type in ("cuda", "cpu"):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _encode_packed(model, cache: FeatureCache, rows: list[int], dtype, device, autocast, truncate_dim):
    """Token embeddings of cached ``rows`` through the model's layer mix and head, run on their states packed as one
    `(1, tokens, hidden)` sequence; one float32 CPU `(tokens_i, dim)` view per row."""
    hidden = cache.packed(rows, dtype=dtype).to(device)[None]
    mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=device)
    with autocast():
        hidden = cached_hidden_states(model, hidden, mask, cache.layer)
        embeddings = model.project(hidden, mask, truncate_dim=truncate_dim)[0]
    return embeddings.float().cpu().split(cache.lengths[rows].tolist())


@torch.no_grad()
def encode_from_cache(
    model,
    cache: FeatureCache,
    texts: Sequence[str] | None = None,
    batch_size: int = 256,
    truncate_dim: int | None = None,
    show_progress_bar: bool | None = None,
    precision: str = "fp32",
):
    """Encode cached texts with the model's current head (and top layers, for a layer cache) - no backbone pass.

    Args:
        texts: which texts, in which order (default: all cached texts in cache order).
        precision: the forward pass's autocast, as in training (``bf16``: autocast on a GPU or a CPU; ``auto``:
            bf16 on a GPU that has it, fp32 on a CPU); the embeddings come back in float32 either way.

    Returns:
        ``ColBERTModel``: list of `(tokens_i, dim)` float32 CPU tensors; ``DenseEmbeddingModel``: `(n, dim)`.
    """
    check_cache_matches_model(model, cache.layer, "encoding from a feature cache")
    rows = list(range(len(cache))) if texts is None else cache.rows_of(texts)
    multi_vector = is_multi_vector(model)
    # The head and a layer mix map each token alone, so token embeddings need no padded batch: texts are read packed,
    # in storage order. Top layers (a layer cache) and pooling need the padded batch, longest texts first.
    token_wise = multi_vector and not isinstance(cache.layer, int)
    row_tensor = torch.as_tensor(rows, dtype=torch.long)
    keys = cache.starts[row_tensor] if token_wise else -cache.lengths[row_tensor]
    order = torch.argsort(keys, stable=True).tolist()
    device = next(model.parameters()).device
    dtype = next(model.projection.parameters()).dtype
    n_batches = (len(rows) + batch_size - 1) // batch_size
    if show_progress_bar is None:
        show_progress_bar = n_batches >= 8
    autocast = autocast_context(device, precision)
    was_training = model.training
    model.eval()
    results: list = [None] * len(rows)
    try:
        for begin in tqdm(range(0, len(rows), batch_size), disable=not show_progress_bar, desc="Encoding from cache"):
            index = order[begin : begin + batch_size]
            chunk = [rows[i] for i in index]
            if token_wise:
                for i, item in zip(index, _encode_packed(model, cache, chunk, dtype, device, autocast, truncate_dim)):
                    results[i] = item
                continue
            hidden, mask = cache.batch(chunk, dtype=dtype)
            hidden, mask = hidden.to(device), mask.to(device)
            with autocast():
                hidden = cached_hidden_states(model, hidden, mask, cache.layer)
                embeddings = model.project(hidden, mask, truncate_dim=truncate_dim)
            for position, i in enumerate(index):
                item = embeddings[position]
                results[i] = (item[mask[position]] if multi_vector else item).float().cpu()
    finally:
        model.train(was_training)
    if multi_vector:
        return results
    return torch.stack(results) if results else torch.empty(0, truncate_dim or model.config.dim)
