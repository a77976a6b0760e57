"""Layer-mix input: the head reads a learned mix of several backbone layers (scalar mix or concatenation), built from
the config, saved and loaded exactly (AutoModel and trust_remote_code), trained through train(), and refused with a
named error where a path gives the head one layer only."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel

from hf_projections.heads.layer_mix import ConcatLayers, ScalarMix, build_layer_mix, describe_head_input, describe_layer_mix
from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel, ProjectionConfig

TEXTS = ["the cat sat on the mat", "genes and proteins", "a river runs through it"]


def test_scalar_mix_starts_as_the_mean_and_concat_stacks_features():
    states = [torch.randn(2, 5, 4) for _ in range(3)]
    assert torch.allclose(ScalarMix(3)(states), sum(states) / 3, atol=1e-6)
    mix = ScalarMix(3)
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0.0, 50.0]))
        mix.gamma.fill_(2.0)
    assert torch.allclose(mix(states), 2 * states[2], atol=1e-5)
    assert ConcatLayers(3)(states).shape == (2, 5, 12)
    with pytest.raises(ValueError, match="built for 3 layers, got 2"):
        ScalarMix(3)(states[:2])
    with pytest.raises(ValueError, match="layer_mix must be one of scalar, concat"):
        build_layer_mix("sum", 2)


def test_head_input_description_names_the_layers_or_the_last_one():
    assert describe_head_input(None, None) == describe_head_input([-1], "scalar") == "the last layer"
    assert describe_head_input((-1, -2), "concat") == "layers -1, -2 (concat mix)"
    assert describe_layer_mix([-1], "scalar") == "layers -1 (scalar mix)"  # a saved one-layer mix is a mix


@pytest.mark.parametrize("mix", ["scalar", "concat"])
def test_layer_mix_model_reads_the_named_layers_and_round_trips(tiny_backbone, tmp_path, mix):
    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=8, projection_layers=[-1, 0],
                                       layer_mix=mix).eval()
    hidden = model.config.hidden_size
    assert model.projection.d_in == (2 * hidden if mix == "concat" else hidden)
    assert model.config.resolved_projection_layers() == [model.config.num_layers, 0]
    batch = model.tokenize(TEXTS, is_query=False)
    with torch.no_grad():
        last, embedding = model.hidden_states_at(**batch, layers=[model.config.num_layers, 0])
        expected = model.project(model.layer_mix([last, embedding]), batch["attention_mask"].bool())
        assert torch.equal(model(**batch).token_embeddings, expected)
    if mix == "scalar":
        with torch.no_grad():
            model.layer_mix.weights.copy_(torch.tensor([0.3, -0.2]))  # trained-looking weights must survive saving
    model.save_pretrained(tmp_path / "model")
    for loaded in (ColBERTModel.from_pretrained(tmp_path / "model"),
                   AutoModel.from_pretrained(tmp_path / "model", trust_remote_code=True)):
        assert loaded.config.projection_layers == [-1, 0] and loaded.config.layer_mix == mix
        for a, b in zip(loaded.encode_documents(TEXTS), model.encode_documents(TEXTS)):
            assert torch.allclose(a, b, atol=1e-6)


def test_bad_layer_mix_configs_name_the_field(tiny_backbone):
    with pytest.raises(ValueError, match=r"projection_layers \[5\] are outside the backbone's layers: allowed -3..2"):
        ColBERTModel.from_backbone(tiny_backbone, dim=8, projection_layers=[-1, 5])
    with pytest.raises(ValueError, match="name a layer twice"):
        ColBERTModel.from_backbone(tiny_backbone, dim=8, projection_layers=[-1, 2])
    with pytest.raises(ValueError, match="non-empty list of ints"):
        ColBERTModel.from_backbone(tiny_backbone, dim=8, projection_layers=[])
    with pytest.raises(ValueError, match="layer_mix must be one of scalar, concat"):
        ProjectionConfig(layer_mix="mean")
    with pytest.raises(ValueError, match="is for ColBERT models"):
        DenseEmbeddingModel.from_backbone(tiny_backbone, dim=8, projection_layers=[-1, -2])


def test_one_layer_paths_refuse_a_layer_mix_head(tiny_backbone, tmp_path):
    from hf_projections.training.cached_training import build_cached_pairs

    model = ColBERTModel.from_backbone(tiny_backbone, dim=8, projection_layers=[-1, -2])
    # save_head keeps the layer mix now (a projection adapter; tests/test_peft_adapter.py)
    with pytest.raises(ValueError, match="mode 'top-1' with a layer-mix head .* cannot train from a feature cache"):
        build_cached_pairs(model, [{"query": "q", "positive": "p"}], mode="top-1", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("mix, projection", [("scalar", "ffn2-x2-res"), ("concat", "linear")])
def test_layer_mix_round_trips_through_sentence_transformers(tiny_backbone, tmp_path, mix, projection):
    from sentence_transformers import MultiVectorEncoder

    from hf_projections.integrations.sentence_transformers import LayerMix, from_sentence_transformers

    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(tiny_backbone, projection=projection, dim=8, projection_layers=[-1, -2, 0],
                                       layer_mix=mix).eval()
    with torch.no_grad():  # trained-looking weights everywhere (residual branches start at zero)
        for parameter in [*model.projection.parameters(), *model.layer_mix.parameters()]:
            parameter.normal_(0.0, 0.3)
    queries, documents = TEXTS[:2], TEXTS
    expected = model.score(queries, documents)

    st_model = model.to_sentence_transformers(tmp_path / "st")
    assert isinstance(st_model[1], LayerMix) and st_model[1].layers == model.config.resolved_projection_layers()
    reloaded = MultiVectorEncoder(str(tmp_path / "st"), device="cpu", trust_remote_code=True)
    for st in (st_model, reloaded):
        scores = st.similarity(st.encode_query(queries), st.encode_document(documents)).cpu()
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)

    back = from_sentence_transformers(tmp_path / "st", trust_remote_code=True)
    assert back.config.resolved_projection_layers() == model.config.resolved_projection_layers()
    assert back.config.layer_mix == mix and not back.backbone.config.output_hidden_states
    torch.testing.assert_close(back.score(queries, documents), expected, atol=1e-5, rtol=0)


def test_st_layer_mix_module_names_what_it_needs():
    from hf_projections.integrations.sentence_transformers import LayerMix

    with pytest.raises(ValueError, match="layers must be a non-empty list of block counts"):
        LayerMix([])
    with pytest.raises(ValueError, match="mix must be one of scalar, concat"):
        LayerMix([1, 2], mix="sum")
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        LayerMix([1, 2])({"token_embeddings": torch.zeros(1, 2, 4)})
    states = tuple(torch.randn(1, 2, 4) for _ in range(3))
    with pytest.raises(ValueError, match=r"reads block counts \[1, 5\], but the backbone has 2 blocks"):
        LayerMix([1, 5])({"token_embeddings": states[-1], "all_layer_embeddings": states})


@pytest.mark.parametrize("use_cache", [True, False])
def test_train_gives_a_layer_mix_model_from_the_cache_or_tokens(tiny_backbone, tmp_path, use_cache):
    import datasets

    from hf_projections.training import ProjectionTrainingArguments, train

    rows = datasets.Dataset.from_dict({"query": [f"{t} question" for t in TEXTS * 4],
                                       "positive": [f"about {t} number {i}" for i, t in enumerate(TEXTS * 4)]})
    args = ProjectionTrainingArguments(backbone=tiny_backbone, projection="linear", dim=8, max_steps=2, batch_size=4,
                                       projection_layers=[-1, -2], output_dir=str(tmp_path / "out"), save_steps=None,
                                       cache_dir=str(tmp_path / "cache"), use_cache=None if use_cache else False)
    assert args.resolved().use_cache is use_cache  # head mode caches the mixed layers by default
    before = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8, projection_layers=[-1, -2])
    model = train(rows, args)
    assert model.config.projection_layers == [-1, -2]
    assert not torch.equal(model.layer_mix.weights.detach(), before.layer_mix.weights.detach())  # the mix trained
    assert any((tmp_path / "cache").glob("*/meta.json")) is use_cache
    with pytest.raises(ValueError, match="in mode 'head' only"):
        ProjectionTrainingArguments(projection_layers=[-1, -2], mode="top-2", use_cache=True)


@pytest.mark.parametrize("mix", ["scalar", "concat"])
def test_a_layer_mix_cache_encodes_like_the_model(tiny_backbone, tmp_path, mix):
    from hf_projections.training import build_feature_cache, encode_from_cache
    from hf_projections.training.cached_training import cache_layer_for_mode

    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=8, projection_layers=[-1, -3],
                                       layer_mix=mix).eval()
    if mix == "scalar":
        with torch.no_grad():
            model.layer_mix.weights.copy_(torch.tensor([0.7, -0.4]))
    layers = cache_layer_for_mode(model, "head")
    assert layers == (model.config.num_layers, model.config.num_layers - 2)
    cache = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, layer=layers, dtype="float32")
    assert cache.layer == layers and cache.hidden_size == 2 * model.config.hidden_size
    for cached, direct in zip(encode_from_cache(model, cache, TEXTS), model.encode_documents(TEXTS)):
        torch.testing.assert_close(cached, direct, atol=1e-5, rtol=0)
    other = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8, projection_layers=[-1, -2])
    with pytest.raises(ValueError, match=r"cache holds layer\(s\) \[2, 0\], but the model's head reads projection_layers"):
        encode_from_cache(other, cache, TEXTS)
    one_layer = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path, dtype="float32")
    with pytest.raises(ValueError, match="cache holds layer\\(s\\) None"):
        encode_from_cache(model, one_layer, TEXTS)


def test_layer_mix_loads_with_remote_code_without_the_package(tiny_backbone, tmp_path):
    import json
    import subprocess
    import sys

    from safetensors.torch import load_file
    from test_modeling import _REMOTE_CODE_SCRIPT

    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=8, projection_layers=[-1, -2])
    with torch.no_grad():
        model.layer_mix.weights.copy_(torch.tensor([0.5, -0.5]))
    model.eval().save_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = model(**model.tokenize(TEXTS, is_query=False)).token_embeddings
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", _REMOTE_CODE_SCRIPT, str(tmp_path / "model"), str(tmp_path / "out"),
                           json.dumps(TEXTS)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.equal(load_file(tmp_path / "out")["embeddings"], expected)


def test_a_cache_of_more_layers_serves_a_mix_of_fewer(tiny_backbone, tmp_path):
    from hf_projections.training.cache import build_feature_cache

    model = ColBERTModel.from_backbone(tiny_backbone, dim=8).eval()
    texts = [*TEXTS, "one more text here"]
    wide = build_feature_cache(model, texts, is_query=False, cache_dir=tmp_path / "shared", layer=(2, 1, 0))
    # fewer layers, reordered, over a subset of the texts: read from the wide cache, nothing new built
    view = build_feature_cache(model, TEXTS[::-1], is_query=False, cache_dir=tmp_path / "shared", layer=(1, 2))
    assert view.path == wide.path and view.layer == (1, 2) and len(list((tmp_path / "shared").iterdir())) == 1
    alone = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path / "alone", layer=(1, 2))
    assert view.hidden_size == alone.hidden_size == 2 * model.config.hidden_size
    rows, alone_rows = view.rows_of(TEXTS), alone.rows_of(TEXTS)
    for row, alone_row in zip(rows, alone_rows):
        assert torch.equal(view.states(row), alone.states(alone_row))
    hidden, mask = view.batch(rows)
    expected, expected_mask = alone.batch(alone_rows)
    assert torch.equal(hidden, expected) and torch.equal(mask, expected_mask)
    # a layer the wide cache does not hold, or a one-layer cache, is not a view
    with pytest.raises(ValueError, match=r"layers \[3\] are not in this cache, which holds \[2, 1, 0\]"):
        wide.with_layers([2, 3])
    last = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path / "last")
    with pytest.raises(ValueError, match="needs a layer-mix cache"):
        last.with_layers([2])
    # a mix without the top layer has another backbone fingerprint: built anew, not read from the wide cache
    lower = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path / "shared", layer=(1, 0))
    assert lower.path != wide.path


def test_a_cache_with_the_last_layer_serves_a_one_layer_head(tiny_backbone, tmp_path):
    """A last-layer (layer None) request reads the top layer of a layer-mix cache that holds the last block, so a
    one-layer baseline trains on the very states its layer-mix runs read; a mix without the last block does not."""
    from hf_projections.training.cache import build_feature_cache
    from hf_projections.training.cached_encoding import check_cache_matches_model

    model = ColBERTModel.from_backbone(tiny_backbone, dim=8).eval()
    depth = model.config.num_layers
    wide = build_feature_cache(model, [*TEXTS, "one more text here"], is_query=False, cache_dir=tmp_path / "shared",
                               layer=(depth, depth - 1))
    view = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path / "shared")
    assert view.path == wide.path and view.layer is None and view.hidden_size == model.config.hidden_size
    check_cache_matches_model(model, view.layer, "a one-layer head")  # accepted as a last-layer cache
    alone = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path / "alone")
    for row, alone_row in zip(view.rows_of(TEXTS), alone.rows_of(TEXTS)):
        assert torch.equal(view.states(row), alone.states(alone_row))
    inner = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path / "inner", layer=(depth - 1, 0))
    last = build_feature_cache(model, TEXTS, is_query=False, cache_dir=tmp_path / "inner")
    assert last.path != inner.path and last.layer is None


def test_the_head_recipe_reads_three_layers_and_other_modes_the_last():
    from hf_projections.training import ProjectionTrainingArguments, recipe_for

    head = ProjectionTrainingArguments().resolved()
    assert head.projection_layers == list(recipe_for("head").projection_layers) == [-1, -2, -3]
    assert head.layer_mix == "scalar" and head.reads_layer_mix() and head.use_cache
    for args in (ProjectionTrainingArguments(mode="top-2"), ProjectionTrainingArguments(mode="full"),
                 ProjectionTrainingArguments(model_type="dense"), ProjectionTrainingArguments(projection_layers=[-1])):
        assert args.resolved().projection_layers == [-1] and not args.resolved().reads_layer_mix()
    assert ProjectionTrainingArguments(projection_layers=[-1, -2], layer_mix="concat").resolved().layer_mix == "concat"
    with pytest.raises(ValueError, match="needs model_type='colbert'"):
        ProjectionTrainingArguments(model_type="dense", projection_layers=[-1, -2])
    with pytest.raises(ValueError, match="layer_mix"):
        ProjectionTrainingArguments(layer_mix="sum")


def test_training_a_saved_model_further_records_the_head_input_it_keeps(tiny_backbone, tmp_path):
    import datasets

    from hf_projections.training import ProjectionTrainingArguments, train

    rows = datasets.Dataset.from_dict({"query": [f"{t} question" for t in TEXTS * 4],
                                       "positive": [f"about {t} number {i}" for i, t in enumerate(TEXTS * 4)]})
    saved = tmp_path / "saved"
    ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8).save_pretrained(saved)
    args = ProjectionTrainingArguments(backbone=str(saved), max_steps=1, batch_size=4, output_dir=str(tmp_path / "out"),
                                       cache_dir=str(tmp_path / "cache"), show_progress_bar=False)
    model = train(rows, args)  # the recipe's layer mix is for fresh heads: the saved last-layer head stays one
    assert model.config.projection_layers is None
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["arguments"]["projection_layers"] == [-1]
