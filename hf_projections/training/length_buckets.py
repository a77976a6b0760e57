"""Run a batch through a token-level forward in length-sorted chunks, each padded to its own longest row.

A training batch is padded to its longest text, so with 180-token documents most rows carry padding that the
backbone still multiplies. Splitting the rows into a few chunks of similar length and trimming each chunk to its
longest row skips that work while the batch (its rows, in-batch negatives and loss) stays exactly the same: every
real token attends to the same real tokens at the same positions, and the outputs are padded back to the batch's
width with zeros (what ColBERT models put at padding anyway), in the original row order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hf_projections.checks import positive_int


def length_chunks(mask: torch.Tensor, chunks: int) -> list[tuple[torch.Tensor, int]]:
    """Rows of a padded batch split into at most ``chunks`` groups of similar length.

    Args:
        mask: `(batch, tokens)` attention mask (nonzero = real token); with real tokens first in each row (right
            padding), else the batch stays one untrimmed chunk.
        chunks: number of groups (rows sorted by length, then cut into equal-count groups).

    Returns:
        ``[(rows, width), ...]``: `(n_i,)` long row indices and the longest row's length in the group.
    """
    positive_int("length_buckets", chunks)
    real = mask.ne(0)
    lengths = real.sum(dim=1)
    if not torch.equal(real, torch.arange(mask.shape[1], device=mask.device) < lengths[:, None]):
        return [(torch.arange(len(mask), device=mask.device), mask.shape[1])]  # left padding: one untrimmed chunk
    order = torch.argsort(lengths, stable=True)
    groups = [rows for rows in torch.tensor_split(order, min(chunks, len(order))) if len(rows)]
    return [(rows, max(int(lengths[rows].max()), 1)) for rows in groups]


def forward_in_length_chunks(forward: Callable[..., torch.Tensor], mask: torch.Tensor, chunks: int, /, *,
                             per_token: bool = True, **tensors: torch.Tensor | None) -> torch.Tensor:
    """``forward(**tensors)`` computed chunk by chunk on trimmed rows, reassembled as one padded batch.

    Args:
        forward: maps batch tensors (keyword arguments, `(n, tokens, ...)`) to `(n, tokens, ...)` per-token outputs
            that are zero at padding (``per_token``), or to `(n, ...)` per-row outputs (pooled models).
        mask: `(batch, tokens)` attention mask of the batch, real tokens first.
        chunks: groups of similar length (1: one plain call).
        per_token: whether ``forward`` returns one output per token (else one per row).
        tensors: the batch's tensors, each `(batch, tokens, ...)` (a ``mask`` among them too: the first three
            arguments are positional-only); None values are passed through unchanged.

    Returns:
        What ``forward`` returns on the whole batch: `(batch, tokens, ...)` (zeros past each row's chunk width) or
        `(batch, ...)`.
    """
    groups = length_chunks(mask, chunks)
    if len(groups) == 1:
        return forward(**tensors)
    outputs = [forward(**{name: None if value is None else value[rows, :width] for name, value in tensors.items()})
               for rows, width in groups]
    first = outputs[0]
    if per_token:
        result = first.new_zeros((mask.shape[0], mask.shape[1], *first.shape[2:]))
        for out, (rows, width) in zip(outputs, groups):
            result[rows, :width] = out
    else:
        result = first.new_zeros((mask.shape[0], *first.shape[1:]))
        for out, (rows, _) in zip(outputs, groups):
            result[rows] = out
    return result
