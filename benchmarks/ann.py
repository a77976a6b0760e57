"""Approximate multi-vector search (HNSW over token vectors + exact MaxSim re-rank), with and without token
pooling: recall@k against exact search, queries/s, and index bytes per document.

The corpus and test queries of a BEIR set (default SciFact) are encoded once with a ``ColBERTModel`` (default:
all-MiniLM-L6-v2 with a fresh seeded ``linear`` head, or ``--model`` for a trained checkpoint) and the
encoding is cached on disk (``--cache-dir``), so later runs skip it. Then:

- exact: ``maxsim_topk`` over the full token set (the reference top-k);
- ``ann``: ``TokenHNSWIndex`` over every token vector (Voyager HNSW), candidates re-ranked exactly;
- ``ann+pool2``: the same over the corpus after hierarchical token pooling (``pool_factor=2``); its recall is
  measured against the exact search of the unpooled corpus (the end-to-end loss), and ``pooled exact`` shows
  the part due to pooling alone.

Search timings are interleaved rounds (medians); index builds are timed once. Index bytes are
``len(index.as_bytes())`` (the HNSW graph plus Voyager's float32 copy of the vectors); the re-rank also
reads the packed corpus (``vector bytes``).

    python benchmarks/ann.py                  # full SciFact (first run encodes it: several minutes)
    python benchmarks/ann.py --max-docs 2000  # a prefix of the corpus
    python benchmarks/ann.py --quick
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from hf_projections.training.arguments import default_backbone  # noqa: E402

NAME = "ann"


def parse_args(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="scifact", help="BEIR set (its test queries are used)")
    parser.add_argument("--model", default=None,
                        help="a saved ColBERTModel folder or a sweep run folder (<sweep>/runs/<head>/seed<k>); "
                             "default: backbone + an untrained seeded linear head")
    parser.add_argument("--max-docs", type=int, default=None, help="use the first N documents only")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--k-tokens", type=int, default=32, help="HNSW neighbours per query token")
    parser.add_argument("--ef", type=int, default=None, help="HNSW query ef (default: Voyager's)")
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--pool-factor", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "hf_projections" / "benchmarks")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_docs, args.max_queries, args.k, args.k_tokens, args.rounds = 60, 5, 10, 8, 1
        args.ef_construction = 40
    return args


def encoded_data(args):
    """``(model_name, EncodedCorpus, query embeddings, data info)``, the corpus from the on-disk cache if present."""
    import torch

    from hf_projections import ColBERTModel
    from hf_projections.evaluation import load_beir
    from hf_projections.retrieval import encode_corpus

    dataset = load_beir(args.corpus, split="test")
    doc_ids = list(dataset.corpus)[: args.max_docs] if args.max_docs else list(dataset.corpus)
    corpus = {doc_id: dataset.corpus[doc_id] for doc_id in doc_ids}
    query_ids = list(dataset.queries)[: args.max_queries] if args.max_queries else list(dataset.queries)
    if args.model and (Path(args.model) / "head").is_dir():
        from hf_projections.sweep import load_sweep_run

        model, name = load_sweep_run(args.model), f"sweep run {args.model}"
    elif args.model:
        model, name = ColBERTModel.from_pretrained(args.model), args.model
    else:
        backbone = args.backbone or default_backbone()
        torch.manual_seed(0)
        model, name = ColBERTModel.from_backbone(backbone, projection="linear", dim=128), f"{backbone} + linear (seed 0)"
    model.eval()
    tag = hashlib.sha256(f"{name}|{args.corpus}|{len(doc_ids)}".encode()).hexdigest()[:16]
    started = time.perf_counter()
    encoded = encode_corpus(model, corpus, batch_size=32, cache_path=args.cache_dir / f"{args.corpus}-{tag}.safetensors")
    corpus_seconds = time.perf_counter() - started
    queries = model.encode_queries([dataset.queries[q] for q in query_ids], batch_size=64)
    info = {"corpus": args.corpus, "documents": len(encoded), "queries": len(queries),
            "full_corpus_documents": len(dataset.corpus), "prefix_only": len(doc_ids) < len(dataset.corpus),
            "doc_tokens_total": int(encoded.embeddings.shape[0]), "encode_or_load_corpus_s": corpus_seconds,
            "corpus_from_cache": encoded.loaded_from is not None}
    judged = {"qrels": {q: dataset.qrels[q] for q in query_ids if q in dataset.qrels}, "query_ids": query_ids,
              "doc_ids": doc_ids, "ignore_identical_ids": dataset.ignore_identical_ids}
    return name, encoded, queries, info, judged


def run(args) -> dict:
    import torch

    from hf_projections.retrieval import maxsim_topk
    from hf_projections.retrieval.ann import TokenHNSWIndex, recall_against_exact
    from hf_projections.retrieval.token_pooling import pool_corpus

    notes = common.setup(args)
    common.quiet_transformers()
    model_name, corpus, queries, data, judged = encoded_data(args)
    # Encoding is done: measure with the machine as quiet as at the start.
    if not (args.quick or args.no_wait):
        notes["waited_after_encoding_s"] = round(common.wait_for_quiet_machine(max_wait_s=args.max_wait), 1)

    started = time.perf_counter()
    pooled = pool_corpus(corpus, pool_factor=args.pool_factor)
    pool_seconds = time.perf_counter() - started
    index_options = {"M": args.M, "ef_construction": args.ef_construction}
    indexes, build_seconds = {}, {}
    for name, source in (("ann", corpus), (f"ann+pool{args.pool_factor:g}", pooled)):
        started = time.perf_counter()
        indexes[name] = TokenHNSWIndex(source, **index_options)
        build_seconds[name] = time.perf_counter() - started

    outputs: dict[str, tuple] = {}
    candidates = {"exact": lambda: maxsim_topk(queries, corpus, k=args.k),
                  "pooled exact": lambda: maxsim_topk(queries, pooled, k=args.k)}
    for name, index in indexes.items():
        candidates[name] = lambda index=index: index.search(queries, k=args.k, k_tokens=args.k_tokens, ef=args.ef)
    timings = common.interleaved_timings(
        candidates, args.rounds, warmup=0,
        on_result=lambda name, r, value: outputs.setdefault(name, value) if r == 0 else None,
    )
    exact_indices = outputs["exact"][1]
    rows = []
    for name in candidates:
        source = pooled if name in ("pooled exact",) or name.startswith("ann+pool") else corpus
        row = {
            "method": name,
            "recall_at_k_vs_exact": recall_against_exact(outputs[name][1], exact_indices),
            "queries_per_second": len(queries) / common.median(timings[name]),
            "search_s": common.spread(timings[name]),
            "token_vectors": int(source.embeddings.shape[0]),
            "vectors_per_document": source.embeddings.shape[0] / len(source),
            "vector_bytes_per_document": source.embeddings.numel() * source.embeddings.element_size() / len(source),
            "ndcg@10": ndcg_at_10(outputs[name], judged),
        }
        if name in indexes:
            index = indexes[name]
            row["index_bytes_per_document"] = len(index.index.as_bytes()) / len(source)
            row["build_s"] = build_seconds[name]
            row["mean_candidates"] = float(torch.tensor(
                [index.candidates(q, k_tokens=args.k_tokens, ef=args.ef).numel() for q in queries],
                dtype=torch.float64).mean())
        rows.append(row)
    exact_qps = next(row["queries_per_second"] for row in rows if row["method"] == "exact")
    for row in rows:
        row["speedup_vs_exact"] = row["queries_per_second"] / exact_qps
    return {
        "description": "HNSW token index + exact re-rank vs exact MaxSim, with and without token pooling",
        "model": model_name,
        "data": data,
        "sizes": {"k": args.k, "k_tokens": args.k_tokens, "ef": args.ef, "M": args.M,
                  "ef_construction": args.ef_construction, "pool_factor": args.pool_factor, "rounds": args.rounds,
                  "torch_threads": torch.get_num_threads()},
        "pool_seconds": pool_seconds,
        "quick": args.quick,
        "notes": notes,
        "rows": rows,
        "summary": {row["method"]: {"recall": round(row["recall_at_k_vs_exact"], 4), "ndcg@10": round(row["ndcg@10"], 4),
                                    "qps": round(row["queries_per_second"], 1)} for row in rows},
    }


def ndcg_at_10(output, judged: dict) -> float:
    """NDCG@10 (ir-measures) of one method's ``(scores, indices)`` top-k on the judged test queries."""
    from hf_projections.evaluation.evaluate import build_run
    from hf_projections.evaluation.metrics import compute_metrics

    scores, indices = output
    run = build_run(judged["query_ids"], judged["doc_ids"], scores, indices, k=10,
                    ignore_identical_ids=judged["ignore_identical_ids"])
    return compute_metrics(judged["qrels"], run, ["ndcg@10"])["ndcg@10"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(f"{'method':<14} {'recall@k':>9} {'NDCG@10':>8} {'q/s':>8} {'x exact':>8} {'vectors/doc':>12} {'index B/doc':>12}")
    for row in result["rows"]:
        index_bytes = row.get("index_bytes_per_document")
        print(f"{row['method']:<14} {row['recall_at_k_vs_exact']:>9.4f} {row['ndcg@10']:>8.4f} {row['queries_per_second']:>8.1f} "
              f"{row['speedup_vs_exact']:>8.2f} {row['vectors_per_document']:>12.1f} "
              f"{(f'{index_bytes:,.0f}' if index_bytes else '-'):>12}")
    common.write_section(NAME, result, args.output)
    return result


if __name__ == "__main__":
    main()
