"""Index backends (exact shards, embedded Qdrant): the same top hits as exact search, a build killed part-way that
resumes with every document exactly once, and missing or damaged indexes that raise naming what is wrong."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel
from hf_projections.retrieval import maxsim_topk
from hf_projections.retrieval.indexing import build_index, open_index, search_texts

def _needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed")


# (backend, engine): every index backend on every embedded engine
BACKENDS = [
    pytest.param(("exact", None), id="exact"),
    pytest.param(("qdrant", "edge"), id="qdrant-edge", marks=_needs("qdrant_client", "qdrant_edge")),
    pytest.param(("qdrant", "local"), id="qdrant-local", marks=_needs("qdrant_client")),
    pytest.param(("muvera", "edge"), id="muvera-edge", marks=_needs("qdrant_client", "qdrant_edge", "fastembed")),
    pytest.param(("muvera", "local"), id="muvera-local", marks=_needs("qdrant_client", "fastembed")),
    pytest.param(("voyager", None), id="voyager", marks=_needs("voyager")),
]


def _build(model, folder, backend_engine, **kwargs):
    backend, engine = backend_engine
    options = {**kwargs.pop("options", {}), **({"engine": engine} if engine else {})}
    return build_index(model, CORPUS, folder, backend=backend, options=options, **kwargs)
TOPICS = ["cat", "gene", "river", "engine", "violin", "glacier", "protein", "market", "comet", "bridge", "tiger"]
CORPUS = {f"d{i}": f"the {t} study of {t} effects number {i}" for i, t in enumerate(TOPICS)}
QUERIES = ["cat effects", "glacier study", "market"]


@pytest.fixture(scope="module")
def colbert(tiny_backbone):
    torch.manual_seed(0)
    return ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8).eval()


def _exact_top(model, k):
    ids = list(CORPUS)
    scores, indices = maxsim_topk(model.encode_queries(QUERIES), model.encode_documents(list(CORPUS.values())), k=k)
    return scores, [[ids[i] for i in row] for row in indices.tolist()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_finds_what_exact_search_finds(colbert, tmp_path, backend):
    index = _build(colbert, tmp_path / "index", backend, chunk_size=4)
    assert len(index) == len(CORPUS)
    scores, ids = search_texts(colbert, index, QUERIES, k=3)
    exact_scores, exact_ids = _exact_top(colbert, 3)
    assert ids == exact_ids
    assert torch.allclose(scores, exact_scores, atol=2e-3)  # the exact backend stores fp16 vectors
    assert index.text("d2") == CORPUS["d2"]
    index.close()
    reopened = open_index(tmp_path / "index")
    assert reopened.manifest.complete and reopened.manifest.backend == backend[0] and len(reopened) == len(CORPUS)
    assert reopened.manifest.options.get("engine") == backend[1]
    assert search_texts(colbert, reopened, QUERIES, k=3)[1] == exact_ids
    reopened.close()


@pytest.mark.parametrize("backend", BACKENDS[:3])
def test_dense_models_index_one_vector_per_document(tiny_backbone, tmp_path, backend):
    torch.manual_seed(0)
    dense = DenseEmbeddingModel.from_backbone(tiny_backbone, projection="linear", dim=8).eval()
    index = _build(dense, tmp_path / "dense", backend)
    assert not index.manifest.multi_vector
    scores, ids = search_texts(dense, index, QUERIES, k=2)
    expected = (dense.encode_queries(QUERIES) @ dense.encode_documents(list(CORPUS.values())).T).topk(2)
    assert ids == [[list(CORPUS)[i] for i in row] for row in expected.indices.tolist()]
    index.close()


class _DiesAfter:
    """The model, whose document encoder raises after ``calls`` calls (a build killed part-way)."""

    def __init__(self, model, calls):
        self.model, self.calls, self.encoded = model, calls, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode_documents(self, texts, **kwargs):
        if self.calls == 0:
            raise KeyboardInterrupt("killed")
        self.calls -= 1
        self.encoded.extend(texts)
        return self.model.encode_documents(texts, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_build_resumes_with_every_document_once(colbert, tmp_path, backend):
    folder = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt):
        _build(_DiesAfter(colbert, calls=2), folder, backend, chunk_size=3, model_name="m")
    partial = open_index(folder)
    assert not partial.manifest.complete and len(partial) == 6
    partial.close()
    resumed = _DiesAfter(colbert, calls=100)
    index = _build(resumed, folder, backend, chunk_size=3, model_name="m")
    assert len(resumed.encoded) == len(CORPUS) - 6  # only the missing documents were encoded again
    assert len(index) == len(CORPUS) and index.manifest.complete
    assert search_texts(colbert, index, QUERIES, k=3)[1] == _exact_top(colbert, 3)[1]
    index.close()


def test_missing_or_damaged_indexes_raise_naming_them(colbert, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        open_index(tmp_path / "nowhere")
    folder = tmp_path / "index"
    build_index(colbert, CORPUS, folder, backend="exact", chunk_size=4, model_name="m").close()
    with pytest.raises(ValueError, match="other settings .*changed: n_documents"):
        build_index(colbert, {"x": "one more"}, folder, backend="exact", model_name="m")
    shard = sorted((folder / "shards").iterdir())[0]
    shard.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="damaged"):
        len(open_index(folder))
    (folder / "index.json").write_text("{broken")
    with pytest.raises(ValueError, match="index.json is damaged"):
        open_index(folder)
    (folder / "index.json").write_text(json.dumps({"format": "hf_projections.index", "backend": "exact"}))
    with pytest.raises(ValueError, match="fields .* are missing"):
        open_index(folder)
    with pytest.raises(ValueError, match="backend must be one of exact, qdrant, muvera, voyager"):
        build_index(colbert, CORPUS, tmp_path / "other", backend="faiss")


@pytest.mark.parametrize("backend", BACKENDS[1:3])
def test_a_finished_qdrant_index_whose_collection_is_gone_is_named(colbert, tmp_path, backend):
    import shutil

    folder = tmp_path / "index"
    index = _build(colbert, folder, backend, model_name="m")
    index.close()
    shutil.rmtree(folder / ("edge" if backend[1] == "edge" else "qdrant"))
    with pytest.raises(ValueError, match="collection 'documents' is missing"):
        open_index(folder)


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="set QDRANT_URL to test against a Qdrant server")
def test_the_same_code_runs_against_a_qdrant_server(colbert, tmp_path):
    options = {"url": os.environ["QDRANT_URL"], "collection": f"hfp-test-{os.getpid()}"}
    index = build_index(colbert, CORPUS, tmp_path / "server", backend="qdrant", options=options)
    try:
        assert search_texts(colbert, index, QUERIES, k=3)[1] == _exact_top(colbert, 3)[1]
    finally:
        index.store.client.delete_collection(options["collection"])
        index.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_index_search_and_eval_index(colbert, tmp_path, monkeypatch, capsys, backend):
    backend, engine = backend
    from test_sweep import _write_data

    from hf_projections.cli import main
    from hf_projections.evaluation import run_evaluation

    _write_data(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    colbert.save_pretrained(tmp_path / "model")
    folder = str(tmp_path / "index")
    assert main(["index", "--model", str(tmp_path / "model"), "--data", "tinyset", "--backend", backend,
                 "--path", folder, "--chunk-size", "3", *(["--engine", engine] if engine else [])]) == 0
    assert main(["search", "--index", folder, "--k", "2", "cat effect"]) == 0
    printed = capsys.readouterr().out
    assert "query: cat effect" in printed and "  1. " in printed and "  3. " not in printed
    assert main(["eval", "--index", folder, "--json", str(tmp_path / "eval.json")]) == 0
    from_index = json.loads((tmp_path / "eval.json").read_text())["results"][0]
    exact = run_evaluation(str(tmp_path / "model"), "tinyset")[0]
    assert from_index["data"] == "tinyset" and from_index["index"]["backend"] == backend
    assert from_index["metrics"]["ndcg@10"] == pytest.approx(exact["metrics"]["ndcg@10"], abs=1e-6)


def test_cli_index_errors_are_one_line(tmp_path, capsys):
    from hf_projections.cli import main

    assert main(["search", "--index", str(tmp_path / "nowhere"), "q"]) == 2
    assert "not an index folder" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "needs --model DIR" in capsys.readouterr().err
    assert main(["index", "--model", str(tmp_path), "--data", str(tmp_path / "none.jsonl"), "--path", str(tmp_path / "i")]) == 2
    assert "no corpus file" in capsys.readouterr().err


def test_muvera_candidates_bound_what_maxsim_reranks(colbert, tmp_path):
    pytest.importorskip("fastembed")
    pytest.importorskip("qdrant_client")
    index = build_index(colbert, CORPUS, tmp_path / "muvera", backend="muvera", options={"muvera": {"r_reps": 4}})
    assert index.manifest.options == {"muvera": {"r_reps": 4}, "engine": "edge"}
    assert index.muvera.embedding_size == 4 * 32 * 8
    exact_scores, exact_ids = _exact_top(colbert, 3)
    scores, ids = search_texts(colbert, index, QUERIES, k=3, candidates=len(CORPUS))  # every document re-ranked
    assert ids == exact_ids and torch.allclose(scores, exact_scores, atol=1e-4)
    _, few = search_texts(colbert, index, QUERIES, k=3, candidates=1)  # one candidate: at most k of them come back
    assert all(len(row) <= 3 for row in few)
    index.close()
    torch.manual_seed(0)
    dense = DenseEmbeddingModel.from_backbone(colbert.config.backbone_name, projection="linear", dim=8)
    with pytest.raises(ValueError, match="needs a multi-vector"):
        build_index(dense, CORPUS, tmp_path / "dense-muvera", backend="muvera")


@_needs("voyager")
def test_a_voyager_graph_that_is_missing_stale_or_damaged_is_named(colbert, tmp_path):
    folder = tmp_path / "index"
    build_index(colbert, CORPUS, folder, backend="voyager", chunk_size=4, model_name="m").close()
    with pytest.raises(ValueError, match="needs a multi-vector"):
        build_index(DenseEmbeddingModel.from_backbone(colbert.config.backbone_name, dim=8), CORPUS, tmp_path / "d",
                    backend="voyager")
    assert not (tmp_path / "d").exists()
    graph = folder / "hnsw.voy"
    graph.write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="hnsw.voy is damaged"):
        search_texts(colbert, open_index(folder), QUERIES, k=3)
    graph.unlink()
    with pytest.raises(ValueError, match="missing or older than the shards; run the same `hf-projections index`"):
        search_texts(colbert, open_index(folder), QUERIES, k=3)
    # the same build command again finishes it: the graph is rebuilt, nothing is encoded again
    resumed = _DiesAfter(colbert, calls=0)
    index = build_index(resumed, CORPUS, folder, backend="voyager", chunk_size=4, model_name="m")
    assert resumed.encoded == [] and search_texts(colbert, index, QUERIES, k=3)[1] == _exact_top(colbert, 3)[1]
    with pytest.raises(ValueError, match="k_tokens must be a positive int"):
        search_texts(colbert, index, QUERIES, k=3, k_tokens=0)
