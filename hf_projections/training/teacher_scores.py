"""Teacher scores for knowledge distillation: candidates mined for each training query, scored by any scorer this
package can load, written in PyLate's layout (``data.distillation``) for ``train(..., loss="distillation")``.

A teacher is an hf-projections model (ColBERT: MaxSim; dense: cosine) or a sentence-transformers ``CrossEncoder``
(anything with ``predict(list of (query, document))``)::

    build_distillation_data("arguana-genq", "runs/full-colbert", "runs/arguana-kd", num_candidates=8)
    train("runs/arguana-kd", ProjectionTrainingArguments(loss="distillation", output_dir="runs/student"))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hf_projections.atomic import atomic_write_json
from hf_projections.checks import positive_int
from hf_projections.data.distillation import write_distillation_folder
from hf_projections.modeling import ProjectionPreTrainedModel, maxsim, pad_token_embeddings
from hf_projections.modeling.sources import load_model_config
from hf_projections.training.collator import negative_columns


def load_teacher(name_or_path: str | os.PathLike):
    """An hf-projections model (``AutoModel``) or, for a cross-encoder folder or Hub id, a sentence-transformers
    ``CrossEncoder``; anything else is refused with a ``ValueError`` that says what is allowed."""
    name = os.fspath(name_or_path)
    config = load_model_config(name, "an hf-projections model or a sentence-transformers CrossEncoder")
    if config.model_type.startswith("hf_projections"):
        from transformers import AutoModel

        return AutoModel.from_pretrained(name)
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        from sentence_transformers import CrossEncoder

        return CrossEncoder(name, device="cpu")
    raise ValueError(
        f"{name!r} holds a {config.model_type!r} model with no scoring head ({architectures or 'no architectures'}): "
        "a teacher must be an hf-projections model (ColBERT or dense) or a cross-encoder (*ForSequenceClassification)"
    )


def candidate_texts(row: dict) -> list[str]:
    """A row's candidates in order: the positive, then ``negative_1..n``."""
    return [row["positive"], *[row[c] for c in negative_columns(list(row))]]


@torch.no_grad()
def score_candidates(teacher, rows: Sequence[dict], batch_size: int = 32, show_progress_bar: bool = True) -> list[list[float]]:
    """The teacher's score of every candidate of every row: `len(rows)` lists of `G` floats (positive first).

    hf-projections teachers encode each distinct query and document once, then score a row's candidates with the
    model's own similarity (MaxSim for ColBERT, cosine for dense); a ``CrossEncoder`` scores (query, document) pairs.
    """
    positive_int("batch_size", batch_size)
    candidates = [candidate_texts(row) for row in rows]
    if isinstance(teacher, ProjectionPreTrainedModel):
        queries = list(dict.fromkeys(row["query"] for row in rows))
        documents = list(dict.fromkeys(text for texts in candidates for text in texts))
        query_vectors = dict(zip(queries, teacher.encode_queries(queries, batch_size=batch_size, show_progress_bar=show_progress_bar)))
        doc_vectors = dict(zip(documents, teacher.encode_documents(documents, batch_size=batch_size, show_progress_bar=show_progress_bar)))
        scores = []
        for row, texts in zip(rows, candidates):
            query = query_vectors[row["query"]]
            if query.dim() == 2:  # token vectors: MaxSim
                padded, mask = pad_token_embeddings([doc_vectors[t] for t in texts])
                scores.append(maxsim(query[None], padded, mask)[0].tolist())
            else:
                scores.append((torch.stack([doc_vectors[t] for t in texts]) @ query).tolist())
        return scores
    if callable(getattr(teacher, "predict", None)):
        pairs = [(row["query"], text) for row, texts in zip(rows, candidates) for text in texts]
        flat = [float(s) for s in teacher.predict(pairs, batch_size=batch_size, show_progress_bar=show_progress_bar)]
        width = len(candidates[0]) if candidates else 0
        return [flat[i * width : (i + 1) * width] for i in range(len(candidates))]
    raise TypeError(f"a teacher must be an hf-projections model or have predict(pairs) (a CrossEncoder), got {type(teacher).__name__}")


def build_distillation_data(data, teacher, output_dir: str | os.PathLike, num_candidates: int = 8,
                            negatives_method: str = "bm25", max_pairs: int | None = None, seed: int = 0,
                            batch_size: int = 32, show_progress_bar: bool = True) -> Path:
    """Mine ``num_candidates - 1`` hard negatives per training pair (per source), score the positive and the
    negatives with ``teacher`` (a loaded scorer or a name for :func:`load_teacher`) and write the PyLate layout to
    ``output_dir`` (plus ``distillation.json``: the teacher, data and settings). Returns the folder."""
    from hf_projections.training.api import load_pairs, with_negatives
    from hf_projections.training.arguments import ProjectionTrainingArguments

    positive_int("num_candidates", num_candidates)
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be >= 2 (the positive and at least one negative), got {num_candidates}")
    teacher_name = str(teacher) if isinstance(teacher, (str, os.PathLike)) else type(teacher).__name__
    teacher = load_teacher(teacher) if isinstance(teacher, (str, os.PathLike)) else teacher
    rows = load_pairs(data, max_pairs=max_pairs, seed=seed)
    args = ProjectionTrainingArguments(num_negatives=num_candidates - 1, negatives_method=negatives_method, seed=seed)
    miner = teacher if isinstance(teacher, ProjectionPreTrainedModel) else None
    if negatives_method == "model" and miner is None:
        raise ValueError("negatives_method='model' needs an hf-projections teacher; a cross-encoder cannot rank a corpus")
    rows = with_negatives(rows, miner, args).to_list()
    scores = score_candidates(teacher, rows, batch_size=batch_size, show_progress_bar=show_progress_bar)
    queries, documents, candidates = {}, {}, []
    for row, row_scores in zip(tqdm(rows, disable=not show_progress_bar, desc="Writing"), scores):
        ids = [row["positive_id"], *row["negative_ids"]]
        queries[row["query_id"]] = row["query"]
        documents.update(zip(ids, candidate_texts(row)))
        candidates.append((row["query_id"], ids, row_scores))
    folder = write_distillation_folder(output_dir, queries, documents, candidates)
    atomic_write_json(folder / "distillation.json", {
        "teacher": teacher_name, "data": data if isinstance(data, (str, list, tuple)) else "Dataset",
        "rows": len(candidates), "num_candidates": num_candidates, "negatives_method": negatives_method,
        "max_pairs": max_pairs, "seed": seed,
    })
    return folder


__all__ = ["build_distillation_data", "candidate_texts", "load_teacher", "score_candidates"]
