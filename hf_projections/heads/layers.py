"""Small building blocks shared by the heads: activations, norms, hidden widths and linear layers."""

import torch
from torch import nn

from .errors import ProjectionSpecError
from .fields import ChoiceField, IntField
from .phm import PHMLinear, check_phm_divides

ACTIVATIONS = ("identity", "relu", "gelu", "silu", "tanh")
NORMS = ("none", "layernorm", "rmsnorm")
LINEAR_IMPLS = ("dense", "phm")

# Spec fields shared by heads whose branch layers can be dense or PHM (Kronecker-sum) layers.
LINEAR_IMPL_FIELDS = {
    "linear_impl": ChoiceField("dense", LINEAR_IMPLS, help="dense nn.Linear or PHM (Kronecker-sum) layers in the branch"),
    "phm_n": IntField(4, 1, 64, help="PHM Kronecker terms (only with linear_impl='phm'); must divide every width"),
}


def make_activation(name):
    """Stateless activation module for one of :data:`ACTIVATIONS` (GELU is the exact erf form)."""
    modules = {"identity": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
    return modules[name]()


def make_norm(name, width):
    """Norm over the last dim ``width``: ``nn.Identity`` for ``"none"``, else LayerNorm / RMSNorm (affine)."""
    if name == "none":
        return nn.Identity()
    if name == "layernorm":
        return nn.LayerNorm(width)
    return nn.RMSNorm(width, eps=1e-6)


def hidden_width(where, multiple, d_in):
    """Width ``round(multiple * d_in)`` of a hidden layer; raises unless it is at least 1."""
    width = int(round(multiple * d_in))
    if width < 1:
        raise ProjectionSpecError(f"{where}={multiple} gives a hidden width round({multiple} * {d_in}) = {width}; it must be >= 1")
    return width


def check_linear_impl(type_name, spec, widths):
    """For ``linear_impl == "phm"`` check that ``phm_n`` divides every layer width of the head."""
    if spec["linear_impl"] == "phm":
        check_phm_divides(f"{type_name}.phm_n", spec["phm_n"], widths)


def make_linear(d_in, d_out, bias, impl="dense", phm_n=4):
    """A ``(..., d_in) -> (..., d_out)`` layer: ``nn.Linear`` (PyTorch default init) or :class:`PHMLinear`."""
    if impl == "phm":
        return PHMLinear(d_in, d_out, phm_n, bias=bias)
    return nn.Linear(d_in, d_out, bias=bias)


def zero_output_(layer):
    """Zero a linear layer so it outputs exactly 0 while still receiving gradients (weights and bias)."""
    if isinstance(layer, PHMLinear):
        layer.zero_output_()
        return
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def set_output_bias_(where, layer, bias):
    """Copy ``bias`` ``(d_out,)`` into ``layer.bias``; raise if the layer has none and ``bias`` is non-zero."""
    if layer.bias is None:
        if bias is not None and bool((bias != 0).any()):
            raise ValueError(f"{where}: the head was built with bias=false, so it cannot hold a non-zero bias; rebuild it with bias=true")
        return
    with torch.no_grad():
        if bias is None:
            layer.bias.zero_()
        else:
            layer.bias.copy_(bias)
