"""Hard-negative mining and the ``train(...)`` entry point."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from transformers import AutoModel

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.training import ProjectionTrainingArguments, mine_hard_negatives, recipe_for, train

PAIRS = {
    "query_id": ["q1", "q1", "q2", "q3"],
    "query": ["cat protein", "cat protein", "dog gene", "cancer drug risk"],
    "positive_id": ["d1", "d8", "d2", "d3"],
    "positive": ["the cat protein", "protein of a cat", "dog gene study", "cancer drug risk effect"],
}
CORPUS = {
    "d1": "the cat protein", "d2": "dog gene study", "d3": "cancer drug risk effect", "d4": "cat and dog protein",
    "d5": "gene of the dog", "d6": "drug effect on cancer cell", "d7": "the a of", "d8": "protein of a cat",
}


def test_bm25_mining_skips_every_positive_of_the_query():
    pairs = datasets.Dataset.from_dict(PAIRS)
    mined = mine_hard_negatives(pairs, CORPUS, num_negatives=2)
    assert mined.column_names[-3:] == ["negative_1", "negative_2", "negative_ids"]
    for row in mined:
        positives = {p for q, p in zip(PAIRS["query_id"], PAIRS["positive_id"]) if q == row["query_id"]}
        assert not positives & set(row["negative_ids"]) and len(set(row["negative_ids"])) == 2
        assert [CORPUS[i] for i in row["negative_ids"]] == [row["negative_1"], row["negative_2"]]
    # lexical neighbours rank first: "gene of the dog" for "dog gene"
    assert mined[2]["negative_ids"][0] == "d5"
    # qrels exclude more documents; ignore_identical_ids skips the query's own id
    more = mine_hard_negatives(pairs, CORPUS, num_negatives=1, qrels={"q2": {"d5": 1}})
    assert more[2]["negative_ids"] != ["d5"]
    with pytest.raises(ValueError, match="already have negative columns"):
        mine_hard_negatives(mined, CORPUS)
    with pytest.raises(ValueError, match="fewer than 7 non-relevant"):
        mine_hard_negatives(pairs, CORPUS, num_negatives=7)


def test_model_mining_and_default_corpus(tiny_backbone):
    model = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8)
    pairs = datasets.Dataset.from_dict(PAIRS)
    mined = mine_hard_negatives(pairs, CORPUS, num_negatives=2, method=model)
    own_positives = [{"d1", "d8"}, {"d1", "d8"}, {"d2"}, {"d3"}]
    for ids, positives in zip(mined["negative_ids"], own_positives):
        assert len(set(ids)) == 2 and not set(ids) & positives
    # default corpus: the distinct positives of the pairs themselves
    own = mine_hard_negatives(pairs, num_negatives=1, sample=True)
    assert own["negative_ids"][2][0] in {"d1", "d8", "d3"}
    with pytest.raises(TypeError, match="encode_queries"):
        mine_hard_negatives(pairs, CORPUS, method=object())


def test_train_head_mode_uses_cache_and_saves(tiny_backbone, tmp_path):
    rows = datasets.Dataset.from_dict({k: PAIRS[k] * 2 for k in PAIRS})
    model = train(rows, ProjectionTrainingArguments(
        backbone=tiny_backbone, projection="ffn2-x2-res", mode="head", max_steps=4, batch_size=4, dim=8,
        output_dir=tmp_path / "run", logging_steps=2, cache_dir=tmp_path / "cache", num_negatives=1,
        show_progress_bar=False, query_max_length=8, document_max_length=16,
    ))
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["cached"] and summary["arguments"]["mode"] == "head" and summary["steps"] == 4
    assert summary["samples_per_second"] > 0
    log = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4]
    loaded = AutoModel.from_pretrained(str(tmp_path / "run"))
    assert isinstance(loaded, ColBERTModel) and loaded.config.dim == 8
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, model.state_dict()[name])


def test_train_top_k_dense_through_trainer(tiny_backbone, tmp_path):
    rows = datasets.Dataset.from_dict({k: PAIRS[k] * 2 for k in PAIRS})
    model = train(rows, ProjectionTrainingArguments(
        backbone=tiny_backbone, projection="linear", mode="top-1", max_steps=2, batch_size=4, dim=8,
        model_type="dense", output_dir=tmp_path / "run", logging_steps=1, save_steps=1, show_progress_bar=False,
        use_cache=False,
    ))
    assert isinstance(model, DenseEmbeddingModel)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert not summary["cached"] and summary["steps"] == 2
    assert (tmp_path / "run" / "checkpoint-2" / "model.safetensors").exists()
    # resume=True picks up the last complete checkpoint: nothing left to do, same weights
    again = train(rows, ProjectionTrainingArguments(
        backbone=tiny_backbone, projection="linear", mode="top-1", max_steps=2, batch_size=4, dim=8,
        model_type="dense", output_dir=tmp_path / "run", save_steps=1, show_progress_bar=False,
        resume_from_checkpoint=True, use_cache=False,
    ))
    for name, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, model.state_dict()[name])


def test_top_k_caches_the_frozen_layers_by_default_on_bert_like_encoders(tiny_backbone, tmp_path):
    rows = datasets.Dataset.from_dict({k: PAIRS[k] * 2 for k in PAIRS})
    train(rows, ProjectionTrainingArguments(backbone=tiny_backbone, mode="top-1", max_steps=2, batch_size=4, dim=8,
                                            output_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                                            show_progress_bar=False))
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["cached"] and summary["arguments"]["use_cache"] is True
    assert summary["learning_rates"] == {"backbone": recipe_for("top-1").backbone_lr, "head": recipe_for("top-1").head_lr}


def test_train_rejects_bad_settings(tiny_backbone, tmp_path):
    rows = datasets.Dataset.from_dict(PAIRS)
    with pytest.raises(ValueError, match="'full', 'head' or 'top-K'"):
        ProjectionTrainingArguments(backbone=tiny_backbone, mode="bottom-2", output_dir=tmp_path)
    with pytest.raises(ValueError, match="use_cache=True needs mode"):
        ProjectionTrainingArguments(backbone=tiny_backbone, mode="full", use_cache=True, output_dir=tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        ProjectionTrainingArguments(backbone=tiny_backbone, model_type="sparse", output_dir=tmp_path)
    with pytest.raises(ValueError, match="mode 'head' trains no backbone layer"):
        ProjectionTrainingArguments(backbone=tiny_backbone, mode="head", backbone_lr=1e-4)
    with pytest.raises(ValueError, match="batch_size=32 is larger"):
        train(rows, ProjectionTrainingArguments(backbone=tiny_backbone, mode="head", output_dir=tmp_path,
                                                cache_dir=tmp_path / "c"))


@pytest.mark.parametrize(("changes", "field"), [
    ({"head_lr": 0}, "head_lr"), ({"backbone_lr": float("nan"), "mode": "full"}, "backbone_lr"),
    ({"temperature": -1}, "temperature"), ({"batch_size": 0}, "batch_size"), ({"epochs": True}, "epochs"),
    ({"max_steps": 2.5}, "max_steps"), ({"warmup_ratio": 1.5}, "warmup_ratio"), ({"weight_decay": -0.1}, "weight_decay"),
    ({"markers": "yes"}, "markers"), ({"loss": "hinge"}, "loss"), ({"precision": "fp8"}, "precision"),
    ({"cache_dtype": "int8"}, "cache_dtype"), ({"negatives_method": "dense"}, "negatives_method"),
    ({"projection": "ffn9"}, "projection"), ({"matryoshka_dims": [0, 8]}, "matryoshka_dims"),
    ({"matryoshka_weights": [1.0]}, "matryoshka_weights"), ({"num_negatives": -1}, "num_negatives"),
    ({"backbone_dropout": 1.0}, "backbone_dropout"), ({"backbone_dropout": -0.1}, "backbone_dropout"),
    ({"optim": "sgd"}, "optim"),
])
def test_bad_training_arguments_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ProjectionTrainingArguments(**changes)


def test_resolved_arguments_take_the_recipe_of_their_mode_and_keep_what_was_given():
    head = ProjectionTrainingArguments().resolved()
    recipe = recipe_for("head")
    assert (head.projection, head.head_lr, head.backbone_lr, head.temperature, head.markers, head.use_cache) == (
        recipe.projection, recipe.head_lr, None, recipe.temperature, recipe.markers, True)
    full = ProjectionTrainingArguments(mode="full", temperature=0.5).resolved()
    assert (full.backbone_lr, full.temperature, full.use_cache) == (recipe_for("full").backbone_lr, 0.5, False)
    # resolving an unresolved copy after a mode change gives the new mode's recipe, not the old one's
    top = ProjectionTrainingArguments().replace(mode="top-2").resolved()
    assert top.backbone_lr == recipe_for("top-2").backbone_lr and top.use_cache is None  # train() decides the cache
    dense = ProjectionTrainingArguments(model_type="dense").resolved()
    assert dense.temperature == recipe_for("head", "dense").temperature == 0.05
