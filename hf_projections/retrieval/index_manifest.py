"""``index.json``: what a built index folder holds (backend, model, vector layout, corpus size) and how far its build got.

Every backend writes one at the start of a build and updates it as documents land, so an index folder names its
own model (``eval --index`` and ``search --index`` need no other argument) and a missing or damaged folder is an
error that names it, never a silently empty index.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hf_projections.atomic import atomic_write_json

MANIFEST_NAME = "index.json"
FORMAT_NAME = "hf_projections.index"
BACKENDS = ("exact", "qdrant", "muvera", "voyager")


@dataclass
class IndexManifest:
    """The description of an index folder.

    Attributes:
        backend: ``exact`` (packed token vectors in safetensors shards, exact MaxSim), ``qdrant`` (a Qdrant collection)
            ``muvera`` (a Qdrant collection with MUVERA encodings for candidates, re-ranked by MaxSim) or ``voyager``
            (``exact``'s shards plus a token-HNSW graph for candidates, re-ranked by MaxSim).
        model: the model folder or Hub id that encoded the documents (queries must be encoded by the same one).
        dim: vector width; ``multi_vector``: token vectors (MaxSim) or one vector per document (dot product).
        n_documents: documents the build was asked to index; ``complete``: whether all of them are in.
        source: where the documents came from (a data set name or a file), for the record.
        options: backend settings (Qdrant: ``collection``, ``url`` for a server, ``on_disk``; muvera: ``muvera``, its
            encoding settings).
    """

    backend: str
    model: str
    dim: int
    multi_vector: bool
    n_documents: int
    source: str = ""
    complete: bool = False
    options: dict = field(default_factory=dict)
    format: str = FORMAT_NAME

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    def save(self, folder: str | os.PathLike) -> Path:
        return atomic_write_json(Path(folder) / MANIFEST_NAME, asdict(self))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> IndexManifest:
        """The manifest of ``folder``; a missing folder or file, bad JSON or missing fields raise naming the file."""
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not an index folder (no {MANIFEST_NAME}); build one with "
                "`hf-projections index --model M --data NAME --path DIR`"
            )
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is damaged ({error}); rebuild the index into a new folder") from error
        if not isinstance(values, dict) or values.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not an hf-projections index manifest (format {FORMAT_NAME!r} expected)")
        missing = [name for name in ("backend", "model", "dim", "multi_vector", "n_documents") if name not in values]
        if missing:
            raise ValueError(f"{path} is damaged: fields {missing} are missing; rebuild the index into a new folder")
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def check_same_build(self, other: IndexManifest, folder) -> None:
        """Refuse to resume a build into ``folder`` with another model, backend, layout or corpus size."""
        keys = ("backend", "model", "dim", "multi_vector", "n_documents")
        changed = [k for k in keys if getattr(self, k) != getattr(other, k)]
        if changed:
            raise ValueError(
                f"{folder} holds an index built with other settings (changed: {', '.join(changed)}); "
                "use a new --path, or delete the folder to rebuild"
            )
