"""Dropout of the backbone layers that train, set for the length of a training run.

A pretrained encoder keeps the dropout it was pretrained with (MiniLM: 0.1 on hidden states and attention
probabilities). Fine-tuning a retriever on CPU pays for it twice: drawing the masks is about 15 % of a MiniLM
training step, and attention dropout keeps ``scaled_dot_product_attention`` off its fused kernel (transformers passes
``dropout_p=module.dropout.p`` in training). ``backbone_dropout=0`` removes both; the model's config, and so every
saved checkpoint, keeps the encoder's own values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from hf_projections.checks import non_negative_number


def check_dropout(name: str, value: float | None) -> None:
    """``value`` must be None (the backbone's own dropout) or a probability in [0, 1)."""
    if value is None:
        return
    non_negative_number(name, value)
    if value >= 1:
        raise ValueError(f"{name} must be a probability in [0, 1) or None (the backbone's own), got {value!r}")


@contextlib.contextmanager
def backbone_dropout(model: nn.Module, probability: float | None) -> Iterator[None]:
    """Within the block, every ``nn.Dropout`` of ``model.backbone`` drops with ``probability`` (attention included);
    on exit each gets its own back. ``None`` changes nothing."""
    check_dropout("backbone_dropout", probability)
    backbone = getattr(model, "backbone", None)
    if probability is None or backbone is None:
        yield
        return
    saved = [(module, module.p) for module in backbone.modules() if isinstance(module, nn.Dropout)]
    try:
        for module, _ in saved:
            module.p = float(probability)
        yield
    finally:
        for module, p in saved:
            module.p = p
