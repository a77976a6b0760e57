"""What a sweep trains and evaluates: one budget shared by every head x seed, and the named presets.

The training knobs left ``None`` (head and backbone learning rates, temperature, markers, query augmentation) take
the measured recipe of the mode (``hf_projections.training.recipes``), exactly as ``train()`` does; each run trains
with the ``ProjectionTrainingArguments`` that :meth:`SweepSettings.training_arguments` builds. The head input is the
exception: a sweep's ``projection_layers`` is part of what it measures, so ``None`` means the last layer (as in every
committed data-scale and end-to-end table), not the head recipe's layer mix; the ``layer-mix-*`` presets name theirs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from hf_projections.checks import is_int as _is_int
from hf_projections.checks import is_number, non_negative_int, one_of, positive_int
from hf_projections.heads.layer_mix import LAYER_MIXES
from hf_projections.training.arguments import ProjectionTrainingArguments
from hf_projections.training.backbone_precision import BACKBONE_PRECISIONS, resolve_backbone_precision
from hf_projections.training.dropout import check_dropout
from hf_projections.training.modes import parse_mode
from hf_projections.training.recipes import recipe_for

BRANCH_INITS = ("random", "zero")
SWEEP_PRECISIONS = ("auto", "fp32", "bf16")  # the cached loop autocasts to bf16; fp16 would need a loss scaler
# Fields that change speed or placement, not results: a resumed sweep may change them.
NOT_BUDGET_FIELDS = ("heads", "seeds", "train_threads", "device")
# Fields renamed since sweeps were first saved (settings.json of committed results): old name -> new name.
RENAMED_FIELDS = {"lr": "head_lr"}
RECIPE_FIELDS = ("head_lr", "backbone_lr", "temperature", "markers", "augment_queries")


def _is_positive_number(value) -> bool:
    """True for a finite int/float > 0 (bools, strings, NaN and infinity are not)."""
    return is_number(value) and value > 0


def _is_sequence(value) -> bool:
    """True for a list or tuple (a string is not a list of names)."""
    return isinstance(value, (list, tuple))


@dataclass(frozen=True)
class SweepSettings:
    """One identical budget for every run of a sweep.

    Attributes:
        backbone: encoder name or folder (None: the offline all-MiniLM-L6-v2).
        heads: projection presets (or JSON spec strings) to compare, no repeats; must include ``linear``, the
            baseline.
        seeds: one run per head per seed (ints >= 0, no repeats; the seed drives head init and batch order).
        train_data: training pairs, e.g. ``arguana-genq`` (see ``load_training_pairs``), or several sets, e.g.
            ``("squad", "nq-qed", "arguana-genq")``: batches then hold one set each (``training.batching``).
        max_pairs: a seeded sample of at most this many training pairs in all (several sets: each in proportion
            to its size), the same for every run; None: every pair.
        eval_data: BEIR sets evaluated on their ``test`` split.
        mode: ``head`` (frozen backbone, cached features) or ``top-K``.
        steps / batch_size: the optimisation budget (AdamW, linear warmup/decay); positive ints.
        head_lr / temperature: the head's learning rate and the contrastive temperature (finite numbers > 0;
            None: the mode's recipe).
        backbone_lr: learning rate of the backbone layers that train in ``top-K`` mode (None: the recipe's); an
            error in ``head`` mode, which trains none.
        backbone_dropout: dropout of the backbone layers that train (``top-K``), attention included, during training
            (None: the backbone's own, MiniLM 0.1; 0: off, which is faster, see ``training.dropout``).
        dim / query_max_length / document_max_length: model shape, as ColBERT (positive ints).
        markers: prepend ColBERT's query/document marker tokens (``[unused0]`` / ``[unused1]``; None: the recipe's).
            Their input embeddings were never trained in the (frozen) backbone, so they can blur every token's state.
        augment_queries: pad queries to ``query_max_length`` with attended ``[MASK]`` tokens (ColBERT's query
            augmentation; None: the recipe's). Both are part of the cached features, so changing them costs one
            backbone pass.
        max_eval_queries: evaluate on a seeded sample of at most this many test queries per set (None: all);
            the corpus is always complete.
        train_threads: torch threads while training from the cache (a positive int; None: torch's default, all
            cores). On the idle 2-core reference machine two threads trained 1.7-1.9x faster than one; give 1
            when two sweeps share the machine. Not part of the budget: it changes speed, not the recipe.
        validation_queries: hold out this many training query ids (seeded; their pairs leave the training set)
            and report metrics on them against the training passages: the place to make choices, never the
            test queries. 0: no validation set.
        branch_init: ``random`` (every layer drawn by its default init) or ``zero``: a residual head starts as
            exactly the ``linear`` head of the same seed (its shortcut gets that weight, the branch output is
            zeroed, see ``heads.init_from_linear``), so training can only add to the baseline. Heads without a
            residual connection are not changed.
        matryoshka_dims: train nested output dims too (e.g. ``(32, 64, 96, 128)``, strictly ascending, each <= ``dim``):
            ``MatryoshkaLoss`` sums the contrastive loss over these dims and ``dim``, the model config records them,
            and every run is evaluated at each of them (embeddings cut to the first ``d`` features, re-normalised).
            None: full dim only.
        matryoshka_weights: one non-negative weight per trained dim, i.e. per entry of ``trained_dims()`` (the
            full ``dim`` counts even when not listed); None: 1 each.
        precision: ``auto`` (bf16 autocast on a GPU that has it, fp32 on CPU), ``fp32`` or ``bf16``.
        backbone_precision: the frozen backbone pass that fills the feature cache: ``fp32``, ``bf16`` (autocast) or
            ``auto`` (bf16 where the device runs it natively: a CPU with AMX or AVX512-BF16, a bf16 GPU; else fp32).
            ``resolved()`` turns ``auto`` into what this machine runs, and that is what ``settings.json`` records.
        projection_layers: the head reads a mix of these backbone layers (e.g. ``(-1, -2, -3)``; None: the last
            layer only), cached side by side once (head mode only).
        layer_mix: how ``projection_layers`` combine: ``scalar`` (softmax-weighted sum, reset for every run) or
            ``concat`` (side by side; the head's first layer learns the mix).
        device: where runs train, encode and search (``cpu``, ``cuda``, ``cuda:1``...; None: a GPU when there is
            one). Not part of the budget, like ``train_threads``.
    """

    backbone: str | None = None
    heads: tuple[str, ...] = ("linear", "ffn2-x2-res")
    seeds: tuple[int, ...] = (0, 1)
    train_data: str | tuple[str, ...] = "arguana-genq"
    max_pairs: int | None = 8000
    eval_data: tuple[str, ...] = ("scifact", "arguana")
    mode: str = "head"
    steps: int = 500
    batch_size: int = 32
    head_lr: float | None = None
    backbone_lr: float | None = None
    backbone_dropout: float | None = None
    temperature: float | None = None
    dim: int = 128
    query_max_length: int = 32
    document_max_length: int = 180
    markers: bool | None = None
    augment_queries: bool | None = None
    max_eval_queries: int | None = None
    train_threads: int | None = None
    validation_queries: int = 0
    branch_init: str = "random"
    matryoshka_dims: tuple[int, ...] | None = None
    matryoshka_weights: tuple[float, ...] | None = None
    precision: str = "auto"
    backbone_precision: str = "fp32"
    projection_layers: tuple[int, ...] | None = None
    layer_mix: str = "scalar"
    device: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def replace(self, **changes) -> SweepSettings:
        """A copy with some fields changed (lists become tuples)."""
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict) -> SweepSettings:
        """Settings from a saved ``settings.json`` (renamed fields of older sweeps are read under their new names)."""
        values = {RENAMED_FIELDS.get(k, k): v for k, v in values.items()}
        return cls().replace(**values)

    def resolved(self) -> SweepSettings:
        """A copy with every recipe field set (the mode's recipe for those left ``None``): what the runs train with,
        what ``settings.json`` records and what a resumed sweep is compared against."""
        recipe = recipe_for(self.mode)
        changes = {name: getattr(recipe, name) for name in RECIPE_FIELDS if getattr(self, name) is None}
        changes["backbone_precision"] = resolve_backbone_precision(self.backbone_precision, self.torch_device())
        return self.replace(**changes)

    def training_arguments(self, seed: int) -> ProjectionTrainingArguments:
        """The resolved arguments one run of this sweep trains with (the cached loop's settings)."""
        settings = self.resolved()
        return ProjectionTrainingArguments(
            backbone=settings.backbone,
            mode=settings.mode,
            dim=settings.dim,
            query_max_length=settings.query_max_length,
            document_max_length=settings.document_max_length,
            markers=settings.markers,
            augment_queries=settings.augment_queries,
            matryoshka_dims=list(settings.matryoshka_dims) if settings.matryoshka_dims else None,
            matryoshka_weights=list(settings.matryoshka_weights) if settings.matryoshka_weights else None,
            head_lr=settings.head_lr,
            backbone_lr=settings.backbone_lr,
            backbone_dropout=settings.backbone_dropout,
            temperature=settings.temperature,
            max_steps=settings.steps,
            batch_size=settings.batch_size,
            seed=seed,
            use_cache=True,
            precision=settings.precision,
            backbone_precision=settings.backbone_precision,
            projection_layers=list(settings.projection_layers) if settings.projection_layers else [-1],  # the last layer
            layer_mix=settings.layer_mix,
        ).resolved()

    def torch_device(self) -> str:
        """``device``, or ``cuda`` when a GPU is there and ``cpu`` otherwise."""
        import torch

        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def trained_dims(self) -> tuple[int, ...]:
        """Every dim the runs train and are evaluated at, ascending: ``matryoshka_dims`` plus ``dim``."""
        return tuple(sorted(set(self.matryoshka_dims or ()) | {self.dim}))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_preset(cls, name: str) -> SweepSettings:
        if name not in PRESETS:
            raise ValueError(f"unknown sweep preset {name!r}; known presets: {', '.join(PRESETS)}")
        return PRESETS[name]

    def train_sets(self) -> tuple[str, ...]:
        """``train_data`` as a tuple of training set names."""
        return (self.train_data,) if isinstance(self.train_data, str) else tuple(self.train_data)

    def train_label(self) -> str:
        """The training sets in words, e.g. ``squad + nq-qed + arguana-genq``."""
        return " + ".join(self.train_sets())

    def __post_init__(self):
        sets = self.train_data if _is_sequence(self.train_data) else [self.train_data]
        if not sets or not all(isinstance(name, str) and name for name in sets) or len(set(sets)) != len(sets):
            raise ValueError(f"train_data must name one training set or several different ones, got {self.train_data!r}")
        if _is_sequence(self.train_data):  # one set is stored as its name (as sweeps always recorded it)
            object.__setattr__(self, "train_data", sets[0] if len(sets) == 1 else tuple(sets))
        if self.max_pairs is not None:
            positive_int("max_pairs", self.max_pairs)
        if not _is_sequence(self.heads) or not all(isinstance(h, str) and h for h in self.heads):
            raise ValueError(f"heads must be a list of preset names or JSON spec strings, got {self.heads!r}")
        if "linear" not in self.heads:
            raise ValueError(f"heads must include the 'linear' baseline, got {list(self.heads)}")
        if not _is_sequence(self.seeds) or not self.seeds or not all(_is_int(s) and s >= 0 for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {self.seeds!r}")
        if len(set(self.heads)) != len(self.heads) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"heads and seeds must not repeat, got heads={list(self.heads)}, seeds={list(self.seeds)}")
        for name in ("max_eval_queries", "train_threads"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        for name in ("steps", "batch_size", "dim", "query_max_length", "document_max_length"):
            positive_int(name, getattr(self, name))
        non_negative_int("validation_queries", self.validation_queries)
        if not self.eval_data and not self.validation_queries:
            raise ValueError("eval_data is empty and validation_queries is 0: the sweep would evaluate nothing")
        one_of("backbone_precision", self.backbone_precision, BACKBONE_PRECISIONS)
        one_of("layer_mix", self.layer_mix, LAYER_MIXES)
        check_dropout("backbone_dropout", self.backbone_dropout)
        layers = self.projection_layers
        if layers is not None:
            if not _is_sequence(layers) or not layers or not all(_is_int(x) for x in layers) or len(set(layers)) != len(layers):
                raise ValueError(f"projection_layers must be a non-empty list of distinct ints (e.g. -1,-2,-3) or None, "
                                 f"got {layers!r}")
        if self.precision not in SWEEP_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(SWEEP_PRECISIONS)}, got {self.precision!r}")
        if self.device is not None and (not isinstance(self.device, str) or not self.device.split(":")[0] in ("cpu", "cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<index>' or None (a GPU when there is one), got {self.device!r}")
        if self.branch_init not in BRANCH_INITS:
            raise ValueError(f"branch_init must be one of {', '.join(BRANCH_INITS)}, got {self.branch_init!r}")
        for name in ("markers", "augment_queries"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True, False or None (the recipe's), got {getattr(self, name)!r}")
        for name in ("head_lr", "backbone_lr", "temperature"):
            if getattr(self, name) is not None and not _is_positive_number(getattr(self, name)):
                raise ValueError(f"{name} must be > 0 (a finite number) or None (the recipe's), got {getattr(self, name)!r}")
        if not isinstance(self.mode, str):
            raise ValueError(f"mode must be 'head' or 'top-K', got {self.mode!r}")
        kind = parse_mode(self.mode).kind
        if self.projection_layers is not None and kind != "head":
            raise ValueError(f"projection_layers needs mode 'head' (the mixed layers are cached), got mode {self.mode!r}")
        if kind == "full":
            raise ValueError("mode must be 'head' or 'top-K': sweeps train from cached features, which mode 'full' cannot use")
        if kind == "head" and self.backbone_lr is not None:
            raise ValueError(
                f"backbone_lr={self.backbone_lr} was given, but mode 'head' trains no backbone layer; set head_lr "
                "(--head-lr), or use mode 'top-K' to train backbone layers"
            )
        self._check_matryoshka()

    def _check_matryoshka(self) -> None:
        dims, weights = self.matryoshka_dims, self.matryoshka_weights
        if dims is not None:
            if not _is_sequence(dims):
                raise ValueError(f"matryoshka_dims must be a non-empty list of positive ints or None, got {dims!r}")
            dims = tuple(dims)
            object.__setattr__(self, "matryoshka_dims", dims)  # a list given directly becomes a tuple
            if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
                raise ValueError(f"matryoshka_dims must be a non-empty list of positive ints, got {list(dims)!r}")
            if list(dims) != sorted(set(dims)):
                raise ValueError(f"matryoshka_dims must be strictly ascending (e.g. 32, 64, 96, 128), got {list(dims)}")
            if dims[-1] > self.dim:
                raise ValueError(f"matryoshka_dims must each be <= dim={self.dim}, got {list(dims)}")
        if weights is None:
            return
        if dims is None:
            raise ValueError("matryoshka_weights were given without matryoshka_dims")
        if not _is_sequence(weights):
            raise ValueError(f"matryoshka_weights must be a list of non-negative numbers or None, got {weights!r}")
        weights = tuple(weights)
        object.__setattr__(self, "matryoshka_weights", weights)
        trained = self.trained_dims()
        if len(weights) != len(trained):
            raise ValueError(
                f"matryoshka_weights needs one weight per trained dim {list(trained)} (the full dim {self.dim} is "
                f"always trained), got {len(weights)}: {list(weights)}"
            )
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf for w in weights):
            raise ValueError(f"matryoshka_weights must be non-negative finite numbers, got {list(weights)}")


PAPER_HEADS = (
    "linear",
    "ffn2",
    "ffn2-x2",
    "ffn2-res",
    "ffn2-x2-res",
    "ffn2-x4-res",
    "ffn3-x2-res",
    "ffn2-x2-res-identity",
    "glu-x2",
    "swiglu-x2-res",
    "geglu-x2-res",
)

# Every preset trains with the mode's measured recipe (temperature 0.25, plain queries, head lr 1e-3 in head mode;
# see hf_projections.training.recipes), filled in by SweepSettings.resolved().
PRESETS: dict[str, SweepSettings] = {
    # The README's main command, sized for <= 10 minutes on 2 CPU cores: one backbone pass (~14k documents; bf16
    # where the CPU has AMX or AVX512-BF16 or the GPU bf16, 2.1-2.7x faster, NDCG@10 within seed noise of fp32: README),
    # then 4 runs; ArguAna is scored on a seeded sample of 300 of its 1,406 test queries (full corpus).
    "quick": SweepSettings(max_eval_queries=300, backbone_precision="auto"),
    # The paper's ablation grid (depth, width, residual, GLU variants, activation), 3 seeds, on the quick preset's
    # budget and test queries (its linear and ffn2-x2-res runs at seeds 0 and 1 repeat the quick preset's, up to
    # float noise from thread counts). All 1,406 ArguAna queries would cost ~6 minutes of exact search per run
    # here, for a sample that is already paired across heads.
    "paper": SweepSettings(heads=PAPER_HEADS, seeds=(0, 1, 2), max_eval_queries=300),
    # The quick budget with Matryoshka training: NDCG@10 at 32/64/96/128 dims for linear vs ffn2-x2-res.
    "matryoshka": SweepSettings(max_eval_queries=300, matryoshka_dims=(32, 64, 96, 128)),
}

# The data-scale curve: linear vs the paper's residual FFN/GLU heads on ~8k / 32k / all 120,610 pairs of the three
# training sets mixed (each size a seeded sample, every set in proportion to its size), one epoch per size
# (steps = pairs // batch), 3 seeds, evaluated on SciFact, ArguAna and SQuAD dev (seeded 300 test queries each).
DATA_SCALE_SETS = ("squad", "nq-qed", "arguana-genq")
DATA_SCALE_HEADS = ("linear", "ffn2-x2-res", "geglu-x2-res", "swiglu-x2-res")
DATA_SCALE_SIZES = {"data-8k": 8_000, "data-32k": 32_000, "data-120k": None}
DATA_SCALE_PAIRS = 87_599 + 7_167 + 25_844  # squad + nq-qed + arguana-genq
for _name, _pairs in DATA_SCALE_SIZES.items():
    PRESETS[_name] = SweepSettings(
        heads=DATA_SCALE_HEADS, seeds=(0, 1, 2), train_data=DATA_SCALE_SETS, max_pairs=_pairs,
        eval_data=("scifact", "arguana", "squad-dev"), max_eval_queries=300,
        steps=(_pairs or DATA_SCALE_PAIRS) // 32,
    )

# Layer-mix input: the 32k data-scale budget, linear vs ffn2-x2-res, the head reading the last 2 or 3 layers through a
# scalar mix or side by side (cached once per sweep); the last-layer baseline is `data-32k --heads linear,ffn2-x2-res`.
for _n in (2, 3):
    for _mix in LAYER_MIXES:
        PRESETS[f"layers{_n}-{_mix}"] = PRESETS["data-32k"].replace(
            heads=("linear", "ffn2-x2-res"), projection_layers=tuple(range(-1, -_n - 1, -1)), layer_mix=_mix)

# The paper's comparison end-to-end, sized for one short GPU run (benchmarks/gpu/): the paper grid trained in
# top-6 mode (every transformer layer of the 6-layer MiniLM with the head; the input embeddings stay frozen, which
# lets the embedding output be cached) on all 120,610 pairs, one epoch at batch 64, bf16 autocast, the top-K
# recipe's rates (backbone 1e-4, head 1e-3); every test query of SciFact, ArguAna and SQuAD dev.
GPU_PAPER_HEADS = ("linear", "ffn2-x2", "ffn2-x2-res", "ffn2-x2-res-identity", "geglu-x2-res", "swiglu-x2-res")
PRESETS["gpu-paper"] = SweepSettings(
    heads=GPU_PAPER_HEADS, seeds=(0, 1, 2), train_data=DATA_SCALE_SETS, max_pairs=None,
    eval_data=("scifact", "arguana", "squad-dev"), max_eval_queries=None, mode="top-6",
    steps=DATA_SCALE_PAIRS // 64, batch_size=64, precision="bf16",
)
