"""transformers integration: configs, models, Auto classes, save/load round trips, remote code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

import hf_projections
from hf_projections import ColBERTModel, DenseEmbeddingModel, DenseProjectionConfig, ProjectionConfig, list_projections

PRESETS = sorted(list_projections()["presets"])
TEXTS = ["the cat of the dog", "protein cell gene study.", "a", "risk of cancer in the drug effect claim study"]


def _colbert(backbone, projection="ffn2-x2-res", **kwargs):
    torch.manual_seed(0)
    return ColBERTModel.from_backbone(backbone, projection=projection, dim=16, **kwargs)


def _outputs(model, texts=TEXTS, is_query=False):
    model.eval()
    with torch.no_grad():
        return model(**model.tokenize(texts, is_query=is_query))


@pytest.mark.parametrize("preset", PRESETS)
def test_colbert_every_preset_forward_and_round_trip(tiny_backbone, tmp_path, preset):
    model = _colbert(tiny_backbone, preset)
    out = _outputs(model)
    batch, tokens = model.tokenize(TEXTS, is_query=False)["input_ids"].shape
    assert out.token_embeddings.shape == (batch, tokens, 16)
    assert out.mask.dtype == torch.bool
    norms = out.token_embeddings.norm(dim=-1)
    assert torch.allclose(norms[out.mask], torch.ones(int(out.mask.sum())), atol=1e-5)
    assert torch.all(out.token_embeddings[~out.mask] == 0)

    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is ColBERTModel
    assert loaded.config.projection == model.config.projection
    assert torch.equal(_outputs(loaded).token_embeddings, out.token_embeddings)


def test_saved_folder_is_safetensors_with_code_and_auto_map(tiny_backbone, tmp_path):
    _colbert(tiny_backbone).save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names and not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert {"configuration_hf_projections.py", "modeling_hf_projections.py", "modeling_colbert.py", "registry.py"} <= names
    assert {"tokenizer_config.json", "vocab.txt"} & names
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "hf_projections_colbert"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hf_projections.ProjectionConfig",
        "AutoModel": "modeling_colbert.ColBERTModel",
    }
    assert not any(p.name.startswith(".saving-") for p in tmp_path.parent.iterdir())


def test_dense_model_round_trip_and_pooling(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    model = DenseEmbeddingModel.from_backbone(tiny_backbone, projection="linear", dim=8, pooling="cls")
    embeddings = model.encode(TEXTS)
    assert embeddings.shape == (len(TEXTS), 8)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is DenseEmbeddingModel and isinstance(loaded.config, DenseProjectionConfig)
    assert torch.equal(loaded.encode(TEXTS), embeddings)
    assert torch.allclose(model.score(TEXTS[:2], TEXTS), embeddings[:2] @ embeddings.T, atol=1e-6)


def test_tokenize_inserts_markers_and_augments_queries(tiny_backbone):
    model = _colbert(tiny_backbone, query_max_length=12, document_max_length=10)
    tok = model.tokenizer
    queries = model.tokenize(["the cat", "a protein"], is_query=True)
    assert queries["input_ids"].shape == (2, 12)
    assert torch.all(queries["attention_mask"] == 1)
    assert torch.all(queries["input_ids"][:, 1] == tok.convert_tokens_to_ids("[unused0]"))
    assert (queries["input_ids"][0] == tok.mask_token_id).sum() > 0
    docs = model.tokenize(["the cat of the dog " * 10, "a"], is_query=False)
    assert docs["input_ids"].shape[1] == 10
    assert torch.all(docs["input_ids"][:, 1] == tok.convert_tokens_to_ids("[unused1]"))
    assert docs["attention_mask"][1].sum() == 4  # [CLS] [D] a [SEP]


def test_encode_keeps_input_order_and_drops_padding(tiny_backbone):
    model = _colbert(tiny_backbone)
    batched = model.encode_documents(TEXTS, batch_size=3)
    one_by_one = [model.encode_documents([t])[0] for t in TEXTS]
    for a, b in zip(batched, one_by_one):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    lengths = model.tokenize(TEXTS, is_query=False)["attention_mask"].sum(dim=1).tolist()
    assert [len(e) for e in batched] == lengths


def test_score_is_maxsim(tiny_backbone):
    model = _colbert(tiny_backbone)
    queries = model.encode_queries(TEXTS[:2])
    docs = model.encode_documents(TEXTS)
    expected = torch.tensor([[float((q @ d.T).max(dim=1).values.sum()) for d in docs] for q in queries])
    assert torch.allclose(model.score(queries, docs), expected, atol=1e-5)
    assert torch.allclose(model.score(TEXTS[:2], TEXTS), expected, atol=1e-5)


def test_matryoshka_truncation_is_checked(tiny_backbone):
    model = _colbert(tiny_backbone, matryoshka_dims=[4, 8])
    short = model.encode_queries(TEXTS[:1], truncate_dim=8)[0]
    assert short.shape[1] == 8 and torch.allclose(short.norm(dim=-1), torch.ones(len(short)), atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim must be one of the trained dims"):
        model.encode_queries(TEXTS[:1], truncate_dim=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "max"}, "pooling must be one of mean, cls"),
        ({"dim": 0}, "dim must be a positive int"),
        ({"query_max_length": -3}, "query_max_length must be a positive int"),
        ({"projection": "no-such-head"}, "no-such-head"),
        ({"projection": {"type": "ffn", "depht": 2}}, "depht"),
        ({"matryoshka_dims": [64, 512]}, "matryoshka_dims must be <= dim"),
    ],
)
def test_bad_config_values_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProjectionConfig(**kwargs)


def test_marker_missing_from_vocabulary_is_rejected(tiny_backbone):
    with pytest.raises(ValueError, match="query_marker='\\[Q\\]' is not in the tokenizer's vocabulary"):
        _colbert(tiny_backbone, query_marker="[Q]")


def test_config_json_round_trip_keeps_backbone(tiny_backbone, tmp_path):
    config = _colbert(tiny_backbone).config
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, ProjectionConfig)
    assert loaded.backbone_config.to_dict() == config.backbone_config.to_dict()
    assert loaded.hidden_size == 32 and loaded.projection == config.projection


_REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys, importlib.abc, json, torch

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_projections" or name.startswith("hf_projections."):
                raise ImportError("hf_projections is blocked in this process")

    sys.meta_path.insert(0, Block())
    from transformers import AutoModel
    folder, out = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert "hf_projections" not in sys.modules
    texts = json.loads(sys.argv[3])
    with torch.no_grad():
        embeddings = model(**model.tokenize(texts, is_query=False)).token_embeddings
    from safetensors.torch import save_file
    save_file({"embeddings": embeddings.contiguous()}, out)
    print(type(model).__module__)
    """
)


def test_trust_remote_code_loads_without_the_package(tiny_backbone, tmp_path):
    model = _colbert(tiny_backbone, "swiglu-x2-res")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    expected = _outputs(model).token_embeddings
    result = tmp_path / "out.safetensors"
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", _REMOTE_CODE_SCRIPT, str(folder), str(result), json.dumps(TEXTS)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("transformers_modules")
    assert torch.equal(load_file(result)["embeddings"], expected)


def test_real_minilm_every_preset_round_trips(minilm_path, tmp_path):
    for preset in PRESETS:
        torch.manual_seed(0)
        model = ColBERTModel.from_backbone(minilm_path, projection=preset, dim=128)
        expected = _outputs(model, TEXTS[:2]).token_embeddings
        assert expected.shape[-1] == 128
        model.save_pretrained(tmp_path / preset)
        loaded = AutoModel.from_pretrained(tmp_path / preset)
        assert torch.equal(_outputs(loaded, TEXTS[:2]).token_embeddings, expected), preset


def test_package_exports():
    assert hf_projections.ColBERTModel is ColBERTModel
    assert AutoConfig.for_model("hf_projections_colbert").__class__ is ProjectionConfig


def test_ignore_mismatched_sizes_reinitialises_a_head_of_another_shape(tiny_backbone, tmp_path):
    model = ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=8)
    with torch.no_grad():
        for parameter in model.projection.parameters():
            parameter.fill_(0.5)  # recognisable: a kept tensor stays 0.5, a re-initialised one does not
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="do not match the shapes"):
        ColBERTModel.from_pretrained(tmp_path, dim=16)
    loaded = ColBERTModel.from_pretrained(tmp_path, dim=16, ignore_mismatched_sizes=True)
    head = loaded.projection
    assert head.layers[1].weight.shape == (16, 64) and head.shortcut.weight.shape == (16, 32)
    assert bool((head.layers[0].weight == 0.5).all())  # same shape as saved: loaded, not reset
    for weight, fan_in in ((head.layers[1].weight, 64), (head.shortcut.weight, 32)):
        bound = 1 / fan_in**0.5  # nn.Linear's default init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert bool(torch.isfinite(weight).all()) and weight.abs().max() <= bound and weight.std() > 0.3 * bound
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, loaded.backbone.state_dict()[name]), name


def test_remote_code_files_can_sit_flat_beside_the_weights():
    from hf_projections.modeling.remote_code import code_files

    names = [path.stem for path in code_files()]
    assert len(set(names)) == len(names)
    # A file named like a standard-library module would shadow it for a script run from the checkpoint folder.
    assert not [name for name in names if name in sys.stdlib_module_names]
    assert {"modeling_colbert", "modeling_dense", "backbone", "atomic", "checks", "registry"} <= set(names)


def test_extension_points_are_wired_by_the_package_and_named_when_missing():
    from hf_projections.modeling import extensions

    for name in extensions.EXTENSION_POINTS:
        assert callable(extensions.get_extension(name)), name
    with pytest.raises(ValueError, match="unknown extension point 'nope'; allowed: write_model_card"):
        extensions.register_extension("nope", print)
    saved = dict(extensions._TARGETS)
    try:
        extensions._TARGETS.clear()  # what a remote-code copy without the package sees
        assert extensions.get_extension("write_model_card", required=False) is None
        with pytest.raises(ImportError, match="to_sentence_transformers .* needs the hf-projections package"):
            extensions.get_extension("to_sentence_transformers")
    finally:
        extensions._TARGETS.update(saved)
