"""evaluate_model end to end on fake and tiny real models, checked against naive MaxSim + ir_measures."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import ir_measures
import pytest
import torch

from hf_projections.data import beir_files as beir
from hf_projections.data import BeirDataset
from hf_projections.evaluation.evaluate import (
    evaluate_embeddings,
    evaluate_model,
    format_table,
    run_evaluation,
    write_json,
)
from hf_projections.retrieval.search import naive_maxsim

DIM = 16


class FakeModel:
    """Multi-vector (or dense) fake: each word maps to a fixed random unit vector (plus a little noise per text).

    Same methods as ColBERTModel / DenseEmbeddingModel: encode_queries / encode_documents.
    """

    def __init__(self, dense: bool = False):
        self.dense = dense
        self.table = torch.nn.functional.normalize(torch.randn(97, DIM, generator=torch.Generator().manual_seed(0)), dim=-1)
        self.document_calls = 0
        self.name_or_path = "fake-dense" if dense else "fake-colbert"

    def state_dict(self):
        return {"table": self.table}

    def _encode(self, text: str) -> torch.Tensor:
        words = text.lower().split() or ["<empty>"]
        ids = [zlib.crc32(word.encode()) % 97 for word in words]
        noise = torch.randn(len(ids), DIM, generator=torch.Generator().manual_seed(zlib.crc32(text.encode())))
        tokens = torch.nn.functional.normalize(self.table[ids] + 0.05 * noise, dim=-1)
        return torch.nn.functional.normalize(tokens.mean(0), dim=-1) if self.dense else tokens

    def _encode_all(self, texts, batch_size=32, show_progress_bar=None):
        outputs = [self._encode(text) for text in texts]
        return torch.stack(outputs) if self.dense else outputs

    def encode_queries(self, texts, batch_size=32, show_progress_bar=None):
        return self._encode_all(texts, batch_size, show_progress_bar)

    def encode_documents(self, texts, batch_size=32, show_progress_bar=None):
        self.document_calls += 1
        return self._encode_all(texts, batch_size, show_progress_bar)


TOPICS = ["cat purr whisker", "dog bark leash", "protein fold amino", "gene express dna", "drug dose trial",
          "cancer tumour risk", "rain cloud storm", "ship sail ocean"]


def toy_dataset(name: str = "toy", ignore_identical_ids: bool = False) -> BeirDataset:
    corpus = {f"d{i}": f"{topic} document number {i}" for i, topic in enumerate(TOPICS)}
    corpus["q0"] = "cat purr whisker is what the first query says"  # same id as query q0 (ArguAna style)
    queries = {f"q{i}": f"{topic.split()[0]} {topic.split()[2]} question" for i, topic in enumerate(TOPICS[:6])}
    queries["q0"] = corpus["q0"]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(6)}
    qrels["q2"]["d3"] = 1
    qrels["q5"] = {"d5": 1, "missing-doc": 1}  # judged doc not in the corpus: kept, never retrievable
    return BeirDataset(name, "test", corpus, queries, qrels, ignore_identical_ids)


def write_toy_folder(root: Path, name: str) -> None:
    data = toy_dataset(name)
    folder = root / name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in data.corpus.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in data.queries.items()))
    rows = [f"{q}\t{d}\t{r}" for q, judged in data.qrels.items() for d, r in judged.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")


def naive_ndcg(model, data: BeirDataset, ignore_identical_ids: bool) -> float:
    """Independent NDCG@10: full naive MaxSim score matrix of the model's own outputs, then ir_measures."""
    query_ids, doc_ids = list(data.queries), list(data.corpus)
    queries = model.encode_queries([data.queries[q] for q in query_ids])
    documents = model.encode_documents([data.corpus[d] for d in doc_ids])
    if isinstance(queries, torch.Tensor):  # dense: one vector per text
        queries, documents = list(queries.unsqueeze(1)), list(documents.unsqueeze(1))
    scores = naive_maxsim(queries, documents)
    run = {
        q: {d: float(scores[i, j]) for j, d in enumerate(doc_ids) if not (ignore_identical_ids and d == q)}
        for i, q in enumerate(query_ids)
    }
    measure = ir_measures.nDCG @ 10
    return ir_measures.calc_aggregate([measure], data.qrels, run)[measure]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("ignore_identical_ids", [False, True])
def test_evaluate_model_matches_independent_check(dense, ignore_identical_ids):
    model = FakeModel(dense=dense)
    data = toy_dataset(ignore_identical_ids=ignore_identical_ids)
    result = evaluate_model(model, data, k=100, chunk_size=3)
    assert result["metrics"]["ndcg@10"] == pytest.approx(naive_ndcg(model, data, ignore_identical_ids), abs=1e-6)
    assert set(result["metrics"]) == {"ndcg@10", "recall@100", "mrr@10", "map@100"}
    assert 0.5 < result["metrics"]["ndcg@10"] < 1.0  # the fake finds most targets, never the missing doc
    assert result["sizes"]["documents"] == 9 and result["sizes"]["queries"] == 6 and result["sizes"]["judgments"] == 8
    assert result["sizes"]["multi_vector"] is (not dense)
    assert set(result["timings"]) == {"encode_documents_s", "encode_queries_s", "search_s", "total_s", "corpus_cache_hit"}
    assert (result["model"], result["data"], result["split"]) == (model.name_or_path, "toy", "test")


def test_identical_ids_are_dropped_and_k_hits_remain():
    model = FakeModel()
    kept = evaluate_model(model, toy_dataset(ignore_identical_ids=False), k=3, metrics=["mrr@3"], return_run=True)
    dropped = evaluate_model(model, toy_dataset(ignore_identical_ids=True), k=3, metrics=["mrr@3"], return_run=True)
    assert next(iter(kept["run"]["q0"])) == "q0"  # the query's own text is its best hit...
    assert "q0" not in dropped["run"]["q0"]  # ...unless identical ids are ignored
    assert all(len(hits) == 3 for hits in dropped["run"].values())
    assert all(q not in hits for q, hits in dropped["run"].items())


def test_evaluate_embeddings_directly():
    model = FakeModel()
    data = toy_dataset()
    query_ids, doc_ids = list(data.queries), list(data.corpus)
    result = evaluate_embeddings(
        model.encode_queries([data.queries[q] for q in query_ids]),
        model.encode_documents([data.corpus[d] for d in doc_ids]),
        data.qrels, query_ids, doc_ids, k=10, metrics=["ndcg@10"], return_run=True,
    )
    assert set(result["run"]) == set(query_ids) and all(len(hits) == 9 for hits in result["run"].values())
    with pytest.raises(ValueError, match="k=5 is smaller than the deepest metric cutoff 10"):
        evaluate_embeddings([torch.ones(1, 2)], [torch.ones(1, 2)], {"a": {"b": 1}}, ["a"], ["b"], k=5, metrics=["ndcg@10"])
    with pytest.raises(ValueError, match="2 doc_ids for 1 document embeddings"):
        evaluate_embeddings([torch.ones(1, 2)], [torch.ones(1, 2)], {"a": {"b": 1}}, ["a"], ["b", "c"])
    with pytest.raises(ValueError, match="unknown metric 'ndgc@10'"):
        evaluate_embeddings([torch.ones(1, 2)], [torch.ones(1, 2)], {"a": {"b": 1}}, ["a"], ["b"], metrics=["ndgc@10"])


def test_corpus_cache_is_reused(tmp_path):
    model = FakeModel()
    first = evaluate_model(model, toy_dataset(), corpus_cache_dir=tmp_path)
    second = evaluate_model(model, toy_dataset(), corpus_cache_dir=tmp_path)
    assert model.document_calls == 1
    assert (first["timings"]["corpus_cache_hit"], second["timings"]["corpus_cache_hit"]) == (False, True)
    assert first["metrics"] == second["metrics"]


def test_run_evaluation_json_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv(beir.DATA_ENV_VAR, str(tmp_path / "data"))
    write_toy_folder(tmp_path / "data", "toy")
    write_toy_folder(tmp_path / "data", "arguana")  # a set scored with ignore_identical_ids
    out = tmp_path / "out" / "eval.json"
    with pytest.warns(UserWarning, match="missing-doc"):
        results = run_evaluation(FakeModel(), "toy, arguana", metrics=["ndcg@10", "recall@100"], json_path=out)
    assert [r["data"] for r in results] == ["toy", "arguana"]
    assert [r["ignore_identical_ids"] for r in results] == [False, True]
    report = json.loads(out.read_text())
    assert report["model"] == "fake-colbert" and report["data"] == ["toy", "arguana"] and report["split"] == "test"
    for key in ("platform", "cpu_count", "torch"):
        assert report["machine"][key]
    assert report["results"][0]["metrics"] == results[0]["metrics"] and "timings" in report["results"][0]
    table = format_table(results)
    assert table.splitlines()[0].startswith("| model | data | split | ndcg@10 | recall@100 |")
    assert len(table.splitlines()) == 4 and "| arguana |" in table
    write_json(out, results[0])  # a single result is fine too
    assert len(json.loads(out.read_text())["results"]) == 1
    with pytest.raises(ValueError, match="at least one data set"):
        run_evaluation(FakeModel(), " , ")
    with pytest.raises(TypeError, match="BeirDataset or a data set name"):
        evaluate_model(FakeModel(), 42)


def test_real_colbert_model_on_tiny_backbone(tiny_backbone, tmp_path, monkeypatch):
    from hf_projections import ColBERTModel

    model = ColBERTModel.from_backbone(tiny_backbone, dim=8, query_max_length=12, document_max_length=24)
    data = toy_dataset()
    result = evaluate_model(model, data, batch_size=4, metrics=["ndcg@10"])
    assert result["sizes"]["dim"] == 8 and result["sizes"]["multi_vector"]
    assert result["metrics"]["ndcg@10"] == pytest.approx(naive_ndcg(model, data, False), abs=1e-5)
    # the CLI path: a saved folder loaded with AutoModel, data found through HF_PROJECTIONS_DATA
    model.save_pretrained(tmp_path / "saved")
    monkeypatch.setenv(beir.DATA_ENV_VAR, str(tmp_path / "data"))
    write_toy_folder(tmp_path / "data", "toy")
    with pytest.warns(UserWarning, match="missing-doc"):
        reloaded = run_evaluation(str(tmp_path / "saved"), "toy", metrics=["ndcg@10"], batch_size=4)
    assert reloaded[0]["metrics"]["ndcg@10"] == pytest.approx(result["metrics"]["ndcg@10"], abs=1e-5)
