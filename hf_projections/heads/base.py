"""Base classes for projection heads: spec bookkeeping, MAC counting and the shared residual wrapper.

Every head maps ``(..., d_in) -> (..., d_out)`` and carries ``.spec`` (its fully resolved, JSON-serialisable
spec), ``.d_in`` and ``.d_out``. Heads that support a residual connection compute::

    out = shortcut(x) + scale * branch(x)

where ``shortcut`` is the identity when ``d_in == d_out`` (``shortcut="auto"`` or ``"identity"``) and a
learned bias-free ``Linear(d_in, d_out)`` otherwise (or always, with ``shortcut="linear"``), and ``scale``
is 1 (``residual_scale="none"``) or a learnable scalar initialised to 1 (``residual_scale="learnable"``).
"""

import torch
from torch import nn

from .errors import ProjectionSpecError
from .fields import BoolField, ChoiceField

RESIDUAL_FIELDS = {
    "residual": BoolField(False, help="add a shortcut around the head: out = shortcut(x) + scale * branch(x)"),
    "residual_scale": ChoiceField("none", ("none", "learnable"), help="learnable scalar (init 1) on the branch"),
    "shortcut": ChoiceField(
        "auto",
        ("auto", "identity", "linear"),
        help="auto = identity when d_in == d_out else a bias-free Linear; linear = always a learned Linear",
    ),
}


class ProjectionHead(nn.Module):
    """Base class of every head. Subclasses set ``type_name`` and ``fields`` and implement ``forward``.

    ``spec`` passed to ``__init__`` is already resolved (see ``registry.resolve_spec``).
    """

    type_name = ""
    fields = {}

    def __init__(self, d_in, d_out, spec):
        super().__init__()
        self.d_in = d_in
        self.d_out = d_out
        self._spec = dict(spec)

    @property
    def spec(self):
        """Fully resolved spec (a fresh dict each time): ``build_projection(head.spec, d_in, d_out)`` rebuilds it."""
        return dict(self._spec)

    def macs_per_token(self):
        """Multiply-accumulates per input vector, counted from the linear layers (not measured).

        Sums ``in * out`` over every ``nn.Linear`` and ``layer_macs_per_token()`` over custom layers;
        elementwise work (activations, norms, gate products, residual adds) is not counted.
        """
        total = 0
        for module in self.modules():
            if module is self:
                continue
            if isinstance(module, nn.Linear):
                total += module.in_features * module.out_features
            elif hasattr(module, "layer_macs_per_token"):
                total += int(module.layer_macs_per_token())
        return total

    def reset_parameters(self):
        """Re-run the documented initialisation of every parameter.

        Calls ``reset_parameters()`` of each layer (``nn.Linear``, norms, PHM and fixed-random layers), then
        :meth:`reset_own_parameters`. Draws from torch's global RNG.
        """
        for module in self.modules():
            if module is not self and not isinstance(module, ProjectionHead) and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self.reset_own_parameters()

    def reset_own_parameters(self):
        """Initialise the parameters the head holds itself (not those of its layers); heads that have any extend
        this. A model's ``_init_weights`` calls it for a head whose own parameters were not loaded."""

    def extra_repr(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self._spec.items() if key != "type")
        return f"type={self.type_name!r}, d_in={self.d_in}, d_out={self.d_out}" + (f", {args}" if args else "")


class ResidualHead(ProjectionHead):
    """A head with an optional residual connection around a ``branch``.

    Subclasses build their branch modules in ``__init__`` (after ``super().__init__``), implement
    ``branch_forward(x)`` ``(..., d_in) -> (..., d_out)`` and ``zero_branch_output_()`` (make the branch output
    exactly zero while every parameter still gets a gradient; used by ``init_from_linear``).
    """

    def __init__(self, d_in, d_out, spec):
        super().__init__(d_in, d_out, spec)
        self.residual = spec["residual"]
        self.shortcut = None
        self.branch_scale = None
        if not self.residual:
            return
        mode = spec["shortcut"]
        if mode == "identity" and d_in != d_out:
            raise ProjectionSpecError(
                f"{self.type_name}.shortcut='identity' needs d_in == d_out, got d_in={d_in}, d_out={d_out}; "
                "use 'auto' or 'linear'"
            )
        if mode == "linear" or (mode == "auto" and d_in != d_out):
            self.shortcut = nn.Linear(d_in, d_out, bias=False)
        if spec["residual_scale"] == "learnable":
            self.branch_scale = nn.Parameter(torch.ones(()))

    def reset_own_parameters(self):
        if self.branch_scale is not None:
            with torch.no_grad():
                self.branch_scale.fill_(1.0)

    def branch_forward(self, x):
        raise NotImplementedError

    def zero_branch_output_(self):
        raise NotImplementedError

    def branch_output_bias_layer(self):
        """The layer whose bias adds directly to the branch output (or ``None``); ``init_from_linear`` uses it."""
        return None

    def forward(self, x):
        """``x``: ``(..., d_in)`` -> ``(..., d_out)``."""
        out = self.branch_forward(x)
        if not self.residual:
            return out
        if self.branch_scale is not None:
            out = self.branch_scale * out
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + out
