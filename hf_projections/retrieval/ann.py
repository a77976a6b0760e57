"""Approximate search for multi-vector corpora: HNSW candidate generation (Voyager) + exact MaxSim re-ranking.

Every token vector of the corpus goes into one Voyager HNSW index (inner product; vectors are
L2-normalised), labelled by its row in the packed corpus, so each hit maps back to its document. A query's
candidates are the union of the documents of each query token's ``k_tokens`` nearest token vectors (the
PLAID / ColBERT v1 candidate step); they are then scored exactly with MaxSim.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_projections.atomic import atomic_write
from hf_projections.checks import positive_int
from hf_projections.retrieval.search import maxsim_rerank, torch_threads
from hf_projections.retrieval.store import EncodedCorpus


class TokenHNSWIndex:
    """Voyager HNSW over all token vectors of an ``EncodedCorpus``.

    Args:
        corpus: the multi-vector corpus (kept by reference for re-ranking).
        M, ef_construction: HNSW graph degree and build-time search depth (higher = better recall, slower).
        random_seed: Voyager's seed (builds are reproducible only with one insertion thread).
        num_threads: insertion / query threads (-1 = one per core).
        batch_size: token vectors added per call (bounds the float32 copy).
    """

    def __init__(
        self,
        corpus: EncodedCorpus,
        M: int = 16,
        ef_construction: int = 200,
        random_seed: int = 1,
        num_threads: int = -1,
        batch_size: int = 65536,
        show_progress_bar: bool | None = None,
    ):
        import voyager

        if not isinstance(corpus, EncodedCorpus):
            raise TypeError(f"corpus must be an EncodedCorpus, got {type(corpus).__name__}")
        if len(corpus) == 0:
            raise ValueError("corpus is empty")
        self.corpus = corpus
        self.num_threads = num_threads
        # token row -> document index
        self.token_to_doc = torch.repeat_interleave(torch.arange(len(corpus)), corpus.lengths).numpy()
        self.index = voyager.Index(
            voyager.Space.InnerProduct, num_dimensions=corpus.dim, M=M, ef_construction=ef_construction,
            random_seed=random_seed, max_elements=int(corpus.embeddings.shape[0]),
        )
        total = int(corpus.embeddings.shape[0])
        if show_progress_bar is None:
            show_progress_bar = total > 200_000
        for start in tqdm(range(0, total, batch_size), disable=not show_progress_bar, desc="Building HNSW"):
            vectors = corpus.embeddings[start : start + batch_size].float().numpy()
            self.index.add_items(vectors, ids=list(range(start, start + vectors.shape[0])), num_threads=num_threads)

    @classmethod
    def load(cls, corpus: EncodedCorpus, path: str | os.PathLike, num_threads: int = -1) -> TokenHNSWIndex:
        """The graph :meth:`save` wrote for this ``corpus`` (same packed token order); a damaged file or one built
        for another corpus raises a ``ValueError`` naming ``path``."""
        import voyager

        try:
            index = voyager.Index.load(os.fspath(path))
        except Exception as error:  # voyager raises RuntimeError/ValueError with its own text
            raise ValueError(f"HNSW graph {path} is damaged ({error}); delete it and run the build again") from error
        tokens = int(corpus.embeddings.shape[0])
        if index.num_elements != tokens or index.num_dimensions != corpus.dim:
            raise ValueError(f"HNSW graph {path} holds {index.num_elements} vectors of width {index.num_dimensions}, "
                             f"but the corpus has {tokens} token vectors of width {corpus.dim}; run the build again")
        hnsw = cls.__new__(cls)
        hnsw.corpus, hnsw.num_threads, hnsw.index = corpus, num_threads, index
        hnsw.token_to_doc = torch.repeat_interleave(torch.arange(len(corpus)), corpus.lengths).numpy()
        return hnsw

    def save(self, path: str | os.PathLike) -> None:
        """Write the graph (with its float32 vectors) to ``path`` atomically."""
        atomic_write(path, lambda temp: self.index.save(temp))

    def __len__(self) -> int:
        return len(self.index)

    def candidates(self, query: torch.Tensor, k_tokens: int = 32, ef: int | None = None) -> torch.Tensor:
        """Sorted distinct document indices near any token of ``query`` ``(tokens, dim)``."""
        k_tokens = min(k_tokens, len(self.index))
        ids, _ = self.index.query(
            query.detach().float().cpu().numpy(), k=k_tokens, num_threads=self.num_threads,
            query_ef=max(ef or 0, k_tokens) if ef else -1,
        )
        return torch.from_numpy(np.unique(self.token_to_doc[ids.astype(np.int64).ravel()]))

    def search(
        self,
        query_embeddings: Sequence[torch.Tensor],
        k: int = 100,
        k_tokens: int = 32,
        ef: int | None = None,
        exclude: Sequence[Iterable[int]] | None = None,
        rerank_threads: int | None = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` per query: HNSW candidates, then exact MaxSim. Same outputs as ``maxsim_topk``.

        ``rerank_threads``: torch threads for the per-query re-ranking (small blocks: 1 is usually fastest).

        Returns ``scores`` ``(n_q, k)`` and ``indices`` ``(n_q, k)``; index -1 / score -inf where a query
        had fewer than ``k`` candidates.
        """
        positive_int("k", k)
        queries = list(query_embeddings)
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude must hold one iterable of doc indices per query ({len(queries)}), got {len(exclude)}")
        k = min(k, len(self.corpus))
        scores = torch.full((len(queries), k), float("-inf"))
        indices = torch.full((len(queries), k), -1, dtype=torch.int64)
        for row, query in enumerate(queries):
            found = self.candidates(query, k_tokens=k_tokens, ef=ef)
            if exclude is not None and exclude[row]:
                found = found[~torch.isin(found, torch.as_tensor(list(exclude[row]), dtype=torch.int64))]
            with torch_threads(rerank_threads):
                top_scores, top_indices = maxsim_rerank(query, self.corpus, found, k)
            scores[row, : top_scores.shape[0]] = top_scores
            indices[row, : top_indices.shape[0]] = top_indices
        return scores, indices


def recall_against_exact(approximate_indices: torch.Tensor, exact_indices: torch.Tensor) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / |exact top-k| (index -1 = no hit, ignored)."""
    if approximate_indices.shape[0] != exact_indices.shape[0]:
        raise ValueError(f"{approximate_indices.shape[0]} approximate rows for {exact_indices.shape[0]} exact rows")
    recalls = []
    for approximate, exact in zip(approximate_indices.tolist(), exact_indices.tolist()):
        truth = {i for i in exact if i >= 0}
        if truth:
            recalls.append(len(truth & {i for i in approximate if i >= 0}) / len(truth))
    return float(np.mean(recalls)) if recalls else 0.0


def ann_recall(
    query_embeddings: Sequence[torch.Tensor],
    corpus: EncodedCorpus,
    k: int = 100,
    k_tokens: int = 32,
    index: TokenHNSWIndex | None = None,
    **index_kwargs,
) -> dict[str, float]:
    """Recall@k of HNSW + re-rank against exact search (test- and report-friendly).

    Returns ``{"recall": ..., "k": k, "k_tokens": k_tokens, "mean_candidates": ...}``.
    """
    from hf_projections.retrieval.search import maxsim_topk

    index = index or TokenHNSWIndex(corpus, **index_kwargs)
    _, exact = maxsim_topk(query_embeddings, corpus, k=k)
    _, approximate = index.search(query_embeddings, k=k, k_tokens=k_tokens)
    candidates = [index.candidates(query, k_tokens=k_tokens).numel() for query in query_embeddings]
    return {
        "recall": recall_against_exact(approximate, exact),
        "k": k,
        "k_tokens": k_tokens,
        "mean_candidates": float(np.mean(candidates)) if candidates else 0.0,
    }
