"""Losses against small hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_projections.training.losses import (
    ContrastiveLoss,
    DistillationLoss,
    all_pairs_scores,
    contrastive_loss,
    distillation_loss,
    group_scores,
    truncate_embeddings,
)
from hf_projections.training.nested_losses import MatryoshkaLoss, build_loss

# Two queries (2 tokens, dim 2; query 1 has one zero padding row) and two documents; document 1's second
# row is padding filled with garbage that would win the max if the mask were ignored.
QUERIES = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
DOCUMENTS = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.0, 5.0]]])
DOC_MASK = torch.tensor([[True, True], [True, False]])
# MaxSim by hand: q0.d0 = 1 + 1, q0.d1 = 0.6 + 0.8, q1.d0 = 1 + 0, q1.d1 = 0.6 + 0.
EXPECTED_SCORES = torch.tensor([[2.0, 1.4], [1.0, 0.6]])


def test_maxsim_scores_by_hand():
    scores = all_pairs_scores(QUERIES, DOCUMENTS, DOC_MASK)
    torch.testing.assert_close(scores, EXPECTED_SCORES)
    # normalize_scores divides by real query tokens: 2 for query 0, 1 for query 1.
    normalized = all_pairs_scores(QUERIES, DOCUMENTS, DOC_MASK, normalize_scores=True)
    torch.testing.assert_close(normalized, torch.tensor([[1.0, 0.7], [1.0, 0.6]]))


def test_contrastive_in_batch_by_hand():
    # Row 0 targets column 0, row 1 targets column 1: -log softmax.
    row0 = math.log(1 + math.exp(1.4 - 2.0))
    row1 = math.log(1 + math.exp(1.0 - 0.6))
    expected = (row0 + row1) / 2
    loss = ContrastiveLoss(temperature=1.0)(QUERIES, DOCUMENTS, DOC_MASK)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # the default on MaxSim sums is the measured recipe's temperature, not ColBERT's 1
    default = ContrastiveLoss()(QUERIES, DOCUMENTS, DOC_MASK)
    expected_default = (math.log(1 + math.exp((1.4 - 2.0) / 0.25)) + math.log(1 + math.exp((1.0 - 0.6) / 0.25))) / 2
    assert default.item() == pytest.approx(expected_default, abs=1e-6)
    # temperature divides the scores
    loss_t = ContrastiveLoss(temperature=0.5)(QUERIES, DOCUMENTS, DOC_MASK)
    expected_t = (math.log(1 + math.exp((1.4 - 2.0) / 0.5)) + math.log(1 + math.exp((1.0 - 0.6) / 0.5))) / 2
    assert loss_t.item() == pytest.approx(expected_t, abs=1e-6)


def test_contrastive_with_hard_negatives_targets_group_starts():
    torch.manual_seed(0)
    queries = F.normalize(torch.randn(3, 4, 8), dim=-1)
    documents = F.normalize(torch.randn(6, 5, 8), dim=-1)  # G = 2: [p0, n0, p1, n1, p2, n2]
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[1, 3:] = False
    scores = all_pairs_scores(queries, documents, mask)
    expected = F.cross_entropy(scores, torch.tensor([0, 2, 4]))
    assert ContrastiveLoss(temperature=1.0)(queries, documents, mask).item() == pytest.approx(expected.item(), abs=1e-6)
    # group scores are the diagonal blocks of the all-pairs matrix
    groups = group_scores(queries, documents, mask)
    torch.testing.assert_close(groups, torch.stack([scores[b, 2 * b : 2 * b + 2] for b in range(3)]))
    only_own = ContrastiveLoss(temperature=1.0, in_batch_negatives=False)(queries, documents, mask)
    assert only_own.item() == pytest.approx(F.cross_entropy(groups, torch.zeros(3, dtype=torch.long)).item(), abs=1e-6)


def test_dense_cosine_contrastive_default_temperature():
    queries = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    documents = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=-1)
    c = 1 / math.sqrt(2)
    # scores [[c, 0], [c, 1]] / 0.05
    expected = (math.log(1 + math.exp((0 - c) / 0.05)) + math.log(1 + math.exp((c - 1) / 0.05))) / 2
    assert ContrastiveLoss()(queries, documents).item() == pytest.approx(expected, rel=1e-5)


def test_distillation_by_hand():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[3.0, 3.0]])  # uniform after softmax
    s0, s1 = math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)
    expected = 0.5 * math.log(0.5 / s0) + 0.5 * math.log(0.5 / s1)
    assert distillation_loss(student, teacher).item() == pytest.approx(expected, abs=1e-6)
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    # module form: group scores of query 0 against its own two documents, no teacher -> clear error
    loss = DistillationLoss()
    with pytest.raises(ValueError, match="teacher_scores"):
        loss(QUERIES[:1], DOCUMENTS, DOC_MASK)
    value = loss(QUERIES[:1], DOCUMENTS, DOC_MASK, teacher_scores=torch.tensor([[0.0, 0.0]]))
    s = torch.softmax(torch.tensor([2.0, 1.4]), 0)
    assert value.item() == pytest.approx(float(0.5 * torch.log(0.5 / s).sum()), abs=1e-6)


def test_matryoshka_sums_truncated_renormalised_losses():
    torch.manual_seed(1)
    queries = F.normalize(torch.randn(2, 3, 8), dim=-1)
    documents = F.normalize(torch.randn(2, 4, 8), dim=-1)
    mask = torch.ones(2, 4, dtype=torch.bool)
    base = ContrastiveLoss()
    truncated = truncate_embeddings(documents, 4)
    assert torch.allclose(truncated.norm(dim=-1), torch.ones(2, 4))
    expected = 1.0 * base(queries, documents, mask) + 0.5 * base(
        truncate_embeddings(queries, 4), truncated, mask
    ) + 0.25 * base(truncate_embeddings(queries, 2), truncate_embeddings(documents, 2), mask)
    loss = MatryoshkaLoss(base, [2, 4], weights={8: 1.0, 4: 0.5, 2: 0.25})
    assert loss(queries, documents, mask).item() == pytest.approx(expected.item(), abs=1e-6)
    # a zero (padding) row stays zero after truncation
    assert truncate_embeddings(torch.zeros(1, 8), 4).abs().sum() == 0
    with pytest.raises(ValueError, match="exceed"):
        MatryoshkaLoss(base, [16])(queries, documents, mask)
    with pytest.raises(ValueError, match="expected 3 matryoshka weights"):
        MatryoshkaLoss(base, [2, 4], weights=[1.0])(queries, documents, mask)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveLoss(temperature=0)
    with pytest.raises(ValueError, match="B \\* G documents"):
        ContrastiveLoss()(QUERIES, DOCUMENTS[:1].repeat(3, 1, 1), DOC_MASK[:1].repeat(3, 1))
    with pytest.raises(ValueError, match="document_mask"):
        all_pairs_scores(QUERIES, DOCUMENTS)
    with pytest.raises(ValueError, match="unknown loss 'triplet'"):
        build_loss("triplet")
    with pytest.raises(ValueError, match="teacher_scores must have"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 2))
    assert isinstance(build_loss("contrastive", matryoshka_dims=[2]), MatryoshkaLoss)
    assert contrastive_loss(EXPECTED_SCORES).item() > 0
