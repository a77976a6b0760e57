"""``benchmarks/choose_recipe.py`` on a tiny backbone and tiny pairs: validation only, never a test set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def choose_recipe(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "tinypairs"
    folder.mkdir(parents=True)
    topics = ["cat", "dog", "protein", "cell", "gene", "drug"]
    rows = [{"_id": f"d{i}", "title": "", "text": f"the {t} study of {t}", "query": f"{t} {w}"}
            for i, t in enumerate(topics) for w in ("study", "risk", "effect")]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    monkeypatch.syspath_prepend(str(REPO))
    import benchmarks.choose_recipe as module

    def no_test_data(*args, **kwargs):
        raise AssertionError("choose_recipe must not load a test split")

    monkeypatch.setattr("hf_projections.sweep.runner.load_beir", no_test_data)
    return module


def test_variants_are_compared_on_held_out_training_queries(choose_recipe, tiny_backbone, tmp_path, capsys):
    output = tmp_path / "choices"
    choose_recipe.main(
        ["--output", str(output), "--backbone", tiny_backbone, "--validation-queries", "4",
         "--variants", "recipe (temperature 0.25, no markers, plain queries);recipe, branch_init=zero"],
        train_data="tinypairs", max_pairs=None, steps=2, batch_size=4, dim=8, document_max_length=16,
    )
    result = json.loads((output / "choices.json").read_text())["variants"]
    assert set(result) == {"recipe (temperature 0.25, no markers, plain queries)", "recipe, branch_init=zero"}
    assert all(set(v["ndcg@10"]) == {"linear", "ffn2-x2-res"} for v in result.values())
    # branch_init leaves linear heads alone: the base variant's linear run is reused, not trained again.
    base = "recipe (temperature 0.25, no markers, plain queries)"
    assert result["recipe, branch_init=zero"]["ndcg@10"]["linear"] == result[base]["ndcg@10"]["linear"]
    base_linear, zero_linear = (
        next(line for line in (output / name / "runs.jsonl").read_text().splitlines() if '"head": "linear"' in line)
        for name in (choose_recipe.slug(base), choose_recipe.slug("recipe, branch_init=zero"))
    )
    assert zero_linear == base_linear  # the same record, train_seconds included
    table = (output / "choices.md").read_text()
    assert "| recipe, branch_init=zero |" in table and "No test query was used" in table
    assert table in capsys.readouterr().out


def test_unknown_variant_is_refused(choose_recipe, tmp_path):
    with pytest.raises(SystemExit, match="unknown variants"):
        choose_recipe.main(["--output", str(tmp_path), "--variants", "lr=1"])


def test_a_layer_mix_variant_is_judged_on_validation_queries_too(choose_recipe, tiny_backbone, tmp_path):
    output = tmp_path / "choices"
    name = "recipe, layers -1,-2 concat"
    choose_recipe.main(
        ["--output", str(output), "--backbone", tiny_backbone, "--validation-queries", "4", "--variants", name,
         "--heads", "linear", "--seeds", "0"],
        train_data="tinypairs", max_pairs=None, steps=2, batch_size=4, dim=8, document_max_length=16,
    )
    (record,) = [json.loads(line) for line in (output / choose_recipe.slug(name) / "runs.jsonl").read_text().splitlines()]
    assert record["params"] == 2 * 32 * 8  # the linear head reads two 32-wide layers side by side
    assert 0.0 <= json.loads((output / "choices.json").read_text())["variants"][name]["ndcg@10"]["linear"][0] <= 1.0
    assert "n/a (no non-linear head)" in (output / "choices.md").read_text()
