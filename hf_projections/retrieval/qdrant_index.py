"""The ``qdrant`` and ``muvera`` index backends: one Qdrant collection, token vectors compared by MaxSim (or one
vector per document for a dense model).

``muvera`` adds each document's MUVERA fixed dimensional encoding (Dhulipala et al. 2024, computed by fastembed's
maintained implementation) as a second, single vector in the same point: a search fetches candidates by the query's
encoding from that vector's HNSW index, then Qdrant re-ranks them by exact MaxSim over the token vectors (whose own
HNSW graph is switched off: they are only ever re-ranked).

Three engines run the same collection (``options["engine"]``): ``edge`` (Qdrant Edge, ``qdrant-edge-py``: the Rust
engine in-process, no server), ``local`` (``qdrant-client``'s embedded mode, pure Python) and a server or cluster
(``options["url"]``: sharding and replication are then the engine's business). Points have stable ids (a UUID derived
from the document id) and carry ``doc_id`` and ``text`` as payload, so a build that stops part-way resumes with the
documents still missing and a rerun never duplicates one.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from hf_projections.retrieval.index_manifest import IndexManifest
from hf_projections.retrieval.qdrant_stores import ClientStore, EdgeStore

DEFAULT_COLLECTION = "documents"
ENGINES = ("edge", "local")  # embedded engines; a "url" option means a server instead
DEFAULT_ENGINE = "edge"
# fastembed's defaults: 2^5 SimHash buckets x 16 projected dims x 20 repetitions = 10,240 floats per encoding.
MUVERA_DEFAULTS = {"k_sim": 5, "dim_proj": 16, "r_reps": 20, "seed": 42}
TOKENS, FDE = "tokens", "fde"  # the named vectors of a muvera collection
_NAMESPACE = uuid.UUID("6f1c9e8a-3d2b-4c57-9a41-2b8e5f0d7c13")  # fixed: point ids must not change between runs


def point_id(doc_id: str) -> str:
    """The stable Qdrant point id of a document id."""
    return str(uuid.uuid5(_NAMESPACE, doc_id))


def _muvera(manifest: IndexManifest):
    """fastembed's MUVERA encoder for the manifest's settings (the same seed gives the same encodings everywhere)."""
    if not manifest.multi_vector:
        raise ValueError("backend 'muvera' encodes token vectors: it needs a multi-vector (ColBERT) model, not a dense one")
    try:
        from fastembed.postprocess.muvera import Muvera
    except ImportError as error:
        raise ImportError("backend 'muvera' needs fastembed: pip install 'hf-projections[muvera]'") from error
    settings = {**MUVERA_DEFAULTS, "dim_proj": min(MUVERA_DEFAULTS["dim_proj"], manifest.dim),
                **manifest.options.get("muvera", {})}
    return Muvera(dim=manifest.dim, k_sim=settings["k_sim"], dim_proj=settings["dim_proj"], r_reps=settings["r_reps"],
                  random_seed=settings["seed"])


def _store(folder: Path, options: dict):
    """The engine that holds the collection: a server (``url``), Qdrant Edge or qdrant-client's embedded mode."""
    if options.get("url"):
        return ClientStore.server(options["url"], options.get("api_key"), options.get("collection", DEFAULT_COLLECTION))
    engine = options.get("engine", DEFAULT_ENGINE)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)} (or give a url), got {engine!r}")
    try:
        if engine == "edge":
            return EdgeStore(folder / "edge")
        return ClientStore.embedded(folder / "qdrant", options.get("collection", DEFAULT_COLLECTION))
    except RuntimeError as error:  # the embedded store is locked by another process
        raise RuntimeError(f"the Qdrant index in {folder} is open in another process ({error})") from error
    except sqlite3.DatabaseError as error:
        raise ValueError(f"the Qdrant store in {folder} is damaged ({error}); rebuild the index into a new folder") from error


class QdrantIndex:
    """A Qdrant collection holding one index.

    Args:
        folder: the index folder (its ``index.json``; the embedded store beside it).
        manifest: its manifest; ``options`` may hold ``engine`` (``edge``, the default, or ``local``), ``url`` (a
            server or cluster instead), ``collection`` (default ``documents``), ``on_disk`` (vectors on disk, not in
            RAM) and, for ``muvera``, ``muvera`` (encoding settings).
    """

    def __init__(self, folder: str | Path, manifest: IndexManifest):
        self.folder = Path(folder)
        self.manifest = manifest
        self.collection = manifest.options.get("collection", DEFAULT_COLLECTION)
        self.muvera = _muvera(manifest) if manifest.backend == "muvera" else None
        self.store = _store(self.folder, manifest.options)
        layout = {TOKENS if self.muvera else "": (manifest.dim, manifest.multi_vector, self.muvera is not None)}
        if self.muvera is not None:
            layout[FDE] = (self.muvera.embedding_size, False, False)
        if not self.store.exists():
            if manifest.complete:  # a finished build whose collection is gone
                raise ValueError(f"the index in {self.folder} is damaged: its Qdrant collection {self.collection!r} "
                                 "is missing; rebuild the index into a new folder")
            self.store.create(layout, on_disk=bool(manifest.options.get("on_disk")))
        found = self.store.layout()
        if found is not None and found != {name: spec[:2] for name, spec in layout.items()}:
            raise ValueError(f"Qdrant collection {self.collection!r} holds vectors {found}, the index manifest in "
                             f"{self.folder} describes {layout}; rebuild the index into a new folder")

    def __len__(self) -> int:
        return self.store.count()

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ``ids`` not in the collection yet, in their order."""
        present = set(self.store.payload_values([point_id(i) for i in ids], "doc_id"))
        return [doc_id for doc_id in ids if doc_id not in present]

    def add(self, ids: Sequence[str], embeddings, texts: Sequence[str] | None = None) -> None:
        """Upsert documents: ``embeddings`` ``n`` tensors `(tokens_i, dim)` (or `(n, dim)` for a dense model)."""
        if not len(ids):
            return
        texts = list(texts) if texts is not None else [""] * len(ids)
        self.store.upsert([(point_id(doc_id), self._vectors(vectors, is_query=False), {"doc_id": doc_id, "text": text})
                           for doc_id, vectors, text in zip(ids, embeddings, texts)])

    def text(self, doc_id: str) -> str:
        values = self.store.payload_values([point_id(doc_id)], "text")
        return values[0] if values else ""

    def _vectors(self, vectors: torch.Tensor, is_query: bool):
        """A point's vectors (a document's) or a query's: the token vectors, plus the MUVERA encoding for ``muvera``."""
        tokens = vectors.float()
        if self.muvera is None:
            return tokens.tolist()
        process = self.muvera.process_query if is_query else self.muvera.process_document
        return {TOKENS: tokens.tolist(), FDE: process(tokens.numpy()).astype("float32").tolist()}

    def search(self, queries, k: int = 10, candidates: int | None = None) -> tuple[torch.Tensor, list[list[str]]]:
        """Top-``k`` documents per query: ``scores`` `(n_q, k)` (``-inf`` past the hits) and their ids.

        ``candidates`` (``muvera`` only): documents fetched by MUVERA encoding and re-ranked by MaxSim (default 5k).
        """
        requests = []
        for query in queries:
            vectors = self._vectors(query, is_query=True)
            if self.muvera is None:
                requests.append({"query": vectors, "using": None, "prefetch": None})
            else:
                requests.append({"query": vectors[TOKENS], "using": TOKENS,
                                 "prefetch": (vectors[FDE], FDE, max(k, candidates or 5 * k))})
        hits = self.store.query_batch(requests, k) if requests else []
        scores = torch.full((len(requests), k), float("-inf"))
        ids: list[list[str]] = []
        for row, found in enumerate(hits):
            ids.append([doc_id for doc_id, _ in found])
            if found:
                scores[row, : len(found)] = torch.tensor([score for _, score in found])
        return scores, ids

    def finish(self) -> None:
        """After the last document: let the engine build its indexes (Qdrant Edge optimises its segments)."""
        self.store.optimize()

    def close(self) -> None:
        self.store.close()
