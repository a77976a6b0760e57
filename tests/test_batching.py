"""Batches for in-batch negatives: one source per batch, never two rows of one passage, sources in proportion."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_projections.training.batching import PassageBatchSampler


def test_batches_hold_distinct_passages_and_one_source():
    # 40 rows of source "squad" over 10 passages (4 questions each), 20 rows of "nq" with their own passages.
    passages = [f"p{i % 10}" for i in range(40)] + [f"n{i}" for i in range(20)]
    sources = ["squad"] * 40 + ["nq"] * 20
    sampler = PassageBatchSampler(passages, batch_size=5, sources=sources, seed=3)
    batches = list(sampler)
    assert batches and all(len(batch) == 5 for batch in batches)
    for batch in batches:
        assert len({passages[row] for row in batch}) == 5
        assert len({sources[row] for row in batch}) == 1
    rows = [row for batch in batches for row in batch]
    assert len(rows) == len(set(rows))  # no row twice in an epoch
    per_source = collections.Counter(sources[batch[0]] for batch in batches)
    # In proportion to the rows: nq's 20 distinct passages fill 4 batches; squad's 40 rows over only 10 passages
    # fill 7 or 8 (a row whose passage the batch holds waits, and the last waiting rows may not fit).
    assert per_source["nq"] == 4 and per_source["squad"] in (7, 8)


def test_epochs_differ_and_repeat_with_the_seed():
    passages = list(range(64))
    sampler = PassageBatchSampler(passages, batch_size=8, seed=0)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(map(sorted, second)) != sorted(map(sorted, first))
    again = PassageBatchSampler(passages, batch_size=8, seed=0)
    again.set_epoch(1)
    assert list(again) == second and len(again) == 8


def test_a_source_without_enough_distinct_passages_is_refused():
    with pytest.raises(ValueError, match="source 'tiny' has 2 distinct passages, fewer than batch_size=4"):
        PassageBatchSampler(["a", "a", "b", "b", "b"], batch_size=4, sources=["tiny"] * 5)
    with pytest.raises(ValueError, match="one source per row"):
        PassageBatchSampler(["a", "b"], batch_size=1, sources=["x"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=8, max_size=120), st.integers(1, 6), st.integers(0, 50))
def test_generated_rows_never_share_a_passage_in_a_batch(passages, batch_size, seed):
    if len(set(passages)) < batch_size:
        with pytest.raises(ValueError, match="distinct passages"):
            PassageBatchSampler(passages, batch_size=batch_size, seed=seed)
        return
    sampler = PassageBatchSampler(passages, batch_size=batch_size, seed=seed)
    seen = set()
    for batch in sampler:
        assert len(batch) == batch_size and len({passages[row] for row in batch}) == batch_size
        assert not seen & set(batch)
        seen |= set(batch)
    # Rows are dropped only when their passage cannot fit: never more than a batch's worth per distinct passage.
    assert len(passages) - len(seen) < batch_size * (1 + max(collections.Counter(passages).values()))


def _two_sources(root):
    import json

    for name, topic in (("cats", "cat"), ("genes", "gene")):
        folder = root / name
        folder.mkdir(parents=True)
        rows = [{"_id": f"{name}-{i}", "title": "", "text": f"the {topic} study number {i} of the {topic}",
                 "query": f"{topic} {w} {i}"} for i in range(6) for w in ("study", "risk")]  # 2 questions per passage
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_several_training_sets_get_a_source_column_and_per_source_negatives(tiny_backbone, tmp_path, monkeypatch):
    import json

    from hf_projections.training import ProjectionTrainingArguments, load_pairs, train

    _two_sources(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    rows = load_pairs(["cats", "genes"])
    assert rows["source"] == ["cats"] * 12 + ["genes"] * 12
    with pytest.raises(ValueError, match="a training set is named twice"):
        load_pairs(["cats", "cats"])
    args = ProjectionTrainingArguments(backbone=tiny_backbone, dim=8, batch_size=4, max_steps=3, num_negatives=1,
                                       output_dir=tmp_path / "run", cache_dir=tmp_path / "cache", show_progress_bar=False)
    train(["cats", "genes"], args)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["pairs"] == 24 and summary["steps"] == 3

    from hf_projections.training.api import with_negatives

    mined = with_negatives(rows, None, args.resolved())
    for source, negative in zip(mined["source"], mined["negative_1"]):
        assert ("cat" in negative) == (source == "cats")  # mined from the row's own set


def test_trainer_batches_never_hold_two_queries_of_one_passage(tiny_backbone, tmp_path):
    import datasets
    from transformers import TrainingArguments

    from hf_projections import ColBERTModel
    from hf_projections.training import ProjectionTrainer

    passages = [f"p{i // 3}" for i in range(30)]  # 3 queries per passage, in order: a plain split would pair them
    rows = datasets.Dataset.from_dict({"query": [f"q{i}" for i in range(30)], "positive": [f"text {p}" for p in passages],
                                       "positive_id": passages})
    model = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8)
    trainer = ProjectionTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=5,
                                                                    report_to="none", use_cpu=True, seed=1),
                                train_dataset=rows)
    loader = trainer.get_train_dataloader()
    batches = list(loader.batch_sampler)
    assert len(batches) == len(loader) and all(len(batch) == 5 for batch in batches)
    assert all(len({passages[i] for i in batch}) == 5 for batch in batches)
    assert len(next(iter(loader))["query_input_ids"]) == 5


def test_a_mix_caps_the_total_in_proportion_and_one_set_samples_as_before(tmp_path, monkeypatch):
    from hf_projections.data import load_training_mix, load_training_pairs

    _two_sources(tmp_path / "data")
    (tmp_path / "data" / "cats" / "train.jsonl").write_text(
        (tmp_path / "data" / "cats" / "train.jsonl").read_text() * 2)  # 24 cat rows, 12 gene rows
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    mix = load_training_mix(["cats", "genes"], max_pairs=10, seed=1)
    assert sorted(mix["source"]) == ["cats"] * 7 + ["genes"] * 3  # 6.67 and 3.33: the larger remainder rounds up
    alone = load_training_mix("cats", max_pairs=5, seed=1)
    assert alone.remove_columns("source").to_list() == load_training_pairs("cats", max_pairs=5, seed=1).to_list()
    assert len(load_training_mix(["cats", "genes"])) == 36


def test_a_sweep_trains_on_several_sets_in_one_source_batches(tiny_backbone, tmp_path, monkeypatch):
    from test_sweep import _write_data

    from hf_projections.cli import main
    from hf_projections.sweep import SweepSettings, run_sweep

    _two_sources(tmp_path / "data")
    _write_data(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    settings = SweepSettings(backbone=tiny_backbone, heads=("linear",), seeds=(0,), train_data=["cats", "genes"],
                             max_pairs=20, eval_data=("tinyset",), steps=4, batch_size=4, dim=8, document_max_length=16)
    assert settings.train_data == ("cats", "genes") and SweepSettings(train_data=["cats"]).train_data == "cats"
    record = run_sweep(settings, tmp_path / "mix")[0]
    assert record["train_steps"] == 4
    assert "train `cats + genes` (20 pairs)" in (tmp_path / "mix" / "table.md").read_text()
    assert main(["sweep", "--backbone", tiny_backbone, "--heads", "linear", "--seeds", "0", "--train-data", "cats,genes",
                 "--eval-data", "tinyset", "--steps", "2", "--batch-size", "4", "--output", str(tmp_path / "cli")]) == 0
    with pytest.raises(ValueError, match="train_data must name one training set or several different ones"):
        SweepSettings(train_data=("cats", "cats"))
