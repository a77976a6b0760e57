"""The training knobs that change speed: backbone dropout during training (0 removes the masks and lets attention
run fused) and the fused AdamW kernel; neither may change what a saved model is."""

from __future__ import annotations

import datasets
import pytest
import torch
from torch import nn

from hf_projections import ColBERTModel
from hf_projections.training import ProjectionTrainingArguments, train
from hf_projections.training.dropout import backbone_dropout
from hf_projections.training.loop import adamw_options

ROWS = {
    "query": ["cat protein", "dog gene", "cancer drug risk", "cell study"] * 2,
    "positive": ["the cat protein", "dog gene study", "cancer drug risk effect", "a cell study of genes"] * 2,
}


def _dropout_probabilities(module: nn.Module) -> list[float]:
    return [m.p for m in module.modules() if isinstance(m, nn.Dropout)]


def test_backbone_dropout_holds_inside_the_block_only(tiny_backbone):
    model = ColBERTModel.from_backbone(tiny_backbone, projection={"type": "hourglass", "dropout": 0.2}, dim=8)
    own, head = _dropout_probabilities(model.backbone), _dropout_probabilities(model.projection)
    assert own and set(own) == {0.1} and set(head) == {0.2}
    batch = model.tokenize(["the cat protein of a dog gene"], is_query=False)
    model.train()
    with backbone_dropout(model, 0.0):
        assert set(_dropout_probabilities(model.backbone)) == {0.0}
        assert set(_dropout_probabilities(model.projection)) == {0.2}  # the head's own dropout is the head's
        model.projection.eval()
        first, second = model(**batch).token_embeddings, model(**batch).token_embeddings
        assert torch.equal(first, second)  # training mode, nothing random left in the backbone
    assert _dropout_probabilities(model.backbone) == own and model.backbone.config.hidden_dropout_prob == 0.1
    with backbone_dropout(model, None):
        assert _dropout_probabilities(model.backbone) == own
    with pytest.raises(ValueError, match=r"backbone_dropout must be a probability in \[0, 1\)"):
        with backbone_dropout(model, 1.0):
            pass


@pytest.mark.parametrize("use_cache", [True, False])
def test_training_without_backbone_dropout_is_repeatable_and_saves_the_encoder_config(tiny_backbone, tmp_path,
                                                                                     use_cache):
    rows = datasets.Dataset.from_dict(ROWS)

    def run(name, dropout):
        return train(rows, ProjectionTrainingArguments(
            backbone=tiny_backbone, mode="top-1", max_steps=3, batch_size=4, dim=8, output_dir=tmp_path / name,
            cache_dir=tmp_path / "cache", use_cache=use_cache, save_steps=None, show_progress_bar=False,
            backbone_dropout=dropout, query_max_length=8, document_max_length=16,
        ))

    first, again, with_dropout = run("a", 0.0), run("b", 0.0), run("c", None)
    state, other = first.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], other[k]) for k in state)
    assert not all(torch.equal(state[k], with_dropout.state_dict()[k]) for k in state)  # dropout 0.1 drew masks
    assert set(_dropout_probabilities(first.backbone)) == {0.1}
    saved = ColBERTModel.from_pretrained(tmp_path / "a")
    assert saved.backbone.config.hidden_dropout_prob == 0.1 and saved.backbone.config.attention_probs_dropout_prob == 0.1


def test_fused_adamw_where_torch_has_it_and_the_same_update():
    weights = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(3))]
    groups = [{"params": weights, "lr": 1e-2}]
    assert adamw_options("adamw_torch", groups) == {}
    assert adamw_options("adamw_torch_fused", groups) == {"fused": True}  # CPU parameters, torch >= 2.4
    assert adamw_options("adamw_torch_fused", [{"params": [torch.zeros(2, dtype=torch.long)]}]) == {}
    results = []
    for optim in ("adamw_torch", "adamw_torch_fused"):
        params = [nn.Parameter(w.detach().clone()) for w in weights]
        group = [{"params": params, "lr": 1e-2, "weight_decay": 0.01}]
        optimizer = torch.optim.AdamW(group, **adamw_options(optim, group))
        for step in range(5):
            optimizer.zero_grad()
            sum((p * (step + 1)).square().sum() for p in params).backward()
            optimizer.step()
        results.append(params)
    for plain, fused in zip(*results):
        torch.testing.assert_close(plain, fused)
