"""ProjectionTrainer: overfitting, head learning rate, resume equality, NaN stop, safetensors saving."""

from __future__ import annotations

import os

import datasets
import pytest
import torch
from transformers import AutoModel, TrainerCallback, TrainingArguments

from hf_projections import ColBERTModel
from hf_projections.training import (
    ContrastiveLoss,
    NonFiniteLossError,
    ProjectionCollator,
    ProjectionTrainer,
    last_complete_checkpoint,
    set_trainable,
)
from hf_projections.training.trainer import embed_token_batch

QUERIES = ["the cat", "a dog", "gene study", "cancer risk", "drug effect", "cell protein", "claim of the", "risk gene"]
POSITIVES = ["cat is the", "dog of a", "the gene claim study", "risk of cancer drug", "the effect of a drug",
             "protein in the cell", "a claim", "gene risk study"]


@pytest.fixture()
def pairs():
    return datasets.Dataset.from_dict({"query": QUERIES, "positive": POSITIVES})


def make_model(tiny_backbone, seed=0):
    torch.manual_seed(seed)
    return ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=16, query_max_length=8,
                                      document_max_length=16)


def make_args(output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=6, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True,
        dataloader_drop_last=True, remove_unused_columns=False,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def full_loss(model, pairs):
    model.eval()
    with torch.no_grad():
        batch = ProjectionCollator(model)(pairs.to_list())
        return ContrastiveLoss()(*embed_token_batch(model, batch)).item()


def test_full_mode_overfits_tiny_set(tiny_backbone, pairs, tmp_path):
    model = make_model(tiny_backbone)
    before = full_loss(model, pairs)
    trainer = ProjectionTrainer(model=model, args=make_args(tmp_path, max_steps=30, learning_rate=2e-3), train_dataset=pairs)
    trainer.train()
    after = full_loss(model, pairs)
    assert after < 0.8 * before, (before, after)


def test_head_learning_rate_groups(tiny_backbone, pairs, tmp_path):
    model = make_model(tiny_backbone)
    trainer = ProjectionTrainer(model=model, args=make_args(tmp_path, learning_rate=1e-5, weight_decay=0.1),
                                train_dataset=pairs, head_learning_rate=1e-3)
    optimizer = trainer.create_optimizer()
    head = {id(p) for p in model.projection.parameters()}
    seen = set()
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        seen |= ids
        if group["group"] == "head":
            assert ids <= head and group["lr"] == 1e-3
        else:
            assert not ids & head and group["lr"] == 1e-5
    assert seen == {id(p) for p in model.parameters()}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.1}
    # head mode: only head parameters reach the optimizer
    model = make_model(tiny_backbone)
    set_trainable(model, "head")
    trainer = ProjectionTrainer(model=model, args=make_args(tmp_path), train_dataset=pairs, head_learning_rate=5e-3)
    groups = trainer.create_optimizer().param_groups
    assert {g["group"] for g in groups} == {"head"}
    assert sum(len(g["params"]) for g in groups) == len(list(model.projection.parameters()))


class StopAt(TrainerCallback):
    """Simulates an interruption: training stops after ``step`` (its checkpoint is written first)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_matches_uninterrupted_run(tiny_backbone, pairs, tmp_path):
    straight = make_model(tiny_backbone)
    ProjectionTrainer(model=straight, args=make_args(tmp_path / "a"), train_dataset=pairs, head_learning_rate=1e-2).train()

    interrupted = make_model(tiny_backbone)
    args = make_args(tmp_path / "b", save_strategy="steps", save_steps=3)
    ProjectionTrainer(model=interrupted, args=args, train_dataset=pairs, head_learning_rate=1e-2,
                      callbacks=[StopAt(3)]).train()
    checkpoint = last_complete_checkpoint(tmp_path / "b")
    assert checkpoint is not None and checkpoint.endswith("checkpoint-3")

    resumed = make_model(tiny_backbone, seed=123)  # different init: everything must come from the checkpoint
    ProjectionTrainer(model=resumed, args=args, train_dataset=pairs, head_learning_rate=1e-2).train(
        resume_from_checkpoint=checkpoint
    )
    expected = straight.state_dict()
    for name, tensor in resumed.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=0, msg=name)


class NaNAfter(ContrastiveLoss):
    """Contrastive loss that turns NaN on its ``n``-th call (a diverging run)."""

    def __init__(self, n):
        super().__init__()
        self.calls, self.n = 0, n

    def forward(self, *args, **kwargs):
        self.calls += 1
        value = super().forward(*args, **kwargs)
        return value * float("nan") if self.calls >= self.n else value


def test_nan_loss_stops_before_a_broken_checkpoint(tiny_backbone, pairs, tmp_path):
    model = make_model(tiny_backbone)
    args = make_args(tmp_path, save_strategy="steps", save_steps=1)
    trainer = ProjectionTrainer(model=model, args=args, train_dataset=pairs, loss=NaNAfter(3))
    with pytest.raises(NonFiniteLossError, match="training loss is nan at step 3"):
        trainer.train()
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("checkpoint-")) == ["checkpoint-1", "checkpoint-2"]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-2")


def test_saves_through_save_pretrained_safetensors(tiny_backbone, pairs, tmp_path):
    model = make_model(tiny_backbone)
    args = make_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2, gradient_accumulation_steps=2,
                     per_device_train_batch_size=2)
    trainer = ProjectionTrainer(model=model, args=args, train_dataset=pairs)
    trainer.train()
    assert trainer.evaluate(pairs)["eval_loss"] > 0  # evaluation reports the training loss on the rows
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "checkpoint-2", tmp_path / "final"):
        files = set(os.listdir(folder))
        assert "model.safetensors" in files and "training_args.json" in files
        assert not files & {"pytorch_model.bin", "training_args.bin"}
    loaded = AutoModel.from_pretrained(str(tmp_path / "final"))
    assert isinstance(loaded, ColBERTModel)
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, model.state_dict()[name])
    # a checkpoint cut off before its trainer state is skipped on resume
    (tmp_path / "checkpoint-9").mkdir()
    (tmp_path / "checkpoint-9" / "model.safetensors").write_bytes(b"partial")
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-2")


def test_frozen_backbone_stays_frozen_and_in_eval(tiny_backbone, pairs, tmp_path):
    model = make_model(tiny_backbone)
    set_trainable(model, "top-1")
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer = ProjectionTrainer(model=model, args=make_args(tmp_path, max_steps=2, activation_checkpointing=True),
                                train_dataset=pairs, head_learning_rate=1e-2)
    trainer.train()
    for name, tensor in frozen_before.items():
        assert torch.equal(tensor, dict(model.named_parameters())[name]), name
    assert not model.backbone.embeddings.training and model.backbone.encoder.layer[1].training
