"""Assemble ``benchmarks/RESULTS.md`` from the ``benchmarks/results/<name>.json`` files the scripts write.

    python benchmarks/report.py [--results benchmarks/results] [--output benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

SECTIONS = ("backbone_precision", "encode_overhead", "layer_mix_cost", "search", "training_throughput", "ann",
            "ann_curves")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def _provenance(section: dict) -> list[str]:
    lines = [f"Measured {section['created']} with `{section['command']}`"
             + (" (**--quick smoke sizes, not a measurement**)" if section.get("quick") else "") + "."]
    notes = section.get("notes") or {}
    if notes.get("busy_at_start"):
        lines.append(f"Busy jobs at start (measured anyway after waiting {notes.get('waited_for_quiet_machine_s')} s): "
                     f"{notes['busy_at_start']}.")
    return lines


def backbone_precision_section(section: dict) -> list[str]:
    sizes, data, summary, rows = section["sizes"], section["data"], section["summary"], section["rows"]
    isa = ", ".join(f"{name}: {'yes' if found else 'no'}" for name, found in section["isa"].items())
    lines = ["## Backbone pass: fp32 vs bf16 on this CPU", ""]
    lines += [f"CPU features ({isa}); {sizes['torch_threads']} torch threads, {sizes['rounds']} interleaved rounds, "
              f"medians. Matmul: {sizes['matmul_size']}^3. Encode: backbone `{Path(section['backbone']).name}` forward "
              f"over {data['documents']} real {data['corpus']} documents at {sizes['tokens']} tokens, bf16 = autocast "
              "(what the feature cache's bf16 pass runs); cosine of the bf16 token states to fp32 over real tokens.", ""]
    table_rows = [["matmul", f"{rows['matmul']['float32']['gflops']:.1f} GFLOP/s",
                   f"{rows['matmul']['bfloat16']['gflops']:.1f} GFLOP/s", f"{summary['matmul_speedup_bf16']:.2f}x"],
                  ["encode", f"{rows['encode']['fp32']['documents_per_s']:.1f} docs/s",
                   f"{rows['encode']['bf16']['documents_per_s']:.1f} docs/s", f"{summary['encode_speedup_bf16']:.2f}x"]]
    lines += _table(["pass", "fp32", "bf16", "bf16 speedup (paired)"], table_rows)
    lines += ["", f"bf16 token states at cosine {summary['cosine']['mean']:.5f} (min {summary['cosine']['min']:.5f}). "
                  f"**Target: `auto` picks the faster pass: {summary['status']}** (`auto` = {summary['auto']}, "
                  f"native bf16: {summary['native_bf16']}; faster here: {summary['faster']})."]
    return lines + [""] + _provenance(section)


def encode_overhead_section(section: dict) -> list[str]:
    sizes, data, summary = section["sizes"], section["data"], section["summary"]
    lines = ["## Encode overhead of each head vs `linear`", ""]
    lines += [f"Backbone `{Path(section['backbone']).name}` (hidden {sizes['hidden_size']}), dim {sizes['dim']}; one "
              f"batch of {data['documents']} real {data['corpus']} documents, each padded/truncated to "
              f"{sizes['tokens']} tokens ({data['truncated']} truncated, {data['real_tokens_mean']:.0f} real tokens on "
              f"average); model forward on the pre-tokenised batch, {sizes.get('torch_threads', '?')} torch threads, "
              f"{sizes['rounds']} interleaved rounds, medians. "
              f"`ratio` = median / median of `linear`; `paired` = median of per-round ratios; `head ms` = the head "
              f"alone on the cached backbone output ({sizes['head_rounds']} rounds). `linear-control` is a second "
              "linear head: its distance from 1.000 is the noise floor.", ""]
    rows = []
    for row in section["rows"]:
        rows.append([f"`{row['head']}`", f"{row['params']:,}", f"{row['macs_per_token']:,}",
                     f"{row['encode_s']['median']:.4f}", f"{row['ratio_vs_linear']:.3f}",
                     f"{row['paired_ratio_vs_linear']:.3f}", f"{row['head_only_ms']:.2f}"])
    lines += _table(["head", "params", "MACs/token", "encode s (median)", "ratio", "paired", "head ms"], rows)
    if "status" in summary:
        lines += ["", f"**Target: `{summary['target_head']}` at most +{100 * summary['max_overhead']:.0f} % encode "
                      f"time: {summary['status']}** (measured {100 * summary['overhead']:+.2f} % in a focused loop of "
                      f"{summary['rounds']} rounds of `linear` / `{summary['target_head']}` / `linear-control`; "
                      f"paired {100 * summary['paired_overhead']:+.2f} %; fastest round vs fastest round "
                      f"{100 * summary['min_overhead']:+.2f} %; noise floor (linear-control vs linear) "
                      f"{100 * summary['noise_floor']:.2f} %; the head's own extra time over a linear encode, from the "
                      f"head-only loop: {100 * summary['head_only_estimate']:+.2f} %; in the all-heads loop above: "
                      f"{100 * summary['all_heads_loop_overhead']:+.2f} %)."]
        if not summary.get("conclusive", True):
            lines += ["", "The distance between the measured overhead and the 3 % limit is smaller than the noise floor "
                          "on this shared machine, so this verdict may flip on a rerun."]
    return lines + [""] + _provenance(section)


def layer_mix_cost_section(section: dict) -> list[str]:
    sizes, data, summary = section["sizes"], section["data"], section["summary"]
    lines = ["## Layer-mix input: encode time and cache cost", ""]
    lines += [f"Backbone `{Path(section['backbone']).name}` (hidden {sizes['hidden_size']}), dim {sizes['dim']}. "
              f"Encode: one batch of {data['documents']} real {data['corpus']} documents at {sizes['tokens']} tokens, "
              f"model forward on the pre-tokenised batch, {sizes['torch_threads']} torch threads, {sizes['rounds']} "
              "interleaved rounds, medians; `ratio` / `paired` compare with the same head reading the last layer "
              "(`last-control` is a second last-layer linear model: its distance from 1.000 is the noise floor, "
              f"{100 * summary['noise_floor']:.2f} %).", ""]
    rows = [[f"`{row['head']}`", row["input"], f"{row['head_params']:,}", f"{row['layer_mix_params']:,}",
             f"{row['encode_s']['median']:.4f}", f"{row['ratio_vs_last']:.3f}", f"{row['paired_ratio_vs_last']:.3f}"]
            for row in section["rows"]]
    lines += _table(["head", "input", "head params", "mix params", "encode s (median)", "ratio", "paired"], rows)
    lines += ["", f"Head-mode feature cache of {data['cache_documents']} {data['corpus']} documents (fp16, as training "
                  f"builds it; the mix type does not change it), each build into a fresh folder, "
                  f"{sizes['cache_rounds']} interleaved round(s):", ""]
    rows = [[row["input"], str(row["layers"]), f"{row['bytes'] / 2**20:,.1f}", f"{row['bytes_ratio']:.2f}x",
             f"{row['build_s']['median']:.1f}", f"{row['paired_build_ratio']:.2f}x"] for row in section["cache_rows"]]
    lines += _table(["cache", "layers", "MiB", "disk vs last", "build s", "build vs last"], rows)
    return lines + [""] + _provenance(section)


def search_peak_lines(peak: dict, check_k: int) -> list[str]:
    """The batched-query part of the search section: GFLOP/s per block size as a fraction of the matmul peak."""
    matmul = peak["matmul_peak_gflops"]
    lines = [f"**Batched queries against the hardware.** {peak['queries']} queries x {peak['query_tokens']} tokens "
             f"against {peak['documents']:,} documents with the real token lengths ({peak['doc_tokens_total']:,} "
             f"document tokens), top-100: {peak['useful_gflop']:,.0f} GFLOP of useful work (`2 x query tokens x real "
             f"document tokens x dim`, padding not counted). fp32 matmul peak measured in the same run (square 2048 "
             f"matmul, best of 5): {matmul['before']:.0f} GFLOP/s before, {matmul['after']:.0f} after; the fractions "
             f"use {matmul['peak']:.0f}. `max_block_scores` is the size in floats of one similarity block; the "
             "default is picked from the CPU's cache sizes.", ""]
    rows = [[f"{row['max_block_scores']:,}" + (" (default)" if row["default"] else ""),
             f"{row['seconds']['min']:.2f}", f"{row['gflops']:.0f}", f"**{100 * row['peak_fraction']:.0f} %**"
             if row["default"] else f"{100 * row['peak_fraction']:.0f} %"] for row in peak["rows"]]
    st = peak["sentence_transformers"]
    rows.append(["sentence-transformers `util.maxsim`", f"{st['seconds']['min']:.2f}", f"{st['gflops']:.0f}",
                 f"{100 * st['peak_fraction']:.0f} %"])
    screened = peak.get("screened")
    if screened:
        rows.append([f"{screened['dtype']} screen + float32 re-score (default block)", f"{screened['seconds']['min']:.2f}",
                     f"{screened['gflops']:.0f}", f"{100 * screened['peak_fraction']:.0f} % (fp32 peak)"])
    lines += _table(["max_block_scores (floats)", "s (best)", "GFLOP/s", "of peak"], rows)
    agreement = peak["agreement"]
    lines += ["", f"**Target: >= 75 % of the matmul peak and >= 3x sentence-transformers with identical top-{check_k}: "
                  f"{peak['status']}** (default {100 * peak['rows'][0]['peak_fraction']:.0f} % of the peak; "
                  f"{peak['speedup_vs_sentence_transformers']:.2f}x sentence-transformers; identical top-{check_k} "
                  f"sets for {agreement['same_top_set']}/{agreement['queries']} queries, in the same order for "
                  f"{agreement['same_top_order']}, largest score difference {agreement['max_abs_score_diff']:.1e})."]
    if screened:
        same, exact = screened["agreement"], screened["agreement_with_exact_top_k"]
        lines += ["", f"**Screened ({screened['dtype']} pass, float32 re-score of the best max(2k, k + 50)), target "
                      f">= 3x sentence-transformers with identical top-{check_k}: {screened['status']}** "
                      f"({screened['speedup_vs_sentence_transformers']:.2f}x sentence-transformers, "
                      f"{screened['speedup_vs_exact_default']:.2f}x the exact float32 path; its "
                      f"{screened['gflops']:.0f} GFLOP/s are {100 * screened['own_dtype_peak_fraction']:.0f} % of the "
                      f"{screened['own_dtype_peak_gflops']:.0f} GFLOP/s {screened['dtype']} matmul peak measured in the "
                      f"same run; identical top-{check_k} sets for {same['same_top_set']}/{same['queries']} queries, "
                      f"largest score difference {same['max_abs_score_diff']:.1e}; the same top-{screened['k']} as "
                      f"the exact path, in order, for {exact['same_top_order']}/{exact['queries']} queries)."]
    return lines


def search_section(section: dict) -> list[str]:
    sizes, summary = section["sizes"], section["summary"]
    lines = ["## Exact MaxSim search vs sentence-transformers", ""]
    if section.get("peak"):
        lines += search_peak_lines(section["peak"], sizes["check_k"]) + [""]
    lines += [("**Corpus sizes.** " if section.get("peak") else "")
              + f"{sizes['queries']} queries x {sizes['query_tokens']} tokens, dim {sizes['dim']}, top-{sizes['k']}; "
              f"random clustered L2-normalised token vectors; document lengths drawn from the real "
              f"{section['data']['lengths_from']} token lengths (mean {section['data']['lengths_pool_mean']:.0f}, "
              f"cut at {sizes['max_doc_tokens']}). sentence-transformers side: the "
              "`MultiVectorInformationRetrievalEvaluator` scoring (`util.maxsim` per corpus chunk of "
              f"{sizes['st_corpus_chunk_size']:,} + `torch.topk`). Peak memory: {section['memory_method']}. "
              f"`equal top-{sizes['check_k']}`: queries whose top-{sizes['check_k']} sets match.", ""]
    rows = []
    for row in section["rows"]:
        if "skipped" in row:
            rows.append([f"{row['documents']:,}", f"{row['doc_tokens_total']:,}", "skipped: " + row["skipped"],
                         "", "", "", "", "", "", ""])
            continue
        agreement = row["agreement"]
        screened_cells = ([f"{row['screened_s']['median']:.2f}", f"**{row['screened_speedup']:.2f}x**",
                           f"{row['screened_agreement']['same_top_set']}/{row['screened_agreement']['queries']}"]
                          if "screened_s" in row else [])
        rows.append([f"{row['documents']:,}", f"{row['doc_tokens_total']:,}", f"{row['hf_projections_s']['median']:.2f}",
                     f"{row['sentence_transformers_s']['median']:.2f}", f"{row['hf_projections_qps']:.1f}",
                     f"{row['sentence_transformers_qps']:.1f}", f"**{row['speedup']:.2f}x**",
                     _mib(row["hf_projections_peak_bytes"]), _mib(row["sentence_transformers_peak_bytes"]),
                     f"{agreement['same_top_set']}/{agreement['queries']}", *screened_cells])
    screen_headers = (["screened s", "screened speedup", f"screened equal top-{sizes['check_k']}"]
                      if sizes.get("screen_dtype") else [])
    lines += _table(["docs", "doc tokens", "ours s", "ST s", "ours q/s", "ST q/s", "speedup", "ours peak MiB",
                     "ST peak MiB", f"equal top-{sizes['check_k']}", *screen_headers], rows)
    if "status" in summary:
        lines += ["", f"**Target: >= {summary['target_speedup']}x faster with equal results: {summary['status']}** "
                      f"(speedup {summary['min_speedup']:.2f}x to {summary['max_speedup']:.2f}x; equal top-"
                      f"{sizes['check_k']} everywhere: {summary['all_equal']}"
                      + (f"; skipped sizes: {summary['skipped_sizes']}" if summary.get("skipped_sizes") else "")
                      + ")."]
    if summary.get("screened"):
        screened = summary["screened"]
        lines += ["", f"**Screened ({screened['dtype']} pass + float32 re-score), target >= {summary['target_speedup']}x "
                      f"with equal results: {screened['status']}** (speedup {screened['min_speedup']:.2f}x to "
                      f"{screened['max_speedup']:.2f}x; equal top-{sizes['check_k']} everywhere: {screened['all_equal']})."]
    return lines + [""] + _provenance(section)


TRAINING_TARGET_SPEEDUP = 2.0  # issue 16: end-to-end training twice as fast on the CPU


def training_section(section: dict) -> list[str]:
    sizes = section["sizes"]
    lines = ["## Training throughput by mode", ""]
    # Older sections compared precisions only (rows without a path): each precision was its own path.
    paths = sizes.get("paths") or sizes.get("precisions", ["fp32"])
    first = paths[0]
    lines += [f"Backbone `{Path(section['backbone']).name}`, head `{sizes['projection']}`, "
              f"{section['data']['pairs']} `{section['data']['train_data']}` pairs, batch {sizes['batch_size']}, "
              f"on CPU ({sizes['torch_threads']} threads), steps {sizes['steps']}, {sizes['rounds']} interleaved "
              "round(s), medians. Cached modes: samples/s of the training loop; `incl. cache` adds the one-time "
              "backbone pass that fills the feature cache. `fp32` is the training path as it was (the backbone's own "
              "dropout in the layers that train; the Trainer's fused AdamW for `full`, the cached loop's plain AdamW); "
              "`+no-dropout` trains with `backbone_dropout=0` and the fused AdamW everywhere; `bf16` autocasts the "
              "training passes (fp32 master weights) and the cache-filling backbone pass"
              + (f" (bf16 runs natively on this CPU, AMX or AVX512-BF16: {section['native_bf16']})"
                 if "native_bf16" in section else "")
              + ("; `+buckets` runs each batch through the training layers in length-sorted chunks trimmed to their "
                 "own longest text (`length_buckets`; the same batch, loss and gradients)"
                 if any("buckets" in p for p in paths) else "")
              + f"; `vs {first}` compares a mode with itself on the `{first}` path, measured in the same rounds.", ""]

    def path_of(row):
        return row.get("path", row.get("precision", "fp32"))

    def speedup(row):
        return row.get("speedup_vs_first_path", row.get("speedup_vs_first_precision", 1.0))

    rows = [[f"`{row['mode']}`", path_of(row), str(row["steps"]), f"{row['trainable_params']:,}",
             f"{row['samples_per_second']:.1f}", f"{row['speedup_vs_full']:.1f}x", f"**{speedup(row):.2f}x**",
             f"{row['cache_build_s']:.1f}", f"{row['samples_per_second_incl_cache']:.1f}"]
            for row in section["rows"]]
    lines += _table(["mode", "path", "steps", "trainable params", "samples/s", "vs full", f"vs {first}",
                     "cache build s", "samples/s incl. cache"], rows)
    best: dict[str, tuple[float, str]] = {}
    for row in section["rows"]:
        if row["mode"] != "head" and path_of(row) != first:
            best[row["mode"]] = max(best.get(row["mode"], (0.0, "")), (speedup(row), path_of(row)))
    if best:
        passed = all(value >= TRAINING_TARGET_SPEEDUP for value, _ in best.values())
        lines += ["", f"**Target: `full` and top-K training >= {TRAINING_TARGET_SPEEDUP:g}x the {first} path: "
                  f"{'PASS' if passed else 'FAIL'}** (best path per mode: "
                  + ", ".join(f"`{mode}` {value:.2f}x ({path})" for mode, (value, path) in best.items()) + ")."]
    sweep = section.get("sweep")
    if sweep:
        lines += [""]
        if "error" in sweep:
            lines += [f"Sweep folder `{sweep['folder']}`: {sweep['error']}."]
        else:
            wall = sweep.get("wall_seconds_last_session_estimate")
            lines += [f"Sweep `{sweep['folder']}` ({'complete' if sweep['complete'] else 'incomplete'}): "
                      f"{sweep['runs']} runs ({len(sweep['heads'])} heads x {len(sweep['seeds'])} seeds, "
                      f"{sweep['steps_per_run']} steps of {sweep['batch_size']}, mode {sweep['mode']}); feature "
                      f"cache {sweep['cache_seconds_last_session']:.0f} s, training {sweep['train_seconds_total']:.0f} s "
                      f"in total ({sweep.get('head_samples_per_second', 0):.0f} samples/s), evaluation "
                      f"{sweep['eval_seconds_total']:.0f} s"
                      + (f"; wall time of the last session about {wall / 60:.1f} min" if wall else "") + "."]
    return lines + [""] + _provenance(section)


def ann_section(section: dict) -> list[str]:
    sizes, data = section["sizes"], section["data"]
    lines = ["## Approximate search (HNSW + re-rank) and token pooling", ""]
    scope = (f"the first {data['documents']:,} of {data['full_corpus_documents']:,} documents" if data["prefix_only"]
             else f"all {data['documents']:,} documents")
    lines += [f"{data['corpus']} test queries ({data['queries']}) against {scope} ({data['doc_tokens_total']:,} token "
              f"vectors), encoded with {section['model']}. Recall@{sizes['k']} against exact MaxSim over the unpooled "
              f"corpus; HNSW M={sizes['M']}, ef_construction={sizes['ef_construction']}, {sizes['k_tokens']} "
              f"neighbours per query token, ef={sizes['ef'] or 'Voyager default'}; pooling factor "
              f"{sizes['pool_factor']:g} took {section['pool_seconds']:.0f} s. Index bytes = the Voyager index "
              "(graph + float32 vectors); vector bytes = the packed corpus the re-rank reads. NDCG@10 on the test "
              "qrels (over the documents searched) shows what pooling and the approximation cost in quality.", ""]
    rows = []
    for row in section["rows"]:
        rows.append([row["method"], f"{row['recall_at_k_vs_exact']:.4f}",
                     f"{row['ndcg@10']:.4f}" if "ndcg@10" in row else "-", f"{row['queries_per_second']:.1f}",
                     f"{row['speedup_vs_exact']:.2f}x", f"{row['vectors_per_document']:.1f}",
                     f"{row['index_bytes_per_document']:,.0f}" if "index_bytes_per_document" in row else "-",
                     f"{row['vector_bytes_per_document']:,.0f}",
                     f"{row['build_s']:.0f}" if "build_s" in row else "-",
                     f"{row['mean_candidates']:.0f}" if "mean_candidates" in row else "-"])
    lines += _table([f"method", f"recall@{sizes['k']}", "NDCG@10", "q/s", "vs exact", "vectors/doc", "index B/doc",
                     "vector B/doc", "build s", "candidates/query"], rows)
    return lines + [""] + _provenance(section)


def ann_curves_section(section: dict) -> list[str]:
    lines = ["## Approximate paths against exact MaxSim as the budget grows", "",
             f"Target: {section['target']} (PASS/FAIL per point). Budget: Voyager neighbours per query token; MUVERA "
             "documents fetched by fixed dimensional encoding and re-ranked by MaxSim; Qdrant's embedded multi-vector "
             "search has none. Each run searches vectors encoded once; q/s are single measurements of the whole query set.",
             ""]
    for corpus, entry in section["corpora"].items():
        data = entry["data"]
        lines += [f"**{corpus}**: {data['queries']} test queries, {data['documents']:,} documents, encoded with "
                  f"{entry['model']}; index builds (s): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in entry["build_seconds"].items()), ""]
        rows = [[row["path"], str(row["budget"] or "-"), f"{row['recall_at_k_vs_exact']:.4f}", f"{row['ndcg@10']:.4f}",
                 f"{row['queries_per_second']:.1f}", f"{row['speedup_vs_exact']:.2f}x",
                 "PASS" if row["meets_target"] else "FAIL"] for row in entry["rows"]]
        lines += _table(["path", "budget", f"recall@{entry['k']}", "NDCG@10", "q/s", "vs exact", "target"], rows) + [""]
    return lines + _provenance(section)


RENDERERS = {"backbone_precision": backbone_precision_section, "encode_overhead": encode_overhead_section,
             "layer_mix_cost": layer_mix_cost_section, "search": search_section,
             "training_throughput": training_section, "ann": ann_section, "ann_curves": ann_curves_section}


def machine_lines(sections: dict[str, dict]) -> list[str]:
    lines = ["## Machine and versions", ""]
    machines = {json.dumps(s["machine"], sort_keys=True): s["machine"] for s in sections.values()}
    for machine in machines.values():
        lines.append("- machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    version_sets = {json.dumps(s["versions"], sort_keys=True): s["versions"] for s in sections.values()}
    for found in version_sets.values():
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in found.items() if v))
    return lines


def build_report(results_dir: Path) -> str:
    sections = {}
    for name in SECTIONS:
        path = Path(results_dir) / f"{name}.json"
        if path.is_file():
            sections[name] = json.loads(path.read_text(encoding="utf-8"))
    lines = ["# hf-projections benchmarks", "",
             "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`; every ratio compares runs "
             "measured side by side in one process (interleaved rounds, medians). Rerun a script to refresh its "
             "section.", ""]
    if not sections:
        return "\n".join(lines + ["(no results yet: run the scripts in benchmarks/)", ""])
    lines += machine_lines(sections) + [""]
    for name in SECTIONS:
        if name in sections:
            lines += RENDERERS[name](sections[name]) + [""]
        else:
            lines += [f"## {name}", "", f"(not measured yet: `python benchmarks/{name}.py`)", ""]
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--output", type=Path, default=common.BENCHMARKS_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    from hf_projections.atomic import atomic_write_text

    text = build_report(args.results)
    atomic_write_text(args.output, text)
    print(f"[bench] wrote {args.output}")
    return text


if __name__ == "__main__":
    main()
