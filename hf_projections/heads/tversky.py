"""``tversky``: a Tversky projection layer (Doumbouya et al. 2025, "Tversky Neural Networks: Psychologically
Plausible Deep Learning with Differentiable Tversky Similarity"), implemented from the paper's equations.

Objects are vectors; features are a learned bank ``Ω = {ω_k}`` ``(num_features, d_in)``. An object ``a`` has
feature ``k`` when ``a·ω_k > 0``, with salience ``f_{a,k} = ReLU(a·ω_k)``. Each output unit ``j`` owns a
learned prototype ``π_j`` (rows of ``Π``, ``(d_out, d_in)``), and the output is the Tversky similarity::

    y_j = S(x, π_j) = θ·f(X ∩ Π_j) − α·f(X − Π_j) − β·f(Π_j − X)

    f(A ∩ B) = Σ_k f_{a,k} · f_{b,k}                 (product reduction; only features both have count)
    f(A − B) = Σ_k f_{a,k} · [b·ω_k ≤ 0]             ("ignorematch": features of A absent from B)

with learnable scalars θ (init 1), α and β (init 0.5). All three reductions are matrix products, so the cost per
token is ``d_in·K`` (feature saliences) ``+ 3·K·d_out`` (the three measures), with ``K = num_features``; the
prototype saliences ``Π Ωᵀ`` are computed once per forward. The indicator ``[b·ω_k ≤ 0]`` carries no gradient;
Ω, Π, θ, α, β all receive gradients through the saliences. Ω and Π start as ``U(-1/sqrt(d_in), 1/sqrt(d_in))``.
With ``residual=true`` the layer is the branch of ``shortcut(x) + scale * tversky(x)``.
"""

import math

import torch
from torch import nn

from .base import RESIDUAL_FIELDS, ResidualHead
from .fields import ChoiceField, IntField


class TverskyProjection(ResidualHead):
    """``(..., d_in) -> (..., d_out)``: output ``j`` is the Tversky similarity of the input to prototype ``j``."""

    type_name = "tversky"
    fields = {
        "num_features": IntField(128, 1, 65536, help="size K of the learned feature bank"),
        "intersection": ChoiceField("product", ("product",), help="reduction for the common-feature measure"),
        "difference": ChoiceField("ignorematch", ("ignorematch",), help="reduction for the distinctive-feature measure"),
        **RESIDUAL_FIELDS,
    }

    def __init__(self, d_in, d_out, spec):
        super().__init__(d_in, d_out, spec)
        self.num_features = spec["num_features"]
        self.features = nn.Parameter(torch.empty(self.num_features, d_in))
        self.prototypes = nn.Parameter(torch.empty(d_out, d_in))
        self.theta = nn.Parameter(torch.empty(()))
        self.alpha = nn.Parameter(torch.empty(()))
        self.beta = nn.Parameter(torch.empty(()))
        self.reset_tversky_parameters()

    def reset_tversky_parameters(self):
        bound = 1.0 / math.sqrt(self.d_in)
        with torch.no_grad():
            self.features.uniform_(-bound, bound)
            self.prototypes.uniform_(-bound, bound)
            self.theta.fill_(1.0)
            self.alpha.fill_(0.5)
            self.beta.fill_(0.5)

    def reset_own_parameters(self):
        super().reset_own_parameters()
        self.reset_tversky_parameters()

    def branch_forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)`` Tversky similarities to the prototypes."""
        x_scores = x @ self.features.t()  # (..., K)
        p_scores = self.prototypes @ self.features.t()  # (d_out, K)
        x_sal = torch.relu(x_scores)
        p_sal = torch.relu(p_scores)
        x_absent = (x_scores <= 0).to(x_sal.dtype)
        p_absent = (p_scores <= 0).to(p_sal.dtype)
        common = x_sal @ p_sal.t()  # Σ_k f_x,k f_π,k
        x_only = x_sal @ p_absent.t()  # features of x that π lacks
        p_only = x_absent @ p_sal.t()  # features of π that x lacks
        return self.theta * common - self.alpha * x_only - self.beta * p_only

    def zero_branch_output_(self):
        # θ = α = β = 0 makes S exactly 0; their gradients (the three measures) are non-zero, so training starts.
        with torch.no_grad():
            self.theta.zero_()
            self.alpha.zero_()
            self.beta.zero_()

    def macs_per_token(self):
        k = self.num_features
        shortcut = self.shortcut.in_features * self.shortcut.out_features if self.shortcut is not None else 0
        return self.d_in * k + 3 * k * self.d_out + shortcut
