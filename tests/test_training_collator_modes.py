"""Collator shapes and training-mode parameter selection."""

from __future__ import annotations

import pytest
import torch

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.training.collator import ProjectionCollator, negative_columns
from hf_projections.training.modes import eval_frozen_modules, parse_mode, set_trainable

ROWS = [
    {"query": "the cat", "positive": "cat is the gene", "negative_1": "dog", "negative_2": "a", "scores": [3.0, 1.0, 0.5]},
    {"query": "gene study", "positive": "the gene claim study of cancer", "negative_1": "cat", "negative_2": "the dog",
     "scores": [2.0, 0.0, 1.0]},
]


@pytest.fixture(scope="module")
def colbert(tiny_backbone):
    return ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=16, query_max_length=12)


def test_collator_shapes_and_grouping(colbert):
    batch = ProjectionCollator(colbert)(ROWS)
    assert batch["query_input_ids"].shape == (2, 12)  # queries padded to query_max_length ([MASK] augmentation)
    assert batch["query_attention_mask"].all()
    assert batch["document_input_ids"].shape[0] == 2 * 3  # B * G, positive first
    assert batch["document_attention_mask"].shape == batch["document_input_ids"].shape
    assert batch["teacher_scores"].shape == (2, 3)
    marker = colbert.tokenizer.convert_tokens_to_ids("[unused1]")
    assert (batch["document_input_ids"][:, 1] == marker).all()
    # group order: row 1's positive is document 3
    expected = colbert.tokenize(["the gene claim study of cancer"], is_query=False)["input_ids"][0]
    assert torch.equal(batch["document_input_ids"][3, : len(expected)], expected)
    # num_negatives keeps the first ones; teacher scores follow
    one = ProjectionCollator(colbert, num_negatives=1)(ROWS)
    assert one["document_input_ids"].shape[0] == 4 and one["teacher_scores"].shape == (2, 2)
    plain = ProjectionCollator(colbert)([{"query": "a", "positive": "b"}])
    assert set(plain) >= {"query_input_ids", "document_input_ids"} and "teacher_scores" not in plain


def test_collator_errors(colbert):
    with pytest.raises(ValueError, match="without gaps"):
        negative_columns(["negative_1", "negative_3"])
    with pytest.raises(ValueError, match="num_negatives=3"):
        ProjectionCollator(colbert, num_negatives=3)(ROWS)
    with pytest.raises(ValueError, match="'positive'"):
        ProjectionCollator(colbert)([{"query": "a"}])
    with pytest.raises(TypeError, match="tokenize"):
        ProjectionCollator(object())


def test_parse_mode():
    assert str(parse_mode("full")) == "full" and str(parse_mode("HEAD")) == "head"
    assert parse_mode("top-3").top_k == 3
    for bad in ("top-0", "top", "top-x", "last-2", "", 3):
        with pytest.raises(ValueError, match="'full', 'head' or 'top-K'"):
            parse_mode(bad)


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_set_trainable_modes(colbert):
    counts = set_trainable(colbert, "full")
    assert counts["trainable"] == counts["total"]
    set_trainable(colbert, "head")
    assert _trainable(colbert) == {n for n, _ in colbert.named_parameters() if n.startswith("projection.")}
    set_trainable(colbert, "top-1")
    names = _trainable(colbert)
    assert any(n.startswith("backbone.encoder.layer.1.") for n in names)
    assert not any(n.startswith(("backbone.encoder.layer.0.", "backbone.embeddings.")) for n in names)
    assert any(n.startswith("projection.") for n in names)
    set_trainable(colbert, "top-2")
    assert not any(n.startswith("backbone.embeddings.") for n in _trainable(colbert))
    assert any(n.startswith("backbone.encoder.layer.0.") for n in _trainable(colbert))
    with pytest.raises(ValueError, match="more layers than the backbone has"):
        set_trainable(colbert, "top-3")
    # frozen blocks go to eval mode (no dropout); trainable ones keep training mode
    set_trainable(colbert, "top-1")
    colbert.train()
    eval_frozen_modules(colbert)
    assert not colbert.backbone.embeddings.training and not colbert.backbone.encoder.layer[0].training
    assert colbert.backbone.encoder.layer[1].training and colbert.projection.training
    set_trainable(colbert, "full")


def test_set_trainable_dense(tiny_backbone):
    dense = DenseEmbeddingModel.from_backbone(tiny_backbone, projection="linear", dim=8)
    set_trainable(dense, "head")
    assert _trainable(dense) == {f"projection.{n}" for n, _ in dense.projection.named_parameters()}
