"""Where a model comes from: a local folder or a Hub id, read with errors that name the path and what is expected
(transformers would raise "Repo id must be in the form 'repo_name'..." for a mistyped folder)."""

from __future__ import annotations

import os


def looks_like_hub_id(name: str) -> bool:
    """True for ``"name"`` or ``"org/name"`` that is not a path on this machine (no leading ``/``, ``.`` or ``~``)."""
    return bool(name.strip()) and not name.startswith(("/", ".", "~")) and name.count("/") <= 1 and "\\" not in name


def load_model_config(name_or_path: str | os.PathLike, expected: str):
    """``AutoConfig.from_pretrained`` of a folder or Hub id; ``FileNotFoundError`` naming ``name_or_path`` and
    ``expected`` (e.g. "an encoder folder or Hub id") when there is none or it cannot be read."""
    from transformers import AutoConfig

    name = os.fspath(name_or_path)
    if not os.path.isdir(name) and not looks_like_hub_id(name):
        raise FileNotFoundError(f"no folder at {name!r}: expected {expected}")
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:  # not on the Hub (or offline), no config.json, unreadable config
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise FileNotFoundError(f"cannot read a model config from {name!r} ({reason}); expected {expected}") from error
