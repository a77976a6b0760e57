"""Starbucks 2D Matryoshka training of a ``DenseEmbeddingModel`` on a frozen backbone, from pooled layer features.

The loss (``StarbucksLoss``) lives in ``training.nested_losses``; through ``ProjectionTrainer`` /
``hf_projections.training.train`` with ``starbucks_pairs`` set it trains any mode that runs the backbone. This module
is the cheap frozen-backbone path: :func:`pooled_layer_features` runs the backbone once and keeps each text's
pooled state after every pair's layer; :func:`train_pooled` trains the head from them in the package's one loop
(milliseconds per step on CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hf_projections.atomic import atomic_write
from hf_projections.training.cache_keys import cache_description
from hf_projections.training.losses import ContrastiveLoss, ProjectionLoss
from hf_projections.training.loop import run_training_loop
from hf_projections.training.modes import set_trainable


def pair_layers(model) -> list[int]:
    """The distinct backbone layers of ``model.config.starbucks_pairs``, ascending."""
    pairs = model.config.starbucks_pairs
    if not pairs:
        raise ValueError("the model has no starbucks_pairs; build it with starbucks_pairs=[(layer, dim), ...]")
    return sorted({int(layer) for layer, _ in pairs})


# --------------------------------------------------------------------------- frozen backbone: pooled features


@torch.no_grad()
def pooled_layer_features(
    model,
    texts: Sequence[str],
    is_query: bool,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    show_progress_bar: bool | None = None,
) -> torch.Tensor:
    """Each text's pooled backbone state at each of ``layers`` (default: the Starbucks pair layers), in one
    backbone pass per text.

    Args:
        model: a ``DenseEmbeddingModel`` (its tokenizer, lengths and pooling are used; it is not changed).
        layers: 1-based layers (``hidden_states[layer]``; the last one is ``last_hidden_state``).
        cache_dir: keep the result as ``pooled-<key>.safetensors`` there (the key hashes the texts, backbone
            weights, tokenizer, lengths, pooling and layers) and reuse it; None: no cache (the feature cache's
            usual folder is :func:`~hf_projections.training.cache.default_cache_dir`).

    Returns:
        `(len(texts), len(layers), hidden_size)` float32 CPU tensor.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not texts:
        raise TypeError("texts must be a non-empty list of strings")
    layers = list(layers) if layers is not None else pair_layers(model)
    full = model.config.num_layers
    if not layers or any(isinstance(l, bool) or not isinstance(l, int) or not 1 <= l <= full for l in layers):
        raise ValueError(f"layers must be ints in 1..{full}, got {layers!r}")
    unique = list(dict.fromkeys(texts))
    path = None
    if cache_dir is not None:
        description = cache_description(model, unique, is_query, None, "float32")
        description.update(kind="pooled-layers", layers=layers, pooling=model.config.pooling)
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]
        path = Path(cache_dir) / f"pooled-{key}.safetensors"
    if path is not None and path.is_file():
        features = load_file(str(path))["features"]
    else:
        features = _pooled_pass(model, unique, is_query, layers, batch_size, show_progress_bar)
        if path is not None:
            atomic_write(path, lambda temp: save_file({"features": features}, temp))
    row = {text: i for i, text in enumerate(unique)}
    return features[torch.tensor([row[t] for t in texts])]


def _pooled_pass(model, texts, is_query, layers, batch_size, show_progress_bar) -> torch.Tensor:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    features = torch.zeros(len(texts), len(layers), model.config.hidden_size)
    distinct = sorted(set(layers))
    if show_progress_bar is None:
        show_progress_bar = len(texts) >= 8 * batch_size
    device = next(model.backbone.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress_bar, desc="Pooled layer features"):
            index = order[start : start + batch_size]
            inputs = model.tokenize([texts[i] for i in index], is_query=is_query).to(device)
            states = dict(zip(distinct, model.hidden_states_at(**inputs, layers=distinct)))
            mask = inputs["attention_mask"].bool()
            for column, layer in enumerate(layers):
                features[index, column] = model.pool(states[layer], mask).float().cpu()
    finally:
        model.train(was_training)
    return features


def _embed_pooled(model, features: torch.Tensor, layers: Sequence[int], pairs) -> list[torch.Tensor]:
    """One `(n, dim_p)` embedding per ``(layer, dim)`` pair from `(n, len(layers), hidden)` pooled features."""
    return [model.project_pooled(features[:, layers.index(layer)], dim) for layer, dim in pairs]


@torch.no_grad()
def encode_pooled(model, features: torch.Tensor, layers: Sequence[int], layer: int | None = None,
                  truncate_dim: int | None = None, strict: bool = True) -> torch.Tensor:
    """Embeddings `(n, dim)` of the sub-model ``(layer, truncate_dim)`` from pooled features (see
    :func:`pooled_layer_features`); the same numbers as ``model.encode(texts, layer=..., truncate_dim=...)``.

    ``strict=False`` also encodes at a pair the model was not trained for (to measure what that gives).
    """
    full = model.config.num_layers
    if strict:
        resolved, dim = model.check_pair(layer, truncate_dim)
        layer = resolved or full
    else:
        layer, dim = layer or full, truncate_dim
    if layer not in layers:
        raise ValueError(f"no pooled features for layer {layer}; the features hold layers {list(layers)}")
    was_training = model.training
    model.eval()
    try:
        return _embed_pooled(model, features, list(layers), [(layer, dim)])[0].float().cpu()
    finally:
        model.train(was_training)


def train_pooled(
    model,
    query_features: torch.Tensor,
    document_features: torch.Tensor,
    layers: Sequence[int],
    args,
    loss: ProjectionLoss | None = None,
    pair: tuple[int, int] | None = None,
    log_path: str | os.PathLike | None = None,
) -> dict:
    """Train the head (backbone frozen) from pooled layer features of aligned (query, positive) rows.

    Args:
        query_features / document_features: `(n, len(layers), hidden)` from :func:`pooled_layer_features`,
            row ``i`` of both a training pair (in-batch negatives).
        args: resolved ``ProjectionTrainingArguments``: ``max_steps`` (or ``epochs``), ``batch_size``, ``head_lr``,
            ``weight_decay``, ``warmup_ratio``, ``max_grad_norm``, ``seed``, ``logging_steps``.
        loss: a ``StarbucksLoss`` trains every ``config.starbucks_pairs`` sub-model; any other loss (default
            contrastive at ``args.temperature``) trains the single sub-model ``pair`` (default: the full model).

    Returns:
        The loop's statistics (``training.loop.run_training_loop``).
    """
    layers = list(layers)
    if query_features.shape[:2] != document_features.shape[:2] or query_features.shape[1] != len(layers):
        raise ValueError(
            f"query and document features must both be (n, {len(layers)} layers, hidden), got "
            f"{tuple(query_features.shape)} and {tuple(document_features.shape)}"
        )
    n_rows = len(query_features)
    if n_rows < args.batch_size:
        raise ValueError(f"batch_size={args.batch_size} is larger than the {n_rows} training rows")
    loss = loss if loss is not None else ContrastiveLoss(args.temperature)
    all_pairs = bool(getattr(loss, "model_inputs", {}).get("all_pairs"))
    if all_pairs:
        pairs = [tuple(p) for p in model.config.starbucks_pairs or []]
        if not pairs:
            raise ValueError("StarbucksLoss needs a model with starbucks_pairs")
    else:
        layer, dim = model.check_pair(*(pair or (None, None)))
        pairs = [(layer or model.config.num_layers, dim)]
    missing = sorted({layer for layer, _ in pairs} - set(layers))
    if missing:
        raise ValueError(f"the features hold layers {layers}, the pairs need layers {missing} too")

    set_trainable(model, "head")
    generator = torch.Generator().manual_seed(args.seed)
    per_epoch = n_rows // args.batch_size

    def epoch():  # one random order per epoch; the last partial batch is dropped
        order = torch.randperm(n_rows, generator=generator)
        return (order[i * args.batch_size : (i + 1) * args.batch_size] for i in range(per_epoch))

    def compute(index):
        queries = _embed_pooled(model, query_features[index], layers, pairs)
        documents = _embed_pooled(model, document_features[index], layers, pairs)
        return loss(queries, documents) if all_pairs else loss(queries[0], documents[0])

    return run_training_loop(
        model, epoch, compute, args, total_steps=args.max_steps or args.epochs * per_epoch, n_rows=n_rows,
        batch_rows=len, log_path=log_path, description="Training (pooled features)",
    )


__all__ = [
    "encode_pooled",
    "pair_layers",
    "pooled_layer_features",
    "train_pooled",
]
