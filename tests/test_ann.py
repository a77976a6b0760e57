"""HNSW candidates + exact re-rank (Voyager) and index-time token pooling."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("voyager")

from hf_projections.retrieval.ann import TokenHNSWIndex, ann_recall, recall_against_exact  # noqa: E402
from hf_projections.retrieval.search import maxsim_rerank, maxsim_topk, naive_maxsim  # noqa: E402
from hf_projections.retrieval.store import EncodedCorpus  # noqa: E402
from hf_projections.retrieval.token_pooling import pool_corpus  # noqa: E402

DIM = 16


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


@pytest.fixture(scope="module")
def corpus_and_queries():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 12, (120,), generator=generator).tolist()
    documents = [_unit(torch.randn(n, DIM, generator=generator)) for n in lengths]
    corpus = EncodedCorpus.from_embeddings([f"d{i}" for i in range(120)], documents)
    # queries: noisy copies of some tokens of a target document, plus random tokens
    queries = []
    for target in range(0, 120, 8):
        picked = documents[target][:3] + 0.3 * torch.randn(min(3, lengths[target]), DIM, generator=generator)
        queries.append(_unit(torch.cat([picked, torch.randn(2, DIM, generator=generator)])))
    return corpus, documents, queries


def test_exhaustive_candidates_equal_exact_search(corpus_and_queries):
    corpus, documents, queries = corpus_and_queries
    index = TokenHNSWIndex(corpus, M=8, ef_construction=64, num_threads=1)
    assert len(index) == corpus.embeddings.shape[0]
    total_tokens = corpus.embeddings.shape[0]
    scores, indices = index.search(queries, k=10, k_tokens=total_tokens)
    exact_scores, exact_indices = maxsim_topk(queries, corpus, k=10)
    torch.testing.assert_close(scores, exact_scores, atol=1e-5, rtol=0)
    assert recall_against_exact(indices, exact_indices) == 1.0


def test_approximate_search_scores_are_exact_maxsim(corpus_and_queries):
    corpus, documents, queries = corpus_and_queries
    report = ann_recall(queries, corpus, k=10, k_tokens=8, M=8, ef_construction=64, num_threads=1)
    assert 0.3 <= report["recall"] <= 1.0 and 0 < report["mean_candidates"] <= 120
    index = TokenHNSWIndex(corpus, M=8, ef_construction=64, num_threads=1)
    scores, indices = index.search(queries, k=5, k_tokens=4, exclude=[[0]] * len(queries))
    reference = naive_maxsim(queries, documents)
    for row in range(len(queries)):
        hits = indices[row][indices[row] >= 0]
        assert 0 not in hits.tolist()
        torch.testing.assert_close(scores[row, : hits.numel()].double(), reference[row, hits], atol=1e-5, rtol=0)
        assert torch.all(scores[row, :-1] >= scores[row, 1:])


def test_recall_against_exact_and_rerank():
    assert recall_against_exact(torch.tensor([[1, 2, -1], [5, 6, 7]]), torch.tensor([[2, 1, 3], [5, 8, 9]])) == pytest.approx(
        (2 / 3 + 1 / 3) / 2
    )
    corpus = EncodedCorpus.from_embeddings(["a", "b"], [torch.eye(4)[:2], -torch.eye(4)[:3]])
    scores, indices = maxsim_rerank(torch.eye(4)[:1], corpus, torch.tensor([1, 0]), k=5)
    assert indices.tolist() == [0, 1] and scores.tolist() == [1.0, 0.0]  # doc b's best token is orthogonal (0)
    with pytest.raises(ValueError, match="k must be a positive int"):
        TokenHNSWIndex(corpus, num_threads=1).search([torch.eye(4)[:1]], k=0)


def test_pool_corpus_halves_tokens(corpus_and_queries):
    corpus, documents, _ = corpus_and_queries
    pooled = pool_corpus(corpus, pool_factor=2, num_protected_tokens=1)
    assert pooled.ids == corpus.ids and pooled.metadata["pool_factor"] == "2"
    for original, reduced in zip(documents, pooled.to_list()):
        assert reduced.shape[0] == 1 + max((original.shape[0] - 1) // 2, 1)
        torch.testing.assert_close(reduced[0], original[0])  # [CLS]-like first token kept
        torch.testing.assert_close(reduced.norm(dim=-1), torch.ones(reduced.shape[0]))
    assert pooled.embeddings.shape[0] < 0.7 * corpus.embeddings.shape[0]
    assert pool_corpus(corpus, pool_factor=1).embeddings.shape == corpus.embeddings.shape
    with pytest.raises(ValueError, match="pool_factor must be a number >= 1"):
        pool_corpus(corpus, pool_factor=0.5)
    with pytest.raises(ValueError, match="dense"):
        pool_corpus(EncodedCorpus.from_embeddings(["a"], torch.ones(1, 4)))
