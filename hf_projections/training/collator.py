"""Turn rows of (query, positive[, negative_1..n][, teacher scores]) into tokenised training batches."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from hf_projections.checks import non_negative_int


def negative_columns(column_names: Sequence[str], prefix: str = "negative_") -> list[str]:
    """The ``negative_1, negative_2, ...`` columns present, in numeric order (gaps are an error)."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    numbered = sorted((int(m.group(1)), name) for name in column_names if (m := pattern.match(name)))
    expected = list(range(1, len(numbered) + 1))
    if [n for n, _ in numbered] != expected:
        raise ValueError(
            f"negative columns must be numbered {prefix}1..{prefix}n without gaps, got {[name for _, name in numbered]}"
        )
    return [name for _, name in numbered]


def document_groups(
    rows: Sequence[dict[str, Any]],
    positive_column: str = "positive",
    negative_prefix: str = "negative_",
    num_negatives: int | None = None,
) -> tuple[list[str], int]:
    """Flatten each row's positive and negatives into one list, grouped per row, positive first.

    Returns ``(documents, G)`` with ``len(documents) == len(rows) * G``.
    """
    negatives = negative_columns(list(rows[0].keys()), negative_prefix)
    if num_negatives is not None:
        if num_negatives > len(negatives):
            raise ValueError(f"num_negatives={num_negatives} but the rows hold only {len(negatives)} negative columns")
        negatives = negatives[:num_negatives]
    documents: list[str] = []
    for index, row in enumerate(rows):
        for column in [positive_column, *negatives]:
            if column not in row:
                raise ValueError(f"row {index} has no {column!r} column; columns: {sorted(row)}")
            text = row[column]
            if not isinstance(text, str):
                raise TypeError(f"row {index} column {column!r} must be a str, got {type(text).__name__}")
            documents.append(text)
    return documents, 1 + len(negatives)


class ProjectionCollator:
    """Data collator for ``transformers.Trainer`` (or any ``DataLoader``) over rows of training texts.

    Tokenises with ``model.tokenize(texts, is_query=...)`` so query/document markers, length budgets and
    [MASK] query augmentation match what the model does at encode time.

    Args:
        model: a ``ColBERTModel`` / ``DenseEmbeddingModel`` (anything with ``tokenize(texts, is_query)``).
        query_column / positive_column: row keys of the query and its positive document.
        negative_prefix: hard negatives are read from ``<prefix>1 .. <prefix>n``.
        num_negatives: use only the first ``n`` negatives (None: all present).
        teacher_column: row key of a list of ``G`` teacher scores (positive first), for distillation; used
            when present in the rows.

    Returns (from ``__call__``) a dict of tensors:
        ``query_input_ids`` / ``query_attention_mask`` (/ ``query_token_type_ids``): `(B, Tq)`;
        ``document_input_ids`` / ``document_attention_mask`` (/ ``document_token_type_ids``): `(B * G, Td)`,
        grouped per query, positive first; ``teacher_scores``: `(B, G)` float32 when the rows have them.
    """

    def __init__(
        self,
        model,
        query_column: str = "query",
        positive_column: str = "positive",
        negative_prefix: str = "negative_",
        num_negatives: int | None = None,
        teacher_column: str = "scores",
    ):
        if not callable(getattr(model, "tokenize", None)):
            raise TypeError(f"model must have a tokenize(texts, is_query) method, got {type(model).__name__}")
        if num_negatives is not None:
            non_negative_int("num_negatives", num_negatives)
        self.model = model
        self.query_column = query_column
        self.positive_column = positive_column
        self.negative_prefix = negative_prefix
        self.num_negatives = num_negatives
        self.teacher_column = teacher_column

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        queries = [row[self.query_column] if self.query_column in row else _missing(self.query_column, row) for row in rows]
        documents, group = document_groups(rows, self.positive_column, self.negative_prefix, self.num_negatives)
        batch: dict[str, torch.Tensor] = {}
        for prefix, texts, is_query in (("query", queries, True), ("document", documents, False)):
            encoded = self.model.tokenize(list(texts), is_query=is_query)
            for key, value in encoded.items():
                batch[f"{prefix}_{key}"] = value
        if self.teacher_column in rows[0]:
            batch["teacher_scores"] = teacher_score_tensor(rows, self.teacher_column, group)
        return batch


def teacher_score_tensor(rows: Sequence[dict[str, Any]], column: str, group: int) -> torch.Tensor:
    """Rows' teacher score lists -> `(B, G)` float32, checking each list has ``G`` entries (positive first)."""
    scores = []
    for index, row in enumerate(rows):
        values = row.get(column)
        if values is None or len(values) < group:
            raise ValueError(
                f"row {index} column {column!r} must hold {group} teacher scores (positive, then each negative), "
                f"got {values!r}"
            )
        scores.append([float(v) for v in values[:group]])
    return torch.tensor(scores, dtype=torch.float32)


def _missing(column: str, row: dict) -> str:
    raise ValueError(f"row has no {column!r} column; columns: {sorted(row)}")
