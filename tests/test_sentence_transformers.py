"""sentence-transformers 6 integration: the Projection module, lossless converters, reload, trainer, evaluator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from sentence_transformers import MultiVectorEncoder, SentenceTransformer
from sentence_transformers.base.modules import Dense, Normalize, Transformer
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
from sentence_transformers.sentence_transformer.modules import Pooling
from torch import nn

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.integrations.sentence_transformers import (
    PROJECTION_CLASS_REF,
    Projection,
    from_sentence_transformers,
    to_sentence_transformers,
)

QUERIES = ["the cat of the dog", "gene study", "a"]
DOCUMENTS = ["risk of cancer in the drug effect claim study", "the cat", "protein cell gene, the dog; a study."]


def _colbert(backbone, projection="ffn2-x2-res", **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("query_max_length", 16)
    kwargs.setdefault("document_max_length", 24)
    model = ColBERTModel.from_backbone(backbone, projection=projection, dim=16, **kwargs)
    _randomise_head(model)
    return model.eval()


def _randomise_head(model):
    # Residual heads start with a zero branch; give every weight a value so the test sees the whole head.
    with torch.no_grad():
        for parameter in model.projection.parameters():
            parameter.normal_(0.0, 0.2)


def _st_scores(st_model):
    return st_model.similarity(st_model.encode_query(QUERIES), st_model.encode_document(DOCUMENTS)).cpu()


# --------------------------------------------------------------------------- Projection module


@pytest.mark.parametrize("feature, shape", [("token_embeddings", (2, 5, 32)), ("sentence_embedding", (3, 32))])
def test_projection_module_forward_save_load(tmp_path, feature, shape):
    torch.manual_seed(0)
    module = Projection(32, 8, "glu-x2-res", module_input_name=feature, matryoshka_dims=[4])
    x = torch.randn(*shape)
    out = module({feature: x})[feature]
    assert out.shape == (*shape[:-1], 8)
    assert torch.equal(out, module.head(x))
    assert module.get_embedding_dimension() == 8

    module.save(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["projection"]["type"] == "glu" and config["matryoshka_dims"] == [4]
    loaded = Projection.load(str(tmp_path))
    assert torch.equal(loaded({feature: x})[feature], out)


def test_projection_module_rejects_pickle_and_unknown_config(tmp_path):
    module = Projection(32, 8, "linear")
    with pytest.raises(ValueError, match="safetensors only"):
        module.save(str(tmp_path), safe_serialization=False)
    module.save(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        Projection.load(str(tmp_path))
    with pytest.raises(ValueError, match="unknown projection type"):
        Projection(32, 8, "no-such-head")


# --------------------------------------------------------------------------- ColBERT <-> MultiVectorEncoder


COLBERT_CASES = {
    "ffn2-x2-res augmented with markers": dict(projection="ffn2-x2-res"),
    "glu with matryoshka, no augmentation": dict(projection="glu-x2-res", augment_queries=False, matryoshka_dims=[8]),
    "linear with bias, no markers": dict(projection={"type": "linear", "bias": True}, query_marker=None,
                                         document_marker=None),
}


@pytest.mark.parametrize("case", sorted(COLBERT_CASES))
def test_colbert_to_multi_vector_encoder_and_back_is_exact(tiny_backbone, tmp_path, case):
    model = _colbert(tiny_backbone, **COLBERT_CASES[case])
    ours = model.score(QUERIES, DOCUMENTS)

    st_model = to_sentence_transformers(model, tmp_path / "st")
    assert isinstance(st_model, MultiVectorEncoder)
    for mine, theirs in zip(model.encode_queries(QUERIES), st_model.encode_query(QUERIES)):
        assert mine.shape == theirs.shape  # same tokens scored, [MASK] augmentation included
    torch.testing.assert_close(_st_scores(st_model), ours, atol=1e-5, rtol=0)

    back = from_sentence_transformers(st_model)
    assert type(back) is ColBERTModel
    for field in ("projection", "dim", "query_max_length", "document_max_length", "query_marker",
                  "document_marker", "augment_queries", "matryoshka_dims"):
        assert getattr(back.config, field) == getattr(model.config, field), field
    torch.testing.assert_close(back.score(QUERIES, DOCUMENTS), ours, atol=1e-5, rtol=0)


def test_linear_head_is_saved_as_native_dense_and_loads_without_trust(tiny_backbone, tmp_path):
    model = _colbert(tiny_backbone, projection="linear")
    to_sentence_transformers(model, tmp_path)
    types = [m["type"] for m in json.loads((tmp_path / "modules.json").read_text())]
    assert PROJECTION_CLASS_REF not in types and any(t.endswith(".Dense") for t in types)
    reloaded = MultiVectorEncoder(str(tmp_path), device="cpu")  # no trust_remote_code needed
    torch.testing.assert_close(_st_scores(reloaded), model.score(QUERIES, DOCUMENTS), atol=1e-5, rtol=0)


def test_saved_folder_loads_in_a_fresh_process(tiny_backbone, tmp_path):
    model = _colbert(tiny_backbone, projection="ffn2-x2-res")
    folder = tmp_path / "st"
    to_sentence_transformers(model, folder)
    assert {"modules.json", "config_sentence_transformers.json", "model.safetensors", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in folder.rglob("*"))
    assert any(m["type"] == PROJECTION_CLASS_REF for m in json.loads((folder / "modules.json").read_text()))
    expected = model.score(QUERIES, DOCUMENTS)
    script = textwrap.dedent(f"""
        import json, sys
        from sentence_transformers import MultiVectorEncoder
        try:
            MultiVectorEncoder({str(folder)!r}, device="cpu")
            raise SystemExit("loaded a non-ST module class without trust_remote_code")
        except ValueError as error:
            assert "trust_remote_code" in str(error)
        model = MultiVectorEncoder({str(folder)!r}, device="cpu", trust_remote_code=True)
        assert type(model[1]).__module__.startswith("hf_projections.integrations.sentence_transformers")
        scores = model.similarity(model.encode_query({QUERIES!r}), model.encode_document({DOCUMENTS!r}))
        print(json.dumps(scores.tolist()))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_from_path_needs_trust_remote_code_for_our_module(tiny_backbone, tmp_path):
    model = _colbert(tiny_backbone)
    to_sentence_transformers(model, tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        from_sentence_transformers(tmp_path)
    back = from_sentence_transformers(tmp_path, trust_remote_code=True)
    assert back.config.backbone_name == str(tmp_path)
    torch.testing.assert_close(back.score(QUERIES, DOCUMENTS), model.score(QUERIES, DOCUMENTS), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- Dense <-> SentenceTransformer


@pytest.mark.parametrize("pooling, augment", [("mean", False), ("cls", False), ("mean", True)])
def test_dense_to_sentence_transformer_and_back_is_exact(tiny_backbone, pooling, augment):
    torch.manual_seed(0)
    model = DenseEmbeddingModel.from_backbone(
        tiny_backbone, projection="ffn2-x2-res", dim=8, pooling=pooling, query_marker="[unused0]",
        augment_queries=augment, query_max_length=12, document_max_length=24,
    )
    _randomise_head(model)
    model.eval()
    st_model = to_sentence_transformers(model)
    assert isinstance(st_model, SentenceTransformer)
    torch.testing.assert_close(st_model.encode_query(QUERIES, convert_to_tensor=True).cpu(),
                               model.encode_queries(QUERIES), atol=1e-5, rtol=0)
    torch.testing.assert_close(st_model.encode_document(DOCUMENTS, convert_to_tensor=True).cpu(),
                               model.encode_documents(DOCUMENTS), atol=1e-5, rtol=0)

    back = from_sentence_transformers(st_model)
    assert type(back) is DenseEmbeddingModel
    assert (back.config.pooling, back.config.augment_queries, back.config.query_marker) == (pooling, augment, "[unused0]")
    torch.testing.assert_close(back.score(QUERIES, DOCUMENTS), model.score(QUERIES, DOCUMENTS), atol=1e-5, rtol=0)


def test_plain_sentence_transformer_becomes_an_identity_linear_head(tiny_backbone):
    st_model = SentenceTransformer(modules=[Transformer(tiny_backbone), Pooling(32), Normalize()], device="cpu")
    model = from_sentence_transformers(st_model)
    assert model.config.projection == {"type": "linear", "bias": False} and model.config.dim == 32
    assert torch.equal(model.projection.linear.weight, torch.eye(32))
    torch.testing.assert_close(model.encode(DOCUMENTS), st_model.encode(DOCUMENTS, convert_to_tensor=True).cpu(),
                               atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- ST pipelines that do / do not map


def _multi_vector(tiny_backbone, heads, mask=None, **kwargs):
    transformer = Transformer(tiny_backbone, query_length=16, document_length=24)
    modules = [transformer, *heads, mask or MultiVectorMask(), Normalize(module_input_name="token_embeddings")]
    return MultiVectorEncoder(modules=modules, device="cpu", **kwargs)


def test_chain_of_dense_layers_composes_into_one_linear_head(tiny_backbone):
    torch.manual_seed(0)
    dense = dict(activation_function=nn.Identity(), module_input_name="token_embeddings")
    heads = [Dense(32, 48, bias=True, **dense), Dense(48, 16, bias=False, use_residual=True, **dense),
             Dense(16, 16, bias=True, use_residual=True, **dense)]
    st_model = _multi_vector(tiny_backbone, heads)
    model = from_sentence_transformers(st_model)
    assert model.config.projection == {"type": "linear", "bias": True} and model.config.dim == 16
    assert (model.config.query_marker, model.config.augment_queries) == (None, False)
    torch.testing.assert_close(model.score(QUERIES, DOCUMENTS), _st_scores(st_model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("what, build, message", [
    ("skiplist", lambda h: dict(mask=MultiVectorMask(skiplist_words=[",", "."])), "skiplist"),
    ("meanmaxsim", lambda h: dict(similarity_fn_name="meanmaxsim"), "meanmaxsim"),
    ("text prompt", lambda h: dict(prompts={"query": "query: ", "document": ""}), "not a single vocabulary token"),
])
def test_unmappable_pipelines_raise_unless_not_strict(tiny_backbone, caplog, what, build, message):
    heads = [Projection(32, 16, "ffn2-x2-res", module_input_name="token_embeddings")]
    st_model = _multi_vector(tiny_backbone, heads, **build(heads))
    with pytest.raises(ValueError, match=message):
        from_sentence_transformers(st_model)
    model = from_sentence_transformers(st_model, strict=False)
    assert type(model) is ColBERTModel and message in caplog.text


def test_unmappable_expansion_and_activation(tiny_backbone):
    transformer = Transformer(tiny_backbone, query_expansion={"strategy": "fixed", "attend": False, "length": 12})
    head = Dense(32, 16, module_input_name="token_embeddings")  # ST's default activation is Tanh
    st_model = MultiVectorEncoder(modules=[transformer, head, MultiVectorMask(),
                                           Normalize(module_input_name="token_embeddings")], device="cpu")
    with pytest.raises(ValueError) as error:
        from_sentence_transformers(st_model)
    assert "attend=False" in str(error.value) and "Tanh" in str(error.value)
    with pytest.raises(TypeError, match="MultiVectorEncoder or SentenceTransformer"):
        from_sentence_transformers(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="ColBERTModel or DenseEmbeddingModel"):
        to_sentence_transformers(nn.Linear(2, 2))


# --------------------------------------------------------------------------- ST trainer and evaluator


def test_st_trainer_and_ir_evaluator_run_with_our_head(tiny_backbone, tmp_path):
    from datasets import Dataset
    from sentence_transformers.multi_vector_encoder import (
        MultiVectorEncoderTrainer,
        MultiVectorEncoderTrainingArguments,
    )
    from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorInformationRetrievalEvaluator
    from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

    st_model = to_sentence_transformers(_colbert(tiny_backbone, query_max_length=8, document_max_length=12))
    head = st_model[1]
    assert isinstance(head, Projection)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    data = Dataset.from_dict({"anchor": ["the cat", "a dog", "gene study", "drug risk"],
                              "positive": ["cat of the dog", "the dog is", "protein gene cell", "cancer drug effect"]})
    args = MultiVectorEncoderTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
        report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, disable_tqdm=True,
    )
    trainer = MultiVectorEncoderTrainer(model=st_model, args=args, train_dataset=data,
                                        loss=MultiVectorMultipleNegativesRankingLoss(st_model))
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[k], v) for k, v in head.state_dict().items())

    evaluator = MultiVectorInformationRetrievalEvaluator(
        queries={"q1": "the cat", "q2": "gene study"},
        corpus={"d1": "cat of the dog", "d2": "protein gene cell", "d3": "drug"},
        relevant_docs={"q1": {"d1"}, "q2": {"d2"}},
        name="tiny", write_csv=False,
    )
    metrics = evaluator(st_model)
    assert 0.0 <= metrics["tiny_maxsim_ndcg@10"] <= 1.0
    # The trained ST model converts back into our model with the trained head.
    back = from_sentence_transformers(st_model)
    assert torch.equal(back.projection.layers[0].weight, head.head.layers[0].weight.cpu())
