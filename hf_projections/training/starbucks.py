"""Starbucks 2D Matryoshka training for ``DenseEmbeddingModel`` (Zhuang et al. 2024, "Starbucks: Improved
Training for 2D Matryoshka Embeddings", the SRL fine-tuning part; no SMAE pre-training).

A fixed list of ``(layer, dim)`` sub-models from small to large (``config.starbucks_pairs``, e.g.
``[(2, 32), (4, 64), (6, 128)]``): sub-model ``p`` is the pooled output of backbone layer ``layer_p`` through
the shared head, cut to its first ``dim_p`` features and L2-normalised. Every step trains all of them::

    loss = 1/P * sum_p w_p * [ loss(q_p, d_p) + kl_weight * KL( softmax(s_P / t) || softmax(s_p / t) ) ]

``s_p`` are the in-batch scores `(B, B * G)` of sub-model ``p``, ``s_P`` those of the full model (the last pair,
detached: it is the target the sub-models align to, not pulled towards them), ``t`` the temperature; the KL
term of the full pair itself is zero.

Two ways to train:

- through ``ProjectionTrainer`` / ``hf_projections.training.train(..., starbucks_pairs=...)``: the model runs
  with ``all_pairs=True`` (one backbone pass, every layer's hidden state) and ``StarbucksLoss`` gets one
  embedding tensor per pair; any mode that runs the backbone (``full``, ``top-K``, ``head`` without the cache).
- frozen backbone, cheap: :func:`pooled_layer_features` runs the backbone once and keeps each text's pooled
  state at every pair's layer; :func:`train_pooled` trains the head from them (milliseconds per step on CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from hf_projections.io import atomic_write
from hf_projections.training.cache import cache_description
from hf_projections.training.losses import (
    ContrastiveLoss,
    ProjectionLoss,
    all_pairs_scores,
    distillation_loss,
    group_size,
)
from hf_projections.training.modes import set_trainable
from hf_projections.training.trainer import append_jsonl, build_parameter_groups, check_finite


def _non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


class StarbucksLoss(ProjectionLoss):
    """Sum of a loss over Starbucks ``(layer, dim)`` sub-models plus KL alignment to the full model's scores.

    Args:
        loss: the per-pair loss (default: in-batch contrastive at the default temperature).
        kl_weight: weight of the KL term (0 turns the alignment off).
        kl_temperature: temperature of both score distributions in the KL term (default: the per-pair loss's
            temperature, e.g. 0.05 on cosine scores; 1.0 for a loss without one).
        weights: one weight per pair (default 1 each).

    ``forward(queries, documents, document_mask=None, teacher_scores=None)`` takes sequences of ``P`` tensors,
    smallest pair first and the full model last: queries `(B, dim_p)`, documents `(B * G, dim_p)` (what a
    ``DenseEmbeddingModel`` returns in ``pair_embeddings`` when called with ``all_pairs=True``, which
    ``model_inputs`` asks the trainer to do).
    """

    model_inputs = {"all_pairs": True}

    def __init__(self, loss: ProjectionLoss | None = None, kl_weight: float = 1.0, kl_temperature: float | None = None,
                 weights: Sequence[float] | None = None):
        super().__init__()
        if loss is not None and not isinstance(loss, ProjectionLoss):
            raise ValueError(f"loss must be a ProjectionLoss, got {type(loss).__name__}")
        if isinstance(loss, StarbucksLoss):
            raise ValueError("StarbucksLoss cannot wrap another StarbucksLoss")
        self.loss = loss if loss is not None else ContrastiveLoss()
        self.kl_weight = _non_negative("kl_weight", kl_weight)
        if kl_temperature is not None and not _non_negative("kl_temperature", kl_temperature) > 0:
            raise ValueError(f"kl_temperature must be > 0, got {kl_temperature!r}")
        self.kl_temperature = kl_temperature
        self.weights = None if weights is None else [_non_negative("weights[]", w) for w in weights]

    def _temperature(self, queries: torch.Tensor) -> float:
        if self.kl_temperature is not None:
            return self.kl_temperature
        resolve = getattr(self.loss, "resolved_temperature", None)
        return resolve(queries) if resolve is not None else 1.0

    def forward(self, queries, documents, document_mask=None, teacher_scores=None) -> torch.Tensor:
        if torch.is_tensor(queries) or torch.is_tensor(documents):
            raise ValueError(
                "StarbucksLoss needs one embedding tensor per (layer, dim) pair, smallest first: call the model "
                "with all_pairs=True (ProjectionTrainer does this for you), got a single tensor"
            )
        queries, documents = list(queries), list(documents)
        if not queries or len(queries) != len(documents):
            raise ValueError(f"expected the same number (>= 1) of query and document pairs, got {len(queries)} and {len(documents)}")
        weights = self.weights if self.weights is not None else [1.0] * len(queries)
        if len(weights) != len(queries):
            raise ValueError(f"StarbucksLoss has {len(weights)} weights for {len(queries)} (layer, dim) pairs")
        group_size(queries[-1].shape[0], documents[-1].shape[0])  # checks the batch layout
        temperature = self._temperature(queries[-1])
        target = None
        if self.kl_weight and len(queries) > 1:
            with torch.no_grad():
                target = all_pairs_scores(queries[-1], documents[-1], document_mask) / temperature
        total = queries[-1].new_zeros(())
        for index, (q, d, weight) in enumerate(zip(queries, documents, weights)):
            term = self.loss(q, d, document_mask, teacher_scores)
            if target is not None and index < len(queries) - 1:
                student = all_pairs_scores(q, d, document_mask)
                term = term + self.kl_weight * distillation_loss(student, target, temperature)
            total = total + weight * term
        return total / len(queries)

    def extra_repr(self) -> str:
        return f"kl_weight={self.kl_weight}, kl_temperature={self.kl_temperature}, weights={self.weights}"


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
    if show_progress_bar is None:
        show_progress_bar = len(texts) >= 8 * batch_size
    device = next(model.backbone.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress_bar, desc="Pooled layer features"):
            index = order[start : start + batch_size]
            inputs = model.tokenize([texts[i] for i in index], is_query=is_query).to(device)
            output = model.backbone(**inputs, output_hidden_states=True)
            mask = inputs["attention_mask"].bool()
            for column, layer in enumerate(layers):
                hidden = output.last_hidden_state if layer == model.config.num_layers else output.hidden_states[layer]
                features[index, column] = model.pool(hidden, mask).float().cpu()
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
    loss: ProjectionLoss | None = None,
    pair: tuple[int, int] | None = None,
    steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    log_path: str | os.PathLike | None = None,
    logging_steps: int = 10,
    show_progress_bar: bool | None = None,
) -> dict:
    """Train the head (backbone frozen) from pooled layer features of aligned (query, positive) rows.

    Args:
        query_features / document_features: `(n, len(layers), hidden)` from :func:`pooled_layer_features`,
            row ``i`` of both a training pair (in-batch negatives).
        loss: a :class:`StarbucksLoss` trains every ``config.starbucks_pairs`` sub-model; any other loss
            (default contrastive) trains the single sub-model ``pair`` (default: the full model).
        steps / batch_size / learning_rate / weight_decay / warmup_ratio / max_grad_norm: AdamW with linear
            warm-up and decay, as the cached token path.

    Returns:
        ``{"steps", "seconds", "loss"}`` (``loss``: mean of the last logging window).
    """
    layers = list(layers)
    if query_features.shape[:2] != document_features.shape[:2] or query_features.shape[1] != len(layers):
        raise ValueError(
            f"query and document features must both be (n, {len(layers)} layers, hidden), got "
            f"{tuple(query_features.shape)} and {tuple(document_features.shape)}"
        )
    for name, value in (("steps", steps), ("batch_size", batch_size), ("logging_steps", logging_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if len(query_features) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(query_features)} training rows")
    loss = loss if loss is not None else ContrastiveLoss()
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
    optimizer = torch.optim.AdamW(build_parameter_groups(model, learning_rate, None, weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * steps), steps)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    batches_per_epoch = len(query_features) // batch_size
    if show_progress_bar is None:
        show_progress_bar = steps >= 100
    model.train()
    started, window, last_loss, order = time.perf_counter(), [], float("nan"), None
    try:
        for step in tqdm(range(1, steps + 1), disable=not show_progress_bar, desc="Training (pooled features)"):
            position = (step - 1) % batches_per_epoch
            if position == 0:
                order = torch.randperm(len(query_features), generator=generator)
            index = order[position * batch_size : (position + 1) * batch_size]
            queries = _embed_pooled(model, query_features[index], layers, pairs)
            documents = _embed_pooled(model, document_features[index], layers, pairs)
            value = loss(queries, documents) if all_pairs else loss(queries[0], documents[0])
            check_finite(value, step)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            scheduler.step()
            window.append(value.item())
            if step % logging_steps == 0 or step == steps:
                last_loss, window = sum(window) / len(window), []
                if log_path is not None:
                    append_jsonl(log_path, {"step": step, "loss": last_loss, "lr": scheduler.get_last_lr()[0]})
    finally:
        model.eval()
    return {"steps": steps, "seconds": time.perf_counter() - started, "loss": last_loss}


__all__ = [
    "StarbucksLoss",
    "encode_pooled",
    "pair_layers",
    "pooled_layer_features",
    "train_pooled",
]
