"""Cached backbone features: same gradients as the token path, reuse, invalidation, atomic builds."""

from __future__ import annotations

import json
import os

import datasets
import pytest
import torch
from torch import nn

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.heads import PRESETS
from hf_projections.modeling.backbone import check_layerwise_backbone, hidden_states_at, run_layers
from hf_projections.training import (
    ProjectionCollator,
    ProjectionTrainingArguments,
    build_cached_pairs,
    build_feature_cache,
    encode_from_cache,
    set_trainable,
    train_from_cache,
)
from hf_projections.training.cached_training import cached_loss
from hf_projections.training.losses import ContrastiveLoss
from hf_projections.training.modes import eval_frozen_modules
from hf_projections.training.trainer import embed_token_batch

ROWS = {
    "query": ["the cat", "a dog", "gene study", "cancer risk"],
    "positive": ["cat is the", "dog of a", "the gene claim study", "risk of cancer drug"],
    "negative_1": ["gene", "cat", "dog of the", "the"],
}
TEXTS = ["the cat is a dog", "gene", "cancer risk of drug effect in the study", "gene"]


def make(cls, tiny_backbone, seed=0):
    torch.manual_seed(seed)
    model = cls.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=16, query_max_length=8, document_max_length=16)
    for module in model.modules():  # the top-k comparison needs the same (no) dropout on both paths
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def gradients(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls", [ColBERTModel, DenseEmbeddingModel])
@pytest.mark.parametrize("mode", ["head", "top-1"])
@pytest.mark.parametrize("dtype, atol", [("float32", 1e-6), ("float16", 2e-3)])
def test_cached_step_has_uncached_gradients(tiny_backbone, tmp_path, cls, mode, dtype, atol):
    model = make(cls, tiny_backbone)
    rows = datasets.Dataset.from_dict(ROWS)
    data = build_cached_pairs(model, rows, mode=mode, cache_dir=tmp_path, dtype=dtype)
    loss = ContrastiveLoss()
    set_trainable(model, mode)
    model.train()
    eval_frozen_modules(model)

    uncached = loss(*embed_token_batch(model, ProjectionCollator(model)(rows.to_list())))
    uncached.backward()
    expected = gradients(model)
    model.zero_grad(set_to_none=True)
    cached = cached_loss(model, data.collate(range(len(rows))), loss, data.layer)
    cached.backward()
    actual = gradients(model)

    assert set(actual) == set(expected) and any(n.startswith("projection.") for n in actual)
    assert (mode == "top-1") == any(n.startswith("backbone.") for n in actual)
    assert cached.item() == pytest.approx(uncached.item(), abs=atol * 10)
    for name, grad in expected.items():
        scale = grad.abs().max().clamp(min=1.0)
        torch.testing.assert_close(actual[name] / scale, grad / scale, atol=atol, rtol=0, msg=name)


def test_layerwise_backbone_matches_full_forward(tiny_backbone):
    model = make(ColBERTModel, tiny_backbone).eval()
    inputs = dict(model.tokenize(TEXTS, is_query=False))
    mask = inputs["attention_mask"].bool()
    full = model.backbone(**inputs).last_hidden_state
    for layer in (0, 1, 2):
        finished = run_layers(model.backbone, hidden_states_at(model.backbone, inputs, [layer])[0], mask, layer)
        torch.testing.assert_close(finished[mask], full[mask], atol=1e-6, rtol=0)


def test_hidden_states_at_are_transformers_hidden_states_and_stop_early(tiny_backbone):
    model = make(DenseEmbeddingModel, tiny_backbone).eval()
    inputs = dict(model.tokenize(TEXTS, is_query=False))
    reference = model.backbone(**inputs, output_hidden_states=True).hidden_states  # embeddings, layer 1, layer 2
    states = model.hidden_states_at(**inputs, layers=[2, 0, 1, 0])
    for state, layer in zip(states, [2, 0, 1, 0]):
        torch.testing.assert_close(state, reference[layer], atol=0, rtol=0)
    ran = []
    handles = [block.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, block in enumerate(model.backbone.encoder.layer)]
    torch.testing.assert_close(model.hidden_states_at(**inputs, layers=1), reference[1], atol=0, rtol=0)
    assert ran == [0]  # block 2 never ran
    for handle in handles:
        handle.remove()
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model.hidden_states_at(**inputs, layers=3)


def count_backbone_calls(model):
    calls = []
    handles = [
        model.backbone.register_forward_hook(lambda *_: calls.append("backbone")),
        model.backbone.embeddings.register_forward_hook(lambda *_: calls.append("embeddings")),
    ]
    return calls, handles


def test_cache_is_reused_and_invalidated(tiny_backbone, tmp_path):
    model = make(ColBERTModel, tiny_backbone)
    calls, _ = count_backbone_calls(model)
    first = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path)
    assert calls and len(first) == 3  # duplicates stored once
    calls.clear()
    again = build_feature_cache(model, list(TEXTS), is_query=False, cache_dir=tmp_path)
    assert calls == [] and again.path == first.path

    keys = {first.key}

    def new_key(**kwargs):
        options = dict(texts=TEXTS, is_query=False, cache_dir=tmp_path)
        options.update(kwargs)
        key = build_feature_cache(model, **options).key
        assert key not in keys, kwargs
        keys.add(key)

    new_key(is_query=True)
    new_key(texts=TEXTS + ["a new text"])
    new_key(layer=1)
    new_key(dtype="float32")
    new_key(precision="bf16")
    assert build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, precision="fp32").key == first.key
    model.config.document_max_length = 12
    new_key()
    with torch.no_grad():
        model.backbone.embeddings.word_embeddings.weight[5, 0] += 1.0
    new_key()
    # a layer cache ignores the layers above it (a top-k-trained model still matches it) ...
    layer_cache = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, layer=1)
    with torch.no_grad():
        model.backbone.encoder.layer[1].output.dense.weight.mul_(2.0)
    calls.clear()
    assert build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, layer=1).key == layer_cache.key
    assert calls == []
    # ... but not the layers below it
    with torch.no_grad():
        model.backbone.encoder.layer[0].output.dense.weight.mul_(2.0)
    assert build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, layer=1).key != layer_cache.key
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".building")]


def test_bf16_backbone_pass_is_close_to_fp32_and_auto_follows_the_hardware(tiny_backbone, tmp_path, monkeypatch):
    from hf_projections.training import backbone_precision

    model = make(ColBERTModel, tiny_backbone)
    exact = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, dtype="float32")
    bf16 = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, dtype="float32", precision="bf16")
    assert bf16.key != exact.key and json.loads((bf16.path / "meta.json").read_text())["description"][
        "backbone_precision"] == "bf16"
    for row in range(len(exact)):
        a, _ = exact.batch([row]); b, _ = bf16.batch([row])
        assert not torch.equal(a, b)  # really another pass ...
        assert torch.nn.functional.cosine_similarity(a.flatten(0, 1), b.flatten(0, 1)).min() > 0.99  # ... of bf16 noise
    for native, expected in ((True, bf16.key), (False, exact.key)):
        monkeypatch.setattr(backbone_precision, "native_bf16", lambda device, native=native: native)
        assert backbone_precision.resolve_backbone_precision("auto") == ("bf16" if native else "fp32")
        auto = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, dtype="float32", precision="auto")
        assert auto.key == expected
    with pytest.raises(ValueError, match="backbone_precision must be one of 'auto', 'fp32', 'bf16', got 'int8'"):
        build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, precision="int8")
    with pytest.raises(ValueError, match="backbone_precision"):
        ProjectionTrainingArguments(backbone_precision="fp16")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, True), (False, True, True), (False, False, False), (None, None, False), ("raise", "raise", False)])
def test_native_bf16_on_cpu_means_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, expected):
    from hf_projections.training.backbone_precision import native_bf16

    def probe(value):
        def answer():
            if value == "raise":
                raise RuntimeError("cpuinfo unavailable")
            return value
        return answer
    for name, value in (("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx512_bf16)):
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)  # an older torch without the probe
        else:
            monkeypatch.setattr(torch.cpu, name, probe(value), raising=False)
    assert native_bf16("cpu") is expected


def test_killed_build_leaves_no_cache(tiny_backbone, tmp_path, monkeypatch):
    model = make(ColBERTModel, tiny_backbone)
    calls = {"n": 0}
    real = model.hidden_states_at

    def dies_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "hidden_states_at", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, batch_size=1)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(model, "hidden_states_at", real)
    built = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, batch_size=1)
    meta = json.loads((built.path / "meta.json").read_text())
    assert meta["n_tokens"] == int(built.lengths.sum()) and meta["description"]["texts"]


@pytest.mark.parametrize("cls", [ColBERTModel, DenseEmbeddingModel])
def test_encode_from_cache_matches_encoding(tiny_backbone, tmp_path, cls):
    model = make(cls, tiny_backbone)
    for layer in (None, 1):
        cache = build_feature_cache(model, TEXTS, is_query=True, cache_dir=tmp_path, layer=layer, dtype="float32")
        from_cache = encode_from_cache(model, cache, TEXTS)
        direct = model.encode_queries(TEXTS)
        if cls is ColBERTModel:
            assert [e.shape for e in from_cache] == [e.shape for e in direct]
            for a, b in zip(from_cache, direct):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(from_cache, direct, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", sorted(PRESETS))
def test_packed_encoding_from_cache_matches_encoding_for_every_head(tiny_backbone, tmp_path, head):
    """The packed path runs the head on all texts' tokens as one sequence: right only for token-wise heads."""
    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(tiny_backbone, projection=head, dim=16, document_max_length=16,
                                       matryoshka_dims=[8, 16]).eval()
    texts = TEXTS + ["a longer text about the effect of a gene on cancer risk"]
    cache = build_feature_cache(model, texts, is_query=False, cache_dir=tmp_path, dtype="float32")
    picked = [texts[i] for i in (4, 0, 2)]  # a subset, out of storage order
    for truncate_dim in (None, 8):
        from_cache = encode_from_cache(model, cache, picked, batch_size=2, truncate_dim=truncate_dim)
        direct = model.encode_documents(picked, truncate_dim=truncate_dim)
        assert [e.shape for e in from_cache] == [e.shape for e in direct]
        for a, b in zip(from_cache, direct):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_encode_from_cache_autocasts_when_asked(tiny_backbone, tmp_path):
    model = make(ColBERTModel, tiny_backbone)
    cache = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, layer=1, dtype="float32")
    exact = encode_from_cache(model, cache, TEXTS)
    assert all(torch.equal(a, b) for a, b in zip(exact, encode_from_cache(model, cache, TEXTS, precision="auto")))
    bf16 = encode_from_cache(model, cache, TEXTS, precision="bf16")  # the top layer and head run in bf16
    assert all(e.dtype == torch.float32 for e in bf16)
    assert not all(torch.equal(a, b) for a, b in zip(exact, bf16))
    for a, b in zip(exact, bf16):
        assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99

def test_train_from_cache_learns_and_logs(tiny_backbone, tmp_path):
    model = make(ColBERTModel, tiny_backbone)
    data = build_cached_pairs(model, datasets.Dataset.from_dict(ROWS), mode="head", cache_dir=tmp_path)
    loss = ContrastiveLoss()
    model.eval()
    with torch.no_grad():
        before = cached_loss(model, data.collate(range(4)), loss, None).item()
    backbone_before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    args = ProjectionTrainingArguments(max_steps=40, batch_size=4, head_lr=1e-2, logging_steps=10,
                                       show_progress_bar=False).resolved()
    stats = train_from_cache(model, data, args, loss=loss, log_path=tmp_path / "log.jsonl")
    with torch.no_grad():
        after = cached_loss(model, data.collate(range(4)), loss, None).item()
    assert stats["steps"] == 40 and stats["samples"] == 160
    assert after < 0.5 * before, (before, after)
    assert all(torch.equal(p, backbone_before[n]) for n, p in model.backbone.named_parameters())
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20, 30, 40] and "lr_head" in lines[0]
    assert stats["learning_rates"] == {"head": 1e-2}
    with pytest.raises(ValueError, match="layer"):
        train_from_cache(model, data, args.replace(mode="top-1", backbone_lr=1e-4))


def test_unsupported_backbone_has_clear_error():
    class FakeConfig:
        model_type = "gpt2"

    fake = nn.Module()
    fake.config = FakeConfig()
    with pytest.raises(ValueError, match="BERT-like encoders"):
        check_layerwise_backbone(fake)


def test_a_cache_over_more_texts_serves_a_subset(tiny_backbone, tmp_path):
    model = make(ColBERTModel, tiny_backbone)
    full = build_feature_cache(model, TEXTS + ["a new text", "another one"], is_query=False, cache_dir=tmp_path)
    calls, _ = count_backbone_calls(model)
    subset = build_feature_cache(model, TEXTS[:2], is_query=False, cache_dir=tmp_path)
    assert calls == [] and subset.path == full.path  # no backbone pass: the larger cache holds both texts
    assert build_feature_cache(model, TEXTS[:2], is_query=True, cache_dir=tmp_path).path != full.path  # queries differ
    calls.clear()
    other = build_feature_cache(model, ["a text the cache lacks"], is_query=False, cache_dir=tmp_path)
    assert calls and other.path != full.path
