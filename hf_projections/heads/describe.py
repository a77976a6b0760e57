"""``describe(head)``: a head's type, parameter count and multiply-accumulates per token (counted, not timed)."""

from torch import nn


def describe(head):
    """``{"type", "d_in", "d_out", "params", "trainable_params", "macs_per_token", "spec"}`` for a built head.

    ``params`` is ``sum(p.numel() for p in head.parameters())``. ``macs_per_token`` counts the matrix products
    applied to one input vector (linear layers, GLU gate/value/output layers, PHM layers as the dense product
    they run, the Tversky measures, a fixed random lift); elementwise work is not counted. A plain
    ``nn.Module`` without ``.spec`` is described as ``"custom"`` with its linear layers counted.
    """
    if not isinstance(head, nn.Module):
        raise TypeError(f"describe() needs an nn.Module projection head, got {type(head).__name__}")
    params = sum(p.numel() for p in head.parameters())
    trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    if hasattr(head, "macs_per_token"):
        macs = int(head.macs_per_token())
    else:
        macs = sum(m.in_features * m.out_features for m in head.modules() if isinstance(m, nn.Linear))
    spec = head.spec if hasattr(head, "spec") else None
    return {
        "type": spec["type"] if spec else "custom",
        "d_in": getattr(head, "d_in", None),
        "d_out": getattr(head, "d_out", None),
        "params": params,
        "trainable_params": trainable,
        "macs_per_token": macs,
        "spec": spec,
    }
