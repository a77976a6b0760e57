"""Extension points: features that live in higher layers (model cards, Hub uploads, sentence-transformers and
checkpoint converters) plug into the models here, so ``modeling`` never imports them.

The package root registers each extension as ``"module:function"`` (imported on first use, so ``import
hf_projections`` stays light). A model loaded with ``trust_remote_code`` where hf-projections is not installed has
none registered: saving then writes no model card, and the converters say what to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

_TARGETS: dict[str, str | Callable] = {}

# What each extension point does, for error messages and documentation.
EXTENSION_POINTS = {
    "write_model_card": "write README.md (the model card) into a folder being saved: (model, folder) -> None",
    "push_to_hub": "upload a model with its card: (model, repo_id, **kwargs) -> commit info",
    "to_sentence_transformers": "convert to a sentence-transformers model: (model, path, **kwargs) -> ST model",
    "from_sentence_transformers": "convert a sentence-transformers model: (model_or_path, **kwargs) -> model",
    "load_colbert_checkpoint": "import a PyLate / Stanford / ST ColBERT checkpoint: (path, **kwargs) -> ColBERTModel",
    "load_projection_adapter": "load a projection adapter folder (encoder + saved head): (path, **kwargs) -> model",
}


def register_extension(name: str, target: str | Callable) -> None:
    """Register ``target`` (a callable, or ``"package.module:function"`` imported on first use) for ``name``."""
    if name not in EXTENSION_POINTS:
        raise ValueError(f"unknown extension point {name!r}; allowed: {', '.join(EXTENSION_POINTS)}")
    if not callable(target) and not (isinstance(target, str) and target.count(":") == 1):
        raise ValueError(f"extension {name!r} must be a callable or 'module:function', got {target!r}")
    _TARGETS[name] = target


def get_extension(name: str, required: bool = True) -> Callable | None:
    """The callable registered for ``name``; when none is, ``None`` (``required=False``) or an ``ImportError``."""
    target = _TARGETS.get(name)
    if target is None:
        if not required:
            return None
        raise ImportError(
            f"{name} ({EXTENSION_POINTS.get(name, 'unknown')}) needs the hf-projections package: "
            "pip install hf-projections"
        )
    if isinstance(target, str):
        module, _, function = target.partition(":")
        target = getattr(importlib.import_module(module), function)
        _TARGETS[name] = target
    return target
