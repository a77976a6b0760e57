"""Model cards (template rendering, metadata) and push_to_hub against a local stand-in for the Hub API."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModel

from hf_projections import ColBERTModel, DenseEmbeddingModel, describe
from hf_projections.integrations.model_card import (
    build_model_card,
    hub_base_model,
    load_template,
    preset_name,
    push_to_hub,
    write_model_card,
)

TRAINING = {"datasets": ["scifact", "BeIR/scifact"], "steps": 200, "batch_size": 16, "learning_rate": 3e-4,
            "mode": "head-only"}
EVALUATION = {"scifact": {"ndcg@10": 0.71234, "recall@100": 0.9}, "arguana": {"ndcg@10": 0.4}}


@pytest.fixture(scope="module")
def colbert(tiny_backbone):
    torch.manual_seed(0)
    return ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=16)


def test_template_ships_with_the_package():
    template = load_template()
    assert "{{ card_data }}" in template and "trust_remote_code=True" in template


def test_colbert_card_metadata_and_sections(colbert, tmp_path):
    path = write_model_card(colbert, tmp_path, TRAINING, EVALUATION, model_id="me/tiny-colbert", license="apache-2.0")
    assert path == tmp_path / "README.md"
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert {"colbert", "sentence-transformers", "hf-projections", "late-interaction"} <= set(data["tags"])
    assert data["datasets"] == ["BeIR/scifact"]  # only Hub ids go into the metadata
    assert "base_model" not in data  # the tiny backbone is a local folder the Hub cannot know

    text = card.text
    head = describe(colbert.projection)
    assert f"{head['params']:,} parameters" in text and "`ffn2-x2-res` (type `ffn`)" in text
    assert json.dumps(head["spec"], indent=2) in text
    assert 'AutoModel.from_pretrained("me/tiny-colbert", trust_remote_code=True)' in text
    assert 'ColBERTModel.from_pretrained("me/tiny-colbert")' in text
    assert "to_sentence_transformers" in text and "MultiVectorEncoder(" in text
    assert "| steps | 200 |" in text and "| datasets | scifact, BeIR/scifact |" in text
    assert "| dataset | ndcg@10 | recall@100 |" in text
    assert "| scifact | 0.7123 | 0.9000 |" in text and "| arguana | 0.4000 |  |" in text


def test_card_states_a_layer_mix_input(colbert, tiny_backbone, tmp_path):
    model = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8, projection_layers=[-1, -2, -3])
    text = ModelCard.load(write_model_card(model, tmp_path / "mix")).text
    assert "**Head input:** backbone layers -1, -2, -3 (scalar mix), 4 mix parameters" in text
    assert "**Head input:**" not in ModelCard.load(write_model_card(colbert, tmp_path / "last")).text


def test_dense_card_and_defaults(tiny_backbone, tmp_path):
    model = DenseEmbeddingModel.from_backbone(tiny_backbone, projection="linear", dim=8, pooling="cls")
    card = ModelCard.load(write_model_card(model, tmp_path))
    assert "colbert" not in card.data.tags and "sentence-similarity" in card.data.tags
    assert "SentenceTransformer(" in card.text and "**Pooling:** cls" in card.text
    assert "No training details were recorded" in card.text and "No evaluation results were recorded" in card.text


def test_card_reads_details_attached_to_the_model(colbert):
    colbert.model_card_metadata = {"training": {"steps": 7}, "evaluation": {"ndcg@10": 0.5}}
    try:
        text = build_model_card(colbert).text
    finally:
        del colbert.model_card_metadata
    assert "| steps | 7 |" in text and "| - | 0.5000 |" in text


def test_bad_card_inputs_raise(colbert, tmp_path):
    with pytest.raises(TypeError, match="training must be a dict"):
        write_model_card(colbert, tmp_path, training=["steps"])
    with pytest.raises(ValueError, match="values must be numbers or \\(mean, std\\) pairs; bad metrics: \\['ndcg@10'\\]"):
        write_model_card(colbert, tmp_path, evaluation={"scifact": {"ndcg@10": "high"}})
    with pytest.raises(TypeError, match="must be a dict \\{metric: value\\}"):
        write_model_card(colbert, tmp_path, evaluation={"scifact": 0.5, "arguana": [0.1]})
    assert not (tmp_path / "README.md").exists()


def test_hub_base_model_and_preset_names(minilm_path, tmp_path):
    assert hub_base_model("colbert-ir/colbertv2.0") == "colbert-ir/colbertv2.0"
    assert hub_base_model(minilm_path) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_base_model(str(tmp_path)) is None and hub_base_model(None) is None
    assert preset_name({"type": "linear", "bias": False}) == "linear"
    assert preset_name({"type": "linear", "bias": True}) is None


def test_push_to_hub_uploads_a_self_sufficient_folder(colbert, tmp_path, monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        # Record the files as they are at upload time (the folder is temporary).
        files = {str(p.relative_to(folder_path)): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()}
        calls["upload_folder"] = (repo_id, files, kwargs)
        return SimpleNamespace(commit_url="https://huggingface.co/me/tiny-colbert/commit/0")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    result = push_to_hub(colbert, "me/tiny-colbert", training=TRAINING, evaluation=EVALUATION, private=True)

    assert result.commit_url.endswith("/commit/0")
    assert calls["create_repo"] == ("me/tiny-colbert", {"private": True, "token": None, "exist_ok": True})
    repo_id, files, kwargs = calls["upload_folder"]
    assert repo_id == "me/tiny-colbert" and "ffn2-x2-res" in kwargs["commit_message"]
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json", "modeling_hf_projections.py",
            "configuration_hf_projections.py", "registry.py"} <= set(files)
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoModel"] == "modeling_colbert.ColBERTModel"
    card_text = files["README.md"].decode()
    assert "library_name: transformers" in card_text and "- colbert" in card_text
    assert 'AutoModel.from_pretrained("me/tiny-colbert", trust_remote_code=True)' in card_text
    assert "| scifact | 0.7123 | 0.9000 |" in card_text

    # The uploaded files alone rebuild the same model.
    local = tmp_path / "downloaded"
    for name, content in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(content)
    reloaded = AutoModel.from_pretrained(local)
    texts = ["the cat of the dog", "gene study"]
    torch.testing.assert_close(reloaded.score(texts, texts), colbert.score(texts, texts), atol=1e-6, rtol=0)


def test_push_to_hub_rejects_empty_repo_id(colbert):
    with pytest.raises(ValueError, match="repo_id must be"):
        push_to_hub(colbert, " ")
