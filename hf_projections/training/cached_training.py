"""Train heads (``head`` mode) or heads plus top layers (``top-k``) from cached backbone features.

No backbone pass runs during training: batches are padded hidden states gathered from two
:class:`~hf_projections.training.cache.FeatureCache` s (queries and documents), fed through
``model.project`` (after the last ``k`` layers for top-k) and the same losses as the token path.
The loop is a plain PyTorch loop (AdamW, linear warmup/decay, gradient clipping, the same head/backbone
parameter groups as ``ProjectionTrainer``): at a few milliseconds per step the Trainer's machinery would
dominate the cost.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from hf_projections.training.cache import FeatureCache, build_feature_cache, cached_hidden_states, is_multi_vector
from hf_projections.training.collator import document_groups, teacher_score_tensor
from hf_projections.training.losses import ProjectionLoss
from hf_projections.training.modes import backbone_layers, eval_frozen_modules, parse_mode, set_trainable
from hf_projections.training.trainer import (
    append_jsonl,
    build_parameter_groups,
    check_finite,
    default_loss,
)


class CachedPairs(Dataset):
    """Training rows as row numbers into a query cache and a document cache.

    Attributes:
        query_rows: `(n,)` rows of ``query_cache``.
        document_rows: `(n, G)` rows of ``document_cache``, positive first then hard negatives.
        teacher_scores: `(n, G)` float32 or None.
    """

    def __init__(
        self,
        query_cache: FeatureCache,
        document_cache: FeatureCache,
        query_rows: torch.Tensor,
        document_rows: torch.Tensor,
        teacher_scores: torch.Tensor | None = None,
    ):
        if query_cache.layer != document_cache.layer:
            raise ValueError(f"query and document caches hold different layers ({query_cache.layer} vs {document_cache.layer})")
        if document_rows.dim() != 2 or len(document_rows) != len(query_rows):
            raise ValueError(f"document_rows must be (n, G) with n={len(query_rows)}, got {tuple(document_rows.shape)}")
        self.query_cache = query_cache
        self.document_cache = document_cache
        self.query_rows = query_rows.long()
        self.document_rows = document_rows.long()
        self.teacher_scores = teacher_scores

    @property
    def layer(self) -> int | None:
        return self.query_cache.layer

    @property
    def group_size(self) -> int:
        return self.document_rows.shape[1]

    def __len__(self) -> int:
        return len(self.query_rows)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: Sequence[int], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Batch of padded states: ``query_hidden`` `(B, Tq, H)`, ``query_mask`` `(B, Tq)`, ``document_hidden``
        `(B * G, Td, H)` grouped per query, ``document_mask`` `(B * G, Td)` (+ ``teacher_scores`` `(B, G)`)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        query_hidden, query_mask = self.query_cache.batch(self.query_rows[index], dtype)
        document_hidden, document_mask = self.document_cache.batch(self.document_rows[index].reshape(-1), dtype)
        batch = {
            "query_hidden": query_hidden,
            "query_mask": query_mask,
            "document_hidden": document_hidden,
            "document_mask": document_mask,
        }
        if self.teacher_scores is not None:
            batch["teacher_scores"] = self.teacher_scores[index]
        return batch


def cache_layer_for_mode(model, mode: str) -> int | None:
    """The cache layer a training mode needs: None for ``head``, ``L - k`` for ``top-k``; ``full`` cannot cache."""
    parsed = parse_mode(mode)
    if parsed.kind == "full":
        raise ValueError("mode 'full' trains the whole backbone and cannot use cached features; use 'head' or 'top-K'")
    if parsed.kind == "head":
        return None
    n_layers = len(backbone_layers(model.backbone))
    if parsed.top_k > n_layers:
        raise ValueError(f"mode top-{parsed.top_k} asks for more layers than the backbone has ({n_layers})")
    return n_layers - parsed.top_k


def build_cached_pairs(
    model,
    rows,
    mode: str = "head",
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype | str = torch.float16,
    batch_size: int = 64,
    num_negatives: int | None = None,
    query_column: str = "query",
    positive_column: str = "positive",
    negative_prefix: str = "negative_",
    teacher_column: str = "scores",
    show_progress_bar: bool | None = None,
) -> CachedPairs:
    """Cache the texts of training rows (a ``datasets.Dataset`` or list of dicts) and index the rows into them.

    Queries and documents (positives and negatives, deduplicated) get one cache each; existing caches with
    the same key are reused without any backbone pass.
    """
    rows = list(rows) if not hasattr(rows, "column_names") else rows
    if len(rows) == 0:
        raise ValueError("no training rows to cache")
    layer = cache_layer_for_mode(model, mode)
    columns = rows.column_names if hasattr(rows, "column_names") else list(rows[0].keys())
    if query_column not in columns or positive_column not in columns:
        raise ValueError(f"training rows need {query_column!r} and {positive_column!r} columns, got {columns}")
    queries = list(rows[query_column]) if hasattr(rows, "column_names") else [r[query_column] for r in rows]
    records = rows if not hasattr(rows, "column_names") else rows.to_list()
    documents, group = document_groups(records, positive_column, negative_prefix, num_negatives)
    options = dict(cache_dir=cache_dir, layer=layer, dtype=dtype, batch_size=batch_size, show_progress_bar=show_progress_bar)
    query_cache = build_feature_cache(model, queries, is_query=True, **options)
    document_cache = build_feature_cache(model, documents, is_query=False, **options)
    query_rows = torch.tensor(query_cache.rows_of(queries))
    document_rows = torch.tensor(document_cache.rows_of(documents)).view(len(queries), group)
    teacher = teacher_score_tensor(records, teacher_column, group) if teacher_column in columns else None
    return CachedPairs(query_cache, document_cache, query_rows, document_rows, teacher)


def embed_cached_batch(model, batch: dict[str, torch.Tensor], layer: int | None):
    """``(queries, documents, document_mask)`` from a cached batch, as ``embed_token_batch`` returns them."""
    outputs = []
    for prefix in ("query", "document"):
        hidden, mask = batch[f"{prefix}_hidden"], batch[f"{prefix}_mask"]
        hidden = cached_hidden_states(model, hidden, mask, layer)
        outputs.append(model.project(hidden, mask))
    return outputs[0], outputs[1], (batch["document_mask"] if is_multi_vector(model) else None)


def cached_loss(model, batch: dict[str, torch.Tensor], loss: ProjectionLoss, layer: int | None) -> torch.Tensor:
    """The training loss of one cached batch."""
    if getattr(loss, "model_inputs", None):
        raise ValueError(
            f"{type(loss).__name__} needs the model run on tokens ({loss.model_inputs}), which cached last-layer "
            "features cannot give: train through ProjectionTrainer (use_cache=False), or for Starbucks with a "
            "frozen backbone use hf_projections.training.starbucks.train_pooled"
        )
    queries, documents, document_mask = embed_cached_batch(model, batch, layer)
    return loss(queries, documents, document_mask, batch.get("teacher_scores"))


def train_from_cache(
    model,
    data: CachedPairs,
    mode: str = "head",
    loss: ProjectionLoss | None = None,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    head_learning_rate: float | None = None,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float | None = 1.0,
    gradient_accumulation_steps: int = 1,
    seed: int = 0,
    log_path: str | os.PathLike | None = None,
    logging_steps: int = 10,
    show_progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Train from cached features in a plain loop; the model is updated in place.

    Args:
        model: the model whose head (and, for ``top-k``, last ``k`` layers) trains.
        data: :class:`CachedPairs` whose cache layer matches ``mode``.
        mode: ``head`` or ``top-K``.
        learning_rate: for the trainable backbone layers (``top-k``) and, unless ``head_learning_rate`` is
            given, for the head.
        epochs / max_steps: ``max_steps`` (optimizer steps) wins when given.
        log_path: JSONL file, one line per ``logging_steps`` (step, epoch, loss, lrs).

    Returns:
        ``{"steps", "samples", "seconds", "samples_per_second", "steps_per_second", "loss"}``
        (``loss``: mean of the last logging window).
    """
    expected_layer = cache_layer_for_mode(model, mode)
    if data.layer != expected_layer:
        raise ValueError(f"mode {mode!r} needs features cached at layer {expected_layer}, the data holds layer {data.layer}")
    for name, value in (("batch_size", batch_size), ("gradient_accumulation_steps", gradient_accumulation_steps),
                        ("epochs", epochs), ("logging_steps", logging_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if len(data) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(data)} training rows")
    loss = loss if loss is not None else default_loss(model)
    set_trainable(model, mode)
    device = next(model.parameters()).device
    dtype = next(model.projection.parameters()).dtype

    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator,
        collate_fn=lambda indices: data.collate(indices, dtype),
    )
    steps_per_epoch = max(1, len(loader) // gradient_accumulation_steps)
    total_steps = max_steps if max_steps is not None else epochs * steps_per_epoch
    if total_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    optimizer = torch.optim.AdamW(build_parameter_groups(model, learning_rate, head_learning_rate, weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * total_steps), total_steps)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]

    torch.manual_seed(seed)
    if show_progress_bar is None:
        show_progress_bar = total_steps >= 20
    progress = tqdm(total=total_steps, disable=not show_progress_bar, desc=f"Training ({mode}, cached)")
    model.train()
    eval_frozen_modules(model)
    step, samples, window, started, last_loss = 0, 0, [], time.perf_counter(), float("nan")
    micro = 0
    try:
        while step < total_steps:
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                value = cached_loss(model, batch, loss, data.layer)
                check_finite(value, step + 1)
                (value / gradient_accumulation_steps).backward()
                window.append(value.item())
                samples += len(batch["query_mask"])
                micro += 1
                if micro % gradient_accumulation_steps:
                    continue
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                progress.update(1)
                if step % logging_steps == 0 or step == total_steps:
                    record = {"step": step, "epoch": samples / len(data), "loss": sum(window) / len(window)}
                    record.update({f"lr_{g['group']}": g["lr"] for g in optimizer.param_groups})
                    progress.set_postfix(loss=f"{record['loss']:.4f}")
                    if log_path is not None:
                        append_jsonl(log_path, record)
                    last_loss, window = record["loss"], []
                if step >= total_steps:
                    break
    finally:
        progress.close()
        model.eval()
    seconds = time.perf_counter() - started
    return {
        "steps": step,
        "samples": samples,
        "seconds": seconds,
        "samples_per_second": samples / seconds if seconds else float("inf"),
        "steps_per_second": step / seconds if seconds else float("inf"),
        "loss": last_loss,
    }
