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
    with pytest.raises(ValueError, match="names a training set twice"):
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
