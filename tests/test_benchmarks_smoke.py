"""Smoke tests of the benchmark scripts: each runs with ``--quick`` on a tiny backbone and a tiny BEIR folder,
writes its ``<name>.json`` with the keys ``report.py`` reads, and ``report.py`` renders every section.

No timing is asserted: the numbers of a ``--quick`` run mean nothing.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORDS = "the a of and in to is cat dog protein cell gene claim study cancer risk drug effect".split()
HEADINGS = {"backbone_precision": "## Backbone pass: fp32 vs bf16 on this CPU",
            "encode_overhead": "## Encode overhead of each head vs `linear`",
            "layer_mix_cost": "## Layer-mix input: encode time and cache cost",
            "search": "## Exact MaxSim search vs sentence-transformers",
            "training_throughput": "## Training throughput by mode",
            "ann": "## Approximate search (HNSW + re-rank) and token pooling",
            "ann_curves": "## Approximate paths against exact MaxSim as the budget grows"}
COMMON_KEYS = {"benchmark", "created", "command", "machine", "versions", "quick", "notes", "rows", "summary", "sizes", "data"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """``scifact`` (80 docs, 6 test queries) and ``arguana-genq`` (24 training pairs) look-alikes."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("bench-data")

    def text(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    scifact = root / "scifact"
    (scifact / "qrels").mkdir(parents=True)
    docs = {f"d{i}": text(rng.randint(3, 40)) for i in range(80)}
    (scifact / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    (scifact / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": text(5)}) + "\n" for i in range(6)))
    (scifact / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(6)))
    genq = root / "arguana-genq"
    genq.mkdir()
    (genq / "train.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": docs[f"d{i}"], "query": text(4)}) + "\n" for i in range(24)))
    return root


@pytest.fixture
def bench(monkeypatch, data_root):
    """Import ``benchmarks.<name>`` in-process; restore the globals the scripts touch (env, logging)."""
    import importlib

    import transformers

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(data_root))
    verbosity = transformers.logging.get_verbosity()
    yield lambda name: importlib.import_module(f"benchmarks.{name}")
    transformers.logging.set_verbosity(verbosity)
    transformers.utils.logging.enable_progress_bar()


def quick_args(tmp_path, tiny_backbone, data_root, *extra):
    return ["--quick", "--backbone", tiny_backbone, "--data-dir", str(data_root), "--output", str(tmp_path), *extra]


def read_section(tmp_path, name) -> dict:
    """The section a script wrote, checked for the keys every section has and rendered by report.py."""
    from benchmarks import report

    section = json.loads((tmp_path / f"{name}.json").read_text())
    assert HEADINGS[name] in report.build_report(tmp_path)
    assert COMMON_KEYS <= set(section), COMMON_KEYS - set(section)
    assert section["benchmark"] == name and section["quick"] is True
    assert {"platform", "torch", "usable_cpus"} <= set(section["machine"])
    return section


def test_backbone_precision_quick(bench, tmp_path, tiny_backbone, data_root):
    from hf_projections.training.backbone_precision import resolve_backbone_precision

    bench("backbone_precision").main(quick_args(tmp_path, tiny_backbone, data_root))
    section = read_section(tmp_path, "backbone_precision")
    summary = section["summary"]
    assert summary["auto"] == resolve_backbone_precision("auto", "cpu")
    assert summary["status"] == ("PASS" if summary["auto"] == summary["faster"] else "FAIL")
    assert 0.9 < summary["cosine"]["min"] <= summary["cosine"]["mean"] <= 1.0 + 1e-6  # bf16 noise, not garbage
    for row in (*section["rows"]["matmul"].values(), *section["rows"]["encode"].values()):
        assert row["seconds"]["n"] == section["sizes"]["rounds"]


def test_encode_overhead_quick(bench, tmp_path, tiny_backbone, data_root):
    from hf_projections.heads import PRESETS

    bench("encode_overhead").main(quick_args(tmp_path, tiny_backbone, data_root))
    section = read_section(tmp_path, "encode_overhead")
    heads = [row["head"] for row in section["rows"]]
    assert heads == [*PRESETS, "linear-control"]
    for row in section["rows"]:
        assert {"params", "macs_per_token", "encode_s", "ratio_vs_linear", "paired_ratio_vs_linear", "head_only_ms"} <= set(row)
        assert row["encode_s"]["n"] == section["sizes"]["rounds"]
    linear = section["rows"][0]
    assert linear["ratio_vs_linear"] == 1.0 and linear["paired_ratio_vs_linear"] == 1.0
    assert section["data"]["tokens_per_document"] == section["sizes"]["tokens"]
    assert section["summary"]["target_head"] == "ffn2-x2-res" and section["summary"]["status"] in ("PASS", "FAIL")


def test_layer_mix_cost_quick(bench, tmp_path, tiny_backbone, data_root):
    module = bench("layer_mix_cost")
    module.main(quick_args(tmp_path, tiny_backbone, data_root))
    section = read_section(tmp_path, "layer_mix_cost")
    assert [(row["head"], row["input"]) for row in section["rows"]] == [
        *((head, name) for head in module.HEADS for name in module.INPUTS), ("linear", module.CONTROL)]
    for row in section["rows"]:
        assert row["encode_s"]["n"] == section["sizes"]["rounds"]
        assert (row["layer_mix_params"] > 0) == row["input"].endswith("-scalar")  # scalar: L + 1 weights
        if row["input"] == "last":
            assert row["paired_ratio_vs_last"] == 1.0
    cache = {row["input"]: row for row in section["cache_rows"]}
    # the cache holds the layers side by side: ~L times the bytes of a last-layer cache (plus the same index files)
    assert cache["last"]["bytes_ratio"] == 1.0 < cache["layers2"]["bytes_ratio"] < cache["layers3"]["bytes_ratio"]


def test_search_quick_agrees_with_sentence_transformers(bench, tmp_path, tiny_backbone, data_root):
    bench("search").main(quick_args(tmp_path, tiny_backbone, data_root))
    section = read_section(tmp_path, "search")
    assert [row["documents"] for row in section["rows"]] == section["sizes"]["documents"]
    for row in section["rows"]:
        assert {"hf_projections_s", "sentence_transformers_s", "speedup", "hf_projections_qps",
                "hf_projections_peak_bytes", "sentence_transformers_peak_bytes", "agreement"} <= set(row)
        # same embeddings, same queries: both sides must return the same top-10
        assert row["agreement"]["equal"], row["agreement"]
        assert row["agreement"]["same_top_set"] == section["sizes"]["queries"]
    assert section["summary"]["all_equal"] is True and section["memory_method"]
    peak = section["peak"]  # the batched part: default + every fixed block size, against the matmul peak
    assert [row["default"] for row in peak["rows"]] == [True] + [False] * (len(peak["rows"]) - 1)
    assert all(0 < row["peak_fraction"] for row in peak["rows"]) and peak["matmul_peak_gflops"]["peak"] > 0
    assert peak["agreement"]["equal"] and peak["status"] in ("PASS", "FAIL")
    screened = peak["screened"]  # the bf16 screen + float32 re-score, beside the exact path
    assert screened["dtype"] == "bfloat16" and screened["own_dtype_peak_gflops"] > 0 and screened["status"] in ("PASS", "FAIL")
    assert screened["agreement"]["equal"] and section["summary"]["screened"]["all_equal"]
    assert all("screened_speedup" in row for row in section["rows"])
    from benchmarks import report

    rendered = "\n".join(report.search_section(section))
    assert "bfloat16 screen + float32 re-score" in rendered and "screened speedup" in rendered


def test_search_skips_sizes_predicted_too_slow(bench, tmp_path, tiny_backbone, data_root):
    args = quick_args(tmp_path, tiny_backbone, data_root, "--max-seconds", "1e-9")
    section = bench("search").main(args)
    first, second = section["rows"]
    assert "speedup" in first and "predicted single run" in second["skipped"]
    assert section["summary"]["skipped_sizes"] == [second["documents"]]


def test_evaluator_search_matches_maxsim_topk_exactly(bench):
    import torch

    from hf_projections.retrieval import maxsim_topk, naive_maxsim

    search = bench("search")
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(16, 8, generator=generator), dim=1)
    docs = list(search.random_token_embeddings([3, 7, 1, 5, 2, 6], 8, centres, generator).split([3, 7, 1, 5, 2, 6]))
    queries = list(search.random_token_embeddings([4, 4], 8, centres, generator).split(4))
    assert torch.allclose(docs[1].norm(dim=1), torch.ones(7))
    # chunked evaluator loop (chunks of 4 documents) == our search == the naive reference
    st_scores, st_indices = search.st_evaluator_search(queries, docs, k=3, chunk_size=4)
    scores, indices = maxsim_topk(queries, docs, k=3)
    expected = naive_maxsim(queries, docs).float().topk(3)
    assert torch.equal(st_indices, expected.indices) and torch.equal(indices, expected.indices)
    torch.testing.assert_close(st_scores, expected.values)


def test_training_throughput_quick_and_sweep_summary(bench, tmp_path, tiny_backbone, data_root):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "settings.json").write_text(json.dumps({"steps": 4, "batch_size": 2, "mode": "head", "max_pairs": 8}))
    record = {"head": "linear", "seed": 0, "train_seconds": 2.0, "cache_seconds_this_session": 5.0,
              "eval": {"scifact": {"seconds": 1.5}}}
    (sweep / "runs.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, "head": "ffn2-x2-res"}) + "\n{torn")
    (sweep / "results.json").write_text("{}")
    out = tmp_path / "out"
    bench("training_throughput").main(quick_args(out, tiny_backbone, data_root, "--sweep-dir", str(sweep),
                                                 "--paths", "fp32,fp32+no-dropout,bf16+no-dropout+buckets"))
    section = read_section(out, "training_throughput")
    paths = ("fp32", "fp32+no-dropout", "bf16+no-dropout+buckets")
    assert [(row["mode"], row["path"]) for row in section["rows"]] == [
        (mode, path) for mode in ("full", "top-2", "head") for path in paths]
    for row in section["rows"]:
        assert {"samples_per_second", "cache_build_s", "samples_per_second_incl_cache", "speedup_vs_full",
                "speedup_vs_first_path", "trainable_params", "steps", "backbone_dropout", "optim"} <= set(row)
        if row["path"] == "fp32":
            assert row["speedup_vs_first_path"] == 1.0 and row["backbone_dropout"] is None
            assert row["optim"] == ("adamw_torch_fused" if row["mode"] == "full" else "adamw_torch")
        assert row["samples_per_second"] > 0 and row["cached"] == (row["mode"] != "full")
        assert row["length_buckets"] == (4 if "buckets" in row["path"] else 1)
    summary = section["sweep"]
    assert summary["runs"] == 2 and summary["heads"] == ["ffn2-x2-res", "linear"]
    assert summary["train_seconds_total"] == 4.0 and summary["eval_seconds_total"] == 3.0
    assert summary["head_samples_per_second"] == pytest.approx(2 * 4 * 2 / 4.0)
    assert summary["complete"] and "wall_seconds_last_session_estimate" in summary


def test_ann_quick(bench, tmp_path, tiny_backbone, data_root):
    args = quick_args(tmp_path, tiny_backbone, data_root, "--cache-dir", str(tmp_path / "cache"))
    bench("ann").main(args)
    section = read_section(tmp_path, "ann")
    methods = {row["method"]: row for row in section["rows"]}
    assert set(methods) == {"exact", "pooled exact", "ann", "ann+pool2"}
    assert methods["exact"]["recall_at_k_vs_exact"] == 1.0
    assert all(0.0 <= row["ndcg@10"] <= 1.0 for row in methods.values())
    for name in ("ann", "ann+pool2"):
        assert {"index_bytes_per_document", "build_s", "mean_candidates", "queries_per_second"} <= set(methods[name])
        assert 0.0 <= methods[name]["recall_at_k_vs_exact"] <= 1.0
    # pooling keeps about half the vectors
    assert methods["ann+pool2"]["vectors_per_document"] < 0.75 * methods["ann"]["vectors_per_document"]
    assert section["data"]["prefix_only"] and section["data"]["documents"] == 60
    # a second run loads the encoded corpus from the cache
    bench("ann").main(args)
    assert read_section(tmp_path, "ann")["data"]["corpus_from_cache"]


def test_ann_curves_quick(bench, tmp_path, tiny_backbone, data_root):
    pytest.importorskip("qdrant_client")
    pytest.importorskip("qdrant_edge")
    pytest.importorskip("fastembed")
    args = quick_args(tmp_path, tiny_backbone, data_root, "--cache-dir", str(tmp_path / "cache"))
    bench("ann_curves").main(args)
    section = read_section(tmp_path, "ann_curves")
    points = [(row["path"], row["budget"]) for row in section["rows"]]
    assert points == [("exact", None), ("voyager", 4), ("voyager", 16), ("muvera", 10), ("muvera", 40), ("qdrant", None),
                      ("muvera-local", 10), ("muvera-local", 40), ("qdrant-local", None)]
    recall = {point: row["recall_at_k_vs_exact"] for point, row in zip(points, section["rows"])}
    assert recall[("exact", None)] == 1.0 and recall[("qdrant", None)] == pytest.approx(1.0)  # Qdrant's MaxSim is exact
    assert recall[("qdrant-local", None)] == pytest.approx(1.0)
    assert recall[("muvera-local", 40)] == pytest.approx(recall[("muvera", 40)])  # the engines agree
    assert recall[("muvera", 40)] >= recall[("muvera", 10)] and all(0.0 <= r <= 1.0 for r in recall.values())
    assert all(0.0 <= row["ndcg@10"] <= 1.0 and row["queries_per_second"] > 0 for row in section["rows"])
    assert list(section["corpora"]) == ["scifact"] and section["corpora"]["scifact"]["rows"] == section["rows"]


def test_report_assembles_sections(bench, tmp_path, tiny_backbone, data_root):
    report = bench("report")
    assert "no results yet" in report.build_report(tmp_path / "nothing")
    bench("search").main(quick_args(tmp_path, tiny_backbone, data_root))
    text = report.main(["--results", str(tmp_path), "--output", str(tmp_path / "RESULTS.md")])
    assert (tmp_path / "RESULTS.md").read_text() == text
    assert HEADINGS["search"] in text and "**Target: >= 3.0x faster with equal results:" in text
    assert "**Target: >= 75 % of the matmul peak and >= 3x sentence-transformers" in text
    assert "not a measurement" in text and "## Machine and versions" in text
    assert "(not measured yet: `python benchmarks/ann.py`)" in text


def test_a_paused_job_does_not_make_the_machine_busy(bench):
    import signal
    import subprocess
    import sys

    common = bench("common")
    marker = "hf-projections-busy-test-marker"
    job = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(60)  # {marker}"])
    try:
        for _ in range(50):  # pgrep sees the command line once the interpreter has started
            if common.busy_processes(marker):
                break
            time.sleep(0.1)
        assert common.busy_processes(marker)
        job.send_signal(signal.SIGSTOP)
        for _ in range(50):
            if not common.busy_processes(marker):
                break
            time.sleep(0.1)
        assert not common.busy_processes(marker)
    finally:
        job.kill()
        job.wait()
