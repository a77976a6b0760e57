"""PEFT: LoRA on the backbone + full head in one adapter; merge; head-only adapters."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from peft import PeftModel
from transformers import TrainingArguments

from hf_projections import ColBERTModel
from hf_projections.integrations.peft import apply_lora, default_target_modules
from hf_projections.modeling.adapter_format import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from hf_projections.modeling.head_files import HEAD_CONFIG_NAME, head_module, load_head, save_head
from hf_projections.training import ProjectionTrainer

TEXTS = ["the cat gene", "dog", "cancer risk of the drug"]


@pytest.fixture()
def base_dir(tiny_backbone, tmp_path):
    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=16)
    model.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def embed(model, texts=TEXTS):
    model.eval()
    with torch.no_grad():
        return model(**base_of(model).tokenize(texts, is_query=False)).token_embeddings


def base_of(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def test_lora_adapter_round_trip_and_merge(base_dir, tmp_path):
    model = ColBERTModel.from_pretrained(base_dir)
    assert default_target_modules(model) == r"backbone\..*\.(dense|key|query|value)"
    peft_model = apply_lora(model, r=4, init_lora_weights=False)  # random B: LoRA changes the outputs
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("projection.modules_to_save" in n for n in trainable)
    assert not any("lora_" in n and "projection" in n for n in trainable)
    with torch.no_grad():
        for parameter in head_module(peft_model).parameters():
            parameter.add_(0.05)  # a trained head differs from the base head
    expected = embed(peft_model)
    assert not torch.allclose(expected, embed(ColBERTModel.from_pretrained(base_dir)), atol=1e-4)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    restored = PeftModel.from_pretrained(ColBERTModel.from_pretrained(base_dir), tmp_path / "adapter")
    torch.testing.assert_close(embed(restored), expected, atol=1e-6, rtol=0)
    merged = restored.merge_and_unload()
    assert type(merged) is ColBERTModel and not hasattr(merged.projection, "modules_to_save")
    torch.testing.assert_close(embed(merged), expected, atol=1e-5, rtol=0)
    merged.save_pretrained(tmp_path / "merged")
    torch.testing.assert_close(embed(ColBERTModel.from_pretrained(tmp_path / "merged")), expected, atol=1e-5, rtol=0)


def test_trainer_trains_lora_and_head_only(base_dir, tmp_path):
    peft_model = apply_lora(ColBERTModel.from_pretrained(base_dir), r=2)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    head_before = {n: p.detach().clone() for n, p in head_module(peft_model).named_parameters()}
    rows = datasets.Dataset.from_dict({"query": ["the cat", "a dog", "gene", "risk"], "positive": TEXTS + ["drug risk"]})
    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=2,
                             learning_rate=1e-3, save_strategy="steps", save_steps=2, report_to="none", use_cpu=True,
                             disable_tqdm=True, remove_unused_columns=False)
    trainer = ProjectionTrainer(model=peft_model, args=args, train_dataset=rows, head_learning_rate=1e-2)
    trainer.train()
    head_lrs = {g["lr"] for g in trainer.optimizer.param_groups if g["group"] == "head"}
    assert head_lrs  # the PEFT copy of the head got its own learning-rate group
    assert all(torch.equal(p, frozen[n]) for n, p in peft_model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, head_before[n]) for n, p in head_module(peft_model).named_parameters())
    assert (tmp_path / "run" / "checkpoint-2" / "adapter_model.safetensors").exists()


def test_head_only_adapter(base_dir, tmp_path, tiny_backbone):
    trained = ColBERTModel.from_pretrained(base_dir)
    with torch.no_grad():
        for parameter in trained.projection.parameters():
            parameter.mul_(1.5)
    save_head(trained, tmp_path / "head")
    config = json.loads((tmp_path / "head" / ADAPTER_CONFIG_NAME).read_text())
    assert config["projection"]["type"] == "ffn" and config["d_in"] == 32 and config["dim"] == 16

    # onto the same backbone carrying a different (linear, dim 8) head
    other = ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=8)
    other.backbone.load_state_dict(trained.backbone.state_dict())
    load_head(other, tmp_path / "head")
    assert other.config.dim == 16 and other.config.projection == trained.config.projection
    torch.testing.assert_close(embed(other), embed(trained), atol=1e-6, rtol=0)
    other.save_pretrained(tmp_path / "full")
    torch.testing.assert_close(embed(ColBERTModel.from_pretrained(tmp_path / "full")), embed(trained), atol=1e-6, rtol=0)

    # a PEFT-wrapped model saves its trained head copy
    peft_model = apply_lora(ColBERTModel.from_pretrained(base_dir), r=2)
    save_head(peft_model, tmp_path / "peft-head")
    assert (tmp_path / "peft-head" / ADAPTER_WEIGHTS_NAME).exists()


def test_head_only_adapter_shape_errors(base_dir, tmp_path, tiny_backbone):
    save_head(ColBERTModel.from_pretrained(base_dir), tmp_path / "head")
    config_path = tmp_path / "head" / ADAPTER_CONFIG_NAME
    config = json.loads(config_path.read_text())

    config["dim"] = 12  # the spec now builds (.., 12) layers but the file holds (.., 16) tensors
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="saved .* but the config builds"):
        load_head(ColBERTModel.from_pretrained(base_dir), tmp_path / "head")

    config["dim"], config["d_in"] = 16, 64
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="d_in=64 .* but this encoder's hidden size is 32"):
        load_head(ColBERTModel.from_pretrained(base_dir), tmp_path / "head")

    config["d_in"], config["projection"] = 32, {"type": "linear"}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing \S*hf_projection_head.linear.weight .16, 32.; unexpected \S*hf_projection_head.layers.0.weight"):
        load_head(ColBERTModel.from_pretrained(base_dir), tmp_path / "head")
    with pytest.raises(FileNotFoundError, match=HEAD_CONFIG_NAME):
        load_head(ColBERTModel.from_pretrained(base_dir), tmp_path)
