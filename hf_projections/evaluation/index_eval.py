"""Score a built index (``hf-projections eval --index DIR``): the index's own model encodes the test queries, the
index answers them, and the metrics are those of every other evaluation here."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from hf_projections.data import load_beir
from hf_projections.evaluation.evaluate import load_model, run_from_ranked
from hf_projections.evaluation.metrics import DEFAULT_METRICS, compute_metrics
from hf_projections.retrieval.indexing import open_index, search_texts


def evaluate_index(
    folder: str | os.PathLike,
    data: str | None = None,
    split: str = "test",
    k: int = 100,
    metrics: Iterable[str] = DEFAULT_METRICS,
    batch_size: int = 32,
) -> dict:
    """Metrics of the index in ``folder`` on ``data``'s ``split`` queries (default: the set the index was built from).

    Returns a record as ``evaluate_model`` gives (``model``, ``data``, ``split``, ``metrics``, ``sizes``, ``timings``)
    plus ``index`` (its folder and backend).
    """
    index = open_index(folder)
    try:
        manifest = index.manifest
        name = data or manifest.source
        if not name:
            raise ValueError(f"the index in {folder} does not say which data set it holds: pass --data NAME")
        if not manifest.complete:
            raise ValueError(f"the index in {folder} is not complete ({len(index)} of {manifest.n_documents} "
                             "documents): run the same `hf-projections index` command again to finish it")
        dataset = load_beir(name, split)
        query_ids = list(dataset.qrels)
        queries = [dataset.queries[q] for q in query_ids]
        model = load_model(manifest.model)
        started = time.perf_counter()
        scores, ids = search_texts(model, index, queries, k=k + 1 if dataset.ignore_identical_ids else k,
                                   batch_size=batch_size)
        search_seconds = time.perf_counter() - started
    finally:
        index.close()
    run = run_from_ranked(query_ids, ids, scores.tolist(), k, dataset.ignore_identical_ids)
    return {
        "model": manifest.model,
        "data": name,
        "split": split,
        "index": {"folder": str(folder), "backend": manifest.backend},
        "metrics": compute_metrics(dataset.qrels, run, list(metrics)),
        "sizes": {"documents": manifest.n_documents, "queries": len(query_ids)},
        "timings": {"search_s": search_seconds},  # query encoding included
    }
