"""The ``exact`` index backend: a corpus's vectors in safetensors shards, searched by exact MaxSim (or dot product).

Each build step writes one shard (``shards/<n>.safetensors``: an :class:`EncodedCorpus` with its documents' texts in
the header), atomically, so a build killed part-way keeps every finished shard and resumes with the documents no shard
holds yet. A search loads the shards into one packed corpus and runs :func:`maxsim_topk`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from hf_projections.retrieval.index_manifest import IndexManifest
from hf_projections.retrieval.search import maxsim_topk
from hf_projections.retrieval.store import EncodedCorpus

SHARD_FOLDER = "shards"


class ExactIndex:
    """Exact search over an index folder's shards.

    Args:
        folder: the index folder (its ``index.json`` says ``backend: exact``).
        manifest: that manifest.
    """

    def __init__(self, folder: str | Path, manifest: IndexManifest):
        self.folder = Path(folder)
        self.manifest = manifest
        (self.folder / SHARD_FOLDER).mkdir(parents=True, exist_ok=True)
        self._ids: set[str] | None = None
        self._corpus: EncodedCorpus | None = None
        self._texts: dict[str, str] | None = None

    def _shards(self) -> list[Path]:
        return sorted((self.folder / SHARD_FOLDER).glob("*.safetensors"))

    def _shard_ids(self, path: Path) -> list[str]:
        try:
            with safe_open(str(path), framework="pt") as handle:
                return json.loads(handle.metadata()["ids"])
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"index shard {path} is damaged ({error}); delete it and run the build again") from error

    def ids(self) -> set[str]:
        """Ids of every document in the shards so far."""
        if self._ids is None:
            self._ids = {doc_id for path in self._shards() for doc_id in self._shard_ids(path)}
        return self._ids

    def __len__(self) -> int:
        return len(self.ids())

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ``ids`` not indexed yet, in their order."""
        present = self.ids()
        return [doc_id for doc_id in ids if doc_id not in present]

    def add(self, ids: Sequence[str], embeddings, texts: Sequence[str] | None = None) -> None:
        """Write one shard: ``embeddings`` ``n`` tensors `(tokens_i, dim)` (or `(n, dim)` for a dense model)."""
        if not ids:
            return
        texts = list(texts) if texts is not None else [""] * len(ids)
        shard = EncodedCorpus.from_embeddings(list(ids), embeddings, dtype=torch.float16,
                                              metadata={"texts": json.dumps(texts)})
        if shard.dim != self.manifest.dim:
            raise ValueError(f"vectors of width {shard.dim} for an index of dim {self.manifest.dim}")
        shard.save(self.folder / SHARD_FOLDER / f"{len(self._shards()):06d}.safetensors")
        self.ids().update(shard.ids)
        self._corpus = self._texts = None

    def corpus(self) -> EncodedCorpus:
        """Every shard packed into one corpus (loaded once)."""
        if self._corpus is None:
            shards = [EncodedCorpus.load(path) for path in self._shards()]
            if not shards:
                raise ValueError(f"index {self.folder} holds no documents yet: run the build")
            offsets = [shards[0].offsets]
            for shard in shards[1:]:
                offsets.append(shard.offsets[1:] + offsets[-1][-1])
            self._corpus = EncodedCorpus(
                [doc_id for shard in shards for doc_id in shard.ids],
                torch.cat([shard.embeddings for shard in shards]),
                torch.cat(offsets),
                is_dense=shards[0].is_dense,
            )
            self._texts = {doc_id: text for shard in shards
                           for doc_id, text in zip(shard.ids, json.loads(shard.metadata.get("texts", "[]")))}
        return self._corpus

    def text(self, doc_id: str) -> str:
        self.corpus()
        return self._texts.get(doc_id, "")

    def search(self, queries, k: int = 10) -> tuple[torch.Tensor, list[list[str]]]:
        """Top-``k`` documents per query: ``scores`` `(n_q, k)` and their ids (fewer when the index is smaller)."""
        corpus = self.corpus()
        scores, indices = maxsim_topk(queries, corpus, k=min(k, len(corpus)))
        return scores, [[corpus.ids[i] for i in row if i >= 0] for row in indices.tolist()]

    def finish(self) -> None:
        """Nothing to build: a search reads the shards as they are."""

    def close(self) -> None:
        self._corpus = self._texts = None
