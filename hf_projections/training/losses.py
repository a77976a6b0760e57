"""Training losses for multi-vector (MaxSim) and single-vector (cosine) models.

Layout shared by every loss: a batch of ``B`` queries and ``B * G`` documents, grouped per query: documents
``b * G .. b * G + G - 1`` belong to query ``b``; the first of each group is its positive, the other
``G - 1`` are its hard negatives (``G = 1`` when there are none).

- multi-vector: queries `(B, Tq, dim)`, documents `(B * G, Td, dim)` + bool mask `(B * G, Td)`, True = real
  token; embeddings L2-normalised per token with padding rows zero (what ``ColBERTModel`` returns).
- single-vector: queries `(B, dim)`, documents `(B * G, dim)`, L2-normalised (what ``DenseEmbeddingModel``
  returns); no mask.

Temperatures. ColBERT and PyLate feed raw MaxSim sums to the cross-entropy (temperature 1). Held-out validation
here found that too flat a softmax: the default on MaxSim sums is the measured recipe's 0.25
(``hf_projections.training.recipes``). Cosine scores of single-vector models live in [-1, 1] and need a sharper
scale: sentence-transformers' default (scale 20, i.e. temperature 0.05). With ``normalize_scores=True`` MaxSim
sums are divided by the number of real query tokens (a mean in [-1, 1]) and a cosine-style temperature such as
0.02-0.05 applies instead.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from hf_projections.modeling import masked_maxsim, maxsim
from hf_projections.training.recipes import DENSE_TEMPERATURE, HEAD

DEFAULT_MULTI_VECTOR_TEMPERATURE = HEAD.temperature
DEFAULT_SINGLE_VECTOR_TEMPERATURE = DENSE_TEMPERATURE


def default_temperature(multi_vector: bool) -> float:
    """The default contrastive temperature: the recipe's 0.25 on MaxSim sums, 0.05 on cosine scores."""
    return DEFAULT_MULTI_VECTOR_TEMPERATURE if multi_vector else DEFAULT_SINGLE_VECTOR_TEMPERATURE


# --------------------------------------------------------------------------- scores


def group_size(n_queries: int, n_documents: int) -> int:
    """Documents per query ``G`` from the batch sizes; raises if ``n_documents`` is not a multiple of ``n_queries``."""
    if n_queries < 1 or n_documents < n_queries or n_documents % n_queries:
        raise ValueError(
            f"expected B queries and B * G documents (G >= 1), got {n_queries} queries and {n_documents} documents"
        )
    return n_documents // n_queries


def query_token_counts(queries: torch.Tensor) -> torch.Tensor:
    """`(B, Tq, dim)` with zero padding rows -> `(B,)` number of real (non-zero) query tokens, at least 1."""
    return (queries.abs().sum(dim=-1) > 0).sum(dim=-1).clamp(min=1).to(queries.dtype)


def all_pairs_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor | None = None,
    normalize_scores: bool = False,
) -> torch.Tensor:
    """Score every query against every document.

    Args:
        queries: `(B, Tq, dim)` (multi-vector) or `(B, dim)` (single-vector).
        documents: `(N, Td, dim)` or `(N, dim)`.
        document_mask: `(N, Td)` bool, needed for multi-vector documents.
        normalize_scores: divide MaxSim sums by each query's number of real tokens.

    Returns:
        `(B, N)` MaxSim sums (multi-vector) or dot products (single-vector).
    """
    if queries.dim() == 2 and documents.dim() == 2:
        return queries @ documents.T
    if queries.dim() != 3 or documents.dim() != 3:
        raise ValueError(
            "queries/documents must both be (batch, tokens, dim) or both (batch, dim), got "
            f"{tuple(queries.shape)} and {tuple(documents.shape)}"
        )
    if document_mask is None:
        raise ValueError("multi-vector documents need document_mask (N, Td) bool, True = real token")
    scores = maxsim(queries, documents, document_mask.bool())
    if normalize_scores:
        scores = scores / query_token_counts(queries)[:, None]
    return scores


def group_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor | None = None,
    normalize_scores: bool = False,
) -> torch.Tensor:
    """Score each query against its own group of ``G`` documents only (no in-batch pairs).

    Args:
        queries: `(B, Tq, dim)` or `(B, dim)`.
        documents: `(B * G, Td, dim)` or `(B * G, dim)`, grouped per query.
        document_mask: `(B * G, Td)` bool for multi-vector documents.

    Returns:
        `(B, G)`; column 0 is the positive.
    """
    n_queries = queries.shape[0]
    g = group_size(n_queries, documents.shape[0])
    if queries.dim() == 2 and documents.dim() == 2:
        return torch.einsum("bd,bgd->bg", queries, documents.view(n_queries, g, -1))
    if document_mask is None:
        raise ValueError("multi-vector documents need document_mask (N, Td) bool, True = real token")
    docs = documents.view(n_queries, g, *documents.shape[1:])
    mask = document_mask.bool().view(n_queries, g, -1)
    scores = masked_maxsim(torch.einsum("bqd,bgtd->bgqt", queries, docs), mask[:, :, None, :])
    if normalize_scores:
        scores = scores / query_token_counts(queries)[:, None]
    return scores


def truncate_embeddings(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """Keep the first ``dim`` features and re-normalise (Matryoshka); zero (padding) rows stay zero.

    `(..., full_dim)` -> `(..., dim)`.
    """
    if not 1 <= dim <= embeddings.shape[-1]:
        raise ValueError(f"truncation dim must be in 1..{embeddings.shape[-1]}, got {dim}")
    return F.normalize(embeddings[..., :dim], p=2, dim=-1)


# --------------------------------------------------------------------------- pure losses


def contrastive_loss(scores: torch.Tensor, group: int = 1, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE over all documents of the batch (in-batch and hard negatives).

    Args:
        scores: `(B, B * G)` from :func:`all_pairs_scores`; query ``b``'s positive is column ``b * G``.
        group: documents per query ``G``.
        temperature: scores are divided by it before the softmax.

    Returns:
        scalar mean cross-entropy.
    """
    _check_temperature(temperature)
    targets = torch.arange(scores.shape[0], device=scores.device) * group
    return F.cross_entropy(scores / temperature, targets)


def group_contrastive_loss(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE over each query's own group only: `(B, G)` scores, positive in column 0 -> scalar."""
    _check_temperature(temperature)
    targets = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores / temperature, targets)


def distillation_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) between score distributions over each query's n-way tuple (ColBERTv2 / PyLate).

    Args:
        student_scores: `(B, G)` the model's scores of each query's documents.
        teacher_scores: `(B, G)` teacher (e.g. cross-encoder) scores of the same documents; any scale, they
            are turned into a distribution with a log-softmax.
        temperature: applied to the student scores only (teacher scores are taken as given).

    Returns:
        scalar KL divergence averaged over queries.
    """
    _check_temperature(temperature)
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(
            f"teacher_scores must have the student's shape {tuple(student_scores.shape)}, got {tuple(teacher_scores.shape)}"
        )
    student = F.log_softmax(student_scores / temperature, dim=-1)
    teacher = F.log_softmax(teacher_scores.to(student.dtype), dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True)


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")


# --------------------------------------------------------------------------- nn.Module wrappers


class ProjectionLoss(nn.Module):
    """Base of the training losses: ``loss(queries, documents, document_mask=None, teacher_scores=None)``.

    Args (of ``forward``):
        queries: `(B, Tq, dim)` or `(B, dim)`.
        documents: `(B * G, Td, dim)` or `(B * G, dim)`, grouped per query, positive first.
        document_mask: `(B * G, Td)` bool (multi-vector only).
        teacher_scores: `(B, G)` float, for distillation.

    Returns a scalar tensor.
    """

    def forward(self, queries, documents, document_mask=None, teacher_scores=None) -> torch.Tensor:
        raise NotImplementedError


class ContrastiveLoss(ProjectionLoss):
    """InfoNCE with in-batch negatives plus any hard negatives, on MaxSim (multi-vector) or cosine scores.

    Args:
        temperature: None picks the default for the embedding kind (1.0 MaxSim sums, 0.05 cosine).
        in_batch_negatives: False scores each query against its own group only (hard negatives only).
        normalize_scores: divide MaxSim sums by the query's real token count (then use a small temperature).
    """

    def __init__(self, temperature: float | None = None, in_batch_negatives: bool = True, normalize_scores: bool = False):
        super().__init__()
        if temperature is not None:
            _check_temperature(temperature)
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives
        self.normalize_scores = normalize_scores

    def resolved_temperature(self, queries: torch.Tensor) -> float:
        if self.temperature is not None:
            return self.temperature
        return default_temperature(multi_vector=queries.dim() == 3 and not self.normalize_scores)

    def forward(self, queries, documents, document_mask=None, teacher_scores=None) -> torch.Tensor:
        temperature = self.resolved_temperature(queries)
        if not self.in_batch_negatives:
            scores = group_scores(queries, documents, document_mask, self.normalize_scores)
            return group_contrastive_loss(scores, temperature)
        g = group_size(queries.shape[0], documents.shape[0])
        scores = all_pairs_scores(queries, documents, document_mask, self.normalize_scores)
        return contrastive_loss(scores, g, temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, in_batch_negatives={self.in_batch_negatives}, normalize_scores={self.normalize_scores}"


class DistillationLoss(ProjectionLoss):
    """KL distillation from teacher scores over each query's n-way tuple (needs ``teacher_scores``)."""

    def __init__(self, temperature: float = 1.0, normalize_scores: bool = False):
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.normalize_scores = normalize_scores

    def forward(self, queries, documents, document_mask=None, teacher_scores=None) -> torch.Tensor:
        if teacher_scores is None:
            raise ValueError("DistillationLoss needs teacher_scores (B, G); add a teacher scores column to the data")
        student = group_scores(queries, documents, document_mask, self.normalize_scores)
        return distillation_loss(student, teacher_scores, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize_scores={self.normalize_scores}"
