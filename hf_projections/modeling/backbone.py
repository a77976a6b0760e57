"""The backbone encoder seen as a stack of transformer blocks: hidden states after any block, the last blocks run
on stored states, and encoder construction/weight copies.

Layers are counted as blocks applied: ``0`` is the embedding output (the input of the first block), ``k`` the
output of block ``k`` (``hidden_states[k]`` in transformers' numbering) and ``L`` (the number of blocks) the
``last_hidden_state``. Also copied next to a checkpoint's remote code (torch and transformers only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

_LAYER_PATHS = ("encoder.layer", "transformer.layer", "layers", "encoder.layers")
# Encoders whose blocks run as ``block(hidden_states, attention_mask)`` on stored states (run_layers).
LAYERWISE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


def transformer_layers(backbone: nn.Module) -> nn.ModuleList | None:
    """The ordered transformer blocks of an encoder (BERT/RoBERTa/ELECTRA ``encoder.layer``, DistilBERT
    ``transformer.layer``, ModernBERT ``layers``), or None when none is found."""
    for path in _LAYER_PATHS:
        module = backbone
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return module
    return None


def backbone_layers(backbone: nn.Module) -> nn.ModuleList:
    """:func:`transformer_layers`, raising a ``ValueError`` that says where it looked when there are none."""
    layers = transformer_layers(backbone)
    if layers is None:
        raise ValueError(
            f"cannot find the transformer layers of {type(backbone).__name__} (looked for {', '.join(_LAYER_PATHS)}); "
            "use mode 'full' or 'head' with this backbone"
        )
    return layers


class _EarlyExit(Exception):
    """Raised by a forward pre-hook to stop the backbone once every requested state is captured."""


def hidden_states_at(backbone: nn.Module, inputs: dict[str, torch.Tensor], layers: Sequence[int]) -> list[torch.Tensor]:
    """Hidden states `(batch, tokens, hidden_size)` after each of ``layers`` blocks, from one backbone pass.

    The pass is the backbone's own forward (any architecture :func:`transformer_layers` knows): the state after
    ``k < L`` blocks is captured as the input of block ``k`` and the forward stops after the highest one needed,
    so no block above it runs; ``L`` is the forward's ``last_hidden_state`` (final norms included).

    Args:
        inputs: the backbone's keyword inputs (``input_ids``, ``attention_mask``, ...).
        layers: block counts in ``0..L``, any order, repeats allowed.

    Returns:
        One tensor per entry of ``layers``, in that order.
    """
    blocks = backbone_layers(backbone)
    depth = len(blocks)
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= depth:
            raise ValueError(f"layer must be an int in 0..{depth} (blocks applied) for this backbone, got {layer!r}")
    inner = sorted({layer for layer in layers if layer < depth})
    stop_at = None if depth in layers else inner[-1]
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int):
        def hook(module, args, kwargs):
            captured[layer] = args[0] if args else kwargs["hidden_states"]
            if layer == stop_at:
                raise _EarlyExit

        return hook

    handles = [blocks[layer].register_forward_pre_hook(capture(layer), with_kwargs=True) for layer in inner]
    try:
        captured[depth] = backbone(**inputs).last_hidden_state
    except _EarlyExit:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return [captured[layer] for layer in layers]


def supports_layerwise(backbone: nn.Module) -> bool:
    """True when the backbone's blocks can run on stored states (:func:`run_layers`): BERT-like encoders."""
    return getattr(getattr(backbone, "config", None), "model_type", None) in LAYERWISE_MODEL_TYPES


def check_layerwise_backbone(backbone: nn.Module) -> nn.ModuleList:
    """The blocks of a BERT-like encoder whose blocks can run on stored states; ``ValueError`` otherwise."""
    if not supports_layerwise(backbone):
        model_type = getattr(getattr(backbone, "config", None), "model_type", None)
        raise ValueError(
            f"running the last layers on stored states (top-K training from the feature cache) supports BERT-like "
            f"encoders ({', '.join(LAYERWISE_MODEL_TYPES)}), got model_type={model_type!r} ({type(backbone).__name__}); "
            "use mode 'head' (cached), or train top-K without the cache"
        )
    return backbone_layers(backbone)


def run_layers(backbone: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """Run blocks ``start + 1 .. L`` on the state after ``start`` blocks (BERT-like encoders).

    Args:
        hidden: `(batch, tokens, hidden_size)`, e.g. from :func:`hidden_states_at` or a feature cache.
        mask: `(batch, tokens)` bool, True = real token.

    Returns:
        `(batch, tokens, hidden_size)`: the ``last_hidden_state`` the full forward would give.
    """
    blocks = check_layerwise_backbone(backbone)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(blocks):
        raise ValueError(f"start must be an int in 0..{len(blocks)}, got {start!r}")
    attention = create_bidirectional_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=mask.long())
    for block in blocks[start:]:
        output = block(hidden, attention)
        hidden = output[0] if isinstance(output, tuple) else output
    return hidden


def backbone_from_config(backbone_config) -> PreTrainedModel:
    """Random-init encoder from its config; BERT-style pooler layers are dropped (never used, and unused
    parameters break DistributedDataParallel)."""
    try:
        return AutoModel.from_config(backbone_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(backbone_config)


def copy_backbone_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy encoder weights; only pooler layers (unused for token states) may be absent on either side."""
    missing, unexpected = target.load_state_dict(source.state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]
    if missing or unexpected:
        raise ValueError(f"backbone weights do not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
