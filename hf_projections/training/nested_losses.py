"""Losses that wrap another loss: Matryoshka (nested output dims) and Starbucks (nested (layer, dim) sub-models),
and ``build_loss``, which stacks them as a model's config or the training arguments ask.

Starbucks 2D Matryoshka (Zhuang et al. 2024, "Starbucks: Improved Training for 2D Matryoshka Embeddings", the SRL
fine-tuning part): every step trains each ``(layer, dim)`` sub-model of ``config.starbucks_pairs``::

    loss = 1/P * sum_p w_p * [ loss(q_p, d_p) + kl_weight * KL( softmax(s_P / t) || softmax(s_p / t) ) ]

``s_p`` are the in-batch scores `(B, B * G)` of sub-model ``p``, ``s_P`` those of the full model (the last pair,
detached: it is the target the sub-models align to, not pulled towards them), ``t`` the temperature; the KL term
of the full pair itself is zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_projections.checks import non_negative_number, positive_number
from hf_projections.training.losses import (
    ContrastiveLoss,
    DistillationLoss,
    ProjectionLoss,
    all_pairs_scores,
    distillation_loss,
    group_size,
    truncate_embeddings,
)


class MatryoshkaLoss(ProjectionLoss):
    """Weighted sum of a loss over nested output dims: embeddings cut to the first ``d`` features, re-normalised.

    Args:
        loss: the loss applied at every dim.
        dims: nested dims (e.g. ``config.matryoshka_dims``); the full dim is always included.
        weights: one weight per dim of ``sorted(set(dims) | {full})`` (default 1 each); or a dict dim -> weight.
    """

    def __init__(self, loss: ProjectionLoss, dims: Sequence[int], weights: Sequence[float] | dict | None = None):
        super().__init__()
        if not dims:
            raise ValueError("MatryoshkaLoss needs at least one dim")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(f"matryoshka dims must be positive ints, got {list(dims)}")
        self.loss = loss
        self.dims = sorted(set(dims))
        self.weights = weights

    def _weights(self, full_dim: int) -> list[tuple[int, float]]:
        if self.dims[-1] > full_dim:
            raise ValueError(f"matryoshka dims {self.dims} exceed the embedding dim {full_dim}")
        dims = sorted(set(self.dims) | {full_dim})
        if self.weights is None:
            return [(d, 1.0) for d in dims]
        if isinstance(self.weights, dict):
            unknown = set(self.weights) - set(dims)
            if unknown:
                raise ValueError(f"matryoshka weights name dims {sorted(unknown)} that are not trained; dims are {dims}")
            return [(d, float(self.weights.get(d, 1.0))) for d in dims]
        if len(self.weights) != len(dims):
            raise ValueError(f"expected {len(dims)} matryoshka weights for dims {dims}, got {len(self.weights)}")
        return list(zip(dims, map(float, self.weights)))

    def forward(self, queries, documents, document_mask=None, teacher_scores=None) -> torch.Tensor:
        total = queries.new_zeros(())
        for dim, weight in self._weights(queries.shape[-1]):
            if dim == queries.shape[-1]:
                q, d = queries, documents
            else:
                q, d = truncate_embeddings(queries, dim), truncate_embeddings(documents, dim)
            total = total + weight * self.loss(q, d, document_mask, teacher_scores)
        return total

    def extra_repr(self) -> str:
        return f"dims={self.dims}, weights={self.weights}"


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
        self.kl_weight = non_negative_number("kl_weight", kl_weight)
        if kl_temperature is not None:
            positive_number("kl_temperature", kl_temperature)
        self.kl_temperature = kl_temperature
        self.weights = None if weights is None else [non_negative_number("weights[]", w) for w in weights]

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


LOSS_NAMES = ("contrastive", "distillation")


def build_loss(
    name: str = "contrastive",
    temperature: float | None = None,
    matryoshka_dims: Sequence[int] | None = None,
    matryoshka_weights: Sequence[float] | dict | None = None,
    in_batch_negatives: bool = True,
    normalize_scores: bool = False,
    starbucks: bool = False,
    starbucks_kl_weight: float = 1.0,
) -> ProjectionLoss:
    """A loss by name (``contrastive`` or ``distillation``), wrapped in Matryoshka when dims are given, or in
    Starbucks with ``starbucks=True`` (then the model's ``starbucks_pairs`` set the sub-models)."""
    if name == "contrastive":
        loss: ProjectionLoss = ContrastiveLoss(temperature, in_batch_negatives, normalize_scores)
    elif name == "distillation":
        loss = DistillationLoss(1.0 if temperature is None else temperature, normalize_scores)
    else:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSS_NAMES)}")
    if starbucks:
        if matryoshka_dims:
            raise ValueError("Starbucks pairs already nest the dims: pass starbucks or matryoshka_dims, not both")
        return StarbucksLoss(loss, kl_weight=starbucks_kl_weight)
    if matryoshka_dims:
        loss = MatryoshkaLoss(loss, list(matryoshka_dims), matryoshka_weights)
    elif matryoshka_weights is not None:
        raise ValueError("matryoshka_weights were given without matryoshka_dims")
    return loss


def default_loss(model, temperature: float | None = None) -> ProjectionLoss:
    """The contrastive loss a model's config asks for: Matryoshka-wrapped when ``config.matryoshka_dims`` is set,
    Starbucks-wrapped when ``config.starbucks_pairs`` is."""
    config = getattr(model, "config", None)
    return build_loss("contrastive", temperature=temperature, matryoshka_dims=getattr(config, "matryoshka_dims", None),
                      starbucks=bool(getattr(config, "starbucks_pairs", None)))


def loss_for_training(model, args) -> ProjectionLoss:
    """The loss of a training run: ``args.loss`` at ``args.temperature`` over the model's nested dims or pairs
    (``args``: resolved ``ProjectionTrainingArguments``)."""
    config = model.config
    return build_loss(args.loss, args.temperature, config.matryoshka_dims, args.matryoshka_weights,
                      normalize_scores=args.normalize_scores, starbucks=bool(getattr(config, "starbucks_pairs", None)),
                      starbucks_kl_weight=args.starbucks_kl_weight)
