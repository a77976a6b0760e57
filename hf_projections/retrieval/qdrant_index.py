"""The ``qdrant`` index backend: one Qdrant collection, token vectors compared by MaxSim (or one vector per document).

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
_NAMESPACE = uuid.UUID("6f1c9e8a-3d2b-4c57-9a41-2b8e5f0d7c13")  # fixed: point ids must not change between runs


def point_id(doc_id: str) -> str:
    """The stable Qdrant point id of a document id."""
    return str(uuid.uuid5(_NAMESPACE, doc_id))


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
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=self.manifest.dim, distance=models.Distance.DOT,
                                               multivector_config=multi, on_disk=bool(self.manifest.options.get("on_disk"))),
        )

    def _check_config(self) -> None:
        params = self.client.get_collection(self.collection).config.params.vectors
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
            self._models.PointStruct(id=point_id(doc_id), vector=vectors.float().tolist(),
                                     payload={"doc_id": doc_id, "text": text})
            for doc_id, vectors, text in zip(ids, embeddings, texts)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def text(self, doc_id: str) -> str:
        found = self.client.retrieve(self.collection, ids=[point_id(doc_id)], with_payload=["text"])
        return found[0].payload.get("text", "") if found else ""

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, list[list[str]]]:
        """Top-``k`` documents per query: ``scores`` `(n_q, k)` (``-inf`` past the hits) and their ids."""
        models = self._models
        requests = [models.QueryRequest(query=q.float().tolist(), limit=k, with_payload=["doc_id"]) for q in queries]
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
