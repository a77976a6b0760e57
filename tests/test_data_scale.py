"""``benchmarks/data_scale.py`` on a tiny backbone and two tiny training sets: the three sizes, a table and a plot
of Δ vs linear paired by seed."""

from __future__ import annotations

import json

import pytest


def test_data_scale_runs_every_size_and_reports_paired_deltas(tiny_backbone, tmp_path, mixed_data_root):
    import benchmarks.data_scale as data_scale

    output = tmp_path / "scale"
    summary = data_scale.main(
        ["--output", str(output), "--seeds", "0,1"], backbone=tiny_backbone, heads=("linear", "ffn2-x2-res"),
        train_data=("cats", "genes"), eval_data=("tinyset",), steps=2, batch_size=4, dim=8, document_max_length=16,
    )
    assert set(summary) == {"data-8k", "data-32k", "data-120k"}
    entry = summary["data-8k"]["heads"]["ffn2-x2-res"]
    records = [json.loads(line) for line in (output / "data-8k" / "runs.jsonl").read_text().splitlines()]
    ndcg = {(r["head"], r["seed"]): r["eval"]["tinyset"]["metrics"]["ndcg@10"] for r in records}
    differences = [ndcg[("ffn2-x2-res", s)] - ndcg[("linear", s)] for s in (0, 1)]
    assert entry["delta_vs_linear"][0] == pytest.approx(sum(differences) / 2)
    assert entry["seeds"] == [0, 1] and summary["data-8k"]["heads"]["linear"]["delta_vs_linear"][0] == 0.0
    assert (output / "delta.png").stat().st_size > 0 and "`ffn2-x2-res`" in (output / "table.md").read_text()
    assert len(list((output / "cache").glob("*/meta.json"))) == 2  # largest first: the others read its caches
    again = data_scale.main(["--output", str(output), "--report-only"])
    assert again == summary


def test_layer_mix_benchmark_pairs_each_mix_with_the_last_layer(tiny_backbone, tmp_path, mixed_data_root):
    import benchmarks.layer_mix as layer_mix

    output = tmp_path / "mix"
    tiny = dict(backbone=tiny_backbone, seeds=(0, 1), train_data=("cats", "genes"), eval_data=("tinyset",), steps=2,
                batch_size=4, dim=8, document_max_length=16, max_pairs=None)
    summary = layer_mix.main(["--output", str(output), "--presets", "layers2-concat,layers3-scalar"], **tiny)
    assert list(summary) == ["last", "layers2-concat", "layers3-scalar"]

    def ndcg(folder):
        records = [json.loads(line) for line in (output / folder / "runs.jsonl").read_text().splitlines()]
        return {(r["head"], r["seed"]): r["eval"]["tinyset"]["metrics"]["ndcg@10"] for r in records}

    last, mix = ndcg("last"), ndcg("layers2-concat")
    entry = summary["layers2-concat"]["ffn2-x2-res"]
    assert entry["delta_vs_last_layer"][0] == pytest.approx(
        sum(mix[("ffn2-x2-res", s)] - last[("ffn2-x2-res", s)] for s in (0, 1)) / 2)
    assert entry["delta_vs_linear"][0] == pytest.approx(
        sum(mix[("ffn2-x2-res", s)] - mix[("linear", s)] for s in (0, 1)) / 2)
    assert summary["last"]["linear"]["delta_vs_last_layer"][0] == 0.0
    # one backbone pass (queries, documents): the 3-layer cache serves the 2-layer mix and the last-layer baseline
    layer_caches = [json.loads(p.read_text())["description"]["layer"] for p in (output / "cache").glob("*/meta.json")]
    assert layer_caches == [[2, 1, 0], [2, 1, 0]]
    assert (output / "delta.png").stat().st_size > 0 and "layers3-scalar" in (output / "table.md").read_text()
    assert layer_mix.main(["--output", str(output), "--report-only",
                           "--presets", "layers2-concat,layers3-scalar"]) == summary
    # a finished last-layer sweep given as --baseline is read, not rerun
    assert layer_mix.main(["--output", str(output), "--baseline", str(output / "last"), "--report-only",
                           "--presets", "layers2-concat,layers3-scalar"]) == summary


def test_layer_mix_benchmark_fills_its_cache_at_the_precision_asked(tiny_backbone, tmp_path, mixed_data_root):
    import benchmarks.layer_mix as layer_mix

    output = tmp_path / "mix-bf16"
    tiny = dict(backbone=tiny_backbone, seeds=(0,), train_data=("cats",), eval_data=("tinyset",),
                steps=1, batch_size=4, dim=8, document_max_length=16, max_pairs=None)
    layer_mix.main(["--output", str(output), "--presets", "layers2-scalar", "--backbone-precision", "bf16"], **tiny)
    metas = [json.loads(p.read_text())["description"] for p in (output / "cache").glob("*/meta.json")]
    assert metas and {meta["backbone_precision"] for meta in metas} == {"bf16"}  # the baseline read the same cache
    assert json.loads((output / "last" / "settings.json").read_text())["backbone_precision"] == "bf16"
    with pytest.raises(SystemExit):
        layer_mix.parse_args(["--backbone-precision", "fp16"])


def test_data_scale_reads_a_bf16_layer_mix_cache_without_a_backbone_pass(tiny_backbone, tmp_path, mixed_data_root):
    import benchmarks.data_scale as data_scale
    import benchmarks.layer_mix as layer_mix

    tiny = dict(backbone=tiny_backbone, seeds=(0,), train_data=("cats",), eval_data=("tinyset",),
                steps=1, batch_size=4, dim=8, document_max_length=16)
    mix = tmp_path / "mix"
    layer_mix.main(["--output", str(mix), "--presets", "layers2-scalar", "--backbone-precision", "bf16"],
                   max_pairs=None, **tiny)
    before = sorted(p.parent.name for p in (mix / "cache").glob("*/meta.json"))
    output = tmp_path / "scale"
    data_scale.main(["--output", str(output), "--presets", "data-8k", "--cache-dir", str(mix / "cache"),
                     "--backbone-precision", "bf16"], heads=("linear",), **tiny)
    assert sorted(p.parent.name for p in (mix / "cache").glob("*/meta.json")) == before  # read, not refilled
    assert json.loads((output / "data-8k" / "settings.json").read_text())["backbone_precision"] == "bf16"
    assert len((output / "data-8k" / "runs.jsonl").read_text().splitlines()) == 1
