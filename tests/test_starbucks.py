"""Starbucks 2D Matryoshka (layer, dim) sub-models of DenseEmbeddingModel: config, encode, loss, training."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from transformers import AutoModel

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.evaluation import BeirDataset, evaluate_model
from hf_projections.training import ProjectionTrainingArguments, train
from hf_projections.training.cached_training import build_cached_pairs, train_from_cache
from hf_projections.training.losses import ContrastiveLoss, ProjectionLoss
from hf_projections.training.nested_losses import StarbucksLoss
from hf_projections.training.starbucks import (
    encode_pooled,
    pooled_layer_features,
    train_pooled,
)

TOPICS = ["cat", "dog", "protein", "cell", "gene", "drug", "cancer", "risk"]
QUERIES = [f"{t} {w}" for t in TOPICS for w in ("study", "risk of", "a")]
DOCS = [f"the {t} study of {t} effect" for t in TOPICS for _ in range(3)]
PAIRS = [(1, 4), (2, 8)]  # the tiny backbone has 2 layers; dim 8


def _model(backbone, pairs=PAIRS, **kwargs):
    torch.manual_seed(0)
    return DenseEmbeddingModel.from_backbone(backbone, projection="linear", dim=8, starbucks_pairs=pairs, **kwargs)


def test_config_validates_and_completes_the_pairs(tiny_backbone):
    model = _model(tiny_backbone, pairs=[(1, 4)])
    assert model.config.starbucks_pairs == [[1, 4], [2, 8]]  # the full model (2 layers, dim 8) is appended
    assert model.trained_pairs() == [(1, 4), (2, 8)]
    assert _model(tiny_backbone, pairs=[(1, 4), (2, 4)], matryoshka_dims=[4]).trained_pairs() == [(1, 4), (2, 4), (2, 8)]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [([(3, 4)], r"layer 3 > the backbone's 2 layers"), ([(1, 16)], r"dim 16 > the model's dim 8"),
     ([(2, 4), (1, 8)], "from small to large"), ([(1, 8), (2, 4)], "from small to large"),
     ([(1, 4), (1, 4)], "no repeats"), ([(1,)], r"starbucks_pairs\[0\] must be a \(layer, dim\) pair"),
     ([(0, 4)], "positive ints"), ([], "non-empty list")],
)
def test_bad_pairs_raise_clear_errors(tiny_backbone, pairs, message):
    with pytest.raises(ValueError, match=message):
        _model(tiny_backbone, pairs=pairs)


def test_colbert_refuses_starbucks_pairs(tiny_backbone):
    with pytest.raises(ValueError, match="starbucks_pairs is for single-vector models"):
        ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8, starbucks_pairs=PAIRS)


def test_encode_at_each_pair_has_its_shape_and_matches_the_training_forward(tiny_backbone):
    model = _model(tiny_backbone).eval()
    small = model.encode(DOCS[:5], layer=1)  # layer alone: the largest dim trained there
    assert small.shape == (5, 4) and torch.allclose(small.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert model.encode(DOCS[:5]).shape == (5, 8) and model.encode(DOCS[:5], layer=2, truncate_dim=8).shape == (5, 8)
    # The early-exit encode (layer 2 never runs) equals the all-pairs forward that reads hidden_states[1].
    with torch.no_grad():
        output = model(**model.tokenize(DOCS[:5], is_query=False), all_pairs=True)
    assert [tuple(e.shape) for e in output.pair_embeddings] == [(5, 4), (5, 8)]
    assert torch.allclose(output.pair_embeddings[0], small, atol=1e-5)
    assert torch.allclose(output.pair_embeddings[1], model.encode(DOCS[:5]), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"layer": 1, "truncate_dim": 8}, r"\(layer=1, dim=8\) was not trained; trained \(layer, dim\) pairs: \[\(1, 4\), \(2, 8\)\]"),
     ({"layer": 3}, r"layer must be an int in 1..2"), ({"truncate_dim": 4}, r"truncate_dim must be one of the trained dims \[8\]")],
)
def test_untrained_pairs_are_refused(tiny_backbone, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(tiny_backbone).encode(DOCS[:2], **kwargs)


def test_layer_without_a_pair_is_refused(tiny_backbone):
    model = DenseEmbeddingModel.from_backbone(tiny_backbone, projection="linear", dim=8)
    with pytest.raises(ValueError, match="layer=1 was not trained"):
        model.encode(DOCS[:2], layer=1)
    with pytest.raises(ValueError, match="all_pairs=True needs config.starbucks_pairs"):
        model(**model.tokenize(DOCS[:2], is_query=False), all_pairs=True)


def test_save_load_round_trip_keeps_the_pairs(tiny_backbone, tmp_path):
    model = _model(tiny_backbone).eval()
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["starbucks_pairs"] == [[1, 4], [2, 8]]
    loaded = AutoModel.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, DenseEmbeddingModel) and loaded.trained_pairs() == [(1, 4), (2, 8)]
    assert torch.allclose(loaded.encode(DOCS[:3], layer=1, truncate_dim=4), model.encode(DOCS[:3], layer=1), atol=1e-5)


def _pair_batch(model):
    tokens = {f"query_{k}": v for k, v in model.tokenize(QUERIES[:6], is_query=True).items()}
    tokens.update({f"document_{k}": v for k, v in model.tokenize(DOCS[:6], is_query=False).items()})
    return tokens


def _starbucks_loss_of(model, loss):
    from hf_projections.training.trainer import embed_token_batch

    queries, documents, _ = embed_token_batch(model, _pair_batch(model), **loss.model_inputs)
    return loss(queries, documents)


def test_gradients_reach_every_sub_layer_and_the_head(tiny_backbone):
    model = _model(tiny_backbone).train()
    _starbucks_loss_of(model, StarbucksLoss()).backward()
    for index, layer in enumerate(model.backbone.encoder.layer):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters()), f"layer {index}"
    assert model.projection.linear.weight.grad.abs().sum() > 0


class _NoLoss(ProjectionLoss):
    def forward(self, queries, documents, document_mask=None, teacher_scores=None):
        return queries.sum() * 0


def test_kl_term_pulls_the_sub_model_towards_the_full_model_not_back(tiny_backbone):
    model = _model(tiny_backbone).train()
    value = _starbucks_loss_of(model, StarbucksLoss(_NoLoss(), kl_weight=1.0))
    value.backward()
    assert value > 0  # a random head: the 1-layer, 4-dim scores differ from the full ones
    layer1, layer2 = model.backbone.encoder.layer
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer1.parameters())
    # Only the full model uses layer 2, and its scores are the (detached) target.
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in layer2.parameters())


def test_starbucks_loss_checks_its_inputs():
    q = [torch.nn.functional.normalize(torch.randn(4, d), dim=-1) for d in (4, 8)]
    with pytest.raises(ValueError, match="one embedding tensor per \\(layer, dim\\) pair"):
        StarbucksLoss()(q[1], q[1])
    with pytest.raises(ValueError, match="2 weights for 1"):
        StarbucksLoss(weights=[1, 1])(q[:1], q[:1])
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0"):
        StarbucksLoss(kl_weight=-1)
    # One pair: the plain loss; the KL of the full pair with itself is never added.
    assert torch.allclose(StarbucksLoss(ContrastiveLoss())(q[1:], q[1:]), ContrastiveLoss()(q[1], q[1]))


def test_pooled_features_give_the_models_own_embeddings_and_are_cached(tiny_backbone, tmp_path):
    model = _model(tiny_backbone).eval()
    features = pooled_layer_features(model, DOCS[:5], is_query=False, cache_dir=tmp_path)
    assert features.shape == (5, 2, 32) and len(list(tmp_path.glob("pooled-*.safetensors"))) == 1
    assert torch.allclose(encode_pooled(model, features, [1, 2], layer=1), model.encode(DOCS[:5], layer=1), atol=1e-5)
    assert torch.allclose(encode_pooled(model, features, [1, 2]), model.encode(DOCS[:5]), atol=1e-5)
    again = pooled_layer_features(model, DOCS[:5], is_query=False, cache_dir=tmp_path)
    assert torch.equal(again, features)
    with pytest.raises(ValueError, match="was not trained"):
        encode_pooled(model, features, [1, 2], layer=1, truncate_dim=8)
    assert encode_pooled(model, features, [1, 2], layer=1, truncate_dim=8, strict=False).shape == (5, 8)


def test_pooled_starbucks_training_lowers_the_loss_of_every_pair(tiny_backbone):
    model = _model(tiny_backbone)
    queries = pooled_layer_features(model, QUERIES, is_query=True)
    documents = pooled_layer_features(model, DOCS, is_query=False)
    loss = StarbucksLoss(ContrastiveLoss(temperature=0.1))

    def per_pair():
        with torch.no_grad():
            return [ContrastiveLoss(temperature=0.1)(encode_pooled(model, queries, [1, 2], layer, dim),
                                                     encode_pooled(model, documents, [1, 2], layer, dim)).item()
                    for layer, dim in PAIRS]

    before = per_pair()
    args = ProjectionTrainingArguments(model_type="dense", max_steps=60, batch_size=8, head_lr=1e-2).resolved()
    stats = train_pooled(model, queries, documents, [1, 2], args, loss=loss)
    after = per_pair()
    assert stats["steps"] == 60 and all(a < b for a, b in zip(after, before)), (before, after)
    with pytest.raises(ValueError, match="need layers \\[1\\]"):
        train_pooled(model, queries[:, 1:], documents[:, 1:], [2], args.replace(max_steps=1), loss=loss)


def test_train_api_runs_starbucks_through_the_trainer(tiny_backbone, tmp_path):
    rows = datasets.Dataset.from_dict({"query": QUERIES, "positive": DOCS})
    model = train(rows, ProjectionTrainingArguments(
        backbone=tiny_backbone, projection="linear", mode="full", model_type="dense", dim=8, starbucks_pairs=[[1, 4]],
        max_steps=2, batch_size=4, save_steps=None, output_dir=str(tmp_path / "t"), show_progress_bar=False))
    assert model.config.starbucks_pairs == [[1, 4], [2, 8]]
    assert AutoModel.from_pretrained(tmp_path / "t").trained_pairs() == [(1, 4), (2, 8)]
    logged = [json.loads(line) for line in (tmp_path / "t" / "training_log.jsonl").read_text().splitlines()]
    assert logged and all(torch.isfinite(torch.tensor(r["loss"])) for r in logged if "loss" in r)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"model_type": "colbert"}, "needs model_type='dense'"), ({"matryoshka_dims": [4]}, "not both"),
     ({"use_cache": True}, "cannot train from the feature cache")],
)
def test_train_api_rejects_bad_starbucks_combinations(tiny_backbone, tmp_path, kwargs, message):
    rows = datasets.Dataset.from_dict({"query": QUERIES, "positive": DOCS})
    options = {"model_type": "dense", **kwargs}
    with pytest.raises(ValueError, match=message):
        train(rows, ProjectionTrainingArguments(backbone=tiny_backbone, mode="head", dim=8, starbucks_pairs=[[1, 4]],
                                                max_steps=1, batch_size=4, output_dir=str(tmp_path / "x"), **options))


def test_cached_token_training_refuses_the_starbucks_loss(tiny_backbone, tmp_path):
    model = _model(tiny_backbone)
    data = build_cached_pairs(model, [{"query": q, "positive": d} for q, d in zip(QUERIES, DOCS)], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cached last-layer features cannot give"):
        train_from_cache(model, data, ProjectionTrainingArguments(max_steps=1, batch_size=4).resolved(),
                         loss=StarbucksLoss())


def test_evaluate_model_at_a_pair(tiny_backbone):
    model = _model(tiny_backbone)
    dataset = BeirDataset("toy", "test", {f"d{i}": d for i, d in enumerate(DOCS[::3])},
                          {f"q{i}": q for i, q in enumerate(QUERIES[::3])}, {f"q{i}": {f"d{i}": 1} for i in range(8)})
    result = evaluate_model(model, dataset, encode_kwargs={"layer": 1, "truncate_dim": 4})
    assert result["sizes"]["dim"] == 4 and 0.0 <= result["metrics"]["ndcg@10"] <= 1.0
