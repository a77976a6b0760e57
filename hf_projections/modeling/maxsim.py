"""MaxSim, the late-interaction score: for each query token the best document token, summed over the query.

Token embeddings are L2-normalised with padding rows zero (what ``ColBERTModel`` returns), so MaxSim is a
masked max over plain dot products. Also copied next to a checkpoint's remote code (torch only).
"""

from __future__ import annotations

import torch
from torch import nn


def pad_token_embeddings(embeddings: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a list of `(tokens_i, dim)` tensors into `(n, max_tokens, dim)` zero-padded plus a `(n, max_tokens)` mask."""
    if not embeddings:
        raise ValueError("expected at least one embedding tensor, got an empty list")
    lengths = torch.tensor([len(e) for e in embeddings])
    padded = nn.utils.rnn.pad_sequence(embeddings, batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def maxsim(queries: torch.Tensor, documents: torch.Tensor, document_mask: torch.Tensor) -> torch.Tensor:
    """All-pairs MaxSim.

    Args:
        queries: `(n_q, q_tokens, dim)`, zero rows for padding (they add 0 to the sum).
        documents: `(n_d, d_tokens, dim)`.
        document_mask: `(n_d, d_tokens)` bool, True = real token; padding never wins the max.

    Returns:
        `(n_q, n_d)` sum over query tokens of the best document-token dot product.
    """
    sims = torch.einsum("qid,njd->qnij", queries, documents)
    return masked_maxsim(sims, document_mask[None, :, None, :])


def masked_maxsim(similarities: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """MaxSim from token similarities: `(..., q_tokens, d_tokens)` and a mask broadcastable to it (True = real
    document token) -> `(...)` sum over query tokens of the best real document token."""
    best = similarities.masked_fill(~keep, float("-inf")).max(dim=-1).values
    # A document without any real token contributes nothing rather than -inf.
    return best.nan_to_num(neginf=0.0).sum(dim=-1)
