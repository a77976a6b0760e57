"""Retrieval metrics by name, computed by ``ir_measures`` (never by hand).

Readable names map to ``ir_measures`` measures: ``ndcg@10`` -> ``nDCG@10``, ``recall@100`` -> ``R@100``,
``mrr@10`` -> ``RR@10``, ``map@100`` -> ``AP@100``, ``precision@10`` -> ``P@10``, ``success@1`` ->
``Success@1``. Every query of ``qrels`` is scored: a query missing from the run counts as 0 (ir_measures'
default), so pass one (possibly empty) ranking per judged query.
"""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Iterable, Mapping

import ir_measures

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")

# readable name (lower case) -> ir_measures measure name
_MEASURE_NAMES = {
    "ndcg": "nDCG",
    "recall": "R",
    "mrr": "RR",
    "rr": "RR",
    "map": "AP",
    "ap": "AP",
    "precision": "P",
    "p": "P",
    "success": "Success",
    "hit": "Success",
}
_PATTERN = re.compile(r"^([a-z]+)@([1-9][0-9]*)$")

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def allowed_metrics() -> str:
    return "<name>@<k> with name in " + ", ".join(sorted(_MEASURE_NAMES)) + " (e.g. ndcg@10, recall@100)"


def parse_metric(name: str):
    """Readable metric name (``"ndcg@10"``) -> ``ir_measures`` measure (``nDCG@10``)."""
    if not isinstance(name, str):
        raise TypeError(f"metric names must be strings, got {type(name).__name__}")
    match = _PATTERN.match(name.strip().lower())
    if match is None or match.group(1) not in _MEASURE_NAMES:
        raise ValueError(f"unknown metric {name!r}; allowed: {allowed_metrics()}")
    return ir_measures.parse_measure(f"{_MEASURE_NAMES[match.group(1)]}@{match.group(2)}")


def _measures(metrics: Iterable[str]) -> dict[str, object]:
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(dict.fromkeys(metrics))
    if not names:
        raise ValueError(f"metrics must name at least one metric; allowed: {allowed_metrics()}")
    return {name: parse_metric(name) for name in names}


def _check_inputs(qrels: Qrels, run: Run) -> tuple[dict, dict]:
    if not isinstance(qrels, Mapping) or not qrels:
        raise ValueError("qrels must be a non-empty dict {query_id: {doc_id: relevance}}")
    if not isinstance(run, Mapping):
        raise TypeError(f"run must be a dict {{query_id: {{doc_id: score}}}}, got {type(run).__name__}")
    clean_qrels = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    clean_run = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items()}
    return clean_qrels, clean_run


def compute_metrics(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean of each metric over the judged queries.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}`` (relevance <= 0 = not relevant).
        run: ``{query_id: {doc_id: score}}``, higher score = better rank.
        metrics: readable names, e.g. ``("ndcg@10", "recall@100", "mrr@10", "map@100")``.

    Returns:
        ``{name: value}`` in the order asked.
    """
    measures = _measures(metrics)
    clean_qrels, clean_run = _check_inputs(qrels, run)
    values = ir_measures.calc_aggregate(list(measures.values()), clean_qrels, clean_run)
    return {name: float(values.get(measure, 0.0)) for name, measure in measures.items()}


def compute_metrics_per_query(
    qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT_METRICS
) -> dict[str, dict[str, float]]:
    """``{query_id: {name: value}}`` for every judged query (0 where the run has nothing for it)."""
    measures = _measures(metrics)
    clean_qrels, clean_run = _check_inputs(qrels, run)
    by_measure = {measure: name for name, measure in measures.items()}
    results = {qid: {name: 0.0 for name in measures} for qid in clean_qrels}
    for metric in ir_measures.iter_calc(list(measures.values()), clean_qrels, clean_run):
        if metric.query_id in results:
            results[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    return results


METRIC_SCRIPT = str(Path(__file__).with_name("metric") / "retrieval_metrics.py")


def load_metric(**kwargs):
    """The ``evaluate`` metric shipped with this package, loaded offline from its file.

    ``load_metric().compute(predictions=[{"doc_ids", "scores"}...], references=[{"doc_ids", "relevance"}...],
    metrics=["ndcg@10"])`` gives the same numbers as ``compute_metrics``.
    """
    import evaluate

    return evaluate.load(METRIC_SCRIPT, **kwargs)
