"""Exact, memory-bounded top-k search: MaxSim for multi-vector models, dot product for dense models.

MaxSim of query tokens ``q`` ``(Tq, dim)`` and document tokens ``D`` ``(Td, dim)``:
``sum over query tokens of max over doc tokens of q . d``.

How the exact search stays fast and bounded:
- documents are sorted by length and cut into chunks, so padding inside a chunk is small;
- a chunk is padded by repeating each document's own last token (gathered from the packed corpus): a
  repeated token cannot change a max, so padding never wins and no mask pass over the big score
  tensor is needed;
- queries are padded with zero vectors: a zero query token scores 0 against every document token, so
  it adds exactly 0 to the sum;
- scores of one (query batch x doc chunk) block are ``(q_batch * Tq, chunk * Td)`` floats; per-chunk
  top-k results are merged into a running top-k.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from hf_projections.checks import positive_int
from hf_projections.retrieval.store import EncodedCorpus

Embeddings = Sequence[torch.Tensor] | torch.Tensor | EncodedCorpus

# Scores held at once per (query batch x doc chunk) block, in floats: 2**24 floats = 64 MiB.
DEFAULT_MAX_BLOCK_SCORES = 2**24


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(count)`` and restore the old value (None = unchanged).

    Loops of many tiny ops (per-document pooling, per-query re-ranking) run far faster on one thread:
    the intra-op pool's synchronisation costs more than the work, and much more on busy cores.
    """
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def naive_maxsim(queries: Sequence[torch.Tensor], documents: Sequence[torch.Tensor]) -> torch.Tensor:
    """Reference MaxSim with plain loops: ``(n_q, n_d)`` float64 scores. Slow; for tests and checks.

    Args:
        queries: ``n_q`` tensors ``(tokens_i, dim)``.
        documents: ``n_d`` tensors ``(tokens_j, dim)``.
    """
    # numpy float64: an independent code path from the torch search it checks (and tiny torch ops are slow
    # when torch's thread pool competes for busy cores).
    query_arrays = [query.detach().cpu().double().numpy() for query in queries]
    document_arrays = [document.detach().cpu().double().numpy() for document in documents]
    scores = np.empty((len(query_arrays), len(document_arrays)), dtype=np.float64)
    for i, query in enumerate(query_arrays):
        for j, document in enumerate(document_arrays):
            scores[i, j] = (query @ document.T).max(axis=1).sum()
    return torch.from_numpy(scores)


def _as_corpus(documents: Embeddings) -> EncodedCorpus:
    if isinstance(documents, EncodedCorpus):
        return documents
    if isinstance(documents, torch.Tensor):
        return EncodedCorpus.from_embeddings([str(i) for i in range(documents.shape[0])], documents)
    return EncodedCorpus.from_embeddings([str(i) for i in range(len(documents))], documents)


def _queries_as_list(queries: Sequence[torch.Tensor] | torch.Tensor) -> tuple[list[torch.Tensor], bool]:
    """Queries as a list of ``(tokens_i, dim)`` tensors; a 2-d tensor is dense (one token per query)."""
    if isinstance(queries, EncodedCorpus):
        return queries.to_list(), queries.is_dense
    if isinstance(queries, torch.Tensor):
        if queries.dim() != 2:
            raise ValueError(
                f"query_embeddings as one tensor must be dense (n_queries, dim), got shape {tuple(queries.shape)}; "
                "pass multi-vector queries as a list of (tokens, dim) tensors"
            )
        return list(queries.unsqueeze(1)), True
    queries = list(queries)
    for index, query in enumerate(queries):
        if not isinstance(query, torch.Tensor) or query.dim() != 2:
            raise ValueError(f"query {index}: expected a (tokens, dim) tensor, got {getattr(query, 'shape', type(query))}")
    return queries, False


def _exclusion_plan(
    exclude: Sequence[Iterable[int]] | None, n_queries: int, n_docs: int
) -> list[list[int]] | None:
    if exclude is None:
        return None
    exclude = list(exclude)
    if len(exclude) != n_queries:
        raise ValueError(f"exclude must hold one iterable of doc indices per query ({n_queries}), got {len(exclude)}")
    plan = []
    for row, indices in enumerate(exclude):
        indices = [int(i) for i in (indices if indices is not None else ())]
        bad = [i for i in indices if not 0 <= i < n_docs]
        if bad:
            raise ValueError(f"exclude[{row}] has doc indices outside [0, {n_docs}): {bad[:5]}")
        plan.append(indices)
    return plan


def maxsim_topk(
    query_embeddings: Sequence[torch.Tensor] | torch.Tensor,
    doc_embeddings: Embeddings,
    k: int = 100,
    chunk_size: int | None = None,
    query_batch_size: int | None = None,
    exclude: Sequence[Iterable[int]] | None = None,
    compute_dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    max_block_scores: int = DEFAULT_MAX_BLOCK_SCORES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` documents for every query by MaxSim (multi-vector) or dot product (dense).

    Args:
        query_embeddings: ``n_q`` tensors ``(tokens_i, dim)`` with ``tokens_i >= 1``, or a dense ``(n_q, dim)``
            tensor.
        doc_embeddings: ``n_d`` tensors ``(tokens_j, dim)``, an ``EncodedCorpus``, or a dense ``(n_d, dim)``
            tensor. Storage may be float16/bfloat16; blocks are cast to ``compute_dtype`` to score.
        k: results per query; clamped to ``n_d``.
        chunk_size: documents per chunk; None picks it from ``max_block_scores``.
        query_batch_size: queries scored together; None picks it from ``max_block_scores``.
        exclude: optional, per query, doc indices never to return (e.g. the query's own document).
        compute_dtype: dtype of the matmul (float32 on CPU; float16/bfloat16 make sense on GPU).
        device: where to score (default: where the corpus tensor lives).
        max_block_scores: bound on the floats of one score block ``(q_batch * Tq, chunk * Td)``.

    Returns:
        ``scores`` ``(n_q, k)`` float32, best first, and ``indices`` ``(n_q, k)`` int64 positions in
        ``doc_embeddings``. When fewer than ``k`` documents are left after ``exclude``, the tail has score
        ``-inf`` and index ``-1``.
    """
    corpus = _as_corpus(doc_embeddings)
    queries, dense_queries = _queries_as_list(query_embeddings)
    n_q, n_d = len(queries), len(corpus)
    positive_int("k", k)
    if n_d == 0:
        raise ValueError("doc_embeddings is empty: nothing to search")
    if n_q and queries[0].shape[-1] != corpus.dim:
        raise ValueError(f"query dim {queries[0].shape[-1]} != document dim {corpus.dim}")
    lengths = corpus.lengths
    if bool((lengths == 0).any()):
        empty = torch.nonzero(lengths == 0).flatten()[:5].tolist()
        raise ValueError(f"documents with no token vectors cannot be scored by MaxSim: indices {empty}")
    query_lengths = torch.tensor([q.shape[0] for q in queries], dtype=torch.int64)
    if bool((query_lengths == 0).any()):
        empty = torch.nonzero(query_lengths == 0).flatten()
        raise ValueError(
            f"queries with no token vectors cannot be scored by MaxSim: indices {empty[:5].tolist()} "
            f"({len(empty)} of {n_q} queries)"
        )
    for name, size in (("chunk_size", chunk_size), ("query_batch_size", query_batch_size)):
        if size is not None:
            positive_int(name, size)
    k = min(k, n_d)
    device = torch.device(device) if device is not None else corpus.embeddings.device
    excluded = _exclusion_plan(exclude, n_q, n_d)

    best_scores = torch.full((n_q, k), float("-inf"), dtype=torch.float32, device=device)
    best_indices = torch.full((n_q, k), -1, dtype=torch.int64, device=device)
    if n_q == 0:
        return best_scores.cpu(), best_indices.cpu()

    # Sort documents (and queries) by length so padded blocks are tight.
    doc_order = torch.argsort(lengths, stable=True)
    query_order = torch.argsort(query_lengths, stable=True)
    max_doc_len, max_query_len = int(lengths.max()), int(query_lengths.max())
    if chunk_size is None:
        chunk_size = max(1, min(n_d, 4096, max_block_scores // (max_doc_len * max(1, min(n_q, 16) * max_query_len))))
    if query_batch_size is None:
        query_batch_size = max(1, min(n_q, max_block_scores // (chunk_size * max_doc_len * max_query_len)))

    query_batches = []
    for start in range(0, n_q, query_batch_size):
        rows = query_order[start : start + query_batch_size]
        batch = torch.nn.utils.rnn.pad_sequence([queries[i] for i in rows.tolist()], batch_first=True)
        query_batches.append((rows.to(device), batch.to(device=device, dtype=compute_dtype)))

    # Excluded (query row, doc index) pairs, grouped by chunk: the chunk of a doc is its sorted position.
    exclusions_by_chunk: dict[int, list[tuple[int, int]]] = {}
    if excluded is not None:
        position = torch.empty(n_d, dtype=torch.int64)
        position[doc_order] = torch.arange(n_d)
        for row, indices in enumerate(excluded):
            for doc in indices:
                pos = int(position[doc])
                exclusions_by_chunk.setdefault(pos // chunk_size, []).append((row, pos % chunk_size))

    packed = corpus.embeddings
    offsets = corpus.offsets
    for chunk_number, start in enumerate(range(0, n_d, chunk_size)):
        chunk_docs = doc_order[start : start + chunk_size]
        chunk_lengths = lengths[chunk_docs]
        width = int(chunk_lengths.max())
        # (chunk, width) rows of the packed tensor; past its end a document repeats its last token.
        steps = torch.arange(width)
        gather = offsets[chunk_docs].unsqueeze(1) + torch.minimum(steps.unsqueeze(0), (chunk_lengths - 1).unsqueeze(1))
        chunk = packed[gather].to(device=device, dtype=compute_dtype)  # (chunk, width, dim)
        flat_docs = chunk.reshape(-1, chunk.shape[-1])  # (chunk * width, dim)
        chunk_exclusions = exclusions_by_chunk.get(chunk_number)
        if chunk_exclusions:
            mask = torch.zeros(n_q, chunk_docs.shape[0], dtype=torch.bool)
            excluded_rows, excluded_cols = zip(*chunk_exclusions)
            mask[list(excluded_rows), list(excluded_cols)] = True
            mask = mask.to(device)
        for rows, batch in query_batches:
            n_rows, tokens, dim = batch.shape
            # (chunk * width, n_rows * tokens): the max over doc tokens then runs over contiguous rows,
            # which vectorises far better on CPU than a max along the last axis.
            similarities = (flat_docs @ batch.reshape(-1, dim).T).view(chunk_docs.shape[0], width, n_rows * tokens)
            best_per_token = similarities.amax(dim=1).float()  # (chunk, n_rows * tokens)
            scores = best_per_token.view(-1, n_rows, tokens).sum(dim=2).T  # (n_rows, chunk)
            if chunk_exclusions:
                scores.masked_fill_(mask[rows], float("-inf"))
            _merge_topk(best_scores, best_indices, rows, scores, chunk_docs.to(device), k)
    best_indices.masked_fill_(best_scores == float("-inf"), -1)
    return best_scores.cpu(), best_indices.cpu()


def _merge_topk(
    best_scores: torch.Tensor,
    best_indices: torch.Tensor,
    rows: torch.Tensor,
    scores: torch.Tensor,
    doc_ids: torch.Tensor,
    k: int,
) -> None:
    """Merge block ``scores`` ``(n_rows, chunk)`` of documents ``doc_ids`` into the running top-k of ``rows``."""
    take = min(k, scores.shape[1])
    chunk_scores, chunk_positions = scores.topk(take, dim=1)
    candidates = torch.cat([best_scores[rows], chunk_scores], dim=1)
    candidate_ids = torch.cat([best_indices[rows], doc_ids[chunk_positions]], dim=1)
    top_scores, top_positions = candidates.topk(k, dim=1)
    best_scores[rows] = top_scores
    best_indices[rows] = candidate_ids.gather(1, top_positions)


def dense_topk(
    query_embeddings: torch.Tensor,
    doc_embeddings: torch.Tensor,
    k: int = 100,
    chunk_size: int = 65536,
    exclude: Sequence[Iterable[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact dot-product top-k for dense ``(n_q, dim)`` queries and ``(n_d, dim)`` documents.

    Same outputs as ``maxsim_topk`` (a dense vector is a one-token MaxSim).
    """
    if query_embeddings.dim() != 2 or doc_embeddings.dim() != 2:
        raise ValueError(
            f"dense search needs (n, dim) tensors, got {tuple(query_embeddings.shape)} and {tuple(doc_embeddings.shape)}"
        )
    return maxsim_topk(query_embeddings, doc_embeddings, k=k, chunk_size=chunk_size, exclude=exclude)


def maxsim_rerank(
    query: torch.Tensor,
    corpus: EncodedCorpus,
    doc_indices: torch.Tensor,
    k: int,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact MaxSim of one query ``(tokens, dim)`` against candidate documents; best ``k`` first.

    Args:
        doc_indices: ``(n_candidates,)`` positions in ``corpus``.

    Returns:
        ``scores`` ``(min(k, n_candidates),)`` float32 and their ``indices`` into ``corpus``.
    """
    doc_indices = torch.as_tensor(doc_indices, dtype=torch.int64).flatten()
    if doc_indices.numel() == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    lengths = corpus.lengths[doc_indices]
    width = int(lengths.max())
    # pad by repeating each document's last token, as in maxsim_topk: padding never wins the max
    gather = corpus.offsets[doc_indices].unsqueeze(1) + torch.minimum(
        torch.arange(width).unsqueeze(0), (lengths - 1).unsqueeze(1)
    )
    documents = corpus.embeddings[gather].to(compute_dtype)  # (n_candidates, width, dim)
    similarities = documents.reshape(-1, documents.shape[-1]) @ query.to(compute_dtype).T
    scores = similarities.view(doc_indices.shape[0], width, -1).amax(dim=1).float().sum(dim=1)
    top_scores, order = scores.topk(min(k, scores.shape[0]))
    return top_scores, doc_indices[order]
