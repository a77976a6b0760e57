"""Train heads (``head`` mode) or heads plus top layers (``top-K``) from cached backbone features.

No backbone pass runs over the frozen part during training: batches are padded hidden states gathered from two
:class:`~hf_projections.training.feature_cache.FeatureCache` s (queries and documents), fed through
``model.project`` (after the last ``K`` layers, ``model.forward_from_layer``, for top-K) and the same losses as the
token path, in the package's one loop (``training.loop.run_training_loop``), in batches of one source without two
rows of one passage (``training.batching``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from hf_projections.modeling.backbone import backbone_layers, check_layerwise_backbone
from hf_projections.training.batching import PassageBatchSampler, passage_keys, row_sources
from hf_projections.training.cache import build_feature_cache
from hf_projections.training.cached_encoding import autocast_context, cached_hidden_states, is_multi_vector, mixed_layers
from hf_projections.training.collator import document_groups, teacher_score_tensor
from hf_projections.training.feature_cache import FeatureCache
from hf_projections.training.length_buckets import forward_in_length_chunks
from hf_projections.training.losses import ProjectionLoss
from hf_projections.training.loop import run_training_loop
from hf_projections.training.modes import parse_mode, set_trainable
from hf_projections.training.nested_losses import default_loss

logger = logging.getLogger(__name__)


class CachedPairs(Dataset):
    """Training rows as row numbers into a query cache and a document cache.

    Attributes:
        query_rows: `(n,)` rows of ``query_cache``.
        document_rows: `(n, G)` rows of ``document_cache``, positive first then hard negatives.
        teacher_scores: `(n, G)` float32 or None.
        passages: `n` keys naming each row's positive passage (default: its row in the document cache, i.e. its text).
        sources: `n` training-set names (default: one source).
    """

    def __init__(
        self,
        query_cache: FeatureCache,
        document_cache: FeatureCache,
        query_rows: torch.Tensor,
        document_rows: torch.Tensor,
        teacher_scores: torch.Tensor | None = None,
        passages: Sequence | None = None,
        sources: Sequence[str] | None = None,
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
        # What batching needs: a key per row naming its positive passage, and its source (training set).
        self.passages = list(passages) if passages is not None else self.document_rows[:, 0].tolist()
        self.sources = list(sources) if sources is not None else None
        if len(self.passages) != len(self.query_rows) or (self.sources is not None and len(self.sources) != len(self.query_rows)):
            raise ValueError(f"passages and sources need one entry per row ({len(self.query_rows)} rows)")

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


def cache_layer_for_mode(model, mode: str) -> int | tuple[int, ...] | None:
    """The cache layer a training mode needs: None for ``head`` (the tuple of ``projection_layers`` as block counts
    for a layer-mix head), ``L - K`` for ``top-K`` (whose last K layers then run on cached states: BERT-like
    encoders); ``full`` cannot cache."""
    parsed = parse_mode(mode)
    if parsed.kind == "full":
        raise ValueError("mode 'full' trains the whole backbone and cannot use cached features; use 'head' or 'top-K'")
    layers = mixed_layers(model)
    if parsed.kind == "head":
        return layers
    if layers:
        raise ValueError(f"mode {mode!r} with a layer-mix head (projection_layers={model.config.projection_layers}) "
                         "cannot train from a feature cache (the mixed layers would be cached and trained at once); "
                         "use mode 'head', or train on tokens (use_cache=False)")
    n_layers = len(backbone_layers(model.backbone))
    if parsed.top_k > n_layers:
        raise ValueError(f"mode top-{parsed.top_k} asks for more layers than the backbone has ({n_layers})")
    check_layerwise_backbone(model.backbone)
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
    precision: str = "fp32",
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
    options = dict(cache_dir=cache_dir, layer=layer, dtype=dtype, batch_size=batch_size, show_progress_bar=show_progress_bar,
                   precision=precision)
    query_cache = build_feature_cache(model, queries, is_query=True, **options)
    document_cache = build_feature_cache(model, documents, is_query=False, **options)
    query_rows = torch.tensor(query_cache.rows_of(queries))
    document_rows = torch.tensor(document_cache.rows_of(documents)).view(len(queries), group)
    teacher = teacher_score_tensor(records, teacher_column, group) if teacher_column in columns else None
    return CachedPairs(query_cache, document_cache, query_rows, document_rows, teacher,
                       passages=passage_keys(rows, positive_column), sources=row_sources(rows))


def embed_cached_batch(model, batch: dict[str, torch.Tensor], layer: int | tuple[int, ...] | None,
                       length_buckets: int = 1):
    """``(queries, documents, document_mask)`` from a cached batch, as ``embed_token_batch`` returns them.

    ``length_buckets > 1`` runs the top layers of a layer cache (top-K) in that many length-sorted chunks trimmed to
    their own longest row (``training.length_buckets``): the same embeddings with less padding to compute.
    """
    def embed(hidden, mask):
        return model.project(cached_hidden_states(model, hidden, mask, layer), mask)

    chunks = length_buckets if isinstance(layer, int) else 1  # the head alone is too cheap to gain from trimming
    outputs = [forward_in_length_chunks(embed, batch[f"{prefix}_mask"], chunks, per_token=is_multi_vector(model),
                                        hidden=batch[f"{prefix}_hidden"], mask=batch[f"{prefix}_mask"])
               for prefix in ("query", "document")]
    return outputs[0], outputs[1], (batch["document_mask"] if is_multi_vector(model) else None)


def cached_loss(model, batch: dict[str, torch.Tensor], loss: ProjectionLoss, layer: int | tuple[int, ...] | None,
                length_buckets: int = 1) -> torch.Tensor:
    """The training loss of one cached batch (``length_buckets``: as for :func:`embed_cached_batch`)."""
    if getattr(loss, "model_inputs", None):
        raise ValueError(
            f"{type(loss).__name__} needs the model run on tokens ({loss.model_inputs}), which cached last-layer "
            "features cannot give: train through ProjectionTrainer (use_cache=False), or for Starbucks with a "
            "frozen backbone use hf_projections.training.starbucks.train_pooled"
        )
    queries, documents, document_mask = embed_cached_batch(model, batch, layer, length_buckets)
    return loss(queries, documents, document_mask, batch.get("teacher_scores"))


def train_from_cache(model, data: CachedPairs, args, loss: ProjectionLoss | None = None,
                     log_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train from cached features; the model is updated in place.

    Args:
        model: the model whose head (and, for ``top-K``, last ``K`` layers) trains.
        data: :class:`CachedPairs` whose cache layer matches ``args.mode``.
        args: resolved ``ProjectionTrainingArguments`` (mode, learning rates, steps or epochs, batch size, ...).
        loss: default: the contrastive loss the model's config asks for, at ``args.temperature``.
        log_path: JSONL training log (one line per ``args.logging_steps``).

    Returns:
        The loop's statistics (``training.loop.run_training_loop``).
    """
    expected_layer = cache_layer_for_mode(model, args.mode)
    if data.layer != expected_layer:
        raise ValueError(f"mode {args.mode!r} needs features cached at layer {expected_layer}, the data holds layer {data.layer}")
    if len(data) < args.batch_size:
        raise ValueError(f"batch_size={args.batch_size} is larger than the {len(data)} training rows")
    loss = loss if loss is not None else default_loss(model, args.temperature)
    set_trainable(model, args.mode)
    device = next(model.parameters()).device
    dtype = next(model.projection.parameters()).dtype
    sampler = PassageBatchSampler(data.passages, args.batch_size, data.sources, seed=args.seed)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=lambda indices: data.collate(indices, dtype))
    total_steps = args.max_steps or args.epochs * max(1, len(loader) // args.gradient_accumulation_steps)
    epochs = iter(range(1 << 62))

    def epoch():  # a new seeded order every epoch
        sampler.set_epoch(next(epochs))
        return loader

    autocast = autocast_context(device, args.precision)

    def compute(batch):
        with autocast():
            return cached_loss(model, {k: v.to(device, non_blocking=True) for k, v in batch.items()}, loss, data.layer,
                               args.length_buckets)

    return run_training_loop(
        model, epoch, compute, args, total_steps=total_steps, n_rows=len(data),
        batch_rows=lambda batch: len(batch["query_mask"]), log_path=log_path, description=f"Training ({args.mode}, cached)",
    )
