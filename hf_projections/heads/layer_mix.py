"""Layer-mix input: the projection head reads a learned combination of several backbone layers' token states.

The frozen last layer of a mean-pooling encoder was never trained to give good *token* vectors; lower layers keep more
token-level, lexical information that MaxSim can use. Two ways to combine ``L`` layers' states `(..., hidden)`:

- ``scalar``: ELMo's scalar mix, ``gamma * sum_l softmax(w)_l * state_l`` -> `(..., hidden)` (``L + 1`` parameters;
  it starts as the plain mean of the layers);
- ``concat``: the states side by side -> `(..., L * hidden)`; the head's first layer learns the mix (no parameters
  here, ``(L - 1) * hidden * d`` more in the head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LAYER_MIXES = ("scalar", "concat")


class ScalarMix(nn.Module):
    """Softmax-weighted sum of ``n_layers`` tensors of one shape, times a learned scale."""

    def __init__(self, n_layers: int):
        super().__init__()
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def reset_parameters(self) -> None:
        """Equal weights (the mean of the layers) and a scale of 1."""
        with torch.no_grad():
            self.weights.zero_()
            self.gamma.fill_(1.0)

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """``n_layers`` tensors `(..., hidden)` -> `(..., hidden)`."""
        if len(states) != self.weights.numel():
            raise ValueError(f"ScalarMix was built for {self.weights.numel()} layers, got {len(states)}")
        weights = torch.softmax(self.weights, dim=0).to(states[0].dtype)
        return self.gamma.to(states[0].dtype) * sum(w * s for w, s in zip(weights, states))


class ConcatLayers(nn.Module):
    """The layers' states side by side: ``n_layers`` tensors `(..., hidden)` -> `(..., n_layers * hidden)`."""

    def __init__(self, n_layers: int):
        super().__init__()
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        self.n_layers = n_layers

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(states) != self.n_layers:
            raise ValueError(f"ConcatLayers was built for {self.n_layers} layers, got {len(states)}")
        return torch.cat(list(states), dim=-1)


def build_layer_mix(kind: str, n_layers: int) -> nn.Module:
    """The mix module for ``kind`` (one of :data:`LAYER_MIXES`)."""
    if kind == "scalar":
        return ScalarMix(n_layers)
    if kind == "concat":
        return ConcatLayers(n_layers)
    raise ValueError(f"layer_mix must be one of {', '.join(LAYER_MIXES)}, got {kind!r}")


def describe_layer_mix(layers, kind: str) -> str:
    """A layer mix in words: ``"layers -1, -2, -3 (scalar mix)"``."""
    return f"layers {', '.join(map(str, layers))} ({kind} mix)"


def describe_head_input(layers, kind: str | None) -> str:
    """A training head input in words: :func:`describe_layer_mix`, or ``"the last layer"`` for ``None`` and for
    ``[-1]`` (the arguments' way to ask for the last layer alone)."""
    if not layers or list(layers) == [-1]:
        return "the last layer"
    return describe_layer_mix(layers, kind)


def layer_mix_width(kind: str, n_layers: int, hidden_size: int) -> int:
    """Width of what the head reads after the mix: ``hidden_size`` (``scalar``) or ``n_layers * hidden_size``."""
    if kind not in LAYER_MIXES:
        raise ValueError(f"layer_mix must be one of {', '.join(LAYER_MIXES)}, got {kind!r}")
    return hidden_size * (n_layers if kind == "concat" else 1)
