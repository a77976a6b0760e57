"""``glu``: a gated linear unit block (Shazeer 2020, "GLU Variants Improve Transformer").

For hidden width ``h = round(expansion * d_in)``::

    hidden = act(x W_gate) * (x W_value)        # (..., h)
    out    = dropout(hidden) W_out               # (..., d_out)

with ``act`` chosen by ``variant``: ``glu`` = sigmoid, ``reglu`` = ReLU, ``geglu`` = GELU,
``swiglu`` = SiLU (Swish), ``bilinear`` = identity. With ``residual=true`` this is the branch of
``shortcut(x) + scale * glu(x)``.
"""

import torch
from torch import nn

from .base import RESIDUAL_FIELDS, ResidualHead
from .fields import BoolField, ChoiceField, FloatField
from .layers import LINEAR_IMPL_FIELDS, check_linear_impl, hidden_width, make_linear, zero_output_

GLU_VARIANTS = ("glu", "reglu", "geglu", "swiglu", "bilinear")
_GATE_ACTIVATIONS = {"glu": nn.Sigmoid, "reglu": nn.ReLU, "geglu": nn.GELU, "swiglu": nn.SiLU, "bilinear": nn.Identity}


class GLUProjection(ResidualHead):
    """``(..., d_in) -> (..., d_out)`` through a gated hidden layer of width ``round(expansion * d_in)``."""

    type_name = "glu"
    fields = {
        "variant": ChoiceField("swiglu", GLU_VARIANTS, help="gate activation: sigmoid|ReLU|GELU|SiLU|none"),
        "expansion": FloatField(2.0, 0.0, 64.0, low_inclusive=False, help="hidden width as a multiple of d_in"),
        "dropout": FloatField(0.0, 0.0, 1.0, high_inclusive=False, help="dropout on the gated hidden layer"),
        "bias": BoolField(False, help="biases in the gate, value and output layers"),
        **RESIDUAL_FIELDS,
        **LINEAR_IMPL_FIELDS,
    }

    def __init__(self, d_in, d_out, spec):
        hidden = hidden_width("glu.expansion", spec["expansion"], d_in)
        check_linear_impl("glu", spec, {"d_in": d_in, "hidden": hidden, "d_out": d_out})
        super().__init__(d_in, d_out, spec)
        self.hidden = hidden
        impl, n, bias = spec["linear_impl"], spec["phm_n"], spec["bias"]
        self.gate_proj = make_linear(d_in, hidden, bias, impl, n)
        self.value_proj = make_linear(d_in, hidden, bias, impl, n)
        self.out_proj = make_linear(hidden, d_out, bias, impl, n)
        self.gate_activation = _GATE_ACTIVATIONS[spec["variant"]]()
        self.dropout = nn.Dropout(spec["dropout"])

    def branch_forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)`` (the gated block without the shortcut)."""
        gated = torch.mul(self.gate_activation(self.gate_proj(x)), self.value_proj(x))
        return self.out_proj(self.dropout(gated))

    def zero_branch_output_(self):
        zero_output_(self.out_proj)

    def branch_output_bias_layer(self):
        return self.out_proj
