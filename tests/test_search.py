"""Exact MaxSim / dense top-k search against the plain-loop reference, and the packed corpus store."""

from __future__ import annotations

import pytest
import torch

from hf_projections.retrieval.search import dense_topk, maxsim_topk, naive_maxsim
from hf_projections.retrieval.store import EncodedCorpus, corpus_fingerprint, encode_corpus, model_fingerprint


def _normalised(tokens: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(tokens, dim, generator=generator), dim=-1)


def random_embeddings(n: int, max_tokens: int, dim: int = 16, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_tokens + 1, (n,), generator=generator).tolist()
    return [_normalised(length, dim, generator) for length in lengths]


def assert_same_topk(scores, indices, reference: torch.Tensor, k: int, atol: float = 1e-5):
    """Scores match the reference's top-k; ids match except where scores tie."""
    expected_scores, expected_indices = reference.topk(min(k, reference.shape[1]), dim=1)
    assert scores.shape == expected_scores.shape == indices.shape
    torch.testing.assert_close(scores.double(), expected_scores, atol=atol, rtol=0)
    # each returned id really has the returned score
    torch.testing.assert_close(reference.gather(1, indices), scores.double(), atol=atol, rtol=0)
    for row in range(indices.shape[0]):
        for got, want, value in zip(indices[row].tolist(), expected_indices[row].tolist(), expected_scores[row].tolist()):
            if got != want:
                ties = (reference[row] - value).abs() <= atol
                assert ties[got] and ties[want], f"query {row}: got doc {got}, expected {want} (not a tie)"


@pytest.mark.parametrize(
    ("chunk_size", "query_batch_size", "k", "max_block_scores"),
    [(7, 3, 5, None), (1, 1, 4, None), (64, None, 10, None), (None, None, 100, None), (5, 2, 37, None),
     # blocks smaller than one document x one query batch: a tile of one document each; tiles of 3 documents
     (None, None, 10, 1), (11, 4, 10, 3 * 20 * 4 * 6), (None, 5, 8, 1000)],
)
def test_exact_search_matches_naive(chunk_size, query_batch_size, k, max_block_scores):
    queries = random_embeddings(11, 6, seed=1)
    documents = random_embeddings(37, 20, seed=2)
    scores, indices = maxsim_topk(queries, documents, k=k, chunk_size=chunk_size, query_batch_size=query_batch_size,
                                  max_block_scores=max_block_scores)
    assert_same_topk(scores, indices, naive_maxsim(queries, documents), k)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    assert scores.shape == (11, min(k, 37))  # k larger than the corpus is clamped


@pytest.mark.parametrize("dense", [False, True])
def test_screened_search_returns_exact_scores(dense):
    """A bf16 screen then a float32 re-score: the scores are exact (a bf16 score is off by ~1e-2), and with this
    margin the same documents come back; excluded documents stay out, and -1 pads a short result."""
    if dense:
        generator = torch.Generator().manual_seed(3)
        queries = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=-1)
        documents = torch.nn.functional.normalize(torch.randn(200, 16, generator=generator), dim=-1)
        reference = queries.double() @ documents.double().T
    else:
        queries, documents = random_embeddings(6, 6, seed=3), random_embeddings(200, 12, seed=4)
        reference = naive_maxsim(queries, documents)
    scores, indices = maxsim_topk(queries, documents, k=5, screen_dtype=torch.bfloat16)
    assert_same_topk(scores, indices, reference, 5)
    exclude = [[int(reference[0].argmax())], [], [], [], [], list(range(198))]
    scores, indices = maxsim_topk(queries, documents, k=5, exclude=exclude, screen_dtype=torch.bfloat16)
    assert int(reference[0].argmax()) not in indices[0].tolist()
    assert indices[5, 2:].eq(-1).all() and torch.isinf(scores[5, 2:]).all() and set(indices[5, :2].tolist()) == {198, 199}


def test_encoded_corpus_input_and_half_storage():
    queries = random_embeddings(6, 8, seed=3)
    documents = random_embeddings(29, 15, seed=4)
    corpus = EncodedCorpus.from_embeddings([f"d{i}" for i in range(29)], documents)
    reference = naive_maxsim(queries, documents)
    assert_same_topk(*maxsim_topk(queries, corpus, k=8, chunk_size=4), reference, 8)
    for dtype in (torch.float16, torch.bfloat16):
        stored = EncodedCorpus.from_embeddings(corpus.ids, documents, dtype=dtype)
        assert stored.embeddings.dtype == dtype
        # scores are exact for the rounded vectors, which differ from float32 by the storage precision
        rounded = naive_maxsim(queries, [d.to(dtype).float() for d in documents])
        assert_same_topk(*maxsim_topk(queries, stored, k=8, chunk_size=6), rounded, 8)
        scores, _ = maxsim_topk(queries, stored, k=8)
        torch.testing.assert_close(scores.double(), reference.topk(8).values, atol=0.1, rtol=0)


def test_padding_never_wins_with_negative_scores():
    # every similarity is negative: a zero-padded document token (score 0) would win every max
    dim = 8
    direction = torch.nn.functional.normalize(torch.ones(dim), dim=0)
    queries = [direction.expand(3, dim).clone(), direction.expand(1, dim).clone()]
    documents = [-direction * scale for scale in (0.1, 0.5, 0.9)]
    documents = [torch.stack([d] * length) for d, length in zip(documents, (5, 1, 3))]
    documents = [d + 0.01 * torch.randn(d.shape, generator=torch.Generator().manual_seed(i)) for i, d in enumerate(documents)]
    reference = naive_maxsim(queries, documents)
    assert (reference < 0).all()
    scores, indices = maxsim_topk(queries, documents, k=3, chunk_size=3)
    assert_same_topk(scores, indices, reference, 3)
    assert (scores < 0).all()


def test_exclude_drops_given_documents():
    queries = random_embeddings(5, 4, seed=5)
    documents = random_embeddings(12, 6, seed=6)
    reference = naive_maxsim(queries, documents)
    exclude = [[0], [], [3, 11], list(range(12)), [reference[4].argmax().item()]]
    scores, indices = maxsim_topk(queries, documents, k=12, chunk_size=5, query_batch_size=2, exclude=exclude)
    for row, excluded in enumerate(exclude):
        kept = [i for i in indices[row].tolist() if i >= 0]
        assert not set(kept) & set(excluded)
        assert len(kept) == 12 - len(excluded)
        masked = reference[row].clone()
        masked[excluded] = float("-inf")
        expected = masked.topk(len(kept)).values
        torch.testing.assert_close(scores[row, : len(kept)].double(), expected, atol=1e-5, rtol=0)
    assert (indices[3] == -1).all() and torch.isinf(scores[3]).all()
    with pytest.raises(ValueError, match="one iterable of doc indices per query"):
        maxsim_topk(queries, documents, exclude=[[0]])
    with pytest.raises(ValueError, match=r"exclude\[0\] has doc indices outside"):
        maxsim_topk(queries, documents, exclude=[[12], [], [], [], []])


def test_dense_path():
    generator = torch.Generator().manual_seed(7)
    queries = torch.nn.functional.normalize(torch.randn(9, 12, generator=generator), dim=-1)
    documents = torch.nn.functional.normalize(torch.randn(50, 12, generator=generator), dim=-1)
    reference = (queries.double() @ documents.double().T)
    for scores, indices in (dense_topk(queries, documents, k=10, chunk_size=7), maxsim_topk(queries, documents, k=10)):
        assert_same_topk(scores, indices, reference, 10)
    corpus = EncodedCorpus.from_embeddings([str(i) for i in range(50)], documents)
    assert corpus.is_dense and corpus.lengths.eq(1).all()
    assert_same_topk(*maxsim_topk(queries, corpus, k=60), reference, 60)


def test_bad_inputs():
    queries = random_embeddings(2, 3)
    with pytest.raises(ValueError, match="k must be a positive int"):
        maxsim_topk(queries, random_embeddings(3, 3), k=0)
    with pytest.raises(ValueError, match="query dim 16 != document dim 8"):
        maxsim_topk(queries, random_embeddings(3, 3, dim=8))
    with pytest.raises(ValueError, match=r"no token vectors.*\[1\]"):
        maxsim_topk(queries, [torch.ones(2, 16), torch.ones(0, 16)])
    with pytest.raises(ValueError, match="must be dense"):
        maxsim_topk(torch.ones(2, 3, 16), random_embeddings(3, 3))
    with pytest.raises(ValueError, match="document 1: expected a"):
        maxsim_topk(queries, [torch.ones(2, 16), torch.ones(16)])
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        maxsim_topk(queries, random_embeddings(3, 3), chunk_size=0)


# --------------------------------------------------------------------------- store


def test_encoded_corpus_roundtrip(tmp_path):
    documents = random_embeddings(10, 7, seed=8)
    corpus = EncodedCorpus.from_embeddings([f"d{i}" for i in range(10)], documents, metadata={"model": "m"})
    path = corpus.save(tmp_path / "sub" / "corpus.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["corpus.safetensors"]  # no temp file left behind
    loaded = EncodedCorpus.load(path)
    assert loaded.ids == corpus.ids and loaded.metadata == {"model": "m"} and not loaded.is_dense
    assert torch.equal(loaded.embeddings, corpus.embeddings) and torch.equal(loaded.offsets, corpus.offsets)
    assert all(torch.equal(a, b) for a, b in zip(loaded.to_list(), documents))


def test_encoded_corpus_load_errors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        EncodedCorpus.load(path)
    header = {"format": "hf_projections.EncodedCorpus", "ids": '["a", "b"]'}
    save_file({"embeddings": torch.zeros(5, 4), "offsets": torch.tensor([0, 2, 4])}, str(path), header)
    with pytest.raises(ValueError, match=r"bad.safetensors: tensor 'offsets' must start at 0 and end at 5"):
        EncodedCorpus.load(path)
    save_file({"embeddings": torch.zeros(5, 4)}, str(path), header)
    with pytest.raises(ValueError, match="missing tensor 'offsets'"):
        EncodedCorpus.load(path)
    save_file({"embeddings": torch.zeros(5, 4), "offsets": torch.tensor([0, 5])}, str(path), header)
    with pytest.raises(ValueError, match=r"'offsets' has 2 entries for 2 ids"):
        EncodedCorpus.load(path)
    with pytest.raises(FileNotFoundError):
        EncodedCorpus.load(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="ids are not unique"):
        EncodedCorpus.from_embeddings(["a", "a"], random_embeddings(2, 2))


class CountingModel(torch.nn.Module):
    """Fake multi-vector model: one token vector per character (first 4 chars), counts encode calls."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(128, 8, generator=torch.Generator().manual_seed(0)))
        self.calls = 0

    def encode_documents(self, texts, batch_size=32, show_progress_bar=None):
        self.calls += 1
        return [torch.nn.functional.normalize(self.weight[[ord(c) % 128 for c in text[:4]]], dim=-1) for text in texts]


def test_encode_corpus_cache(tmp_path):
    model = CountingModel()
    corpus = {"a": "cats", "b": "dog", "c": "bird!"}
    cache = tmp_path / "cache.safetensors"
    first = encode_corpus(model, corpus, cache_path=cache)
    second = encode_corpus(model, corpus, cache_path=cache)
    assert model.calls == 1 and second.ids == ["a", "b", "c"] and torch.equal(first.embeddings, second.embeddings)
    encode_corpus(model, {**corpus, "c": "birds"}, cache_path=cache)  # corpus changed
    assert model.calls == 2
    with torch.no_grad():
        model.weight.add_(1.0)  # weights changed
    encode_corpus(model, {**corpus, "c": "birds"}, cache_path=cache)
    assert model.calls == 3
    assert corpus_fingerprint({"ab": "c"}) != corpus_fingerprint({"a": "bc"})
    assert model_fingerprint(model) == model_fingerprint(model)
