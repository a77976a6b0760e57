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
- a gathered chunk is scored in tiles: each ``(tile docs * Td, q_batch * Tq)`` similarity block is sized to
  stay in the cores' caches between the matmul that writes it and the max that reads it (the max over a block
  that went out to memory costs as much as the matmul); per-chunk top-k results are merged into a running
  top-k.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from hf_projections.checks import positive_int
from hf_projections.retrieval.store import EncodedCorpus

Embeddings = Sequence[torch.Tensor] | torch.Tensor | EncodedCorpus

# Query tokens scored by one matmul (32 queries of 32 tokens): wide enough to run the matmul near its peak.
QUERY_COLUMNS = 1024
# Floats of one gathered document chunk (16 MiB in float32); the top-k is merged once per chunk.
CHUNK_FLOATS = 2**22
# A screened search keeps max(2k, k + SCREEN_MARGIN) candidates from the low-precision pass for the exact re-score.
SCREEN_MARGIN = 50


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
    max_block_scores: int | None = None,
    screen_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` documents for every query by MaxSim (multi-vector) or dot product (dense).

    Args:
        query_embeddings: ``n_q`` tensors ``(tokens_i, dim)`` with ``tokens_i >= 1``, or a dense ``(n_q, dim)``
            tensor.
        doc_embeddings: ``n_d`` tensors ``(tokens_j, dim)``, an ``EncodedCorpus``, or a dense ``(n_d, dim)``
            tensor. Storage may be float16/bfloat16; blocks are cast to ``compute_dtype`` to score.
        k: results per query; clamped to ``n_d``.
        chunk_size: documents gathered (and merged into the running top-k) at a time; None picks it so a
            gathered chunk holds about ``CHUNK_FLOATS`` floats.
        query_batch_size: queries scored by one matmul; None picks about ``QUERY_COLUMNS`` query tokens.
        exclude: optional, per query, doc indices never to return (e.g. the query's own document).
        compute_dtype: dtype of the matmul (float32 on CPU; float16/bfloat16 make sense on GPU).
        device: where to score (default: where the corpus tensor lives).
        max_block_scores: floats of one similarity block ``(docs * width, q_batch * Tq)``, the matmul whose
            max is taken while it is still in cache; None picks ``default_block_scores(device)``.
        screen_dtype: opt-in two-pass search: score every document in this dtype (``torch.bfloat16``: about twice
            the matmul speed on a CPU with AVX512-BF16 or AMX), keep the best ``max(2k, k + 50)``, and re-score those
            in float32. The scores returned are then exact, but a document that the low-precision pass ranks below
            the candidates is lost: measure (``benchmarks/search.py``) before relying on identical results.

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
    for name, size in (("chunk_size", chunk_size), ("query_batch_size", query_batch_size),
                       ("max_block_scores", max_block_scores)):
        if size is not None:
            positive_int(name, size)
    k = min(k, n_d)
    if screen_dtype is not None:
        _, candidates = maxsim_topk(queries, corpus, k=min(n_d, max(2 * k, k + SCREEN_MARGIN)), chunk_size=chunk_size,
                                    query_batch_size=query_batch_size, exclude=exclude, compute_dtype=screen_dtype,
                                    device=device, max_block_scores=max_block_scores)
        return _rescore(queries, corpus, candidates, k)
    device = torch.device(device) if device is not None else corpus.embeddings.device
    excluded = _exclusion_plan(exclude, n_q, n_d)
    if n_q == 0:
        return torch.full((0, k), float("-inf")), torch.full((0, k), -1, dtype=torch.int64)

    # Work in length-sorted order on both sides so padded blocks are tight; results are unsorted at the end.
    doc_order = torch.argsort(lengths, stable=True)
    query_order = torch.argsort(query_lengths, stable=True)
    max_doc_len, max_query_len = int(lengths.max()), int(query_lengths.max())
    if max_block_scores is None:
        max_block_scores = default_block_scores(device)
    if query_batch_size is None:
        query_batch_size = max(1, min(n_q, QUERY_COLUMNS // max_query_len))
        query_batch_size = -(-n_q // -(-n_q // query_batch_size))  # equal batches: no thin last matmul
    if chunk_size is None:
        chunk_size = max(1, min(n_d, CHUNK_FLOATS // (max_doc_len * corpus.dim)))

    query_batches = []  # (first sorted row, (batch, tokens, dim) zero-padded queries)
    for start in range(0, n_q, query_batch_size):
        rows = query_order[start : start + query_batch_size].tolist()
        batch = torch.nn.utils.rnn.pad_sequence([queries[i] for i in rows], batch_first=True)
        query_batches.append((start, batch.to(device=device, dtype=compute_dtype)))

    # Excluded (sorted query row, doc position in its chunk), grouped by chunk; a doc's chunk is its sorted position.
    exclusions_by_chunk: dict[int, list[tuple[int, int]]] = {}
    if excluded is not None:
        query_position = torch.empty(n_q, dtype=torch.int64)
        query_position[query_order] = torch.arange(n_q)
        position = torch.empty(n_d, dtype=torch.int64)
        position[doc_order] = torch.arange(n_d)
        for row, indices in enumerate(excluded):
            for doc in indices:
                pos = int(position[doc])
                exclusions_by_chunk.setdefault(pos // chunk_size, []).append((int(query_position[row]), pos % chunk_size))

    best_scores = torch.full((n_q, k), float("-inf"), dtype=torch.float32, device=device)
    best_indices = torch.full((n_q, k), -1, dtype=torch.int64, device=device)
    packed, offsets = corpus.embeddings, corpus.offsets
    for chunk_number, start in enumerate(range(0, n_d, chunk_size)):
        chunk_docs = doc_order[start : start + chunk_size]
        chunk_lengths = lengths[chunk_docs]
        width = int(chunk_lengths.max())
        # (chunk, width) rows of the packed tensor; past its end a document repeats its last token.
        steps = torch.arange(width)
        gather = offsets[chunk_docs].unsqueeze(1) + torch.minimum(steps.unsqueeze(0), (chunk_lengths - 1).unsqueeze(1))
        chunk = packed[gather].to(device=device, dtype=compute_dtype)  # (chunk, width, dim)
        scores = _chunk_scores(chunk, query_batches, n_q, max_block_scores)  # (n_q, chunk), sorted query rows
        for row, column in exclusions_by_chunk.get(chunk_number, ()):
            scores[row, column] = float("-inf")
        _merge_topk(best_scores, best_indices, scores, chunk_docs.to(device), k)
    best_indices.masked_fill_(best_scores == float("-inf"), -1)
    # back from length-sorted query rows to the caller's order
    scores_out = torch.empty_like(best_scores)
    indices_out = torch.empty_like(best_indices)
    scores_out[query_order.to(device)] = best_scores
    indices_out[query_order.to(device)] = best_indices
    return scores_out.cpu(), indices_out.cpu()


def _rescore(queries: list[torch.Tensor], corpus: EncodedCorpus, candidates: torch.Tensor, k: int):
    """Exact float32 top-``k`` of each query among its candidate documents `(n_q, n_candidates)` (``-1`` = none):
    ``(scores, indices)`` `(n_q, k)` as ``maxsim_topk`` returns them."""
    scores = torch.full((len(queries), k), float("-inf"))
    indices = torch.full((len(queries), k), -1, dtype=torch.int64)
    for row, (query, candidate_row) in enumerate(zip(queries, candidates)):
        top_scores, top_indices = maxsim_rerank(query, corpus, candidate_row[candidate_row >= 0], k)
        scores[row, : len(top_scores)], indices[row, : len(top_indices)] = top_scores, top_indices
    return scores, indices


def default_block_scores(device: torch.device) -> int:
    """Floats of one similarity block: on CPU as many floats as the scoring threads' private caches hold bytes
    (4M floats with 2 threads of 2 MiB L2), within ``[2**20, 2**23]``; 2**24 on accelerators.

    Measured with 300 queries x 32 tokens against 5,183 SciFact-length documents on a 2-core CPU with 2 MiB of
    L2 per core (benchmarks/search.py): 2**21..2**23 floats all ran at 81-83 % of the matmul peak, 2**20 at 76 %
    (per-call overhead starts to show), 2**24 at 67 % (the max over the block reads it back from memory).
    """
    if device.type != "cpu":
        return 2**24
    return max(2**20, min(2**23, _per_core_cache_bytes() * torch.get_num_threads()))


def _per_core_cache_bytes() -> int:
    """The largest per-core (unshared) cache level of CPU 0 in bytes, from sysfs; 1 MiB if unknown."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            shared = (index / "shared_cpu_list").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if "," in shared or "-" in shared:  # shared between cores (the L3): not private
            continue
        multiplier = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        best = max(best, int(size.rstrip("KMG")) * multiplier)
    return best or 2**20


def _chunk_scores(
    chunk: torch.Tensor, query_batches: list[tuple[int, torch.Tensor]], n_q: int, max_block_scores: int
) -> torch.Tensor:
    """MaxSim of every query against one gathered chunk: ``(n_q, chunk)`` float32, rows in query-batch order.

    Args:
        chunk: ``(n_docs, width, dim)`` documents, each padded by repeating its last token.
        query_batches: ``(first row, (batch, tokens, dim))`` zero-padded queries.

    The chunk is cut into tiles of documents so each ``(tile * width, batch * tokens)`` similarity block fits
    in ``max_block_scores`` floats: the matmul writes it and the max over document tokens reads it while it is
    still in cache (a block larger than the cache makes the max a pass over memory and halves the speed).
    The max runs over contiguous rows of the block, which vectorises far better than a max along its last axis.
    """
    n_docs, width, dim = chunk.shape
    flat_docs = chunk.reshape(-1, dim)  # (n_docs * width, dim)
    scores = torch.empty(n_q, n_docs, dtype=torch.float32, device=chunk.device)
    widest = max(batch.shape[0] * batch.shape[1] for _, batch in query_batches)
    tile = max(1, min(n_docs, max_block_scores // (width * widest)))
    tile = -(-n_docs // -(-n_docs // tile))  # as many tiles, of equal size: no thin last tile
    block = torch.empty(tile * width * widest, dtype=chunk.dtype, device=chunk.device)
    best = torch.empty(tile * widest, dtype=chunk.dtype, device=chunk.device)
    for first_doc in range(0, n_docs, tile):
        docs = min(tile, n_docs - first_doc)
        doc_rows = flat_docs[first_doc * width : (first_doc + docs) * width]
        for first_row, batch in query_batches:
            n_rows, tokens, _ = batch.shape
            columns = n_rows * tokens
            similarities = block[: docs * width * columns].view(docs * width, columns)
            torch.mm(doc_rows, batch.view(columns, dim).T, out=similarities)
            per_token = best[: docs * columns].view(docs, columns)
            torch.amax(similarities.view(docs, width, columns), dim=1, out=per_token)
            scores[first_row : first_row + n_rows, first_doc : first_doc + docs] = (
                per_token.view(docs, n_rows, tokens).sum(dim=2, dtype=torch.float32).T
            )
    return scores


def _merge_topk(
    best_scores: torch.Tensor, best_indices: torch.Tensor, scores: torch.Tensor, doc_ids: torch.Tensor, k: int
) -> None:
    """Merge chunk ``scores`` ``(n_q, chunk)`` of documents ``doc_ids`` into the running top-k ``(n_q, k)``."""
    take = min(k, scores.shape[1])
    chunk_scores, chunk_positions = scores.topk(take, dim=1)
    candidates = torch.cat([best_scores, chunk_scores], dim=1)
    candidate_ids = torch.cat([best_indices, doc_ids[chunk_positions]], dim=1)
    top_scores, top_positions = candidates.topk(k, dim=1)
    best_scores.copy_(top_scores)
    best_indices.copy_(candidate_ids.gather(1, top_positions))


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
