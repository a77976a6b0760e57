"""The sweep end to end on a tiny backbone and tiny BEIR-format data written by the test."""

from __future__ import annotations

import csv
import json

import pytest
import torch

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
    assert "validation: none, seeds" in table
    run_dir = output / "runs" / "ffn2-x2-res" / "seed1"
    assert (run_dir / "head" / "adapter_model.safetensors").exists()  # the head as a projection adapter
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
     ({"seeds": (0, 0)}, "must not repeat"), ({"backbone_precision": "fp16"}, "backbone_precision must be one of")],
)
def test_bad_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        SweepSettings(**changes)


def test_auto_backbone_precision_resolves_to_what_this_machine_runs(monkeypatch):
    from hf_projections.training import backbone_precision

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(backbone_precision, "native_bf16", lambda device, native=native: native)
        settings = SweepSettings(backbone_precision="auto", device="cpu").resolved()
        assert settings.backbone_precision == expected  # what settings.json records
        assert settings.training_arguments(seed=0).backbone_precision == expected
    assert SweepSettings(device="cpu").resolved().backbone_precision == "fp32"  # the default stays exact


def test_cli_sweep_runs_and_prints_the_table(settings, tmp_path, capsys):
    threads = torch.get_num_threads()
    code = main(["sweep", "--backbone", settings.backbone, "--heads", "linear,ffn2", "--seeds", "0",
                 "--train-data", "tinypairs", "--eval-data", "tinyset", "--steps", "2", "--batch-size", "4",
                 "--train-threads", "1", "--output", str(tmp_path / "cli")])
    assert code == 0
    assert "`ffn2`" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "settings.json").read_text())["train_threads"] == 1
    assert torch.get_num_threads() == threads  # the training thread count does not leak out of the sweep
    assert main(["sweep", "--preset", "nope"]) == 2


def test_validation_queries_are_held_out_of_training_and_reported(settings, tmp_path, monkeypatch):
    trained_queries = []
    real_cache_features = sweep_runner.cache_features
    monkeypatch.setattr(
        sweep_runner, "cache_features",
        lambda model, pairs, *a, **k: trained_queries.extend(pairs["query"]) or real_cache_features(model, pairs, *a, **k),
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
    assert "validation: 2 held-out training queries" in (tmp_path / "v" / "table.md").read_text()


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


def test_markers_and_query_augmentation_follow_the_settings(settings, tmp_path, monkeypatch):
    built = []
    real = sweep_runner.cache_features
    monkeypatch.setattr(sweep_runner, "cache_features", lambda model, *a, **k: built.append(model) or real(model, *a, **k))
    plain = settings.replace(heads=["linear"], seeds=[0], markers=False, augment_queries=False)
    run_sweep(plain, tmp_path / "plain")
    tokens = built[-1].tokenize(["cat effect"], is_query=True)["input_ids"][0].tolist()
    vocab = built[-1].tokenizer.get_vocab()
    assert vocab["[unused0]"] not in tokens and vocab["[MASK]"] not in tokens
    assert "without [unused0]/[unused1] markers, unaugmented queries" in (tmp_path / "plain" / "table.md").read_text()
    card = (tmp_path / "plain" / "runs" / "linear" / "seed0" / "README.md").read_text()
    assert "query_marker=None, document_marker=None, augment_queries=False" in card
    with pytest.raises(ValueError, match="another budget \\(changed: markers\\)"):
        run_sweep(plain.replace(markers=True), tmp_path / "plain")
    assert main(["sweep", "--backbone", settings.backbone, "--heads", "linear", "--seeds", "0", "--train-data",
                 "tinypairs", "--eval-data", "tinyset", "--steps", "2", "--batch-size", "4", "--no-markers", "--augment-queries",
                 "--output", str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / "settings.json").read_text())["markers"] is False
    assert json.loads((tmp_path / "cli" / "settings.json").read_text())["augment_queries"] is True
    with pytest.raises(ValueError, match="markers must be True, False or None"):
        SweepSettings(markers="no")


def test_sweeps_over_the_same_corpus_share_one_document_cache(settings, tmp_path):
    cache = tmp_path / "cache"
    run_sweep(settings.replace(heads=["linear"], seeds=[0]), tmp_path / "all", cache_dir=cache)
    run_sweep(settings.replace(heads=["linear"], seeds=[0], max_pairs=12), tmp_path / "some", cache_dir=cache)
    kinds = [json.loads(meta.read_text())["description"]["is_query"] for meta in cache.glob("*/meta.json")]
    # A smaller training sample needs a subset of the queries and documents already cached: no new cache at all.
    assert kinds.count(False) == 1 and kinds.count(True) == 1


def test_top_k_sweep_trains_the_last_layers_at_their_own_learning_rate(settings, tmp_path):
    top = settings.replace(heads=["linear"], seeds=[0], mode="top-1", head_lr=1e-3, backbone_lr=2e-5, steps=20)
    record = run_sweep(top, tmp_path / "top")[0]
    log = [json.loads(line) for line in (tmp_path / "top" / "runs" / "linear" / "seed0" / "train_log.jsonl").open()]
    # One schedule scales both groups: their ratio stays that of the configured rates.
    assert log[0]["lr_head"] > 0 and all(row["lr_backbone"] == pytest.approx(0.02 * row["lr_head"]) for row in log)
    assert 0.0 <= record["eval"]["tinyset"]["metrics"]["ndcg@10"] <= 1.0
    assert "head lr 0.001, backbone lr 2e-05" in (tmp_path / "top" / "table.md").read_text()
    with pytest.raises(ValueError, match="backbone_lr must be > 0"):
        SweepSettings(mode="top-1", backbone_lr=0.0)
    with pytest.raises(ValueError, match="mode 'head' trains no backbone layer"):
        SweepSettings(backbone_lr=1e-4)


@pytest.mark.parametrize("mode", ["head", "top-1"])
def test_a_loaded_sweep_run_reproduces_its_recorded_metrics(settings, tmp_path, mode):
    from hf_projections.evaluation import evaluate_model
    from hf_projections.sweep import load_sweep_run

    plain = settings.replace(heads=["linear", "ffn2-x2-res"], seeds=[1], mode=mode, markers=False, steps=6,
                             backbone_lr=1e-3 if mode != "head" else None)
    records = {r["head"]: r for r in run_sweep(plain, tmp_path / "sweep")}
    run_dir = tmp_path / "sweep" / "runs" / "ffn2-x2-res" / "seed1"
    assert (run_dir / "model").is_dir() == (mode != "head")  # top-K layers trained: the whole model is kept
    model = load_sweep_run(run_dir)
    assert model.config.query_marker is None and model.config.projection["type"] == "ffn"
    recorded = records["ffn2-x2-res"]["eval"]["tinyset"]["metrics"]["ndcg@10"]
    # Through the sweep's own (fp16) feature caches the loaded model gives exactly the recorded number ...
    eval_sets = {"tinyset": sweep_runner.EvalSet.load("tinyset")}
    pairs, _ = sweep_runner.load_pairs(plain.resolved())
    _, query_cache, doc_cache = sweep_runner.cache_features(model, pairs, eval_sets, mode, tmp_path / "sweep" / "cache")
    cached = sweep_runner._evaluate_from_cache(model, eval_sets["tinyset"], query_cache, doc_cache)
    assert cached["metrics"]["ndcg@10"] == pytest.approx(recorded, abs=1e-9)
    # ... and an independent path (tokens -> backbone -> head -> exact search, fp32) agrees up to the fp16 storage
    # of the cached states (a near-tie in this 8-document set may swap ranks).
    again = evaluate_model(model, "tinyset")["metrics"]["ndcg@10"]
    assert again == pytest.approx(recorded, abs=0.02)
    with pytest.raises(FileNotFoundError, match="not a finished sweep run"):
        load_sweep_run(tmp_path)


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


# --------------------------------------------------------------------------- Matryoshka dims


def test_matryoshka_sweep_trains_nested_dims_and_reports_each(settings, tmp_path, monkeypatch):
    import torch

    from hf_projections.modeling import load_head
    from hf_projections.training.nested_losses import MatryoshkaLoss

    losses = []
    real_train = sweep_runner.train_from_cache
    monkeypatch.setattr(sweep_runner, "train_from_cache", lambda *a, loss, **k: losses.append(loss) or real_train(*a, loss=loss, **k))
    matryoshka = settings.replace(heads=["linear"], seeds=[0], matryoshka_dims=[2, 4], matryoshka_weights=[1, 0.5, 2])
    record = run_sweep(matryoshka, tmp_path / "m")[0]
    assert isinstance(losses[0], MatryoshkaLoss) and losses[0]._weights(8) == [(2, 1.0), (4, 0.5), (8, 2.0)]
    assert set(record["eval_by_dim"]) == {"2", "4"} and record["dim"] == 8
    rows = list(csv.DictReader(open(tmp_path / "m" / "results.csv")))
    assert sorted(int(r["dim"]) for r in rows) == [2, 4, 8]
    full = next(r for r in rows if r["dim"] == "8")
    assert float(full["ndcg@10"]) == record["eval"]["tinyset"]["metrics"]["ndcg@10"]
    table = (tmp_path / "m" / "table.md").read_text()
    assert "Per Matryoshka dim (trained on dims 2, 4, 8, weights 1, 0.5, 2;" in table and "| head | dim | params |" in table
    assert sum(line.startswith("| `linear` | ") for line in table.splitlines()) == 4  # the main table + 3 dims

    # The dim-2 row is what the saved head gives through the model's own truncate_dim: the same token vectors (up to
    # the fp16 storage of the sweep's cached states) and, scored from those caches, exactly the recorded metric.
    model = load_head(sweep_runner.build_sweep_model(matryoshka), tmp_path / "m" / "runs" / "linear" / "seed0" / "head")
    assert model.config.matryoshka_dims == [2, 4]
    eval_set = sweep_runner.EvalSet.load("tinyset")
    pairs, _ = sweep_runner.load_pairs(matryoshka.resolved())
    _, query_cache, doc_cache = sweep_runner.cache_features(model, pairs, {"tinyset": eval_set}, "head", tmp_path / "m" / "cache")
    from hf_projections.training import encode_from_cache
    from hf_projections.training.losses import truncate_embeddings

    with torch.no_grad():
        direct = model.encode_documents(eval_set.doc_texts, truncate_dim=2)
    cached = [truncate_embeddings(e, 2) for e in encode_from_cache(model, doc_cache, eval_set.doc_texts)]
    for a, b in zip(direct, cached):
        torch.testing.assert_close(a, b, atol=5e-3, rtol=0)
    by_dim = sweep_runner._evaluate_from_cache(model, eval_set, query_cache, doc_cache, dims=(2, 4, 8))
    assert by_dim[2]["metrics"]["ndcg@10"] == pytest.approx(float(next(r for r in rows if r["dim"] == "2")["ndcg@10"]), abs=1e-9)
    assert "matryoshka_dims=[2, 4]" in (tmp_path / "m" / "runs" / "linear" / "seed0" / "README.md").read_text()


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"matryoshka_dims": (64, 32)}, "strictly ascending"), ({"matryoshka_dims": (32, 256)}, "<= dim=128"),
     ({"matryoshka_dims": (0, 32)}, "positive ints"), ({"matryoshka_dims": ()}, "non-empty"),
     ({"matryoshka_weights": (1.0,)}, "without matryoshka_dims"),
     ({"matryoshka_dims": (32, 64), "matryoshka_weights": (1.0, 1.0)}, r"one weight per trained dim \[32, 64, 128\]"),
     ({"matryoshka_dims": (32,), "matryoshka_weights": (1.0, -1.0)}, "non-negative")],
)
def test_bad_matryoshka_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        SweepSettings(**changes)


def test_presets_train_with_the_measured_recipe():
    from hf_projections.sweep.settings import PRESETS, RECIPE_FIELDS
    from hf_projections.training import recipe_for

    for name, preset in PRESETS.items():
        resolved, recipe = preset.resolved(), recipe_for(preset.mode)
        assert {key: getattr(resolved, key) for key in RECIPE_FIELDS} == {key: getattr(recipe, key) for key in RECIPE_FIELDS}
        args = preset.training_arguments(seed=3)
        assert (args.head_lr, args.temperature, args.markers, args.seed) == (recipe.head_lr, recipe.temperature,
                                                                             recipe.markers, 3), name


def test_matryoshka_preset_and_trained_dims():
    preset = SweepSettings.from_preset("matryoshka")
    assert preset.matryoshka_dims == (32, 64, 96, 128) and preset.trained_dims() == (32, 64, 96, 128)
    assert SweepSettings(matryoshka_dims=[16, 32]).trained_dims() == (16, 32, 128)
    assert SweepSettings().trained_dims() == (128,)


def test_cli_sweep_takes_matryoshka_dims(settings, tmp_path):
    common = ["sweep", "--backbone", settings.backbone, "--heads", "linear", "--seeds", "0", "--train-data",
              "tinypairs", "--eval-data", "tinyset", "--steps", "2", "--batch-size", "4"]
    assert main([*common, "--matryoshka-dims", "16,64", "--output", str(tmp_path / "cli")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "cli" / "results.csv")))
    assert sorted(int(r["dim"]) for r in rows) == [16, 64, 128]
    assert main([*common, "--matryoshka-dims", "64,16", "--output", str(tmp_path / "bad")]) == 2


def test_rows_of_older_records_take_the_full_dim_and_summaries_keep_to_it():
    from hf_projections.sweep.report import result_rows, summarise

    metrics = {"ndcg@10": 0.5, "recall@100": 0.9, "mrr@10": 0.4}
    old = {"head": "linear", "seed": 0, "params": 1, "train_seconds": 1.0, "eval": {"s": {"metrics": metrics}}}
    new = {**old, "seed": 1, "dim": 128, "eval_by_dim": {"32": {"s": {"metrics": {**metrics, "ndcg@10": 0.1}}}}}
    rows = result_rows([old, new], full_dim=128)
    assert [(r["seed"], r["dim"]) for r in rows] == [(0, 128), (1, 128), (1, 32)]
    assert summarise(rows)["linear"]["datasets"]["s"] == (0.5, 0.0)  # the full dim only
    assert summarise(rows, dim=32)["linear"]["datasets"]["s"] == (0.1, 0.0)


def test_delta_vs_linear_is_paired_by_seed():
    from hf_projections.sweep.report import markdown_table, summarise

    def row(head, seed, value):
        return {"head": head, "seed": seed, "dataset": "s", "split": "test", "dim": 8, "ndcg@10": value, "params": 1}

    # Seeds move both heads together: unpaired the gap would drown in a 10-point seed spread, paired it is exact.
    rows = [row("linear", 0, 0.40), row("linear", 1, 0.50), row("ffn", 0, 0.41), row("ffn", 1, 0.51)]
    table = markdown_table(summarise(rows))
    assert "| `ffn` | 1 | 46.00 ± 7.07 | 46.00 ± 7.07 | +1.00 ± 0.00 | 2 |" in table
    assert "| `linear` | 1 | 45.00 ± 7.07 | 45.00 ± 7.07 | +0.00 ± 0.00 | 2 |" in table


def test_head_cards_state_data_budget_seeds_and_metrics(settings, tmp_path, capsys):
    import statistics

    from hf_projections.cli import main

    output = tmp_path / "sweep"
    records = run_sweep(settings, output)
    ndcg = [r["eval"]["tinyset"]["metrics"]["ndcg@10"] for r in records if r["head"] == "ffn2-x2-res"]
    card = (output / "cards" / "ffn2-x2-res.md").read_text()
    assert f"| tinyset | {statistics.fmean(ndcg):.4f} ± {statistics.stdev(ndcg):.4f} |" in card
    assert "seeds 0, 1" in card and "| datasets | tinypairs |" in card and "| steps | 3 |" in card
    assert "paired by seed" in card and "temperature 0.25" in card  # the recipe the runs trained with
    assert "paired by seed" not in (output / "cards" / "linear.md").read_text()
    assert main(["cards", "--sweep", str(output), "--output", str(tmp_path / "cards"), "--name", "tiny"]) == 0
    assert (tmp_path / "cards" / "ffn2-x2-res.md").read_text().replace("`tiny`", "`sweep`").replace(
        str(tmp_path / "sweep"), "X") == card.replace(str(output), "X")
    assert main(["cards", "--sweep", str(tmp_path / "none"), "--output", str(tmp_path / "c2")]) == 2
    assert "results.json is missing" in capsys.readouterr().err


@pytest.mark.parametrize("mix", ["scalar", "concat"])
def test_a_layer_mix_sweep_trains_every_run_from_one_cache_and_reloads(settings, tmp_path, mix):
    from hf_projections.sweep import load_sweep_run

    layered = settings.replace(seeds=[0], projection_layers=[-1, -2], layer_mix=mix)
    output = tmp_path / "mixed"
    records = run_sweep(layered, output)
    assert len(records) == 2 and (output / "settings.json").exists()
    assert f"head input: layers -1, -2 ({mix} mix)" in (output / "table.md").read_text()
    caches = [json.loads(p.read_text()) for p in (output / "cache").glob("*/meta.json")]
    assert caches and all(c["description"]["layer"] == [2, 1] for c in caches)  # one backbone pass, both layers
    for record in records:  # a reloaded run scores what the sweep measured
        assert (output / "runs" / record["head"] / "seed0" / "head" / "adapter_model.safetensors").exists()
        model = load_sweep_run(output / "runs" / record["head"] / "seed0")
        assert model.config.projection_layers == [-1, -2] and model.config.layer_mix == mix
        eval_set = sweep_runner.EvalSet.load("tinyset", None)
        result = sweep_runner._evaluate_from_cache(model, eval_set, *sweep_runner.cache_features(
            model, {"query": [], "positive": []}, {"tinyset": eval_set}, "head", output / "cache")[1:])
        assert result["metrics"] == pytest.approx(record["eval"]["tinyset"]["metrics"])
    with pytest.raises(ValueError, match="projection_layers needs mode 'head'"):
        settings.replace(projection_layers=[-1, -2], mode="top-1")
    with pytest.raises(ValueError, match="projection_layers must be a non-empty list of distinct ints"):
        settings.replace(projection_layers=[-1, -1])
