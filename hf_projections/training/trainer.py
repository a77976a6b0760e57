"""``transformers.Trainer`` for projection models: contrastive/distillation losses, a head learning rate,
frozen-part handling, a non-finite loss guard, safetensors-only saving and a JSONL training log.

The optimizer groups and the non-finite check are the ones the cached loop uses (``training.loop``)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from hf_projections.atomic import atomic_write_text
from hf_projections.checks import positive_int
from hf_projections.training.batching import PassageBatchSampler, passage_keys, row_sources
from hf_projections.training.cached_encoding import is_multi_vector
from hf_projections.training.collator import ProjectionCollator
from hf_projections.training.length_buckets import forward_in_length_chunks
from hf_projections.training.losses import ProjectionLoss
from hf_projections.training.loop import append_jsonl, build_parameter_groups, check_finite, learning_rates
from hf_projections.training.modes import eval_frozen_modules
from hf_projections.training.nested_losses import default_loss

TRAINING_LOG_NAME = "training_log.jsonl"
TRAINING_ARGS_JSON = "training_args.json"


# --------------------------------------------------------------------------- shared helpers


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / torch.compile wrappers (PEFT models are kept: they own the head)."""
    while True:
        if hasattr(model, "module") and isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def split_batch(batch: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"query_input_ids": x, ...}`` -> ``{"input_ids": x, ...}`` for one prefix."""
    start = len(prefix) + 1
    return {key[start:]: value for key, value in batch.items() if key.startswith(prefix + "_")}


def embed_token_batch(model: nn.Module, batch: dict[str, Any], length_buckets: int = 1, **forward_kwargs):
    """Run a (possibly wrapped) model on a collated batch (``forward_kwargs`` go to both model calls).

    ``length_buckets > 1`` runs queries and documents each in that many length-sorted chunks trimmed to their own
    longest row (``training.length_buckets``): the same embeddings with less padding to compute (not for Starbucks'
    ``all_pairs`` outputs).

    Returns ``(queries, documents, document_mask)``: `(B, Tq, dim)`, `(B * G, Td, dim)`, `(B * G, Td)` bool
    for multi-vector models; `(B, dim)`, `(B * G, dim)`, None for single-vector models; with ``all_pairs=True``
    (Starbucks) one `(B, dim_p)` / `(B * G, dim_p)` tensor per (layer, dim) pair.
    """
    if length_buckets > 1 and not forward_kwargs:
        return _embed_in_length_chunks(model, batch, length_buckets)
    query_output = model(**split_batch(batch, "query"), **forward_kwargs)
    document_output = model(**split_batch(batch, "document"), **forward_kwargs)
    if getattr(query_output, "pair_embeddings", None) is not None:
        return query_output.pair_embeddings, document_output.pair_embeddings, None
    if getattr(query_output, "token_embeddings", None) is not None:
        return query_output.token_embeddings, document_output.token_embeddings, document_output.mask
    if getattr(query_output, "embeddings", None) is not None:
        return query_output.embeddings, document_output.embeddings, None
    raise TypeError(f"model output {type(query_output).__name__} has neither token_embeddings nor embeddings")


def _embed_in_length_chunks(model: nn.Module, batch: dict[str, Any], chunks: int):
    multi_vector = is_multi_vector(unwrap_model(model))
    field = "token_embeddings" if multi_vector else "embeddings"

    def embed(**inputs):
        return getattr(model(**inputs), field)

    outputs = []
    for prefix in ("query", "document"):
        inputs = split_batch(batch, prefix)
        outputs.append(forward_in_length_chunks(embed, inputs["attention_mask"], chunks, per_token=multi_vector,
                                                **inputs))
    mask = batch["document_attention_mask"].bool() if multi_vector else None
    return outputs[0], outputs[1], mask


# --------------------------------------------------------------------------- logging


class JsonlLogCallback(TrainerCallback):
    """Append one JSON line per logging step (step, epoch, loss, learning rates, ...) to ``path``.

    On resume, lines after the checkpoint's step (written by the interrupted run) are dropped first.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if args.process_index == 0 and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines() if _step_of(line) <= state.global_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if args.process_index != 0 or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        if optimizer is not None:
            for key, value in learning_rates(optimizer).items():
                record.setdefault(key, value)
        append_jsonl(self.path, record)


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", math.inf))
    except (ValueError, AttributeError):
        return math.inf


# --------------------------------------------------------------------------- trainer


class ProjectionTrainer(Trainer):
    """``transformers.Trainer`` that trains a ``ColBERTModel``/``DenseEmbeddingModel`` (or a PEFT wrap of one).

    Args:
        model: the model; its frozen parameters (see ``set_trainable``) stay frozen and their blocks run in
            eval mode (no dropout), as the cached-feature path does.
        args: ``TrainingArguments``; ``remove_unused_columns`` is forced to False (the collator needs the text
            columns).
        loss: a :class:`~hf_projections.training.losses.ProjectionLoss`; default contrastive (Matryoshka when
            ``config.matryoshka_dims`` is set) at the default temperature.
        head_learning_rate: learning rate of the projection head (``args.learning_rate`` for the rest); None
            uses ``args.learning_rate`` everywhere.
        check_finite_loss: raise :class:`NonFiniteLossError` on a NaN/inf loss (one device sync per step).
        data_collator: default :class:`ProjectionCollator` over the model.
        **kwargs: anything else ``Trainer`` takes (train_dataset, eval_dataset, callbacks, ...).
    """

    # compute_loss returns a per-batch mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args=None,
        loss: ProjectionLoss | None = None,
        head_learning_rate: float | None = None,
        check_finite_loss: bool = True,
        data_collator=None,
        length_buckets: int = 1,
        **kwargs,
    ):
        if model is None:
            raise ValueError("ProjectionTrainer needs a model")
        if args is not None and args.remove_unused_columns:
            args.remove_unused_columns = False
        if data_collator is None:
            data_collator = ProjectionCollator(model)
        if head_learning_rate is not None and not head_learning_rate > 0:
            raise ValueError(f"head_learning_rate must be positive, got {head_learning_rate!r}")
        self.loss = loss if loss is not None else default_loss(unwrap_model(model))
        self.head_learning_rate = head_learning_rate
        self.check_finite_loss = check_finite_loss
        self.length_buckets = positive_int("length_buckets", length_buckets)
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)

    def get_train_dataloader(self):
        """Batches of one source without two rows of one passage (``training.batching.PassageBatchSampler``: a
        query's own positive is never one of its in-batch negatives), a new seeded order each epoch."""
        if self.train_dataset is None:
            raise ValueError("ProjectionTrainer: training requires a train_dataset")
        dataset = self.train_dataset
        sampler = PassageBatchSampler(passage_keys(dataset), self._train_batch_size, row_sources(dataset),
                                      seed=self.args.seed)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer class and settings, with separate head/backbone learning-rate groups."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        groups = build_parameter_groups(
            opt_model,
            head_lr=self.head_learning_rate if self.head_learning_rate is not None else self.args.learning_rate,
            backbone_lr=self.args.learning_rate,
            weight_decay=self.args.weight_decay,
            decay_names=set(self.get_decay_parameter_names(opt_model)),
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model", "optimizer_dict")}
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            eval_frozen_modules(unwrap_model(model))
        queries, documents, document_mask = embed_token_batch(model, inputs, self.length_buckets,
                                                              **getattr(self.loss, "model_inputs", {}))
        loss = self.loss(queries, documents, document_mask, inputs.get("teacher_scores"))
        if self.check_finite_loss and model.training:
            check_finite(loss, self.state.global_step + 1)
        if return_outputs:
            return loss, {"queries": queries, "documents": documents}
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation reports the training loss on the eval rows (retrieval metrics live in ``evaluation``)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save through the model's own ``save_pretrained`` (safetensors, tokenizer, code files); the training
        arguments go to JSON instead of a pickled ``training_args.bin``."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"cannot save {type(model).__name__}: it has no save_pretrained")
        model.save_pretrained(output_dir, state_dict=state_dict)
        atomic_write_text(Path(output_dir) / TRAINING_ARGS_JSON, self.args.to_json_string())


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The highest ``checkpoint-N`` folder whose trainer state parses and whose weights exist.

    A checkpoint cut off mid-write (killed process) is skipped, so resuming never loads half a checkpoint.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    candidates = sorted(
        ((int(m.group(1)), path) for path in folder.iterdir() if (m := _CHECKPOINT.match(path.name)) and path.is_dir()),
        reverse=True,
    )
    for _, path in candidates:
        weights = [path / "model.safetensors", path / "model.safetensors.index.json", path / "adapter_model.safetensors"]
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if any(w.exists() for w in weights):
            return str(path)
    return None
