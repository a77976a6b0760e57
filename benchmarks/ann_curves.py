"""Approximate paths against exact MaxSim as the candidate budget grows: recall@k of the exact top-k, queries/s and
NDCG@10, for Voyager token-HNSW (``k_tokens`` neighbours per query token), MUVERA in Qdrant (``candidates`` documents
fetched by fixed dimensional encoding, re-ranked by MaxSim) and Qdrant's own multi-vector search, each Qdrant path on
both embedded engines (Qdrant Edge, in-process Rust, and qdrant-client's embedded mode, pure Python).

The corpus and test queries are encoded once (``ann.encoded_data``: cached on disk); every index is built from those
vectors, so all paths search the same embeddings. Target (issue 17): recall@100 >= 0.95 at a speed above exact.

    python benchmarks/ann_curves.py --corpus scifact --model <sweep>/runs/linear/seed0
    python benchmarks/ann_curves.py --quick
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import ann, common  # noqa: E402

NAME = "ann_curves"
TARGET_RECALL = 0.95


def parse_args(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="scifact", help="BEIR set (its test queries are used)")
    parser.add_argument("--model", default=None, help="a saved ColBERTModel folder or a sweep run folder")
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--k-tokens", default="8,16,32,64,128", help="Voyager: neighbours per query token")
    parser.add_argument("--candidates", default="100,200,500,1000,2000", help="MUVERA: documents re-ranked")
    parser.add_argument("--paths", default="voyager,muvera,qdrant,muvera-local,qdrant-local",
                        help="voyager; muvera / qdrant on Qdrant Edge; muvera-local / qdrant-local on qdrant-client's "
                        "embedded mode")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "hf_projections" / "benchmarks")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_docs, args.max_queries, args.k, args.k_tokens, args.candidates = 60, 5, 10, "4,16", "10,40"
    return args


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _qdrant_index(path: str, corpus, folder: Path):
    """An embedded Qdrant (or MUVERA) index of ``corpus`` (already encoded) in ``folder``, on Qdrant Edge or, for a
    ``-local`` path, qdrant-client's embedded mode; returns ``(index, build seconds)``."""
    from hf_projections.retrieval.index_manifest import IndexManifest
    from hf_projections.retrieval.qdrant_index import QdrantIndex

    backend, _, engine = path.partition("-")
    manifest = IndexManifest(backend=backend, model="(benchmark)", dim=corpus.dim, multi_vector=True,
                             n_documents=len(corpus), options={"engine": engine or "edge"})
    started = time.perf_counter()
    index = QdrantIndex(folder, manifest)
    for start in range(0, len(corpus), 256):
        ids = corpus.ids[start : start + 256]
        index.add(ids, [corpus[i].float() for i in range(start, start + len(ids))])
    index.finish()
    return index, time.perf_counter() - started


def _timed(search, n_queries: int):
    started = time.perf_counter()
    output = search()
    seconds = time.perf_counter() - started
    return output, n_queries / seconds if seconds else float("inf")


def run(args) -> dict:
    import torch

    from hf_projections.retrieval import maxsim_topk
    from hf_projections.retrieval.ann import TokenHNSWIndex, recall_against_exact

    notes = common.setup(args)
    common.quiet_transformers()
    model_name, corpus, queries, data, judged = ann.encoded_data(args)
    position = {doc_id: i for i, doc_id in enumerate(corpus.ids)}

    def as_indices(ids: list[list[str]]) -> torch.Tensor:
        rows = [[position[d] for d in row] + [-1] * (args.k - len(row)) for row in ids]
        return torch.tensor(rows, dtype=torch.int64)

    (exact_scores, exact_indices), exact_qps = _timed(lambda: maxsim_topk(queries, corpus, k=args.k), len(queries))
    rows = [{"path": "exact", "budget": None, "recall_at_k_vs_exact": 1.0, "queries_per_second": exact_qps,
             "ndcg@10": ann.ndcg_at_10((exact_scores, exact_indices), judged)}]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    builds = {}
    if "voyager" in paths:
        started = time.perf_counter()
        hnsw = TokenHNSWIndex(corpus)
        builds["voyager"] = time.perf_counter() - started
        for k_tokens in _ints(args.k_tokens):
            output, qps = _timed(lambda: hnsw.search(queries, k=args.k, k_tokens=k_tokens), len(queries))
            rows.append({"path": "voyager", "budget": k_tokens, "queries_per_second": qps,
                         "recall_at_k_vs_exact": recall_against_exact(output[1], exact_indices),
                         "ndcg@10": ann.ndcg_at_10(output, judged)})
    with tempfile.TemporaryDirectory() as scratch:
        for backend in [p for p in paths if p.startswith(("muvera", "qdrant"))]:
            index, builds[backend] = _qdrant_index(backend, corpus, Path(scratch) / backend)
            budgets = _ints(args.candidates) if backend.startswith("muvera") else [None]
            for budget in budgets:
                options = {"candidates": budget} if budget else {}
                (scores, ids), qps = _timed(lambda: index.search(queries, k=args.k, **options), len(queries))
                indices = as_indices(ids)
                rows.append({"path": backend, "budget": budget, "queries_per_second": qps,
                             "recall_at_k_vs_exact": recall_against_exact(indices, exact_indices),
                             "ndcg@10": ann.ndcg_at_10((scores, indices), judged)})
            index.close()
    for row in rows:
        row["speedup_vs_exact"] = row["queries_per_second"] / exact_qps
        row["meets_target"] = row["recall_at_k_vs_exact"] >= TARGET_RECALL and row["speedup_vs_exact"] > 1.0
    return {
        "description": "recall@k vs exact MaxSim, q/s and NDCG@10 of the approximate paths as their budget grows",
        "model": model_name, "data": data, "k": args.k, "build_seconds": builds, "quick": args.quick, "notes": notes,
        "target": f"recall@{args.k} >= {TARGET_RECALL} at a speed above exact", "rows": rows,
        "sizes": {"k": args.k, "k_tokens": _ints(args.k_tokens), "candidates": _ints(args.candidates),
                  "torch_threads": torch.get_num_threads()},
        "summary": {path: max((row for row in rows if row["path"] == path), key=lambda row: row["recall_at_k_vs_exact"])
                    for path in dict.fromkeys(row["path"] for row in rows)},
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for name in dict.fromkeys(row["path"] for row in result["rows"]):
        points = [row for row in result["rows"] if row["path"] == name]
        axis.plot([p["queries_per_second"] for p in points], [p["recall_at_k_vs_exact"] for p in points], marker="o",
                  label=name)
    axis.axhline(TARGET_RECALL, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("queries / s (log)")
    axis.set_ylabel(f"recall@{result['k']} of exact MaxSim")
    axis.set_title(f"{result['data']['corpus']}: approximate search as the budget grows")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(f"{'path':<8} {'budget':>7} {'recall':>7} {'NDCG@10':>8} {'q/s':>8} {'x exact':>8} target")
    for row in result["rows"]:
        print(f"{row['path']:<8} {str(row['budget'] or '-'):>7} {row['recall_at_k_vs_exact']:>7.4f} {row['ndcg@10']:>8.4f} "
              f"{row['queries_per_second']:>8.1f} {row['speedup_vs_exact']:>8.2f} {common.status(row['meets_target'])}")
    # One file for every corpus measured so far: this run replaces its corpus's entry and leads the section.
    path = Path(args.output) / f"{NAME}.json"
    previous = json.loads(path.read_text(encoding="utf-8")).get("corpora", {}) if path.is_file() else {}
    result["corpora"] = {**previous, args.corpus: {k: result[k] for k in ("model", "data", "k", "rows", "build_seconds")}}
    common.write_section(NAME, result, args.output)
    if not args.quick:
        plot(result, Path(args.output) / f"{NAME}_{args.corpus}.png")
    return result


if __name__ == "__main__":
    main()
