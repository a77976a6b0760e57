"""PHM (parameterised hypercomplex multiplication) linear layers.

Zhang et al. 2021, "Beyond Fully-Connected Layers with Quaternions: Parameterization of Hypercomplex
Multiplications with 1/n Parameters". The weight of a ``d_in -> d_out`` layer is a sum of ``n`` Kronecker
products::

    W = sum_{i=1..n} A_i ⊗ S_i,   A_i: (n, n) "rules",   S_i: (d_out / n, d_in / n) "blocks"

so it holds ``n**3 + d_in * d_out / n`` weights instead of ``d_in * d_out``. ``n`` must divide both
``d_in`` and ``d_out``.

Initialisation (ours, documented so results are reproducible): ``A_i ~ N(0, 1/n)`` and
``S_i ~ U(-1/sqrt(d_in), 1/sqrt(d_in))``, which gives every entry of ``W`` the variance ``1 / (3 d_in)``
of PyTorch's default ``nn.Linear`` init; the bias (if any) is ``U(-1/sqrt(d_in), 1/sqrt(d_in))`` as in
``nn.Linear``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import ProjectionHead
from .errors import ProjectionSpecError
from .fields import BoolField, IntField


def check_phm_divides(where, n, widths):
    """Raise ``ProjectionSpecError`` unless ``n`` divides every width in ``widths`` (a dict name -> int)."""
    bad = {name: width for name, width in widths.items() if width % n != 0}
    if bad:
        shown = ", ".join(f"{name}={width}" for name, width in widths.items())
        raise ProjectionSpecError(f"{where}={n} must divide every layer width ({shown})")


class PHMLinear(nn.Module):
    """Linear map ``(..., d_in) -> (..., d_out)`` whose weight is ``sum_i kron(A_i, S_i)``.

    Parameters: ``rules`` ``(n, n, n)`` (the ``A_i``), ``blocks`` ``(n, d_out/n, d_in/n)`` (the ``S_i``),
    optional ``bias`` ``(d_out,)``. The dense weight is rebuilt once per forward (cheap next to the
    token-wise matmul) so the layer runs as a single ``F.linear``.
    """

    def __init__(self, d_in, d_out, n, bias=False):
        super().__init__()
        if d_in % n or d_out % n:
            raise ValueError(f"phm n={n} must divide d_in={d_in} and d_out={d_out}")
        self.in_features = d_in
        self.out_features = d_out
        self.n = n
        self.rules = nn.Parameter(torch.empty(n, n, n))
        self.blocks = nn.Parameter(torch.empty(n, d_out // n, d_in // n))
        self.bias = nn.Parameter(torch.empty(d_out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.rules.normal_(0.0, 1.0 / math.sqrt(self.n))
            self.blocks.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def weight(self):
        """The dense weight ``(d_out, d_in)`` = ``sum_i kron(rules[i], blocks[i])``."""
        # kron(A, S)[p * r + a, q * c + b] = A[p, q] * S[a, b]; einsum lays the four indices out in that order.
        dense = torch.einsum("ipq,iab->paqb", self.rules, self.blocks)
        return dense.reshape(self.out_features, self.in_features)

    def forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)``."""
        return F.linear(x, self.weight(), self.bias)

    def zero_output_(self):
        """Make the layer output exactly zero (blocks and bias zero; rules kept so gradients still flow)."""
        with torch.no_grad():
            self.blocks.zero_()
            if self.bias is not None:
                self.bias.zero_()

    def layer_macs_per_token(self):
        # Counted as executed: one dense (d_out, d_in) product per token; rebuilding W is per batch.
        return self.in_features * self.out_features

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, n={self.n}, bias={self.bias is not None}"


class PHMProjection(ProjectionHead):
    """``phm``: a single PHM linear layer ``(..., d_in) -> (..., d_out)`` with about ``1/n`` of the weights.

    Spec: ``{"type": "phm", "n": 4, "bias": false}``; ``n`` must divide ``d_in`` and ``d_out``.
    """

    type_name = "phm"
    fields = {
        "n": IntField(4, 1, 64, help="number of Kronecker terms; must divide d_in and d_out"),
        "bias": BoolField(False, help="add a bias (ColBERT's projection has none)"),
    }

    def __init__(self, d_in, d_out, spec):
        super().__init__(d_in, d_out, spec)
        check_phm_divides("phm.n", spec["n"], {"d_in": d_in, "d_out": d_out})
        self.linear = PHMLinear(d_in, d_out, spec["n"], bias=spec["bias"])

    def forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)``."""
        return self.linear(x)
