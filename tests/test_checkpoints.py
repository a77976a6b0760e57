"""Importing existing ColBERT checkpoints (PyLate, Stanford-NLP, ST6, ours) and upgrading their linear head.

The PyLate and Stanford folders are written by hand from the tiny BERT, following the layouts those libraries
save (PyLate is not installed: it pins old versions). The reference scores come from sentence-transformers'
``MultiVectorEncoder``, which reads both legacy layouts itself.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sentence_transformers import MultiVectorEncoder
from transformers import AddedToken, AutoTokenizer, BertModel

from hf_projections import ColBERTModel
from hf_projections.integrations.checkpoints import (
    detect_checkpoint_layout,
    load_colbert_checkpoint,
    upgrade_projection,
)
from hf_projections.integrations.sentence_transformers import to_sentence_transformers

QUERIES = ["the cat of the dog", "gene study", "a"]
DOCUMENTS = ["risk of cancer in the drug effect claim study", "the cat", "protein cell gene, the dog; a study."]
HIDDEN, DIM = 32, 16


def _backbone_parts(tiny_backbone):
    return BertModel.from_pretrained(tiny_backbone), AutoTokenizer.from_pretrained(tiny_backbone)


def _random(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3


def write_pylate_checkpoint(folder: Path, tiny_backbone, *, transformer_subfolder=False, residual=False,
                            attend=True, skiplist=(), prefixes=("[unused0]", "[unused1]"), model_type=None) -> Path:
    """A PyLate save: ST folder, ``pylate.models.Dense.Dense`` in ``1_Dense``, legacy top-level knobs.

    Prefixes missing from the vocabulary (PyLate's ``"[Q] "``/``"[D] "`` for non-BERT backbones) are added to the
    tokenizer and the embedding matrix, as PyLate does.
    """
    bert, tokenizer = _backbone_parts(tiny_backbone)
    new_tokens = [AddedToken(p, normalized=False) for p in prefixes if p not in tokenizer.get_vocab()]
    if new_tokens:
        tokenizer.add_tokens(new_tokens)
        bert.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    transformer_dir = folder / "0_Transformer" if transformer_subfolder else folder
    transformer_dir.mkdir(parents=True, exist_ok=True)
    bert.save_pretrained(transformer_dir)
    tokenizer.save_pretrained(transformer_dir)
    (transformer_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 23, "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer" if transformer_subfolder else "",
         "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ]))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({
        "__version__": {"sentence_transformers": "3.4.1", "transformers": "4.48.0", "pytorch": "2.5.1", "pylate": "1.1.7"},
        "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
        "query_prefix": prefixes[0], "document_prefix": prefixes[1], "query_length": 16, "document_length": 24,
        "attend_to_expansion_tokens": attend, "skiplist_words": list(skiplist), "do_query_expansion": True,
        **({"model_type": model_type} if model_type else {}),
    }))
    dense = folder / "1_Dense"
    dense.mkdir()
    (dense / "config.json").write_text(json.dumps({
        "in_features": HIDDEN, "out_features": DIM, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity", "use_residual": residual,
    }))
    weights = {"linear.weight": _random(DIM, HIDDEN)}
    if residual:
        weights["residual.weight"] = _random(DIM, HIDDEN, seed=1)
    save_file(weights, str(dense / "model.safetensors"))
    return folder


def write_stanford_checkpoint(folder: Path, tiny_backbone, *, architecture="HF_ColBERT", metadata=None) -> Path:
    """A Stanford-NLP ColBERT save: BERT config + ``bert.*`` weights with ``linear.weight`` at the root."""
    bert, tokenizer = _backbone_parts(tiny_backbone)
    folder.mkdir(parents=True)
    config = bert.config
    config.architectures = [architecture]
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    state["linear.weight"] = _random(DIM, HIDDEN, seed=2)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if metadata is not None:
        (folder / "artifact.metadata").write_text(json.dumps(metadata))
    return folder


EXACT_STANFORD = {"query_maxlen": 16, "doc_maxlen": 24, "query_token_id": "[unused0]", "doc_token_id": "[unused1]",
                  "attend_to_mask_tokens": True, "mask_punctuation": False, "dim": DIM, "similarity": "cosine"}


def _reference_scores(folder):
    st_model = MultiVectorEncoder(str(folder), device="cpu")
    return st_model.similarity(st_model.encode_query(QUERIES), st_model.encode_document(DOCUMENTS)).cpu()


# --------------------------------------------------------------------------- imports


@pytest.mark.parametrize("subfolder, residual, prefixes, model_type", [
    (False, False, ("[unused0]", "[unused1]"), None),
    (True, True, ("[unused0]", "[unused1]"), "ColBERT"),
    (False, False, ("[Q] ", "[D] "), None),
])
def test_pylate_checkpoint_imports_exactly(tiny_backbone, tmp_path, subfolder, residual, prefixes, model_type):
    folder = write_pylate_checkpoint(tmp_path / "pylate", tiny_backbone, transformer_subfolder=subfolder,
                                     residual=residual, prefixes=prefixes, model_type=model_type)
    assert detect_checkpoint_layout(folder) == "pylate"
    model = load_colbert_checkpoint(folder, strict=True)
    assert type(model) is ColBERTModel
    assert model.config.projection == {"type": "linear", "bias": False} and model.config.dim == DIM
    assert (model.config.query_marker, model.config.document_marker) == prefixes
    marker_id = model.tokenize(["the cat"], is_query=False)["input_ids"][0, 1]
    assert model.tokenizer.convert_ids_to_tokens(int(marker_id)) == prefixes[1]
    assert (model.config.query_max_length, model.config.document_max_length, model.config.augment_queries) == (16, 24, True)
    torch.testing.assert_close(model.score(QUERIES, DOCUMENTS), _reference_scores(folder), atol=1e-5, rtol=0)


def test_pylate_defaults_that_do_not_map_warn_or_raise(tiny_backbone, tmp_path, caplog):
    folder = write_pylate_checkpoint(tmp_path / "pylate", tiny_backbone, attend=False,
                                     skiplist=list(string.punctuation))
    with pytest.raises(ValueError) as error:
        load_colbert_checkpoint(folder, strict=True)
    assert "attend=False" in str(error.value) and "skiplist" in str(error.value)
    model = load_colbert_checkpoint(folder)  # strict=False by default for imports
    assert model.config.dim == DIM and "attend=False" in caplog.text


def test_stanford_checkpoint_imports_exactly(tiny_backbone, tmp_path):
    folder = write_stanford_checkpoint(tmp_path / "stanford", tiny_backbone, metadata=EXACT_STANFORD)
    assert detect_checkpoint_layout(folder) == "stanford"
    model = load_colbert_checkpoint(folder, strict=True)
    assert torch.equal(model.projection.linear.weight, _random(DIM, HIDDEN, seed=2))
    bert = BertModel.from_pretrained(tiny_backbone)
    assert torch.equal(model.backbone.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(model.score(QUERIES, DOCUMENTS), _reference_scores(folder), atol=1e-5, rtol=0)


def test_stanford_without_metadata_or_architecture_marker(tiny_backbone, tmp_path, caplog):
    folder = write_stanford_checkpoint(tmp_path / "stanford", tiny_backbone, architecture="BertModel")
    assert detect_checkpoint_layout(folder) == "stanford"  # found by the root linear.weight
    with pytest.raises(ValueError, match="attend_to_mask_tokens=False"):
        load_colbert_checkpoint(folder, strict=True)
    model = load_colbert_checkpoint(folder)
    assert (model.config.query_max_length, model.config.document_max_length) == (32, 180)
    assert "mask_punctuation" in caplog.text


def test_st6_and_hf_projections_saves_import(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    original = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=DIM, query_max_length=16,
                                          document_max_length=24)
    expected = original.score(QUERIES, DOCUMENTS)
    to_sentence_transformers(original, tmp_path / "st6")
    original.save_pretrained(tmp_path / "ours")
    assert detect_checkpoint_layout(tmp_path / "st6") == "sentence-transformers"
    assert detect_checkpoint_layout(tmp_path / "ours") == "hf-projections"
    for name in ("st6", "ours"):
        model = load_colbert_checkpoint(tmp_path / name, strict=True)
        torch.testing.assert_close(model.score(QUERIES, DOCUMENTS), expected, atol=1e-5, rtol=0)


def test_unrecognised_folders_raise(tiny_backbone, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        detect_checkpoint_layout(tmp_path / "missing")
    with pytest.raises(ValueError, match="does not exist"):
        load_colbert_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a recognised ColBERT checkpoint"):
        detect_checkpoint_layout(tiny_backbone)  # a plain BERT: no projection anywhere
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text("[]")
    (tmp_path / "st" / "config_sentence_transformers.json").write_text('{"model_type": "SentenceTransformer"}')
    with pytest.raises(ValueError, match="single-vector SentenceTransformer"):
        detect_checkpoint_layout(tmp_path / "st")
    with pytest.raises(ValueError, match="layout must be one of"):
        load_colbert_checkpoint(tmp_path / "st", layout="colbert-v9")


# --------------------------------------------------------------------------- upgrade_projection


@pytest.mark.parametrize("projection", ["ffn2-x2-res", "glu-x2-res", "swiglu-x2-res"])
def test_upgrade_keeps_scores_and_is_trainable(tiny_backbone, tmp_path, projection):
    model = load_colbert_checkpoint(write_pylate_checkpoint(tmp_path / "pylate", tiny_backbone), strict=True)
    before = model.score(QUERIES, DOCUMENTS)
    upgraded = upgrade_projection(model, projection)
    assert upgraded is model and model.projection.spec["residual"] is True
    assert model.config.projection == model.projection.spec
    torch.testing.assert_close(model.score(QUERIES, DOCUMENTS), before, atol=1e-5, rtol=0)

    # Ready for fine-tuning: a loss reaches the new branch.
    model.train()
    batch = model.tokenize(DOCUMENTS, is_query=False)
    model(**batch).token_embeddings.sum().backward()
    grads = [p.grad for p in model.projection.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)

    model.save_pretrained(tmp_path / "upgraded")
    reloaded = ColBERTModel.from_pretrained(tmp_path / "upgraded")
    assert reloaded.config.projection == model.config.projection
    torch.testing.assert_close(reloaded.score(QUERIES, DOCUMENTS), before, atol=1e-5, rtol=0)


def test_upgrade_with_bias_and_equal_widths(tiny_backbone):
    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(tiny_backbone, projection={"type": "linear", "bias": True}, dim=HIDDEN)
    with torch.no_grad():
        model.projection.linear.bias.normal_()
    before = model.score(QUERIES, DOCUMENTS)
    upgrade_projection(model, "ffn2-x2-res")
    assert model.config.projection["bias"] is True and model.config.projection["shortcut"] == "linear"
    torch.testing.assert_close(model.score(QUERIES, DOCUMENTS), before, atol=1e-5, rtol=0)


def test_upgrade_rejects_non_linear_source_and_non_residual_target(tiny_backbone):
    model = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=DIM)
    with pytest.raises(ValueError, match="needs a residual head"):
        upgrade_projection(model, "ffn2-x2")
    upgrade_projection(model, "ffn2-x2-res")
    with pytest.raises(ValueError, match="needs a model with a 'linear' head"):
        upgrade_projection(model, "glu-x2-res")
    with pytest.raises(ValueError, match="unknown projection type"):
        upgrade_projection(ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=DIM), "nope")


def test_upgrade_works_for_single_vector_models(tiny_backbone):
    from hf_projections import DenseEmbeddingModel

    torch.manual_seed(0)
    model = DenseEmbeddingModel.from_backbone(tiny_backbone, projection="linear", dim=8)
    before = model.encode(DOCUMENTS)
    upgrade_projection(model, "geglu-x2-res")
    assert model.config.projection["type"] == "glu"
    torch.testing.assert_close(model.encode(DOCUMENTS), before, atol=1e-6, rtol=0)
