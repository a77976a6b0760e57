"""Which parameters train: ``full``, ``top-k`` (last k backbone layers + head) or ``head`` (head only)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from hf_projections.modeling.backbone import backbone_layers

MODE_FORMS = "'full', 'head' or 'top-K' with K a positive int (e.g. 'top-3')"
_TOP_K = re.compile(r"^top-(\d+)$")


@dataclass(frozen=True)
class TrainingMode:
    """A parsed training mode: ``kind`` is ``full``, ``head`` or ``top``; ``top_k`` is set for ``top``."""

    kind: str
    top_k: int | None = None

    def __str__(self) -> str:
        return f"top-{self.top_k}" if self.kind == "top" else self.kind

    @property
    def backbone_frozen(self) -> bool:
        """True when at least part of the backbone is frozen (``head`` and ``top-k``)."""
        return self.kind != "full"


def parse_mode(mode: str | TrainingMode) -> TrainingMode:
    """``"full"`` / ``"head"`` / ``"top-K"`` -> :class:`TrainingMode`; anything else raises ``ValueError``."""
    if isinstance(mode, TrainingMode):
        return mode
    if not isinstance(mode, str):
        raise ValueError(f"training mode must be {MODE_FORMS}, got {mode!r}")
    text = mode.strip().lower()
    if text in ("full", "head"):
        return TrainingMode(text)
    match = _TOP_K.match(text)
    if match and int(match.group(1)) >= 1:
        return TrainingMode("top", int(match.group(1)))
    raise ValueError(f"training mode must be {MODE_FORMS}, got {mode!r}")


# The modules that make up the head: the projection, and a layer-mix head's input weights.
HEAD_MODULE_NAMES = ("projection", "layer_mix")


def head_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the projection head's parameters, found as any submodule named in :data:`HEAD_MODULE_NAMES` (so PEFT's
    ``ModulesToSaveWrapper`` copy is included; the optimizer gives them the head's learning rate)."""
    ids: set[int] = set()
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in HEAD_MODULE_NAMES:
            ids.update(id(p) for p in module.parameters())
    if not ids:
        raise ValueError(f"{type(model).__name__} has no submodule named 'projection'")
    return ids


def set_trainable(model: nn.Module, mode: str | TrainingMode) -> dict[str, int]:
    """Set ``requires_grad`` for a training mode and return parameter counts.

    - ``full``: every parameter trains.
    - ``head``: only the head trains (``model.projection``, and ``model.layer_mix`` when the head reads a layer mix).
    - ``top-K``: the last K backbone layers (plus anything the backbone applies after them, e.g. a final
      norm) and the head train; embeddings and earlier layers are frozen.

    Returns ``{"trainable": n, "total": n, "top_k": K or 0}``.
    """
    parsed = parse_mode(mode)
    if not hasattr(model, "backbone") or not hasattr(model, "projection"):
        raise TypeError(f"set_trainable needs a model with .backbone and .projection, got {type(model).__name__}")
    for parameter in model.parameters():
        parameter.requires_grad_(parsed.kind == "full")
    for name in HEAD_MODULE_NAMES:
        if getattr(model, name, None) is not None:
            getattr(model, name).requires_grad_(True)
    if parsed.kind == "top":
        layers = backbone_layers(model.backbone)
        if parsed.top_k > len(layers):
            raise ValueError(f"mode top-{parsed.top_k} asks for more layers than the backbone has ({len(layers)})")
        frozen = {id(p) for p in _frozen_prefix_parameters(model.backbone, layers, len(layers) - parsed.top_k)}
        for parameter in model.backbone.parameters():
            parameter.requires_grad_(id(parameter) not in frozen)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "top_k": parsed.top_k or 0}


def _frozen_prefix_parameters(backbone: nn.Module, layers: nn.ModuleList, n_frozen_layers: int):
    """Parameters computed before layer ``n_frozen_layers``: embeddings and the first layers.

    Everything in the backbone that is not one of the layers counts as "before" unless its name says it
    comes after them (final norms/poolers), which keeps this architecture-agnostic.
    """
    layer_params = {id(p) for p in layers.parameters()}
    frozen_layer_params = {id(p) for layer in layers[:n_frozen_layers] for p in layer.parameters()}
    for name, parameter in backbone.named_parameters():
        if id(parameter) in frozen_layer_params:
            yield parameter
        elif id(parameter) not in layer_params and not _is_after_layers(name):
            yield parameter


def _is_after_layers(name: str) -> bool:
    return name.startswith(("pooler.", "final_norm.", "norm.", "final_layer_norm.", "head.")) or ".final_norm." in name


def eval_frozen_modules(module: nn.Module) -> None:
    """Put fully frozen blocks in eval mode (no dropout), leaving trainable blocks as they are.

    A frozen backbone part then computes exactly what a cached-feature pass computes. Only subtrees that
    own parameters, none of them trainable, are switched, so a parameter-free dropout inside a trainable
    layer keeps training behaviour.
    """
    for child in module.children():
        parameters = list(child.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            child.eval()
        elif parameters:
            eval_frozen_modules(child)
