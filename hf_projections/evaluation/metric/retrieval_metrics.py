"""``evaluate`` metric: ranking metrics (nDCG@k, Recall@k, MRR@k, MAP@k, ...) via hf_projections + ir_measures.

Load it offline with ``hf_projections.evaluation.load_metric()`` (``evaluate.load`` on this file).
Each example is one query::

    metric.compute(
        predictions=[{"doc_ids": ["d3", "d1"], "scores": [0.9, 0.4]}],   # the ranking of query 0
        references=[{"doc_ids": ["d1"], "relevance": [1]}],              # its judgments
        metrics=["ndcg@10", "recall@100"],                               # optional
    )
"""

import datasets
import evaluate

from hf_projections.evaluation.metrics import DEFAULT_METRICS, compute_metrics

_CITATION = """\
@inproceedings{macavaney2022irmeasures,
  title={Streamlining Evaluation with ir-measures},
  author={MacAvaney, Sean and Macdonald, Craig and Ounis, Iadh},
  booktitle={ECIR},
  year={2022}
}
"""

_DESCRIPTION = "Ranking metrics for retrieval runs (nDCG, Recall, MRR, MAP, P, Success at a cutoff), computed by ir_measures."

_KWARGS_DESCRIPTION = """
Args:
    predictions: one dict per query: {"doc_ids": list[str], "scores": list[float]} (higher = better).
    references: one dict per query: {"doc_ids": list[str], "relevance": list[int]}.
    metrics: readable metric names, default ("ndcg@10", "recall@100", "mrr@10", "map@100").
Returns:
    dict {metric name: mean over queries}.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "doc_ids": datasets.Sequence(datasets.Value("string")),
                        "scores": datasets.Sequence(datasets.Value("float64")),
                    },
                    "references": {
                        "doc_ids": datasets.Sequence(datasets.Value("string")),
                        "relevance": datasets.Sequence(datasets.Value("int64")),
                    },
                }
            ),
            reference_urls=["https://ir-measur.es/"],
        )

    def _compute(self, predictions, references, metrics=DEFAULT_METRICS):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
        run, qrels = {}, {}
        for index, (ranking, judged) in enumerate(zip(predictions, references)):
            if len(ranking["doc_ids"]) != len(ranking["scores"]):
                raise ValueError(f"predictions[{index}]: doc_ids and scores differ in length")
            if len(judged["doc_ids"]) != len(judged["relevance"]):
                raise ValueError(f"references[{index}]: doc_ids and relevance differ in length")
            query_id = str(index)
            run[query_id] = dict(zip(ranking["doc_ids"], ranking["scores"]))
            qrels[query_id] = dict(zip(judged["doc_ids"], judged["relevance"]))
        return compute_metrics(qrels, run, metrics)
