"""``train(data, args)``: from data set names to a saved, trained model (what ``hf-projections train`` calls).

``head`` mode (and ``top-K`` on BERT-like encoders) trains from cached backbone features in the package's loop;
``full`` and ``top-K`` otherwise go through :class:`~hf_projections.training.trainer.ProjectionTrainer` with
checkpoints and resume. Every setting comes from one :class:`ProjectionTrainingArguments`, whose unset fields take
the measured recipe of the mode.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hf_projections.data import load_beir, load_training_mix
from hf_projections.atomic import atomic_write_json
from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel
from hf_projections.modeling.backbone import supports_layerwise
from hf_projections.modeling.sources import load_model_config
from hf_projections.training.arguments import ProjectionTrainingArguments, default_backbone
from hf_projections.training.batching import SOURCE_COLUMN
from hf_projections.training.dropout import backbone_dropout
from hf_projections.training.modes import set_trainable
from hf_projections.training.nested_losses import loss_for_training
from hf_projections.training.trainer import TRAINING_LOG_NAME

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SUMMARY_NAME = "train_summary.json"


def load_pairs(data: str | Sequence[str] | datasets.Dataset, max_pairs: int | None = None, seed: int = 0) -> datasets.Dataset:
    """Training rows from data set specs (``"arguana-genq"``, ``["squad", "nq-qed"]``; several get a ``source``
    column and ``max_pairs`` caps their total, each set in proportion to its size: ``data.load_training_mix``) or a
    ready ``datasets.Dataset``."""
    import datasets

    if isinstance(data, datasets.Dataset):
        if max_pairs is not None and max_pairs < len(data):
            return data.shuffle(seed=seed).select(range(max_pairs))
        return data
    return load_training_mix(data, max_pairs=max_pairs, seed=seed)


def build_model(args: ProjectionTrainingArguments):
    """A fresh model on ``args.backbone`` shaped by ``args``, or an existing hf-projections checkpoint (whose head
    and config are kept; asking for another head there is an error)."""
    backbone = args.backbone or default_backbone()
    cls = ColBERTModel if args.model_type == "colbert" else DenseEmbeddingModel
    config = load_model_config(backbone, "an encoder (a folder or Hub id) or a saved hf-projections model")
    if config.model_type == cls.config_class.model_type:
        model = cls.from_pretrained(backbone)
        if args.projection is not None and model.config.projection != _resolve(args.projection):
            raise ValueError(
                f"{backbone} already has the head {model.config.projection['type']!r}; leave projection unset to keep "
                "training it, or start from its encoder to train a different head"
            )
        return model
    if config.model_type.startswith("hf_projections"):
        raise ValueError(f"{backbone} is a {config.model_type} checkpoint but model_type={args.model_type!r} was asked")
    extra = {"pooling": args.pooling} if args.model_type == "dense" else {}
    if args.reads_layer_mix():
        extra.update(projection_layers=args.projection_layers, layer_mix=args.layer_mix or "scalar")
    if args.starbucks_pairs:
        extra["starbucks_pairs"] = args.starbucks_pairs
    return cls.from_backbone(
        backbone,
        projection=args.projection,
        dim=args.dim,
        query_max_length=args.query_max_length,
        document_max_length=args.document_max_length,
        query_marker="[unused0]" if args.markers else None,
        document_marker="[unused1]" if args.markers else None,
        augment_queries=args.augment_queries,
        matryoshka_dims=args.matryoshka_dims,
        **extra,
    )


def _resolve(projection):
    from hf_projections.heads import resolve_spec

    return resolve_spec(projection)


def train(data: str | Sequence[str] | datasets.Dataset, args: ProjectionTrainingArguments | None = None):
    """Train a projection model and save it to ``args.output_dir`` (``save_pretrained``); returns the model.

    Args:
        data: training sets for ``load_training_pairs`` (e.g. ``["arguana-genq", "scifact:train"]``) or a
            ``datasets.Dataset`` with ``query``/``positive`` (+ ``negative_i``, teacher ``scores``) columns.
        args: the run's settings (default ``ProjectionTrainingArguments()``: head mode, the measured recipe).

    Writes to ``args.output_dir``: the model (safetensors, config, tokenizer, code, card), ``training_log.jsonl``
    (loss and learning rates per logging step) and ``train_summary.json`` (the resolved arguments, the learning
    rates the optimizer got, steps, samples/s).
    """
    args = (args or ProjectionTrainingArguments()).resolved()
    output_dir = Path(args.output_dir)
    torch.manual_seed(args.seed)
    started = time.time()

    model = build_model(args)
    if model.config.model_type == "hf_projections_colbert":  # a saved model keeps its head input: record what it reads
        args = args.replace(projection_layers=model.config.projection_layers or [-1], layer_mix=model.config.layer_mix)
    if args.use_cache is None:  # top-K: cache the frozen layers when the top ones can run on stored states
        args = args.replace(use_cache=supports_layerwise(model.backbone) and not model.config.projection_layers)
    rows = load_pairs(data, max_pairs=args.max_pairs, seed=args.seed)
    rows = with_negatives(rows, model, args)
    if len(rows) < args.batch_size:
        raise ValueError(f"batch_size={args.batch_size} is larger than the {len(rows)} training rows")
    counts = set_trainable(model, args.mode)
    loss = loss_for_training(model, args)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / TRAINING_LOG_NAME

    if args.use_cache:
        log_path.unlink(missing_ok=True)  # a fresh cached run starts a fresh log
        stats = _train_cached(model, rows, args, loss, log_path)
        model.save_pretrained(output_dir)
    else:
        stats = _train_with_trainer(model, rows, args, loss)
    summary = {
        "backbone": model.config.backbone_name,
        "projection": model.config.projection,
        "data": data if isinstance(data, (str, list, tuple)) else f"Dataset({len(rows)} rows)",
        "pairs": len(rows),
        "parameters": counts,
        "arguments": args.to_dict(),
        "wall_seconds": time.time() - started,
        **stats,
    }
    atomic_write_json(output_dir / SUMMARY_NAME, summary)
    logger.info("trained %s: %s", output_dir, json.dumps({"mode": args.mode, "pairs": len(rows), "cached": args.use_cache}))
    return model


def with_negatives(rows, model, args: ProjectionTrainingArguments):
    """Rows with ``args.num_negatives`` hard negatives each, mined with ``args.negatives_method`` when missing."""
    from hf_projections.training.mining import hard_negative_count, mine_hard_negatives

    wanted = args.num_negatives
    if not wanted or hard_negative_count(rows) >= wanted:
        return rows
    import datasets

    corpus = load_beir(args.negatives_corpus).corpus if args.negatives_corpus is not None else None
    existing = [c for c in rows.column_names if c.startswith("negative_")]
    if existing:
        logger.info("replacing %d existing negative columns by %d mined ones", len(existing), wanted)
        rows = rows.remove_columns(existing)
    miner = "bm25" if args.negatives_method == "bm25" else model
    sources = list(dict.fromkeys(rows[SOURCE_COLUMN])) if SOURCE_COLUMN in rows.column_names else [None]
    if corpus is not None or len(sources) == 1:
        return mine_hard_negatives(rows, corpus, wanted, miner, seed=args.seed)
    # Per source: each set's negatives come from its own passages (a debate argument is no negative for a trivia question).
    parts = [mine_hard_negatives(rows.filter(lambda row, s=source: row[SOURCE_COLUMN] == s), None, wanted, miner,
                                 seed=args.seed) for source in sources]
    return datasets.concatenate_datasets(parts)


def _train_cached(model, rows, args: ProjectionTrainingArguments, loss, log_path: Path) -> dict:
    from hf_projections.training.cached_training import build_cached_pairs, train_from_cache

    if torch.cuda.is_available():
        model.cuda()
    started = time.perf_counter()
    data = build_cached_pairs(model, rows, mode=args.mode, cache_dir=args.cache_dir, dtype=args.cache_dtype,
                              num_negatives=args.num_negatives, show_progress_bar=args.show_progress_bar,
                              precision=args.backbone_precision)
    cache_seconds = time.perf_counter() - started
    stats = train_from_cache(model, data, args, loss=loss, log_path=log_path)
    model.cpu()
    return {**stats, "cached": True, "cache_seconds": cache_seconds, "query_cache": str(data.query_cache.path),
            "document_cache": str(data.document_cache.path)}


def _train_with_trainer(model, rows, args: ProjectionTrainingArguments, loss) -> dict:
    from hf_projections.training.collator import ProjectionCollator
    from hf_projections.training.loop import learning_rates
    from hf_projections.training.trainer import JsonlLogCallback, ProjectionTrainer, last_complete_checkpoint

    output_dir = Path(args.output_dir)
    trainer = ProjectionTrainer(
        model=model, args=args.to_training_arguments(), loss=loss, head_learning_rate=args.head_lr,
        length_buckets=args.length_buckets,
        train_dataset=rows, data_collator=ProjectionCollator(model, num_negatives=args.num_negatives),
        callbacks=[JsonlLogCallback(output_dir / TRAINING_LOG_NAME)],
    )
    checkpoint = args.resume_from_checkpoint
    if checkpoint is True:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            logger.warning("no complete checkpoint in %s: training from the start", output_dir)
    started = time.perf_counter()
    with backbone_dropout(model, args.backbone_dropout):
        result = trainer.train(resume_from_checkpoint=checkpoint or None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(output_dir))
    model.cpu()
    metrics = result.metrics
    return {
        "cached": False,
        "steps": result.global_step,
        "seconds": seconds,
        "samples_per_second": metrics.get("train_samples_per_second"),
        "steps_per_second": metrics.get("train_steps_per_second"),
        "loss": metrics.get("train_loss"),
        "learning_rates": learning_rates(trainer.optimizer, key="initial_lr", prefix=""),
        "resumed_from": checkpoint or None,
    }
