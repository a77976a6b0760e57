"""Length-sorted chunks (``training.length_buckets``): the same embeddings, loss and gradients as one padded batch,
on the token path (Trainer) and the cached top-K path, for multi-vector and pooled models."""

from __future__ import annotations

import datasets
import pytest
import torch
from torch import nn

from hf_projections.modeling import ColBERTModel, DenseEmbeddingModel
from hf_projections.training import ProjectionCollator, ProjectionTrainingArguments, build_cached_pairs, set_trainable
from hf_projections.training.cached_training import cached_loss
from hf_projections.training.length_buckets import forward_in_length_chunks, length_chunks
from hf_projections.training.losses import ContrastiveLoss
from hf_projections.training.modes import eval_frozen_modules
from hf_projections.training.trainer import embed_token_batch

ROWS = {
    "query": ["the cat", "a dog that runs far away", "gene", "cancer risk of the new drug in mice"],
    "positive": ["cat is the animal we study here today", "dog", "the gene claim study of many cells", "risk"],
    "negative_1": ["gene", "cat sat on the mat in the sun", "dog of the", "the a"],
}


def make(cls, tiny_backbone):
    torch.manual_seed(0)
    model = cls.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=16, query_max_length=12,
                              document_max_length=16)
    for module in model.modules():  # both paths must see the same (no) dropout
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def loss_and_gradients(model, compute):
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    assert set(a[1]) == set(b[1]) and a[1]
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_chunks_sort_rows_by_length_and_trim_each_to_its_longest():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    groups = length_chunks(mask, 2)
    assert [(rows.tolist(), width) for rows, width in groups] == [([1, 3], 2), ([0, 2], 4)]
    assert len(length_chunks(mask, 10)) == 4  # never more chunks than rows
    left_padded = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert [(rows.tolist(), width) for rows, width in length_chunks(left_padded, 2)] == [([0, 1], 3)]
    with pytest.raises(ValueError, match="length_buckets must be a positive int"):
        length_chunks(mask, 0)


def test_chunked_forward_reassembles_rows_in_order():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    hidden = torch.randn(3, 4, 2)

    def per_token(hidden, mask):  # depends on the row's real tokens only, zero at padding
        real = hidden * mask.unsqueeze(-1)
        return (real.cumsum(dim=1) + real.sum(dim=1, keepdim=True)) * mask.unsqueeze(-1)

    expected = per_token(hidden, mask)
    torch.testing.assert_close(forward_in_length_chunks(per_token, mask, 2, hidden=hidden, mask=mask), expected)
    pooled = forward_in_length_chunks(lambda hidden, mask: per_token(hidden, mask).sum(dim=1), mask, 3,
                                      per_token=False, hidden=hidden, mask=mask)
    torch.testing.assert_close(pooled, expected.sum(dim=1))


@pytest.mark.parametrize("cls", [ColBERTModel, DenseEmbeddingModel])
def test_token_path_chunks_give_the_same_loss_and_gradients(tiny_backbone, cls):
    model = make(cls, tiny_backbone)
    set_trainable(model, "full")
    model.train()
    batch = ProjectionCollator(model)(datasets.Dataset.from_dict(ROWS).to_list())
    assert batch["document_attention_mask"].sum(dim=1).unique().numel() > 2  # lengths differ: chunks trim something
    loss = ContrastiveLoss()
    plain = loss_and_gradients(model, lambda: loss(*embed_token_batch(model, batch)))
    for chunks in (2, 3, 8):
        assert_same(loss_and_gradients(model, lambda: loss(*embed_token_batch(model, batch, chunks))), plain)


@pytest.mark.parametrize("cls", [ColBERTModel, DenseEmbeddingModel])
def test_cached_top_k_chunks_give_the_same_loss_and_gradients(tiny_backbone, tmp_path, cls):
    model = make(cls, tiny_backbone)
    data = build_cached_pairs(model, datasets.Dataset.from_dict(ROWS), mode="top-1", cache_dir=tmp_path,
                              dtype="float32")
    set_trainable(model, "top-1")
    model.train()
    eval_frozen_modules(model)
    batch, loss = data.collate(range(4)), ContrastiveLoss()
    plain = loss_and_gradients(model, lambda: cached_loss(model, batch, loss, data.layer))
    assert_same(loss_and_gradients(model, lambda: cached_loss(model, batch, loss, data.layer, 3)), plain)


def test_length_buckets_argument_is_checked():
    assert ProjectionTrainingArguments(length_buckets=4).length_buckets == 4
    with pytest.raises(ValueError, match="length_buckets must be a positive int"):
        ProjectionTrainingArguments(length_buckets=0)
