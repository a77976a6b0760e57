"""The sweep end to end on a tiny backbone and tiny BEIR-format data written by the test."""

from __future__ import annotations

import csv
import json

import pytest

from hf_projections.cli import main
from hf_projections.sweep import SweepSettings, run_sweep
from hf_projections.sweep import runner as sweep_runner

TOPICS = ["cat", "dog", "protein", "cell", "gene", "drug", "cancer", "risk"]


def _write_data(root):
    """A BEIR set `tinyset` (8 docs, 4 test queries) and training pairs `tinypairs/train.jsonl` over it."""
    folder = root / "tinyset"
    (folder / "qrels").mkdir(parents=True)
    docs = {f"d{i}": f"the {t} study of {t} effect" for i, t in enumerate(TOPICS)}
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"{TOPICS[i]} effect"}) + "\n" for i in range(4)))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4)))
    pairs = root / "tinypairs"
    pairs.mkdir()
    rows = [{"_id": f"d{i}", "title": "", "text": docs[f"d{i}"], "query": f"{t} {w}"}
            for i, t in enumerate(TOPICS) for w in ("study", "risk of", "a")]
    (pairs / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def settings(tiny_backbone, tmp_path, monkeypatch):
    _write_data(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    return SweepSettings(
        backbone=tiny_backbone, heads=("linear", "ffn2-x2-res"), seeds=(0, 1), train_data="tinypairs",
        max_pairs=None, eval_data=("tinyset",), steps=3, batch_size=4, dim=8, document_max_length=16,
    )


def test_sweep_writes_every_output_and_resumes(settings, tmp_path, monkeypatch):
    output = tmp_path / "sweep"
    records = run_sweep(settings, output)
    assert sorted(r["key"] for r in records) == ["ffn2-x2-res/seed0", "ffn2-x2-res/seed1", "linear/seed0", "linear/seed1"]
    for name in ("results.csv", "results.json", "table.md", "results.png", "settings.json", "runs.jsonl"):
        assert (output / name).stat().st_size > 0, name
    with open(output / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {r["dataset"] for r in rows} == {"tinyset"}
    assert all(0.0 <= float(r["ndcg@10"]) <= 1.0 for r in rows)
    table = (output / "table.md").read_text()
    assert "`ffn2-x2-res`" in table and "Δ vs linear" in table and "+0.00" in table  # linear vs itself
    run_dir = output / "runs" / "ffn2-x2-res" / "seed1"
    assert (run_dir / "head" / "projection.safetensors").exists()
    card = (run_dir / "README.md").read_text()
    assert "hf-projections" in card and "ndcg@10" in card

    # Interrupted sweep: drop one finished run; a restart trains only that one.
    lines = (output / "runs.jsonl").read_text().splitlines()
    (output / "runs.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    trained = []
    real = sweep_runner._train_and_evaluate
    monkeypatch.setattr(sweep_runner, "_train_and_evaluate", lambda m, b, head, seed, *a: trained.append((head, seed)) or real(m, b, head, seed, *a))
    assert len(run_sweep(settings, output)) == 4
    assert trained == [(json.loads(lines[-1])["head"], json.loads(lines[-1])["seed"])]


def test_sweep_refuses_a_folder_with_another_budget(settings, tmp_path):
    output = tmp_path / "sweep"
    run_sweep(settings.replace(heads=["linear"], seeds=[0]), output)
    with pytest.raises(ValueError, match="another budget \\(changed: steps\\)"):
        run_sweep(settings.replace(steps=5), output)


def test_same_seed_gives_the_same_result(settings, tmp_path):
    one = run_sweep(settings.replace(heads=["linear"], seeds=[0]), tmp_path / "a")[0]
    two = run_sweep(settings.replace(heads=["linear"], seeds=[0]), tmp_path / "b")[0]
    assert one["eval"]["tinyset"]["metrics"] == two["eval"]["tinyset"]["metrics"]
    assert one["final_loss"] == two["final_loss"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"heads": ("ffn2",)}, "must include the 'linear' baseline"), ({"steps": 0}, "steps must be a positive int"),
     ({"seeds": (0, 0)}, "must not repeat")],
)
def test_bad_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        SweepSettings(**changes)


def test_cli_sweep_runs_and_prints_the_table(settings, tmp_path, capsys):
    code = main(["sweep", "--backbone", settings.backbone, "--heads", "linear,ffn2", "--seeds", "0",
                 "--train-data", "tinypairs", "--eval-data", "tinyset", "--steps", "2", "--batch-size", "4",
                 "--output", str(tmp_path / "cli")])
    assert code == 0
    assert "`ffn2`" in capsys.readouterr().out
    assert main(["sweep", "--preset", "nope"]) == 2


def test_validation_queries_are_held_out_of_training_and_reported(settings, tmp_path, monkeypatch):
    trained_queries = []
    real_cache_features = sweep_runner.cache_features
    monkeypatch.setattr(
        sweep_runner, "cache_features",
        lambda model, pairs, *a: trained_queries.extend(pairs["query"]) or real_cache_features(model, pairs, *a),
    )
    records = run_sweep(settings.replace(heads=["linear"], seeds=[0], validation_queries=4, eval_data=()), tmp_path / "v")
    validation = records[0]["validation"]["tinypairs-val"]
    assert records[0]["eval"] == {} and 0.0 <= validation["metrics"]["ndcg@10"] <= 1.0
    train_pairs, validation_sets = sweep_runner.load_pairs(settings.replace(validation_queries=4))
    validation_set = validation_sets["tinypairs-val"]
    # 24 distinct training queries: 4 held out, the other 20 trained on; none on both sides.
    assert len(validation_set.query_ids) == 4 and len(trained_queries) == 20
    assert not set(validation_set.query_texts) & set(trained_queries)
    assert set(train_pairs["positive"]) <= set(validation_set.doc_texts)  # the corpus: every training passage
    rows = list(csv.DictReader(open(tmp_path / "v" / "results.csv")))
    assert {(r["dataset"], r["split"]) for r in rows} == {("tinypairs-val", "validation")}


def test_validation_rows_stay_out_of_the_test_average(settings, tmp_path):
    run_sweep(settings.replace(heads=["linear"], seeds=[0], validation_queries=2), tmp_path / "v")
    rows = list(csv.DictReader(open(tmp_path / "v" / "results.csv")))
    test_ndcg = next(float(r["ndcg@10"]) for r in rows if r["split"] == "test")
    assert {r["split"] for r in rows} == {"test", "validation"}
    table_row = next(line for line in (tmp_path / "v" / "table.md").read_text().splitlines() if "`linear`" in line)
    assert table_row.split("|")[-4].strip() == f"{100 * test_ndcg:.2f} ± 0.00"  # the average column


def test_zero_branch_init_starts_residual_heads_as_the_linear_head(settings):
    import torch

    zero = settings.replace(branch_init="zero")
    linear, _ = sweep_runner.build_run_head("linear", 3, zero, 32)
    residual, _ = sweep_runner.build_run_head("ffn2-x2-res", 3, zero, 32)
    plain, _ = sweep_runner.build_run_head("ffn2", 3, zero, 32)  # no residual: left as drawn
    random_residual, _ = sweep_runner.build_run_head("ffn2-x2-res", 3, settings, 32)
    x = torch.randn(5, 32)
    assert torch.allclose(residual(x), linear(x), atol=1e-6)
    assert not torch.allclose(random_residual(x), linear(x), atol=1e-3)
    assert torch.equal(plain(x), sweep_runner.build_run_head("ffn2", 3, settings, 32)[0](x))


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"eval_data": ()}, "would evaluate nothing"), ({"branch_init": "ones"}, "branch_init must be one of"),
     ({"validation_queries": -1}, "validation_queries must be an int >= 0")],
)
def test_bad_validation_and_init_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        SweepSettings(**changes)


def test_too_many_validation_queries_are_rejected(settings):
    with pytest.raises(ValueError, match="must be smaller than the 24 distinct"):
        sweep_runner.load_pairs(settings.replace(validation_queries=24))


def test_run_card_names_the_hub_id_of_the_offline_backbone(minilm_path, tmp_path):
    from hf_projections.sweep.report import write_run_card

    record = {"key": "linear/seed0", "head": "linear", "seed": 0, "params": 10, "macs_per_token": 10,
              "final_loss": 0.5, "eval": {"scifact": {"metrics": {"ndcg@10": 0.5, "recall@100": 0.9, "mrr@10": 0.4}}}}
    write_run_card(tmp_path, record, SweepSettings(backbone=str(minilm_path)))
    card = (tmp_path / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert str(minilm_path) not in card.split("---")[1]  # the local path stays out of the metadata
