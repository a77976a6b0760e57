"""The engines under :class:`~hf_projections.retrieval.qdrant_index.QdrantIndex`, behind one small interface.

- :class:`ClientStore`: ``qdrant-client``, against a server or cluster (a URL) or its embedded mode (a folder);
- :class:`EdgeStore`: Qdrant Edge (``qdrant-edge-py``), the Rust engine in-process on a folder.

A layout is ``{vector name: (size, multi_vector, hnsw_off)}`` (name ``""``: the unnamed vector); a point is
``(point id, vectors, payload)``; a query request is ``{"query": vector(s), "using": name | None, "prefetch":
(vector, name, limit) | None}``, answered as ``[(doc_id, score), ...]`` best first.
"""

from __future__ import annotations

from pathlib import Path


class ClientStore:
    """One collection through ``qdrant-client`` (embedded folder or server)."""

    def __init__(self, client, collection: str):
        from qdrant_client import models

        self.client, self.collection, self.models = client, collection, models

    @classmethod
    def server(cls, url: str, api_key: str | None, collection: str) -> ClientStore:
        from qdrant_client import QdrantClient

        return cls(QdrantClient(url=url, api_key=api_key), collection)

    @classmethod
    def embedded(cls, path: Path, collection: str) -> ClientStore:
        from qdrant_client import QdrantClient

        return cls(QdrantClient(path=str(path)), collection)

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    def create(self, layout: dict, on_disk: bool = False) -> None:
        models = self.models

        def params(size, multi, hnsw_off):
            return models.VectorParams(
                size=size, distance=models.Distance.DOT, on_disk=on_disk,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM) if multi else None,
                hnsw_config=models.HnswConfigDiff(m=0) if hnsw_off else None,
            )

        config = {name: params(*spec) for name, spec in layout.items()}
        self.client.create_collection(self.collection, vectors_config=config.pop("") if "" in config else config)

    def layout(self) -> dict:
        """``{name: (size, multi_vector)}`` of the collection as the engine describes it."""
        vectors = self.client.get_collection(self.collection).config.params.vectors
        named = vectors if isinstance(vectors, dict) else {"": vectors}
        return {name: (p.size, getattr(p, "multivector_config", None) is not None) for name, p in named.items()}

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def payload_values(self, point_ids: list[str], key: str) -> list:
        found = self.client.retrieve(self.collection, ids=point_ids, with_payload=[key], with_vectors=False)
        return [point.payload.get(key) for point in found]

    def upsert(self, points: list[tuple]) -> None:
        structs = [self.models.PointStruct(id=pid, vector=vectors, payload=payload) for pid, vectors, payload in points]
        self.client.upsert(self.collection, points=structs, wait=True)

    def query_batch(self, requests: list[dict], limit: int) -> list[list[tuple[str, float]]]:
        models = self.models
        batch = []
        for request in requests:
            prefetch = None
            if request["prefetch"] is not None:
                vector, using, size = request["prefetch"]
                prefetch = models.Prefetch(query=vector, using=using, limit=size)
            batch.append(models.QueryRequest(query=request["query"], using=request["using"], prefetch=prefetch,
                                             limit=limit, with_payload=["doc_id"]))
        responses = self.client.query_batch_points(self.collection, requests=batch)
        return [[(point.payload["doc_id"], point.score) for point in response.points] for response in responses]

    def optimize(self) -> None:
        """Nothing to do: the engine indexes as points arrive."""

    def close(self) -> None:
        self.client.close()


class EdgeStore:
    """One Qdrant Edge shard in a folder (created by :meth:`create`, loaded when it exists)."""

    def __init__(self, path: Path):
        import qdrant_edge

        self.edge, self.path = qdrant_edge, Path(path)
        self.shard = qdrant_edge.EdgeShard.load(str(path)) if self.path.is_dir() and any(self.path.iterdir()) else None

    def exists(self) -> bool:
        return self.shard is not None

    def create(self, layout: dict, on_disk: bool = False) -> None:
        edge = self.edge

        def params(size, multi, hnsw_off):
            return edge.EdgeVectorParams(
                size=size, distance=edge.Distance.Dot, on_disk=on_disk or None,
                multivector_config=edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim) if multi else None,
                hnsw_config=edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000) if hnsw_off else None,
            )

        config = {name: params(*spec) for name, spec in layout.items()}
        self.shard = edge.EdgeShard.create(str(self.path), edge.EdgeConfig(vectors=config.pop("") if "" in config else config))

    def layout(self) -> None:
        """Qdrant Edge does not describe a shard's vectors; the manifest's layout is what created it."""
        return None

    def count(self) -> int:
        return self.shard.count(self.edge.CountRequest(exact=True))

    def payload_values(self, point_ids: list[str], key: str) -> list:
        return [record.payload.get(key) for record in self.shard.retrieve(point_ids, [key], False)]

    def upsert(self, points: list[tuple]) -> None:
        edge = self.edge
        self.shard.update(edge.UpdateOperation.upsert_points(
            [edge.Point(id=pid, vector=vectors, payload=payload) for pid, vectors, payload in points]))

    def query_batch(self, requests: list[dict], limit: int) -> list[list[tuple[str, float]]]:
        edge = self.edge
        batch = []
        for request in requests:
            prefetches = None
            if request["prefetch"] is not None:
                vector, using, size = request["prefetch"]
                prefetches = [edge.Prefetch(limit=size, query=edge.Query.Nearest(vector, using=using))]
            batch.append(edge.QueryRequest(limit=limit, query=edge.Query.Nearest(request["query"], using=request["using"]),
                                           prefetches=prefetches, with_payload=["doc_id"]))
        results = self.shard.query_batch(edge.QueryBatchRequest(batch))
        return [[(point.payload["doc_id"], point.score) for point in found] for found in results]

    def optimize(self) -> None:
        """Merge segments and build the HNSW graphs (a new shard searches by full scan until then)."""
        self.shard.optimize()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None
