"""Make a saved model folder self-sufficient for ``trust_remote_code=True`` loading.

transformers' own mechanism (``register_for_auto_class`` + ``custom_object_save``) copies the modeling file and
the files it imports with single-dot relative imports *from the same directory*. Our heads live in their own
package (``hf_projections/heads``, framework-free), so we copy the files ourselves: the two model files plus every
heads module reachable from ``heads/registry.py`` through ``from .module import ...`` lines. The model files carry
``try: from hf_projections... except ImportError: from .module ...`` imports, so the same files work installed
and flat in a checkpoint folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from hf_projections.io import atomic_write_json

_PACKAGE = Path(__file__).resolve().parent.parent
_MODEL_FILES = (
    _PACKAGE / "modeling" / "configuration_hf_projections.py",
    _PACKAGE / "modeling" / "modeling_hf_projections.py",
)
_HEADS_ENTRY = _PACKAGE / "heads" / "registry.py"
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import", flags=re.MULTILINE)


def heads_files() -> list[Path]:
    """The heads modules the registry needs, found by following single-dot relative imports."""
    found: list[Path] = []
    pending = [_HEADS_ENTRY]
    while pending:
        path = pending.pop()
        if path in found:
            continue
        found.append(path)
        for module in _RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8")):
            candidate = path.parent / f"{module}.py"
            if candidate.exists():
                pending.append(candidate)
    return found


def code_files() -> list[Path]:
    """Every file a checkpoint folder needs to rebuild our models without the package installed."""
    return [*_MODEL_FILES, *heads_files()]


def make_self_contained(folder: str | os.PathLike, model_class: type, config_class: type) -> None:
    """Copy the code files into ``folder`` and point ``config.json``'s ``auto_map`` at them."""
    folder = Path(folder)
    for path in code_files():
        shutil.copyfile(path, folder / path.name)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = {
        "AutoConfig": f"configuration_hf_projections.{config_class.__name__}",
        "AutoModel": f"modeling_hf_projections.{model_class.__name__}",
    }
    atomic_write_json(config_path, config)
