"""``hourglass``: a wide residual stream with narrow bottleneck blocks ("Rethinking the shape convention of
an MLP", 2025), used as a projection head.

For ``W = round(width * d_in)`` and ``B = round(bottleneck * d_in)``::

    h = lift(x)                                              # (..., W)
    repeat blocks times:  h = h + up(dropout(act(down(norm(h)))))   # W -> B -> W, residual on the wide stream
    out = proj(h)                                            # (..., d_out)

``lift="learned"`` makes ``lift`` a trainable ``Linear(d_in, W)``; ``lift="fixed"`` keeps it a frozen random
Gaussian map (entries ``N(0, 1/d_in)``, a saved buffer, not a parameter), as the paper suggests the input
lift can stay at its random initialisation. With ``residual=true`` the whole hourglass is the branch of
``shortcut(x) + scale * hourglass(x)``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import RESIDUAL_FIELDS, ResidualHead
from .fields import BoolField, ChoiceField, FloatField, IntField
from .layers import ACTIVATIONS, NORMS, hidden_width, make_activation, make_norm, zero_output_


class FixedRandomLinear(nn.Module):
    """Frozen random linear map ``(..., d_in) -> (..., d_out)``; the weight is a persistent buffer."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.in_features = d_in
        self.out_features = d_out
        self.register_buffer("weight", torch.empty(d_out, d_in))
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / math.sqrt(self.in_features))

    def forward(self, x):
        return F.linear(x, self.weight)

    def layer_macs_per_token(self):
        return self.in_features * self.out_features


class HourglassBlock(nn.Module):
    """Pre-norm bottleneck block on the wide stream: ``h + up(dropout(act(down(norm(h)))))``, ``(..., W)``."""

    def __init__(self, wide, narrow, activation, norm, dropout, bias):
        super().__init__()
        self.norm = make_norm(norm, wide)
        self.down = nn.Linear(wide, narrow, bias=bias)
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(narrow, wide, bias=bias)

    def forward(self, h):
        return h + self.up(self.dropout(self.activation(self.down(self.norm(h)))))


class HourglassProjection(ResidualHead):
    """``(..., d_in) -> (..., d_out)``: lift to a wide stream, ``blocks`` bottleneck blocks, project down."""

    type_name = "hourglass"
    fields = {
        "width": FloatField(2.0, 0.0, 64.0, low_inclusive=False, help="wide stream width as a multiple of d_in"),
        "bottleneck": FloatField(0.5, 0.0, 64.0, low_inclusive=False, help="narrow width as a multiple of d_in"),
        "blocks": IntField(2, 1, 8, help="number of bottleneck blocks"),
        "activation": ChoiceField("gelu", ACTIVATIONS, help="activation inside each block"),
        "norm": ChoiceField("none", NORMS, help="pre-norm at the start of each block"),
        "dropout": FloatField(0.0, 0.0, 1.0, high_inclusive=False, help="dropout inside each block"),
        "bias": BoolField(False, help="biases in the branch's linear layers"),
        "lift": ChoiceField("learned", ("learned", "fixed"), help="trainable or frozen random input lift"),
        **RESIDUAL_FIELDS,
    }

    def __init__(self, d_in, d_out, spec):
        wide = hidden_width("hourglass.width", spec["width"], d_in)
        narrow = hidden_width("hourglass.bottleneck", spec["bottleneck"], d_in)
        super().__init__(d_in, d_out, spec)
        self.wide = wide
        self.narrow = narrow
        if spec["lift"] == "fixed":
            self.lift = FixedRandomLinear(d_in, wide)
        else:
            self.lift = nn.Linear(d_in, wide, bias=spec["bias"])
        self.blocks = nn.ModuleList(
            HourglassBlock(wide, narrow, spec["activation"], spec["norm"], spec["dropout"], spec["bias"])
            for _ in range(spec["blocks"])
        )
        self.proj = nn.Linear(wide, d_out, bias=spec["bias"])

    def branch_forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)`` (the hourglass without the outer shortcut)."""
        h = self.lift(x)
        for block in self.blocks:
            h = block(h)
        return self.proj(h)

    def zero_branch_output_(self):
        zero_output_(self.proj)

    def branch_output_bias_layer(self):
        return self.proj
