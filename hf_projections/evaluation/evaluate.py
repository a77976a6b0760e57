"""Score a model on BEIR data: encode, exact search, ir_measures metrics, tables and JSON reports.

``evaluate_model`` is the whole pipeline; ``evaluate_embeddings`` is its lower half (search + metrics) so
an independent check can feed a model's outputs straight in.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from hf_projections.data import BeirDataset, load_beir
from hf_projections.atomic import atomic_write_json
from hf_projections.evaluation.metrics import DEFAULT_METRICS, compute_metrics, parse_metric
from hf_projections.retrieval.search import maxsim_topk
from hf_projections.retrieval.store import EncodedCorpus, encode_corpus, model_fingerprint


def build_run(
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    scores: torch.Tensor,
    indices: torch.Tensor,
    k: int,
    ignore_identical_ids: bool = False,
) -> dict[str, dict[str, float]]:
    """Top-k search output -> run ``{query_id: {doc_id: score}}`` with at most ``k`` hits per query.

    Args:
        scores, indices: ``(n_q, k')`` from ``maxsim_topk`` (index -1 = no hit).
        ignore_identical_ids: drop a hit whose doc id equals the query id (search ``k + 1`` for this).
    """
    ranked = []
    for row_indices in indices.tolist():
        hits = []
        for index in row_indices:
            if index < 0:
                break
            hits.append(doc_ids[index])
        ranked.append(hits)
    return run_from_ranked(query_ids, ranked, scores.tolist(), k, ignore_identical_ids)


def run_from_ranked(
    query_ids: Sequence[str],
    ranked_ids: Sequence[Sequence[str]],
    ranked_scores: Sequence[Sequence[float]],
    k: int,
    ignore_identical_ids: bool = False,
) -> dict[str, dict[str, float]]:
    """Ranked hits per query (doc ids best first, and their scores) -> run ``{query_id: {doc_id: score}}`` with at
    most ``k`` hits per query; ``ignore_identical_ids`` drops a hit whose doc id equals the query id."""
    run: dict[str, dict[str, float]] = {}
    for query_id, row_ids, row_scores in zip(query_ids, ranked_ids, ranked_scores):
        hits: dict[str, float] = {}
        for doc_id, score in zip(row_ids, row_scores):
            if ignore_identical_ids and doc_id == query_id:
                continue
            hits[doc_id] = score
            if len(hits) == k:
                break
        run[query_id] = hits
    return run


def evaluate_embeddings(
    query_embeddings: Sequence[torch.Tensor] | torch.Tensor,
    doc_embeddings: Sequence[torch.Tensor] | torch.Tensor | EncodedCorpus,
    qrels: Mapping[str, Mapping[str, int]],
    query_ids: Sequence[str],
    doc_ids: Sequence[str] | None = None,
    k: int = 100,
    metrics: Iterable[str] = DEFAULT_METRICS,
    ignore_identical_ids: bool = False,
    return_run: bool = False,
    **search_kwargs,
) -> dict:
    """Exact search of ready-made embeddings + metrics.

    Args:
        query_embeddings: ``n_q`` tensors ``(tokens_i, dim)`` or a dense ``(n_q, dim)`` tensor.
        doc_embeddings: ``n_d`` tensors ``(tokens_j, dim)``, a dense ``(n_d, dim)`` tensor or an
            ``EncodedCorpus`` (whose ids are used when ``doc_ids`` is None).
        qrels: ``{query_id: {doc_id: relevance}}``.
        query_ids / doc_ids: ids in the order of the embeddings.
        k: hits kept per query (the run depth; set it >= the largest metric cutoff).
        ignore_identical_ids: never count a query's own id among its hits (ArguAna): ``k + 1`` are
            retrieved and the identical one dropped, so ``k`` remain.
        **search_kwargs: passed to ``maxsim_topk`` (``chunk_size``, ``compute_dtype``, ``device``...).

    Returns:
        ``{"metrics": {...}, "timings": {"search_s": ...}, "k": k}`` (+ ``"run"`` when ``return_run``).
    """
    if doc_ids is None:
        if not isinstance(doc_embeddings, EncodedCorpus):
            raise ValueError("doc_ids is required unless doc_embeddings is an EncodedCorpus")
        doc_ids = doc_embeddings.ids
    doc_ids = [str(doc_id) for doc_id in doc_ids]
    query_ids = [str(query_id) for query_id in query_ids]
    n_docs = len(doc_embeddings) if not isinstance(doc_embeddings, torch.Tensor) else doc_embeddings.shape[0]
    n_queries = len(query_embeddings) if not isinstance(query_embeddings, torch.Tensor) else query_embeddings.shape[0]
    if len(doc_ids) != n_docs:
        raise ValueError(f"{len(doc_ids)} doc_ids for {n_docs} document embeddings")
    if len(query_ids) != n_queries:
        raise ValueError(f"{len(query_ids)} query_ids for {n_queries} query embeddings")
    metric_names = list(dict.fromkeys([metrics] if isinstance(metrics, str) else metrics))
    for name in metric_names:
        parse_metric(name)  # fail before the slow search
    deepest = max(parse_metric(name).params.get("cutoff") or 0 for name in metric_names)
    if k < deepest:
        raise ValueError(f"k={k} is smaller than the deepest metric cutoff {deepest} ({metric_names})")

    started = time.perf_counter()
    scores, indices = maxsim_topk(
        query_embeddings, doc_embeddings, k=k + 1 if ignore_identical_ids else k, **search_kwargs
    )
    search_seconds = time.perf_counter() - started
    run = build_run(query_ids, doc_ids, scores, indices, k, ignore_identical_ids)
    result = {
        "metrics": compute_metrics(qrels, run, metric_names),
        "timings": {"search_s": search_seconds},
        "k": k,
    }
    if return_run:
        result["run"] = run
    return result


def model_name(model) -> str:
    """A readable name of a model: its ``name_or_path``, else its class and backbone."""
    config = getattr(model, "config", None)
    name = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)
    if name:
        return str(name)
    backbone = getattr(config, "backbone_name", None)  # a model built with from_backbone, not saved yet
    return f"{type(model).__name__}({backbone})" if backbone else type(model).__name__


def _doc_token_count(corpus: EncodedCorpus) -> int:
    return int(corpus.embeddings.shape[0])


def evaluate_model(
    model,
    dataset: BeirDataset | str,
    split: str = "test",
    k: int = 100,
    batch_size: int = 32,
    metrics: Iterable[str] = DEFAULT_METRICS,
    corpus_cache_dir: str | os.PathLike | None = None,
    show_progress_bar: bool | None = None,
    return_run: bool = False,
    encode_kwargs: dict | None = None,
    **search_kwargs,
) -> dict:
    """Encode a BEIR split with ``model`` and score exact top-``k`` retrieval.

    Args:
        model: any object with ``encode_queries(texts, batch_size, show_progress_bar)`` and
            ``encode_documents(...)`` returning lists of ``(tokens_i, dim)`` tensors (multi-vector) or
            ``(n, dim)`` tensors (dense), e.g. ``ColBERTModel`` / ``DenseEmbeddingModel``.
        dataset: a ``BeirDataset`` or a data set name for ``load_beir(name, split)``.
        corpus_cache_dir: reuse document embeddings across runs (keyed by model + corpus fingerprints).
        encode_kwargs: extra arguments for both encode calls (e.g. ``{"truncate_dim": 64}``).
        **search_kwargs: passed to ``maxsim_topk``.

    Returns:
        ``{"model", "data", "split", "metrics", "timings" (encode_documents_s, encode_queries_s, search_s,
        total_s, corpus_cache_hit), "sizes" (documents, queries, judgments, document_tokens, dim, ...), "k",
        "ignore_identical_ids"}`` (+ ``"run"`` when ``return_run``).
    """
    started = time.perf_counter()
    if isinstance(dataset, str):
        dataset = load_beir(dataset, split)
    elif not isinstance(dataset, BeirDataset):
        raise TypeError(f"dataset must be a BeirDataset or a data set name, got {type(dataset).__name__}")
    encode_kwargs = dict(encode_kwargs or {})

    cache_path = None
    if corpus_cache_dir is not None:
        key = model_fingerprint(model)[:16]
        suffix = "-".join(f"{name}{value}" for name, value in sorted(encode_kwargs.items()))
        cache_path = Path(corpus_cache_dir) / f"{dataset.name}-{key}{'-' + suffix if suffix else ''}.safetensors"
    tick = time.perf_counter()
    corpus = encode_corpus(
        model, dataset.corpus, batch_size=batch_size, cache_path=cache_path,
        show_progress_bar=show_progress_bar, **encode_kwargs,
    )
    encode_documents_seconds = time.perf_counter() - tick
    cache_hit = corpus.loaded_from is not None

    query_ids = list(dataset.queries)
    tick = time.perf_counter()
    query_embeddings = model.encode_queries(
        [dataset.queries[qid] for qid in query_ids], batch_size=batch_size,
        show_progress_bar=show_progress_bar, **encode_kwargs,
    )
    encode_queries_seconds = time.perf_counter() - tick

    result = evaluate_embeddings(
        query_embeddings, corpus, dataset.qrels, query_ids, k=k, metrics=metrics,
        ignore_identical_ids=dataset.ignore_identical_ids, return_run=return_run, **search_kwargs,
    )
    query_tokens = (
        query_embeddings.shape[0] if isinstance(query_embeddings, torch.Tensor) else sum(q.shape[0] for q in query_embeddings)
    )
    return {
        "model": model_name(model),
        "data": dataset.name,
        "split": dataset.split,
        "metrics": result["metrics"],
        "timings": {
            "encode_documents_s": encode_documents_seconds,
            "encode_queries_s": encode_queries_seconds,
            "search_s": result["timings"]["search_s"],
            "total_s": time.perf_counter() - started,
            "corpus_cache_hit": bool(cache_hit),
        },
        "sizes": {
            "documents": len(corpus),
            "queries": len(query_ids),
            "judgments": sum(len(judged) for judged in dataset.qrels.values()),
            "document_tokens": _doc_token_count(corpus),
            "mean_document_tokens": _doc_token_count(corpus) / max(1, len(corpus)),
            "query_tokens": int(query_tokens),
            "dim": corpus.dim,
            "multi_vector": not corpus.is_dense,
            "index_bytes": corpus.embeddings.numel() * corpus.embeddings.element_size(),
        },
        "k": k,
        "ignore_identical_ids": dataset.ignore_identical_ids,
        **({"run": result["run"]} if return_run else {}),
    }


# --------------------------------------------------------------------------- reports


def machine_info() -> dict:
    """Where a result was measured: platform, CPUs, torch version and threads, GPU name if any."""
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cpus = os.cpu_count()
    from hf_projections.version import __version__

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "hf_projections": __version__,
    }


def _as_list(results) -> list[dict]:
    return [results] if isinstance(results, Mapping) else list(results)


def format_table(results: dict | Sequence[dict], digits: int = 4) -> str:
    """Markdown table, one row per (model, data set): metrics, sizes and timings."""
    results = _as_list(results)
    if not results:
        return "(no results)"
    metric_names = list(dict.fromkeys(name for result in results for name in result["metrics"]))
    header = ["model", "data", "split", *metric_names, "docs", "queries", "encode s", "search s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " if i < 3 else " ---: " for i in range(len(header))) + "|"]
    for result in results:
        timings, sizes = result.get("timings", {}), result.get("sizes", {})
        encode = timings.get("encode_documents_s", 0.0) + timings.get("encode_queries_s", 0.0)
        cells = [
            str(result.get("model", "")),
            str(result.get("data", "")),
            str(result.get("split", "")),
            *(f"{result['metrics'][name]:.{digits}f}" if name in result["metrics"] else "" for name in metric_names),
            str(sizes.get("documents", "")),
            str(sizes.get("queries", "")),
            f"{encode:.1f}",
            f"{timings.get('search_s', 0.0):.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str | os.PathLike, results: dict | Sequence[dict], **extra) -> Path:
    """Write results with machine info and a timestamp as JSON, atomically (temp file + ``os.replace``).

    Runs (``"run"`` keys) are left out to keep the report small.
    """
    payload = {
        "results": [{key: value for key, value in result.items() if key != "run"} for result in _as_list(results)],
        "machine": machine_info(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    return atomic_write_json(path, payload)


# --------------------------------------------------------------------------- CLI entry


def load_model(model_path: str | os.PathLike):
    """Load a saved hf-projections model (ColBERT or dense) from a folder or Hub id.

    Raises ``FileNotFoundError`` when there is no such folder (or the Hub cannot give it) and ``ValueError`` when the
    folder holds another kind of model (a plain encoder, say), each naming the path and what is expected.
    """
    from transformers import AutoModel

    from hf_projections.modeling import ProjectionPreTrainedModel
    from hf_projections.modeling.sources import load_model_config

    name = os.fspath(model_path)
    expected = "a model saved by hf-projections (save_pretrained, or the folder of `hf-projections train --output`)"
    config = load_model_config(name, expected)
    if not config.model_type.startswith("hf_projections"):
        raise ValueError(
            f"{name!r} holds a {config.model_type!r} model, not an hf-projections one: expected {expected}; to turn an "
            f"encoder into one, train a head on it first (hf-projections train --backbone {name} --data NAME --output DIR)"
        )
    model = AutoModel.from_pretrained(name)
    if not isinstance(model, ProjectionPreTrainedModel):
        raise ValueError(f"{name!r} loaded as {type(model).__name__}: expected {expected}")
    return model


def run_evaluation(
    model,
    data: str | Sequence[str],
    split: str = "test",
    k: int = 100,
    batch_size: int = 32,
    metrics: Iterable[str] = DEFAULT_METRICS,
    json_path: str | os.PathLike | None = None,
    corpus_cache_dir: str | os.PathLike | None = None,
    show_progress_bar: bool | None = None,
    device: str | None = None,
) -> list[dict]:
    """What ``hf-projections eval`` does: evaluate one model on several data sets, optionally write JSON.

    Args:
        model: a loaded model or a folder / Hub name for ``load_model``.
        data: data set names, a list or a comma-separated string (``"scifact,arguana"``).
        json_path: when given, ``write_json`` the results there.
        device: move the model there first (``"cuda"``); search runs where the corpus lives (CPU).
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if device is not None:
        model.to(device)
    names = [name.strip() for name in (data.split(",") if isinstance(data, str) else data) if name.strip()]
    if not names:
        raise ValueError("data must name at least one data set, e.g. 'scifact,arguana'")
    metrics = list(metrics)
    results = [
        evaluate_model(
            model, load_beir(name, split), split=split, k=k, batch_size=batch_size, metrics=metrics,
            corpus_cache_dir=corpus_cache_dir, show_progress_bar=show_progress_bar,
        )
        for name in names
    ]
    if json_path is not None:
        write_json(json_path, results, model=model_name(model), data=names, split=split)
    return results
