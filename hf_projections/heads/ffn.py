"""``ffn``: a feed-forward stack of ``depth`` linear layers (Clavié et al. 2025's FFN projection variants).

Layout for ``depth = L`` and hidden width ``h = round(expansion * d_in)``::

    x (d_in) -> Linear -> [norm -> activation -> dropout] -> Linear (h -> h) -> ... -> Linear (h -> d_out)

i.e. ``L`` linear layers with ``L - 1`` hidden layers of width ``h``; ``depth = 1`` is a single linear map
(``expansion``, ``activation`` and ``norm`` then have no effect). With ``residual=true`` the stack is the branch
of ``shortcut(x) + scale * ffn(x)`` (see ``base.ResidualHead``).

Default activation: GELU, the usual choice for transformer FFNs and what the FFN projection variants assume.
Note that a residual stack built from sentence-transformers/PyLate ``Dense`` layers applies no activation
(``activation="identity"``), which makes the whole head one linear map; ``activation`` is a visible spec
field so a sweep can compare both.
"""

from torch import nn

from .base import RESIDUAL_FIELDS, ResidualHead
from .fields import BoolField, ChoiceField, FloatField, IntField
from .layers import (
    ACTIVATIONS,
    LINEAR_IMPL_FIELDS,
    NORMS,
    check_linear_impl,
    hidden_width,
    make_activation,
    make_linear,
    make_norm,
    zero_output_,
)

class FFNProjection(ResidualHead):
    """``(..., d_in) -> (..., d_out)`` through ``depth`` linear layers with activations in between."""

    type_name = "ffn"
    fields = {
        "depth": IntField(2, 1, 4, help="number of linear layers (1 = a single linear map)"),
        "expansion": FloatField(2.0, 0.0, 64.0, low_inclusive=False, help="hidden width as a multiple of d_in"),
        "activation": ChoiceField("gelu", ACTIVATIONS, help="activation after every hidden layer"),
        "norm": ChoiceField("none", NORMS, help="norm on every hidden layer, before the activation"),
        "dropout": FloatField(0.0, 0.0, 1.0, high_inclusive=False, help="dropout after every hidden activation"),
        "bias": BoolField(False, help="biases in the branch's linear layers"),
        **RESIDUAL_FIELDS,
        **LINEAR_IMPL_FIELDS,
    }

    def __init__(self, d_in, d_out, spec):
        depth = spec["depth"]
        hidden = hidden_width("ffn.expansion", spec["expansion"], d_in) if depth > 1 else None
        widths = [d_in] + [hidden] * (depth - 1) + [d_out]
        named_widths = {"d_in": d_in, "d_out": d_out} if hidden is None else {"d_in": d_in, "hidden": hidden, "d_out": d_out}
        check_linear_impl("ffn", spec, named_widths)
        super().__init__(d_in, d_out, spec)
        self.hidden = hidden
        self.layers = nn.ModuleList(
            make_linear(widths[i], widths[i + 1], spec["bias"], spec["linear_impl"], spec["phm_n"]) for i in range(depth)
        )
        self.norms = nn.ModuleList(make_norm(spec["norm"], hidden) for _ in range(depth - 1))
        self.activation = make_activation(spec["activation"])
        self.dropout = nn.Dropout(spec["dropout"])

    def branch_forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)`` (the stack without the shortcut)."""
        for norm, layer in zip(self.norms, self.layers[:-1]):
            x = self.dropout(self.activation(norm(layer(x))))
        return self.layers[-1](x)

    def zero_branch_output_(self):
        zero_output_(self.layers[-1])

    def branch_output_bias_layer(self):
        return self.layers[-1]
