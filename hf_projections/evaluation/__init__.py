"""Retrieval metrics and model evaluation on BEIR data (the data itself: ``hf_projections.data``)."""

from hf_projections.data import (
    BeirDataset,
    BeirFormatError,
    holdout_split,
    load_beir,
    load_training_pairs,
    pairs_to_beir,
    resolve_data_dir,
)
from hf_projections.evaluation.evaluate import (
    build_run,
    evaluate_embeddings,
    evaluate_model,
    format_table,
    load_model,
    machine_info,
    run_evaluation,
    write_json,
)
from hf_projections.evaluation.metrics import (
    DEFAULT_METRICS,
    compute_metrics,
    compute_metrics_per_query,
    load_metric,
    parse_metric,
)

__all__ = [
    "DEFAULT_METRICS",
    "BeirDataset",
    "BeirFormatError",
    "build_run",
    "compute_metrics",
    "compute_metrics_per_query",
    "evaluate_embeddings",
    "evaluate_model",
    "format_table",
    "holdout_split",
    "load_beir",
    "load_metric",
    "load_model",
    "load_training_pairs",
    "machine_info",
    "pairs_to_beir",
    "parse_metric",
    "resolve_data_dir",
    "run_evaluation",
    "write_json",
]
