"""Build an index of a corpus with a model (resumable, with a progress bar), open one, and search it with texts.

``build_index`` walks the corpus in chunks; for each it asks the backend which documents it lacks, encodes only
those and adds them, then marks the manifest complete. A build killed at any point resumes with the same call and
ends with every document exactly once.
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from hf_projections.checks import positive_int
from hf_projections.retrieval.exact_index import ExactIndex
from hf_projections.retrieval.index_manifest import BACKENDS, IndexManifest

BACKEND_CLASSES = {"exact": ExactIndex}


def _backend_class(name: str):
    if name in ("qdrant", "muvera"):
        from hf_projections.retrieval.qdrant_index import QdrantIndex

        return QdrantIndex
    if name == "voyager":
        from hf_projections.retrieval.voyager_index import VoyagerIndex

        return VoyagerIndex
    if name not in BACKEND_CLASSES:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return BACKEND_CLASSES[name]


def open_index(folder: str | os.PathLike):
    """The index in ``folder`` (its backend from ``index.json``); a missing or damaged folder raises naming it."""
    manifest = IndexManifest.load(folder)
    return _backend_class(manifest.backend)(folder, manifest)


def _output_layout(model) -> tuple[int, bool]:
    """``(dim, multi_vector)`` of the model's document vectors."""
    return int(model.config.dim), not hasattr(model, "pool")


def build_index(
    model,
    corpus: dict[str, str],
    folder: str | os.PathLike,
    backend: str = "exact",
    model_name: str | None = None,
    source: str = "",
    chunk_size: int = 512,
    batch_size: int = 32,
    options: dict | None = None,
    show_progress_bar: bool | None = None,
):
    """Index ``corpus`` ``{doc_id: text}`` into ``folder`` with ``model``'s document encoder; returns the open index.

    Args:
        backend: ``exact`` (safetensors shards, exact MaxSim), ``qdrant`` (embedded, or a server with
            ``options={"url": ...}``), ``muvera`` (Qdrant with MUVERA candidates re-ranked by MaxSim) or ``voyager``
            (exact's shards plus a token-HNSW graph for candidates, re-ranked by MaxSim).
        model_name: what queries must be encoded with (recorded in ``index.json``; default: the model's
            ``name_or_path``).
        chunk_size: documents per build step (one shard / one batch of upserts; the unit a killed build loses).
    """
    if not isinstance(corpus, dict) or not corpus:
        raise ValueError("corpus must be a non-empty dict {doc_id: text}")
    positive_int("chunk_size", chunk_size)
    folder = Path(folder)
    dim, multi_vector = _output_layout(model)
    if backend in ("muvera", "voyager") and not multi_vector:  # before any file is written
        raise ValueError(f"backend {backend!r} indexes token vectors: it needs a multi-vector (ColBERT) model, not a "
                         "dense one")
    options = dict(options or {})
    if backend in ("qdrant", "muvera") and not options.get("url"):
        from hf_projections.retrieval.qdrant_index import DEFAULT_ENGINE

        options.setdefault("engine", DEFAULT_ENGINE)  # recorded, so a later default never changes a built index
    manifest = IndexManifest(
        backend=backend, model=str(model_name or getattr(model, "name_or_path", "")), dim=dim,
        multi_vector=multi_vector, n_documents=len(corpus), source=source, options=options,
    )
    if (folder / "index.json").exists():
        previous = IndexManifest.load(folder)
        previous.check_same_build(manifest, folder)
        manifest.options = {**manifest.options, **previous.options}
    folder.mkdir(parents=True, exist_ok=True)
    manifest.save(folder)
    index = _backend_class(backend)(folder, manifest)
    try:
        _add_missing(index, model, corpus, chunk_size, batch_size, show_progress_bar, backend)
        index.finish()
    except BaseException:
        index.close()  # flush what was written: the next run resumes from there
        raise
    manifest.complete = True
    manifest.save(folder)
    index.manifest = manifest
    return index


def _add_missing(index, model, corpus: dict[str, str], chunk_size: int, batch_size: int, show_progress_bar, backend):
    """Encode and add, chunk by chunk, the documents the index lacks."""
    ids = list(corpus)
    if show_progress_bar is None:
        show_progress_bar = len(ids) > chunk_size
    with tqdm(total=len(ids), disable=not show_progress_bar, desc=f"Indexing ({backend})") as progress:
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start : start + chunk_size]
            todo = index.missing(chunk)
            if todo:
                texts = [corpus[doc_id] for doc_id in todo]
                index.add(todo, model.encode_documents(texts, batch_size=batch_size, show_progress_bar=False), texts)
            progress.update(len(chunk))


def search_texts(model, index, queries: list[str], k: int = 10, batch_size: int = 32, **search_options):
    """Encode ``queries`` with ``model`` and search ``index``: ``(scores (n_q, k), doc ids per query)``;
    ``search_options`` go to the backend (``candidates`` for ``muvera``, ``k_tokens`` for ``voyager``)."""
    positive_int("k", k)
    encoded = model.encode_queries(queries, batch_size=batch_size, show_progress_bar=False)
    return index.search(encoded, k=k, **search_options)
