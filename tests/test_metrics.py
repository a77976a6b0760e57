"""Metrics by name via ir_measures: hand-checked values, per-query values, errors, the evaluate module."""

from __future__ import annotations

import math

import ir_measures
import pytest

from hf_projections.evaluation.metrics import compute_metrics, compute_metrics_per_query, load_metric, parse_metric

QRELS = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1, "d9": 0}, "q3": {"d1": 2, "d2": 1}}
RUN = {
    "q1": {"d2": 2.0, "d1": 1.0},  # relevant at rank 2
    "q2": {"d3": 3.0, "d5": 2.0, "d4": 1.0},  # relevant at ranks 1 and 3
    "q3": {"d2": 2.0, "d1": 1.0},  # graded: the better doc second
}
EXPECTED_PER_QUERY = {
    "q1": {"ndcg@10": 1 / math.log2(3), "mrr@10": 0.5, "recall@100": 1.0, "map@100": 0.5, "recall@1": 0.0},
    "q2": {
        "ndcg@10": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)),
        "mrr@10": 1.0,
        "recall@100": 1.0,
        "map@100": (1 + 2 / 3) / 2,
        "recall@1": 0.5,
    },
    # trec_eval nDCG: linear gains (2 and 1)
    "q3": {"ndcg@10": (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)), "mrr@10": 1.0, "recall@100": 1.0, "map@100": 1.0, "recall@1": 0.5},
}
NAMES = ["ndcg@10", "mrr@10", "recall@100", "map@100", "recall@1"]


def test_hand_checked_values():
    per_query = compute_metrics_per_query(QRELS, RUN, NAMES)
    for qid, expected in EXPECTED_PER_QUERY.items():
        for name, value in expected.items():
            assert per_query[qid][name] == pytest.approx(value, abs=1e-9), (qid, name)
    means = compute_metrics(QRELS, RUN, NAMES)
    assert list(means) == NAMES
    for name in NAMES:
        assert means[name] == pytest.approx(sum(EXPECTED_PER_QUERY[q][name] for q in QRELS) / 3, abs=1e-9)


def test_same_as_ir_measures_directly():
    measures = [ir_measures.nDCG @ 10, ir_measures.R @ 100, ir_measures.RR @ 10, ir_measures.AP @ 100]
    direct = ir_measures.calc_aggregate(measures, QRELS, RUN)
    ours = compute_metrics(QRELS, RUN)
    assert ours == pytest.approx({"ndcg@10": direct[measures[0]], "recall@100": direct[measures[1]],
                                  "mrr@10": direct[measures[2]], "map@100": direct[measures[3]]})


def test_query_missing_from_run_counts_as_zero():
    run = {"q1": RUN["q1"]}
    assert compute_metrics(QRELS, run, ["mrr@10"])["mrr@10"] == pytest.approx(0.5 / 3)
    assert compute_metrics_per_query(QRELS, run, ["mrr@10"])["q2"] == {"mrr@10": 0.0}


def test_metric_names():
    assert str(parse_metric("NDCG@10")) == "nDCG@10"
    assert str(parse_metric("map@100")) == "AP@100"
    assert str(parse_metric("success@5")) == "Success@5"
    for bad in ("ndcg", "foo@10", "ndcg@0", "recall@x"):
        with pytest.raises(ValueError, match=r"unknown metric .* allowed: <name>@<k> with name in .*ndcg"):
            compute_metrics(QRELS, RUN, [bad])
    with pytest.raises(ValueError, match="at least one metric"):
        compute_metrics(QRELS, RUN, [])
    with pytest.raises(ValueError, match="qrels must be a non-empty dict"):
        compute_metrics({}, RUN)


def test_evaluate_metric_module_loads_offline_and_agrees():
    metric = load_metric()
    query_ids = list(QRELS)
    predictions = [{"doc_ids": list(RUN[q]), "scores": list(RUN[q].values())} for q in query_ids]
    references = [{"doc_ids": list(QRELS[q]), "relevance": list(QRELS[q].values())} for q in query_ids]
    values = metric.compute(predictions=predictions, references=references, metrics=NAMES)
    assert values == pytest.approx(compute_metrics(QRELS, RUN, NAMES), abs=1e-12)
