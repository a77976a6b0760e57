"""The ``qdrant`` and ``muvera`` index backends: one Qdrant collection, token vectors compared by MaxSim (or one
vector per document for a dense model).

``muvera`` adds each document's MUVERA fixed dimensional encoding (Dhulipala et al. 2024, computed by fastembed's
maintained implementation) as a second, single vector in the same point: a search fetches candidates by the query's
encoding from that vector's HNSW index, then Qdrant re-ranks them by exact MaxSim over the token vectors (whose own
HNSW graph is switched off: they are only ever re-ranked).

Embedded by default (``QdrantClient(path=<index>/qdrant)``: no server to start); the same code reaches a Qdrant
server or cluster when the manifest holds a ``url`` (sharding and replication are then the engine's business).
Points have stable ids (a UUID derived from the document id) and carry ``doc_id`` and ``text`` as payload, so a
build that stops part-way resumes with the documents still missing and a rerun never duplicates one.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from hf_projections.retrieval.index_manifest import IndexManifest

DEFAULT_COLLECTION = "documents"
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


def _client(folder: Path, options: dict):
    from qdrant_client import QdrantClient

    if options.get("url"):
        return QdrantClient(url=options["url"], api_key=options.get("api_key"))
    try:
        return QdrantClient(path=str(folder / "qdrant"))
    except RuntimeError as error:  # the embedded store is locked by another process
        raise RuntimeError(f"the Qdrant index in {folder} is open in another process ({error})") from error
    except sqlite3.DatabaseError as error:
        raise ValueError(f"the Qdrant store in {folder / 'qdrant'} is damaged ({error}); rebuild the index into a "
                         "new folder") from error


class QdrantIndex:
    """A Qdrant collection holding one index.

    Args:
        folder: the index folder (its ``index.json``; the embedded store in ``<folder>/qdrant``).
        manifest: its manifest; ``options`` may hold ``collection`` (default ``documents``), ``url`` (a server or
            cluster instead of the embedded store) and ``on_disk`` (keep vectors on disk, not in RAM).
    """

    def __init__(self, folder: str | Path, manifest: IndexManifest):
        from qdrant_client import models

        self.folder = Path(folder)
        self.manifest = manifest
        self.collection = manifest.options.get("collection", DEFAULT_COLLECTION)
        self.muvera = _muvera(manifest) if manifest.backend == "muvera" else None
        self.client = _client(self.folder, manifest.options)
        self._models = models
        if not self.client.collection_exists(self.collection):
            if manifest.complete:  # a finished build whose collection is gone
                raise ValueError(f"the index in {self.folder} is damaged: its Qdrant collection {self.collection!r} "
                                 "is missing; rebuild the index into a new folder")
            self._create()
        self._check_config()

    def _create(self) -> None:
        models = self._models
        multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM) if self.manifest.multi_vector else None
        on_disk = bool(self.manifest.options.get("on_disk"))
        tokens = models.VectorParams(size=self.manifest.dim, distance=models.Distance.DOT, multivector_config=multi,
                                     on_disk=on_disk, hnsw_config=models.HnswConfigDiff(m=0) if self.muvera else None)
        if self.muvera is None:
            self.client.create_collection(self.collection, vectors_config=tokens)
            return
        fde = models.VectorParams(size=self.muvera.embedding_size, distance=models.Distance.DOT, on_disk=on_disk)
        self.client.create_collection(self.collection, vectors_config={TOKENS: tokens, FDE: fde})

    def _check_config(self) -> None:
        params = self.client.get_collection(self.collection).config.params.vectors
        if isinstance(params, dict) != (self.muvera is not None):
            raise ValueError(f"Qdrant collection {self.collection!r} does not match the index manifest in {self.folder} "
                             f"(backend {self.manifest.backend!r}); rebuild the index into a new folder")
        if isinstance(params, dict):
            params = params[TOKENS]
        multi = getattr(params, "multivector_config", None) is not None
        if params.size != self.manifest.dim or multi != self.manifest.multi_vector:
            raise ValueError(
                f"Qdrant collection {self.collection!r} holds vectors of size {params.size} (multi-vector: {multi}), "
                f"the index manifest in {self.folder} says {self.manifest.dim} (multi-vector: {self.manifest.multi_vector})"
            )

    def __len__(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ``ids`` not in the collection yet, in their order."""
        found = self.client.retrieve(self.collection, ids=[point_id(i) for i in ids], with_payload=["doc_id"],
                                     with_vectors=False)
        present = {point.payload["doc_id"] for point in found}
        return [doc_id for doc_id in ids if doc_id not in present]

    def add(self, ids: Sequence[str], embeddings, texts: Sequence[str] | None = None) -> None:
        """Upsert documents: ``embeddings`` ``n`` tensors `(tokens_i, dim)` (or `(n, dim)` for a dense model)."""
        if not ids:
            return
        texts = list(texts) if texts is not None else [""] * len(ids)
        points = [
            self._models.PointStruct(id=point_id(doc_id), vector=self._vectors(vectors, is_query=False),
                                     payload={"doc_id": doc_id, "text": text})
            for doc_id, vectors, text in zip(ids, embeddings, texts)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def text(self, doc_id: str) -> str:
        found = self.client.retrieve(self.collection, ids=[point_id(doc_id)], with_payload=["text"])
        return found[0].payload.get("text", "") if found else ""

    def _vectors(self, vectors: torch.Tensor, is_query: bool):
        """A point's vectors (a document's) or a query's: the token vectors, plus the MUVERA encoding for ``muvera``."""
        tokens = vectors.float()
        if self.muvera is None:
            return tokens.tolist()
        process = self.muvera.process_query if is_query else self.muvera.process_document
        return {TOKENS: tokens.tolist(), FDE: process(tokens.numpy()).astype("float32").tolist()}

    def _request(self, query: torch.Tensor, k: int, candidates: int | None):
        models = self._models
        if self.muvera is None:
            return models.QueryRequest(query=self._vectors(query, is_query=True), limit=k, with_payload=["doc_id"])
        vectors = self._vectors(query, is_query=True)
        prefetch = models.Prefetch(query=vectors[FDE], using=FDE, limit=max(k, candidates or 5 * k))
        return models.QueryRequest(prefetch=prefetch, query=vectors[TOKENS], using=TOKENS, limit=k,
                                   with_payload=["doc_id"])

    def search(self, queries, k: int = 10, candidates: int | None = None) -> tuple[torch.Tensor, list[list[str]]]:
        """Top-``k`` documents per query: ``scores`` `(n_q, k)` (``-inf`` past the hits) and their ids.

        ``candidates`` (``muvera`` only): documents fetched by MUVERA encoding and re-ranked by MaxSim (default 5k).
        """
        requests = [self._request(q, k, candidates) for q in queries]
        responses = self.client.query_batch_points(self.collection, requests=requests) if requests else []
        scores = torch.full((len(requests), k), float("-inf"))
        ids: list[list[str]] = []
        for row, response in enumerate(responses):
            ids.append([point.payload["doc_id"] for point in response.points])
            if response.points:
                scores[row, : len(response.points)] = torch.tensor([point.score for point in response.points])
        return scores, ids

    def close(self) -> None:
        self.client.close()
