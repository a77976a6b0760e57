"""The ``voyager`` index backend: the ``exact`` backend's shards plus a Voyager HNSW graph over every token vector.

Documents land in safetensors shards exactly as for ``exact`` (so a killed build resumes the same way); when every
document is in, ``finish`` builds the graph over the packed token vectors and saves it (``hnsw.voy``, then
``hnsw.json`` recording what it was built from). A search takes each query token's ``k_tokens`` nearest token vectors,
and re-ranks their documents by exact MaxSim on the shards' vectors (:class:`TokenHNSWIndex`).
"""

from __future__ import annotations

import json
from pathlib import Path

from hf_projections.atomic import atomic_write_json
from hf_projections.checks import positive_int
from hf_projections.retrieval.ann import TokenHNSWIndex
from hf_projections.retrieval.exact_index import ExactIndex
from hf_projections.retrieval.index_manifest import IndexManifest

GRAPH_FILE = "hnsw.voy"
GRAPH_RECORD = "hnsw.json"
DEFAULT_K_TOKENS = 32  # neighbours per query token (benchmarks/ann_curves.py: recall against exact as it grows)
DEFAULT_GRAPH = {"M": 16, "ef_construction": 200}


class VoyagerIndex(ExactIndex):
    """Token-HNSW candidates + exact MaxSim re-rank over an index folder (multi-vector models only).

    ``manifest.options`` may set the graph's ``M`` and ``ef_construction`` (defaults :data:`DEFAULT_GRAPH`).
    """

    def __init__(self, folder: str | Path, manifest: IndexManifest):
        if not manifest.multi_vector:
            raise ValueError("backend 'voyager' indexes token vectors: it needs a multi-vector (ColBERT) model, "
                             "not a dense one")
        super().__init__(folder, manifest)
        self._graph: TokenHNSWIndex | None = None

    def add(self, ids, embeddings, texts=None) -> None:
        super().add(ids, embeddings, texts)
        self._graph = None

    def _built_for(self) -> dict:
        corpus = self.corpus()
        return {"documents": len(corpus), "token_vectors": int(corpus.embeddings.shape[0]),
                "shards": len(self._shards())}

    def _graph_is_current(self) -> bool:
        record = self.folder / GRAPH_RECORD
        if not (record.is_file() and (self.folder / GRAPH_FILE).is_file()):
            return False
        try:
            return json.loads(record.read_text(encoding="utf-8")).get("built_for") == self._built_for()
        except ValueError:
            return False

    def finish(self) -> None:
        """Build and save the graph unless the saved one was built from these very shards."""
        if self._graph_is_current():
            return
        settings = {**DEFAULT_GRAPH, **{k: self.manifest.options[k] for k in DEFAULT_GRAPH if k in self.manifest.options}}
        graph = TokenHNSWIndex(self.corpus(), **settings)
        graph.save(self.folder / GRAPH_FILE)
        # the record last: a graph without a matching record is rebuilt, never trusted
        atomic_write_json(self.folder / GRAPH_RECORD, {"built_for": self._built_for(), **settings})
        self._graph = graph

    def graph(self) -> TokenHNSWIndex:
        if self._graph is None:
            if not self._graph_is_current():
                raise ValueError(f"index {self.folder}: the HNSW graph ({GRAPH_FILE}) is missing or older than the "
                                 "shards; run the same `hf-projections index` command again to finish the build")
            self._graph = TokenHNSWIndex.load(self.corpus(), self.folder / GRAPH_FILE)
        return self._graph

    def search(self, queries, k: int = 10, k_tokens: int = DEFAULT_K_TOKENS):
        """Top-``k`` per query: ``scores`` `(n_q, k)` and ids; ``k_tokens`` nearest token vectors per query token
        give the candidates (more: closer to exact, slower)."""
        positive_int("k_tokens", k_tokens)
        corpus = self.corpus()
        scores, indices = self.graph().search(list(queries), k=min(k, len(corpus)), k_tokens=k_tokens)
        return scores, [[corpus.ids[i] for i in row if i >= 0] for row in indices.tolist()]

    def close(self) -> None:
        super().close()
        self._graph = None
