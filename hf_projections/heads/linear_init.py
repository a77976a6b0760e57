"""``init_from_linear``: start a head from an existing linear projection (e.g. a trained ColBERT's 384->128).

For a residual head the shortcut takes the given map and the branch's last layer is zeroed, so at step 0 the
head computes exactly ``x @ weight.T (+ bias)`` and training only adds to it.
"""

import torch

from .base import ResidualHead
from .layers import set_output_bias_
from .linear import LinearProjection


def init_from_linear(head, weight, bias=None):
    """Make ``head`` compute ``x @ weight.T + bias`` exactly; returns ``head`` (modified in place).

    ``weight``: ``(d_out, d_in)``; ``bias``: ``(d_out,)`` or ``None``.

    - ``linear`` heads: the weight (and bias) are copied.
    - residual heads: the learned shortcut gets ``weight``, the branch output is zeroed (last layer weights and
      bias; Tversky: θ = α = β = 0), a learnable branch scale is reset to 1, and ``bias`` goes into the branch's
      last-layer bias (which needs ``bias=true`` when ``bias`` is non-zero). With an identity shortcut
      (``d_in == d_out``, ``shortcut="auto"|"identity"``) only the identity matrix can be reproduced; build the
      head with ``shortcut="linear"`` to start from any other map.
    - other heads raise ``ValueError``: only ``linear`` and residual heads can start from a linear map.
    """
    name = getattr(head, "type_name", type(head).__name__)
    weight = torch.as_tensor(weight)
    expected = (head.d_out, head.d_in)
    if tuple(weight.shape) != expected:
        raise ValueError(f"init_from_linear: weight must have shape (d_out, d_in) = {expected}, got {tuple(weight.shape)}")
    if bias is not None:
        bias = torch.as_tensor(bias)
        if tuple(bias.shape) != (head.d_out,):
            raise ValueError(f"init_from_linear: bias must have shape (d_out,) = ({head.d_out},), got {tuple(bias.shape)}")

    if isinstance(head, LinearProjection):
        with torch.no_grad():
            head.linear.weight.copy_(weight)
        set_output_bias_(f"init_from_linear({name})", head.linear, bias)
        return head

    if not isinstance(head, ResidualHead) or not head.residual:
        raise ValueError(
            f"init_from_linear: a {name!r} head without a residual connection cannot reproduce a linear map; "
            "only 'linear' heads and residual heads (residual=true, e.g. preset 'ffn2-x2-res') can be initialised from one"
        )

    if head.shortcut is None:
        identity = torch.eye(head.d_out, dtype=weight.dtype, device=weight.device)
        if not torch.equal(weight, identity):
            raise ValueError(
                f"init_from_linear: this {name!r} head has an identity shortcut (d_in == d_out == {head.d_in}), so it can "
                "only start from the identity map; build it with shortcut='linear' to start from another weight"
            )
    bias_layer = head.branch_output_bias_layer()
    if bias_layer is None and bias is not None and bool((bias != 0).any()):
        raise ValueError(f"init_from_linear: a {name!r} head has no output bias to hold a non-zero bias")

    with torch.no_grad():
        if head.shortcut is not None:
            head.shortcut.weight.copy_(weight)
        if head.branch_scale is not None:
            head.branch_scale.fill_(1.0)
    head.zero_branch_output_()
    if bias_layer is not None:
        set_output_bias_(f"init_from_linear({name})", bias_layer, bias)
    return head
