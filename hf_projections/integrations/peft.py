"""PEFT helpers: LoRA (or any PEFT tuner) on the backbone with the projection head trained in full.

LoRA example::

    peft_model = apply_lora(model, r=8)                 # backbone LoRA + full head ("projection" module saved)
    ...train...
    peft_model.save_pretrained("adapter")               # adapter_config.json + adapter_model.safetensors
    restored = PeftModel.from_pretrained(ColBERTModel.from_pretrained(base), "adapter")
    plain = restored.merge_and_unload()                 # a plain ColBERTModel again

A head alone (no backbone) is a projection adapter, a PEFT adapter type of its own
(``hf_projections.integrations.projection_adapter``: ``save_projection_adapter``, ``get_peft_model(encoder,
ProjectionAdapterConfig(...))``); ``hf_projections.modeling.save_head`` / ``load_head`` write and read the same folder.
The LoRA adapter saved here loads onto ``load_projection_adapter(head_folder)`` of the same trained model.
"""

from __future__ import annotations

import re

from torch import nn

from hf_projections.modeling.head_files import HEAD_MODULE_NAME


def default_target_modules(model: nn.Module) -> str:
    """A PEFT ``target_modules`` regex for every ``nn.Linear`` inside ``model.backbone`` (never the head).

    For BERT/MiniLM this is ``backbone\\..*\\.(dense|key|query|value)``.
    """
    names = sorted({name.rsplit(".", 1)[-1] for name, module in model.backbone.named_modules() if isinstance(module, nn.Linear)})
    if not names:
        raise ValueError(f"no nn.Linear layers found in {type(model.backbone).__name__}; pass target_modules explicitly")
    return rf"backbone\..*\.({'|'.join(map(re.escape, names))})"


def apply_peft(model: nn.Module, peft_config):
    """Wrap ``model`` with any PEFT config, adding the head to ``modules_to_save`` so it trains in full and is
    saved in the same adapter. Returns the ``PeftModel``.

    A ``target_modules`` of None is replaced by :func:`default_target_modules` (backbone linears only).
    """
    from peft import get_peft_model

    if not hasattr(model, HEAD_MODULE_NAME) or not hasattr(model, "backbone"):
        raise TypeError(f"apply_peft needs a model with .backbone and .projection, got {type(model).__name__}")
    if hasattr(peft_config, "target_modules") and peft_config.target_modules is None:
        peft_config.target_modules = default_target_modules(model)
    modules_to_save = list(getattr(peft_config, "modules_to_save", None) or [])
    if HEAD_MODULE_NAME not in modules_to_save:
        modules_to_save.append(HEAD_MODULE_NAME)
    peft_config.modules_to_save = modules_to_save
    return get_peft_model(model, peft_config)


def apply_lora(
    model: nn.Module,
    r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: str | list[str] | None = None,
    **lora_kwargs,
):
    """LoRA on the backbone's linear layers (default :func:`default_target_modules`) + the head trained in full.

    ``lora_kwargs`` go to ``peft.LoraConfig`` (``use_dora``, ``use_rslora``, ``init_lora_weights``, ...).
    """
    from peft import LoraConfig

    config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules, **lora_kwargs)
    return apply_peft(model, config)
