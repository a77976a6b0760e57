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
