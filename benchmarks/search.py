"""Exact MaxSim search: ``hf_projections.retrieval.maxsim_topk`` vs sentence-transformers 6's evaluator scoring.

Both sides search the same token embeddings for the same queries:

- ours: ``maxsim_topk(queries, EncodedCorpus, k)`` (packed corpus, length-sorted chunks, running top-k);
- sentence-transformers: what ``MultiVectorInformationRetrievalEvaluator`` runs, i.e. queries padded with
  ``pad_sequence`` (its ``embed_inputs``), the corpus cut into ``corpus_chunk_size`` (50,000) documents, each
  chunk scored with ``SimilarityFunction.to_similarity_fn("maxsim")`` (``sentence_transformers.util.maxsim``)
  and reduced with ``torch.topk``, the chunks merged.

Embeddings are random but shaped like real ones: L2-normalised dim-128 token vectors drawn around a few
thousand "vocabulary" centres (cosine about 0.7 to their centre, so MaxSim scores spread as with a real
model), 32 tokens per query (ColBERT pads queries to 32), document lengths drawn from the real SciFact token
lengths (MiniLM tokenizer, + document marker, cut at 180). Both sides must return the same top-10 for every
query. Peak memory is the resident-set high-water mark added during a call (see ``common.PeakRSS``).

Two parts, both on the same kind of embeddings:

- **Fraction of the matmul peak** (batched queries): ``--peak-queries`` (300) queries against a corpus with the
  real document lengths of ``--corpus`` in their order (SciFact: 5,183 documents), scored with the default and with
  fixed similarity-block sizes (``max_block_scores``). GFLOP/s count only useful work, ``2 x query tokens x real
  document tokens x dim`` (no padding), and are divided by the fp32 matmul peak measured in the same run (a square
  2048 matmul, best of several, before and after; the higher reading is the peak). The sentence-transformers
  scoring runs on the same embeddings for the speedup and the top-10 check.
- **Screened search** (``--screen-dtype``, bfloat16 by default; ``none`` skips it): ``maxsim_topk(...,
  screen_dtype=torch.bfloat16)``, every document scored in bf16, the best ``max(2k, k + 50)`` re-scored in float32,
  timed beside the exact path in both parts with the same top-10 check against sentence-transformers.
- **Corpus sizes**: each size runs both sides once per round in alternating order (medians over rounds). A size
  whose single run is predicted (from the previous size) to take more than ``--max-seconds`` for either side, or
  whose corpus would not fit in the available memory, is skipped and reported as such.

    python benchmarks/search.py            # the peak part, then 1k, 5k, 20k, 50k documents x 100 queries (minutes)
    python benchmarks/search.py --quick    # seconds
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from hf_projections.training.arguments import default_backbone  # noqa: E402

NAME = "search"
TARGET_SPEEDUP = 3.0
TARGET_PEAK_FRACTION = 0.75
BLOCK_SIZES = (2**16, 2**18, 2**20, 2**21, 2**22, 2**23, 2**24)  # fixed max_block_scores beside the default
ST_CORPUS_CHUNK_SIZE = 50_000  # InformationRetrievalEvaluator's default corpus_chunk_size


def parse_args(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000,50000", help="corpus sizes (documents)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--query-tokens", type=int, default=32)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--max-doc-tokens", type=int, default=180)
    parser.add_argument("--k", type=int, default=100, help="results per query (the evaluator's usual depth)")
    parser.add_argument("--check-k", type=int, default=10, help="top results that must agree")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per size (fewer for slow sizes)")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="skip a size whose single run is predicted to take longer (either side)")
    parser.add_argument("--round-budget", type=float, default=150.0,
                        help="seconds per size; rounds are cut to fit (at least 1)")
    parser.add_argument("--corpus", default="scifact", help="BEIR set whose document lengths are used")
    parser.add_argument("--peak-queries", type=int, default=300, help="queries of the peak-fraction part (0: skip it)")
    parser.add_argument("--peak-rounds", type=int, default=2, help="timed rounds per block size in the peak part")
    parser.add_argument("--screen-dtype", default="bfloat16", choices=("bfloat16", "float16", "none"),
                        help="also time maxsim_topk(screen_dtype=...): a low-precision pass, then a float32 re-score")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.rounds, args.peak_queries, args.peak_rounds = "200,500", 8, 2, 6, 1
    args.sizes = [int(size) for size in str(args.sizes).split(",")]
    args.screen_dtype = None if args.screen_dtype == "none" else args.screen_dtype
    return args


def real_document_lengths(backbone: str, corpus_name: str, max_tokens: int):
    """Token counts of the corpus documents as a ColBERT model sees them: tokens + marker, cut at ``max_tokens``."""
    import numpy as np
    from transformers import AutoTokenizer

    from hf_projections.evaluation import load_beir

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    texts = list(load_beir(corpus_name).corpus.values())
    ids = tokenizer(texts, truncation=True, max_length=max_tokens - 1)["input_ids"]
    return np.array([len(row) + 1 for row in ids], dtype=np.int64)


def random_token_embeddings(lengths, dim: int, centres, generator, block: int = 2000):
    """Packed ``(sum(lengths), dim)`` L2-normalised vectors around random ``centres`` ``(n_centres, dim)``.

    Built in blocks of documents so the peak stays near the final tensor's size.
    """
    import torch

    total = int(sum(int(n) for n in lengths))
    packed = torch.empty(total, dim)
    weights = 1.0 / torch.arange(1, centres.shape[0] + 1, dtype=torch.float64)  # Zipf-like vocabulary use
    start = 0
    for first in range(0, len(lengths), block):
        rows = int(sum(int(n) for n in lengths[first : first + block]))
        which = torch.multinomial(weights, rows, replacement=True, generator=generator)
        noise = torch.randn(rows, dim, generator=generator) / math.sqrt(dim)
        vectors = centres[which] + noise
        packed[start : start + rows] = vectors / vectors.norm(dim=1, keepdim=True)
        start += rows
    return packed


def st_evaluator_search(query_list, doc_list, k: int, chunk_size: int = ST_CORPUS_CHUNK_SIZE):
    """Top-k as ``MultiVectorInformationRetrievalEvaluator`` computes it: ``(scores, indices)`` ``(n_q, k)``."""
    import torch
    from sentence_transformers.util.similarity import SimilarityFunction

    score_function = SimilarityFunction.to_similarity_fn("maxsim")
    queries = torch.nn.utils.rnn.pad_sequence(query_list, batch_first=True)  # as its embed_inputs does
    best_scores, best_indices = [], []
    for start in range(0, len(doc_list), chunk_size):
        pair_scores = score_function(queries, doc_list[start : start + chunk_size])
        top_k = min(k, pair_scores.shape[1])
        values, indices = torch.topk(pair_scores, top_k, dim=1, largest=True, sorted=False)
        best_scores.append(values)
        best_indices.append(indices + start)
    scores, indices = torch.cat(best_scores, dim=1), torch.cat(best_indices, dim=1)
    order = scores.argsort(dim=1, descending=True)[:, :k]
    return scores.gather(1, order), indices.gather(1, order)


def compare_top(ours, theirs, check_k: int) -> dict:
    """How many queries got the same top-``check_k`` documents, in the same order, with close scores."""
    import torch

    our_scores, our_indices = ours
    st_scores, st_indices = theirs
    same_order = (our_indices[:, :check_k] == st_indices[:, :check_k]).all(dim=1)
    same_set = torch.tensor([set(a.tolist()) == set(b.tolist())
                             for a, b in zip(our_indices[:, :check_k], st_indices[:, :check_k])])
    max_score_diff = float((our_scores[:, :check_k] - st_scores[:, :check_k]).abs().max())
    return {"queries": int(our_indices.shape[0]), "same_top_order": int(same_order.sum()),
            "same_top_set": int(same_set.sum()), "max_abs_score_diff": max_score_diff,
            "equal": bool(same_set.all()) and max_score_diff < 1e-3}


def matmul_peak_gflops(size: int = 2048, repeats: int = 5, rounds: int = 5, dtype: str = "float32") -> float:
    """GFLOP/s of a square ``size`` matmul in ``dtype`` with the current torch threads: the best of ``rounds``."""
    import torch

    dtype = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * size**3 / best / 1e9


def peak_fraction(args, lengths, queries_tokens, centres, generator) -> dict:
    """The batched-query search against the matmul peak: default and fixed block sizes, and sentence-transformers."""
    import torch

    from hf_projections.retrieval import EncodedCorpus, maxsim_topk
    from hf_projections.retrieval.search import default_block_scores

    packed = random_token_embeddings(lengths, args.dim, centres, generator)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    torch.cumsum(torch.as_tensor(lengths), 0, out=offsets[1:])
    corpus = EncodedCorpus([str(i) for i in range(len(lengths))], packed, offsets)
    queries = list(random_token_embeddings([queries_tokens] * args.peak_queries, args.dim, centres, generator)
                   .split(queries_tokens))
    useful_flops = 2 * args.peak_queries * queries_tokens * int(sum(int(n) for n in lengths)) * args.dim
    peak_before = matmul_peak_gflops()
    default_block = default_block_scores(torch.device("cpu"))
    maxsim_topk(queries[: max(1, len(queries) // 10)], corpus, k=args.k)  # warm-up
    rows, outputs = [], {}
    for block in (None, *BLOCK_SIZES):
        seconds = []
        for _ in range(args.peak_rounds):
            started = time.perf_counter()
            outputs[block] = maxsim_topk(queries, corpus, k=args.k, max_block_scores=block)
            seconds.append(time.perf_counter() - started)
        rows.append({"max_block_scores": block if block is not None else default_block, "default": block is None,
                     "seconds": common.spread(seconds), "gflops": useful_flops / min(seconds) / 1e9})
        print(f"[search] peak part, block {rows[-1]['max_block_scores']:>9,}{' (default)' if block is None else ''}: "
              f"{min(seconds):.2f} s, {rows[-1]['gflops']:.0f} GFLOP/s", flush=True)
    screen_seconds = []
    for _ in range(args.peak_rounds if args.screen_dtype else 0):
        started = time.perf_counter()
        outputs["screen"] = maxsim_topk(queries, corpus, k=args.k, screen_dtype=getattr(torch, args.screen_dtype))
        screen_seconds.append(time.perf_counter() - started)
    st_seconds = []
    for _ in range(args.peak_rounds):
        started = time.perf_counter()
        st_output = st_evaluator_search(queries, corpus.to_list(), args.k)
        st_seconds.append(time.perf_counter() - started)
    peak_after = matmul_peak_gflops()
    peak = max(peak_before, peak_after)
    for row in rows:
        row["peak_fraction"] = row["gflops"] / peak
    default_row = rows[0]
    st_gflops = useful_flops / min(st_seconds) / 1e9
    speedup = min(st_seconds) / default_row["seconds"]["min"]
    agreement = compare_top(outputs[None], st_output, args.check_k)
    screened = None
    if screen_seconds:
        screen_peak = matmul_peak_gflops(dtype=args.screen_dtype)
        screen_gflops = useful_flops / min(screen_seconds) / 1e9
        screen_speedup = min(st_seconds) / min(screen_seconds)
        screen_agreement = compare_top(outputs["screen"], st_output, args.check_k)
        screened = {
            "dtype": args.screen_dtype, "k": args.k, "seconds": common.spread(screen_seconds), "gflops": screen_gflops,
            "peak_fraction": screen_gflops / peak, "own_dtype_peak_gflops": screen_peak,
            "own_dtype_peak_fraction": screen_gflops / screen_peak, "speedup_vs_sentence_transformers": screen_speedup,
            "speedup_vs_exact_default": default_row["seconds"]["min"] / min(screen_seconds),
            "agreement": screen_agreement,
            "agreement_with_exact_top_k": compare_top(outputs["screen"], outputs[None], args.k),
            "status": common.status(screen_speedup >= TARGET_SPEEDUP and screen_agreement["equal"]),
        }
        print(f"[search] peak part: {args.screen_dtype} screen + float32 re-score {min(screen_seconds):.2f} s, "
              f"{screen_speedup:.2f}x sentence-transformers, equal top-{args.check_k}: {screen_agreement['equal']}")
    print(f"[search] peak part: default {default_row['peak_fraction']:.0%} of the {peak:.0f} GFLOP/s matmul peak, "
          f"sentence-transformers {st_gflops / peak:.0%}; speedup {speedup:.2f}x, equal top-{args.check_k}: "
          f"{agreement['equal']}")
    return {
        "queries": args.peak_queries, "query_tokens": queries_tokens, "documents": len(lengths),
        "doc_tokens_total": int(sum(int(n) for n in lengths)), "useful_gflop": useful_flops / 1e9,
        "matmul_peak_gflops": {"before": peak_before, "after": peak_after, "peak": peak},
        "rows": rows,
        "sentence_transformers": {"seconds": common.spread(st_seconds), "gflops": st_gflops,
                                  "peak_fraction": st_gflops / peak},
        "speedup_vs_sentence_transformers": speedup,
        "agreement": agreement,
        "screened": screened,
        "status": common.status(default_row["peak_fraction"] >= TARGET_PEAK_FRACTION
                                and speedup >= TARGET_SPEEDUP and agreement["equal"]),
    }


def run(args) -> dict:
    import numpy as np
    import torch

    from hf_projections.retrieval import EncodedCorpus, maxsim_topk

    notes = common.setup(args)
    common.quiet_transformers()
    backbone = args.backbone or default_backbone()
    lengths_pool = real_document_lengths(backbone, args.corpus, args.max_doc_tokens)
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    centres = torch.randn(4096, args.dim, generator=generator)
    centres /= centres.norm(dim=1, keepdim=True)
    peak = None
    if args.peak_queries:
        peak_lengths = lengths_pool[: 40] if args.quick else lengths_pool  # the real corpus, in its order
        peak = peak_fraction(args, peak_lengths, args.query_tokens, centres, generator)
    query_packed = random_token_embeddings([args.query_tokens] * args.queries, args.dim, centres, generator)
    queries = list(query_packed.split(args.query_tokens))

    rows, memory_method = [], None
    seconds_per_doc = None  # from the previous size, per side
    for size in args.sizes:
        lengths = rng.choice(lengths_pool, size=size, replace=True)
        corpus_bytes = int(lengths.sum()) * args.dim * 4
        row = {"documents": size, "doc_tokens_total": int(lengths.sum()), "doc_tokens_mean": float(lengths.mean()),
               "corpus_bytes": corpus_bytes}
        if seconds_per_doc is not None:
            predicted = {side: per_doc * size for side, per_doc in seconds_per_doc.items()}
            row["predicted_s"] = predicted
            slow = {side: s for side, s in predicted.items() if s > args.max_seconds}
            if slow:
                row["skipped"] = (f"predicted single run {', '.join(f'{k} {v:.0f} s' for k, v in slow.items())} "
                                  f"> {args.max_seconds:.0f} s")
                rows.append(row)
                print(f"[search] {size} docs: skipped ({row['skipped']})")
                continue
        if corpus_bytes * 1.5 + 2**30 > common.available_memory_bytes():
            row["skipped"] = f"corpus of {corpus_bytes / 2**30:.1f} GiB does not fit the available memory"
            rows.append(row)
            print(f"[search] {size} docs: skipped ({row['skipped']})")
            continue

        packed = random_token_embeddings(lengths, args.dim, centres, generator)
        offsets = torch.zeros(size + 1, dtype=torch.int64)
        torch.cumsum(torch.as_tensor(lengths), 0, out=offsets[1:])
        corpus = EncodedCorpus([str(i) for i in range(size)], packed, offsets)
        doc_list = corpus.to_list()  # views of the same storage: no second copy of the corpus

        outputs, peaks = {}, {"hf_projections": [], "sentence_transformers": []}

        def measured(name, fn):
            def call():
                nonlocal memory_method
                with common.PeakRSS() as peak:
                    result = fn()
                peaks[name].append(peak.peak_bytes)
                memory_method = peak.method
                return result
            return call

        candidates = {
            "hf_projections": measured("hf_projections", lambda: maxsim_topk(queries, corpus, k=args.k)),
            "sentence_transformers": measured("sentence_transformers",
                                              lambda: st_evaluator_search(queries, doc_list, args.k)),
        }
        if args.screen_dtype:
            candidates["screened"] = measured("screened", lambda: maxsim_topk(
                queries, corpus, k=args.k, screen_dtype=getattr(torch, args.screen_dtype)))
            peaks["screened"] = []
        rounds = args.rounds
        if seconds_per_doc is not None:
            pair_seconds = sum(row["predicted_s"].values())
            rounds = max(1, min(args.rounds, int(args.round_budget // max(pair_seconds, 1e-9))))
        timings = common.interleaved_timings(
            candidates, rounds, warmup=0,
            on_result=lambda name, r, value: outputs.setdefault(name, value) if r == 0 else None,
        )
        ours, theirs = common.median(timings["hf_projections"]), common.median(timings["sentence_transformers"])
        row.update({
            "rounds": rounds,
            "hf_projections_s": common.spread(timings["hf_projections"]),
            "sentence_transformers_s": common.spread(timings["sentence_transformers"]),
            "hf_projections_qps": args.queries / ours,
            "sentence_transformers_qps": args.queries / theirs,
            "speedup": theirs / ours,
            "paired_speedup": 1 / common.paired_ratio_median(timings["hf_projections"],
                                                             timings["sentence_transformers"]),
            "hf_projections_peak_bytes": max(peaks["hf_projections"]),
            "sentence_transformers_peak_bytes": max(peaks["sentence_transformers"]),
            "agreement": compare_top(outputs["hf_projections"], outputs["sentence_transformers"], args.check_k),
        })
        if args.screen_dtype:
            screened = common.median(timings["screened"])
            row.update({"screened_s": common.spread(timings["screened"]), "screened_speedup": theirs / screened,
                        "screened_agreement": compare_top(outputs["screened"], outputs["sentence_transformers"],
                                                          args.check_k)})
        seconds_per_doc = {"hf_projections": ours / size, "sentence_transformers": theirs / size,
                           **({"screened": screened / size} if args.screen_dtype else {})}
        rows.append(row)
        print(f"[search] {size:>6} docs: ours {ours:.2f} s, sentence-transformers {theirs:.2f} s, "
              f"speedup {row['speedup']:.2f}x, peak MiB {row['hf_projections_peak_bytes'] / 2**20:.0f} vs "
              f"{row['sentence_transformers_peak_bytes'] / 2**20:.0f}, equal top-{args.check_k}: "
              f"{row['agreement']['equal']}")
        del corpus, doc_list, packed, outputs

    measured_rows = [row for row in rows if "speedup" in row]
    summary = {"target_speedup": TARGET_SPEEDUP, "target_peak_fraction": TARGET_PEAK_FRACTION}
    if peak is not None:
        summary.update({"peak_fraction": peak["rows"][0]["peak_fraction"], "peak_status": peak["status"]})
    if measured_rows:
        worst = min(row["speedup"] for row in measured_rows)
        summary.update({
            "min_speedup": worst,
            "max_speedup": max(row["speedup"] for row in measured_rows),
            "all_equal": all(row["agreement"]["equal"] for row in measured_rows),
            "status": common.status(worst >= TARGET_SPEEDUP and all(r["agreement"]["equal"] for r in measured_rows)),
            "skipped_sizes": [row["documents"] for row in rows if "skipped" in row],
        })
        if args.screen_dtype:
            worst_screened = min(row["screened_speedup"] for row in measured_rows)
            equal = all(row["screened_agreement"]["equal"] for row in measured_rows)
            summary["screened"] = {"dtype": args.screen_dtype, "min_speedup": worst_screened,
                                   "max_speedup": max(row["screened_speedup"] for row in measured_rows),
                                   "all_equal": equal, "status": common.status(worst_screened >= TARGET_SPEEDUP and equal)}
    return {
        "description": "exact MaxSim top-k: maxsim_topk vs sentence-transformers evaluator scoring (same embeddings)",
        "backbone_for_lengths": backbone,
        "data": {"lengths_from": args.corpus, "lengths_pool": len(lengths_pool),
                 "lengths_pool_mean": float(lengths_pool.mean()), "embeddings": "random, L2-normalised, clustered"},
        "sizes": {"documents": args.sizes, "queries": args.queries, "screen_dtype": args.screen_dtype,
                  "query_tokens": args.query_tokens,
                  "dim": args.dim, "max_doc_tokens": args.max_doc_tokens, "k": args.k, "check_k": args.check_k,
                  "st_corpus_chunk_size": ST_CORPUS_CHUNK_SIZE},
        "memory_method": memory_method,
        "quick": args.quick,
        "notes": notes,
        "peak": peak,
        "rows": rows,
        "summary": summary,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    summary = result["summary"]
    if "peak_status" in summary:
        print(f"target: batched search >= {TARGET_PEAK_FRACTION:.0%} of the matmul peak and >= {TARGET_SPEEDUP}x "
              f"sentence-transformers with equal top-{args.check_k}: {summary['peak_status']} "
              f"({summary['peak_fraction']:.0%}, {result['peak']['speedup_vs_sentence_transformers']:.2f}x)")
    if "status" in summary:
        print(f"target: >= {TARGET_SPEEDUP}x faster than sentence-transformers: {summary['status']} "
              f"(speedups {summary['min_speedup']:.2f}x..{summary['max_speedup']:.2f}x, "
              f"equal top-{args.check_k}: {summary['all_equal']})")
    common.write_section(NAME, result, args.output)
    return result


if __name__ == "__main__":
    main()
