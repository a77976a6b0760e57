"""Hard-negative mining: add top-ranked non-relevant documents as ``negative_1..n`` columns.

Ranking comes from BM25 (``bm25s``) or from a model (MaxSim for ``ColBERTModel``, dot product for
``DenseEmbeddingModel``, exact search through ``hf_projections.retrieval.search.maxsim_topk``).
A document counts as relevant to a query, and is never used as its negative, when any training row pairs
them (same ``query_id``, or the same query text when there is no id column) or when ``qrels`` say so; with
``ignore_identical_ids`` a document whose id equals the query id is skipped too (ArguAna).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hf_projections.checks import positive_int

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

def _query_keys(pairs: datasets.Dataset) -> list[str]:
    return list(pairs["query_id"]) if "query_id" in pairs.column_names else list(pairs["query"])


def rank_bm25(queries: Sequence[str], documents: Sequence[str], depth: int, show_progress_bar: bool = False) -> list[list[int]]:
    """Top-``depth`` document positions per query by BM25 (``bm25s``, English stopwords)."""
    try:
        import bm25s
    except ImportError as error:
        raise ImportError("BM25 negative mining needs bm25s: pip install 'hf-projections[bm25]'") from error

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(documents), stopwords="en", show_progress=show_progress_bar), show_progress=show_progress_bar)
    query_tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=show_progress_bar)
    # Queries made only of stopwords get no tokens: bm25s needs at least one token per query.
    query_tokens = [tokens if tokens else [""] for tokens in query_tokens]
    positions, _ = retriever.retrieve(query_tokens, k=min(depth, len(documents)), show_progress=show_progress_bar)
    return [list(map(int, row)) for row in positions]


def rank_with_model(
    model, queries: Sequence[str], documents: Sequence[str], depth: int, batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> list[list[int]]:
    """Top-``depth`` document positions per query by the model's own scores (exact search)."""
    from hf_projections.retrieval.search import maxsim_topk

    query_embeddings = model.encode_queries(list(queries), batch_size=batch_size, show_progress_bar=show_progress_bar)
    document_embeddings = model.encode_documents(list(documents), batch_size=batch_size, show_progress_bar=show_progress_bar)
    _, indices = maxsim_topk(query_embeddings, document_embeddings, k=min(depth, len(documents)))
    return [[int(i) for i in row if i >= 0] for row in indices]


def mine_hard_negatives(
    pairs: datasets.Dataset,
    corpus: Mapping[str, str] | None = None,
    num_negatives: int = 1,
    method: str | object = "bm25",
    depth: int | None = None,
    skip_top: int = 0,
    sample: bool = False,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    ignore_identical_ids: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> datasets.Dataset:
    """Return ``pairs`` with ``negative_1..negative_n`` (texts) and ``negative_ids`` (list of doc ids) added.

    Args:
        pairs: rows with ``query`` and ``positive`` (+ ``query_id``, ``positive_id``).
        corpus: ``{doc_id: text}`` to mine from; default: the distinct positives of ``pairs``.
        num_negatives: negatives per row.
        method: ``"bm25"`` or a model object with ``encode_queries``/``encode_documents``.
        depth: candidates ranked per query (default ``skip_top + 3 * num_negatives + 10``).
        skip_top: ignore the first ranks (possible unlabelled positives).
        sample: draw the negatives at random among the non-relevant candidates instead of taking the best.
        qrels: extra ``{query_id: {doc_id: relevance}}``; relevance > 0 is excluded.
        ignore_identical_ids: never use the document whose id equals the query id.
        seed: seed of ``sample`` and of the random fill used when too few candidates are left.

    Rows whose query finds fewer than ``num_negatives`` non-relevant candidates get random non-relevant
    corpus documents (a warning tells how many).
    """
    positive_int("num_negatives", num_negatives)
    for column in ("query", "positive"):
        if column not in pairs.column_names:
            raise ValueError(f"pairs need a {column!r} column, got {pairs.column_names}")
    taken = [c for c in pairs.column_names if c.startswith("negative_")]
    if taken:
        raise ValueError(f"pairs already have negative columns {taken}; remove them before mining new ones")
    if corpus is None:
        ids = pairs["positive_id"] if "positive_id" in pairs.column_names else pairs["positive"]
        corpus = dict(zip(ids, pairs["positive"]))
    if not corpus:
        raise ValueError("corpus is empty: nothing to mine negatives from")
    doc_ids = list(corpus)
    doc_texts = [corpus[d] for d in doc_ids]
    text_to_id = {text: doc_id for doc_id, text in zip(doc_ids, doc_texts)}

    keys = _query_keys(pairs)
    relevant: dict[str, set[str]] = {}
    positive_ids = pairs["positive_id"] if "positive_id" in pairs.column_names else None
    for row, (key, text) in enumerate(zip(keys, pairs["positive"])):
        seen = relevant.setdefault(key, set())
        if positive_ids is not None:
            seen.add(positive_ids[row])
        if text in text_to_id:  # the same text under another id in this corpus is a positive too
            seen.add(text_to_id[text])
    for key, judged in (qrels or {}).items():
        relevant.setdefault(key, set()).update(d for d, rel in judged.items() if rel > 0)

    unique_keys = list(dict.fromkeys(keys))
    query_of = dict(zip(keys, pairs["query"]))
    depth = depth if depth is not None else skip_top + 3 * num_negatives + 10
    queries = [query_of[k] for k in unique_keys]
    if isinstance(method, str):
        if method != "bm25":
            raise ValueError(f"method must be 'bm25' or a model object with encode_queries/encode_documents, got {method!r}")
        ranking = rank_bm25(queries, doc_texts, depth, bool(show_progress_bar))
    elif callable(getattr(method, "encode_queries", None)) and callable(getattr(method, "encode_documents", None)):
        ranking = rank_with_model(method, queries, doc_texts, depth, batch_size, show_progress_bar)
    else:
        raise TypeError(f"method must be 'bm25' or a model with encode_queries/encode_documents, got {type(method).__name__}")

    rng = random.Random(seed)
    chosen: dict[str, list[str]] = {}
    filled = 0
    for key, positions in zip(unique_keys, ranking):
        excluded = relevant.get(key, set())
        candidates = [
            doc_ids[p] for p in positions[skip_top:]
            if doc_ids[p] not in excluded and not (ignore_identical_ids and doc_ids[p] == key)
        ]
        picked = rng.sample(candidates, min(num_negatives, len(candidates))) if sample else candidates[:num_negatives]
        while len(picked) < num_negatives:
            extra = doc_ids[rng.randrange(len(doc_ids))]
            if extra in excluded or extra in picked or (ignore_identical_ids and extra == key):
                if len(excluded) + len(picked) >= len(doc_ids):
                    raise ValueError(f"corpus has fewer than {num_negatives} non-relevant documents for query {key!r}")
                continue
            picked.append(extra)
            filled += 1
        chosen[key] = picked
    if filled:
        logger.warning("mine_hard_negatives: %d negatives were random fill (too few ranked candidates)", filled)

    negative_ids = [chosen[k] for k in keys]
    result = pairs
    for i in range(num_negatives):
        result = result.add_column(f"negative_{i + 1}", [corpus[ids[i]] for ids in negative_ids])
    return result.add_column("negative_ids", negative_ids)


def hard_negative_count(pairs: datasets.Dataset) -> int:
    """How many ``negative_i`` columns the rows already have."""
    from hf_projections.training.collator import negative_columns

    return len(negative_columns(pairs.column_names))
