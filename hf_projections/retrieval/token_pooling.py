"""Index-time token pooling: fewer vectors per document, by hierarchical (Ward) clustering of its tokens.

The clustering is sentence-transformers' ``HierarchicalTokenPooling`` (the same method as PyLate / Clavié et
al. token pooling): the first ``num_protected_tokens`` vectors are kept as they are, the others are grouped
into ``n // pool_factor`` clusters and each cluster is replaced by its (re-normalised) mean. Queries are
never pooled.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from hf_projections.retrieval.search import torch_threads
from hf_projections.retrieval.store import EncodedCorpus


def pool_corpus(
    corpus: EncodedCorpus,
    pool_factor: float = 2.0,
    num_protected_tokens: int = 1,
    show_progress_bar: bool | None = None,
) -> EncodedCorpus:
    """Pool every document of ``corpus``; returns a new ``EncodedCorpus`` with about ``1 / pool_factor`` tokens.

    Args:
        corpus: multi-vector corpus with L2-normalised token vectors.
        pool_factor: keep about ``tokens / pool_factor`` vectors per document (2-4 is usual; 1 = no pooling).
        num_protected_tokens: leading vectors (``[CLS]``) never merged.
        show_progress_bar: tqdm over documents (default: when there are more than 1000).
    """
    if corpus.is_dense:
        raise ValueError("token pooling needs a multi-vector corpus; this one is dense (one vector per document)")
    if not isinstance(pool_factor, (int, float)) or pool_factor < 1:
        raise ValueError(f"pool_factor must be a number >= 1, got {pool_factor!r}")
    if not isinstance(num_protected_tokens, int) or num_protected_tokens < 0:
        raise ValueError(f"num_protected_tokens must be an int >= 0, got {num_protected_tokens!r}")
    from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

    pooling = HierarchicalTokenPooling(pool_factor, num_protected_tokens=num_protected_tokens, normalize_embeddings=True)
    if show_progress_bar is None:
        show_progress_bar = len(corpus) > 1000
    with torch_threads(1):  # one small clustering per document: threads only add overhead
        pooled = [
            pooling.pool_one(corpus[i].float()).to(corpus.embeddings.dtype)
            for i in tqdm(range(len(corpus)), disable=not show_progress_bar, desc="Pooling tokens")
        ]
    metadata = {**corpus.metadata, "pool_factor": str(pool_factor), "num_protected_tokens": str(num_protected_tokens)}
    return EncodedCorpus.from_embeddings(corpus.ids, pooled, metadata=metadata)
