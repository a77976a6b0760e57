"""Make a saved model folder self-sufficient for ``trust_remote_code=True`` loading.

transformers' own mechanism (``register_for_auto_class`` + ``custom_object_save``) copies the modeling file and
the files it imports with single-dot relative imports *from the same directory*. Our heads live in their own
package (``hf_projections/heads``, framework-free) and a few helpers at the package root, so we copy the files
ourselves: the model files, the ``modeling`` helpers they import, ``atomic``/``checks`` and every heads module reachable
from ``heads/registry.py`` through ``from .module import ...`` lines. The model files carry
``try: from hf_projections... except ImportError: from .module ...`` imports, so the same files work installed
and flat in a checkpoint folder (every file name is unique across these folders; a test checks it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from hf_projections.atomic import atomic_write_json

_PACKAGE = Path(__file__).resolve().parent.parent
# Where a flat ``from .name import`` of a copied file is found in the package.
_SOURCE_FOLDERS = (_PACKAGE / "modeling", _PACKAGE / "heads", _PACKAGE)
_ENTRY_FILES = tuple(_PACKAGE / "modeling" / f"{name}.py" for name in ("modeling_colbert", "modeling_dense"))
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import", flags=re.MULTILINE)
# The file that defines each saved class, for config.json's auto_map.
_CLASS_FILES = {
    "ProjectionConfig": "configuration_hf_projections",
    "DenseProjectionConfig": "configuration_hf_projections",
    "ColBERTModel": "modeling_colbert",
    "DenseEmbeddingModel": "modeling_dense",
}


def _find(name: str) -> Path:
    for folder in _SOURCE_FOLDERS:
        if (folder / f"{name}.py").is_file():
            return folder / f"{name}.py"
    raise FileNotFoundError(f"remote code imports .{name}, which is in none of {[str(f) for f in _SOURCE_FOLDERS]}")


def code_files() -> list[Path]:
    """Every file a checkpoint folder needs to rebuild our models without the package installed: the model files
    and everything they reach through single-dot relative imports (the ``except ImportError`` branches)."""
    found: list[Path] = []
    pending = list(_ENTRY_FILES)
    while pending:
        path = pending.pop()
        if path in found:
            continue
        found.append(path)
        pending.extend(_find(name) for name in _RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8")))
    names = [path.name for path in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise RuntimeError(f"remote-code files would collide in a flat folder: {duplicates}")
    return sorted(found)


def make_self_contained(folder: str | os.PathLike, model_class: type, config_class: type) -> None:
    """Copy the code files into ``folder`` and point ``config.json``'s ``auto_map`` at them."""
    folder = Path(folder)
    for name in (model_class.__name__, config_class.__name__):
        if name not in _CLASS_FILES:
            raise ValueError(f"{name} has no remote-code file; known classes: {', '.join(_CLASS_FILES)}")
    for path in code_files():
        shutil.copyfile(path, folder / path.name)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = {
        "AutoConfig": f"{_CLASS_FILES[config_class.__name__]}.{config_class.__name__}",
        "AutoModel": f"{_CLASS_FILES[model_class.__name__]}.{model_class.__name__}",
    }
    atomic_write_json(config_path, config)
