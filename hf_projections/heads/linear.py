"""``linear``: ColBERT's original projection, a single ``nn.Linear(d_in, d_out)`` (no bias by default)."""

from torch import nn

from .base import ProjectionHead
from .fields import BoolField


class LinearProjection(ProjectionHead):
    """``(..., d_in) -> (..., d_out)`` via one ``nn.Linear`` (PyTorch default init).

    Spec: ``{"type": "linear", "bias": false}``.
    """

    type_name = "linear"
    fields = {"bias": BoolField(False, help="add a bias (ColBERT's projection has none)")}

    def __init__(self, d_in, d_out, spec):
        super().__init__(d_in, d_out, spec)
        self.linear = nn.Linear(d_in, d_out, bias=spec["bias"])

    def forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)``."""
        return self.linear(x)
