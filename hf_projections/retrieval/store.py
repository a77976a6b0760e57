"""Packed storage of encoded corpora, with a safetensors cache keyed by model and corpus fingerprints.

An ``EncodedCorpus`` keeps every document's token vectors in one ``(total_tokens, dim)`` tensor plus an
``(n_docs + 1,)`` offsets tensor: document ``i`` is ``embeddings[offsets[i]:offsets[i + 1]]``. A dense
(single-vector) corpus is the special case of one token per document (``is_dense=True``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hf_projections.atomic import atomic_write

logger = logging.getLogger(__name__)

FORMAT_NAME = "hf_projections.EncodedCorpus"
FORMAT_VERSION = "1"


@dataclass
class EncodedCorpus:
    """Token embeddings of a corpus, packed.

    Attributes:
        ids: document ids, ``n_docs`` distinct strings.
        embeddings: ``(total_tokens, dim)`` all documents' token vectors, back to back.
        offsets: ``(n_docs + 1,)`` int64, ``offsets[0] == 0`` and ``offsets[-1] == total_tokens``.
        is_dense: True when every document is a single vector (a dense model's output).
        metadata: free strings saved with the corpus (fingerprints, model name).
    """

    ids: list[str]
    embeddings: torch.Tensor
    offsets: torch.Tensor
    is_dense: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    loaded_from: str | None = field(default=None, compare=False, repr=False)  # set by load(), not saved

    def __post_init__(self) -> None:
        self.ids = [str(doc_id) for doc_id in self.ids]
        _validate(self.ids, self.embeddings, self.offsets, where="EncodedCorpus")

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_embeddings(
        cls,
        ids: Sequence[str],
        embeddings: Sequence[torch.Tensor] | torch.Tensor,
        dtype: torch.dtype | None = None,
        metadata: dict[str, str] | None = None,
    ) -> EncodedCorpus:
        """Pack a list of ``(tokens_i, dim)`` tensors, or a dense ``(n_docs, dim)`` tensor (one vector each)."""
        if isinstance(embeddings, torch.Tensor):
            if embeddings.dim() != 2:
                raise ValueError(f"a dense corpus must be a (n_docs, dim) tensor, got shape {tuple(embeddings.shape)}")
            packed = embeddings.detach().cpu()
            offsets = torch.arange(packed.shape[0] + 1, dtype=torch.int64)
            is_dense = True
        else:
            embeddings = list(embeddings)
            for index, tensor in enumerate(embeddings):
                if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
                    shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                    raise ValueError(f"document {index}: expected a (tokens, dim) tensor, got {shape}")
            lengths = torch.tensor([t.shape[0] for t in embeddings], dtype=torch.int64)
            offsets = torch.zeros(len(embeddings) + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=offsets[1:])
            if embeddings:
                packed = torch.cat([t.detach().cpu() for t in embeddings], dim=0)
            else:
                packed = torch.zeros(0, 0)
            is_dense = False
        if dtype is not None:
            packed = packed.to(dtype)
        return cls(list(ids), packed.contiguous(), offsets, is_dense, dict(metadata or {}))

    # ---------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> torch.Tensor:
        """``(tokens_i, dim)`` view of document ``index``."""
        return self.embeddings[self.offsets[index] : self.offsets[index + 1]]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        """``(n_docs,)`` token count of each document."""
        return self.offsets[1:] - self.offsets[:-1]

    def to_list(self) -> list[torch.Tensor]:
        """Unpack into ``n_docs`` tensors ``(tokens_i, dim)`` (views, no copy)."""
        return [self[i] for i in range(len(self))]

    # ---------------------------------------------------------------- disk

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file (tensors ``embeddings``, ``offsets``; ids and metadata in its header).

        The write is atomic: a temp file in the same folder, then ``os.replace``.
        """
        header = {
            **{f"meta.{key}": str(value) for key, value in self.metadata.items()},
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "ids": json.dumps(self.ids),
            "is_dense": json.dumps(self.is_dense),
        }
        tensors = {"embeddings": self.embeddings.contiguous(), "offsets": self.offsets.contiguous()}
        return atomic_write(path, lambda temp: save_file(tensors, temp, header))

    @classmethod
    def load(cls, path: str | os.PathLike) -> EncodedCorpus:
        """Read a file written by ``save``; shapes and ids are checked, errors name the file and tensor."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no encoded corpus at {path}")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from error
        if header.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: header 'format' is {header.get('format')!r}, expected {FORMAT_NAME!r}")
        for name in ("embeddings", "offsets"):
            if name not in tensors:
                raise ValueError(f"{path}: missing tensor {name!r} (found {sorted(tensors)})")
        try:
            ids = json.loads(header["ids"])
            is_dense = bool(json.loads(header.get("is_dense", "false")))
        except (KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: header 'ids'/'is_dense' missing or not JSON ({error})") from None
        if not isinstance(ids, list):
            raise ValueError(f"{path}: header 'ids' must be a JSON list")
        metadata = {key[len("meta.") :]: value for key, value in header.items() if key.startswith("meta.")}
        _validate(ids, tensors["embeddings"], tensors["offsets"], where=str(path))
        return cls(ids, tensors["embeddings"], tensors["offsets"], is_dense, metadata, loaded_from=str(path))


def _validate(ids: list[str], embeddings: torch.Tensor, offsets: torch.Tensor, where: str) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"{where}: tensor 'embeddings' must be (total_tokens, dim), got shape {tuple(embeddings.shape)}")
    if offsets.dim() != 1 or offsets.dtype != torch.int64:
        raise ValueError(f"{where}: tensor 'offsets' must be 1-d int64, got {tuple(offsets.shape)} {offsets.dtype}")
    if offsets.shape[0] != len(ids) + 1:
        raise ValueError(f"{where}: tensor 'offsets' has {offsets.shape[0]} entries for {len(ids)} ids (expected ids + 1)")
    if offsets[0] != 0 or offsets[-1] != embeddings.shape[0]:
        raise ValueError(
            f"{where}: tensor 'offsets' must start at 0 and end at {embeddings.shape[0]} (rows of 'embeddings'), "
            f"got {int(offsets[0])}..{int(offsets[-1])}"
        )
    if len(ids) and bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"{where}: tensor 'offsets' must be non-decreasing")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: document ids are not unique")


# --------------------------------------------------------------------------- fingerprints and cache


def model_fingerprint(model) -> str:
    """sha256 of a model's class, config and every weight (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        text = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config)
        digest.update(text.encode("utf-8"))
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def corpus_fingerprint(corpus: dict[str, str]) -> str:
    """sha256 of the doc ids and texts, in order (length-prefixed so no two corpora collide by joining)."""
    digest = hashlib.sha256()
    for doc_id, text in corpus.items():
        for part in (str(doc_id), text):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def encode_corpus(
    model,
    corpus: dict[str, str],
    batch_size: int = 32,
    cache_path: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    show_progress_bar: bool | None = None,
    **encode_kwargs,
) -> EncodedCorpus:
    """Encode ``corpus`` ``{doc_id: text}`` with ``model.encode_documents``, once.

    With ``cache_path``, a file whose model and corpus fingerprints (and ``encode_kwargs``) match is loaded
    instead of encoding; otherwise the fresh encoding is written there (atomically).
    """
    if not isinstance(corpus, dict) or not corpus:
        raise ValueError("corpus must be a non-empty dict {doc_id: text}")
    key = {
        "model_fingerprint": model_fingerprint(model),
        "corpus_fingerprint": corpus_fingerprint(corpus),
        "encode_kwargs": json.dumps(encode_kwargs, sort_keys=True, default=str),
        "dtype": str(dtype),
    }
    if cache_path is not None and Path(cache_path).is_file():
        try:
            cached = EncodedCorpus.load(cache_path)
        except ValueError as error:
            logger.warning("ignoring unreadable corpus cache %s: %s", cache_path, error)
        else:
            if all(cached.metadata.get(name) == value for name, value in key.items()):
                logger.info("loaded encoded corpus from cache %s", cache_path)
                return cached
            logger.info("corpus cache %s is stale (model or corpus changed); re-encoding", cache_path)
    ids = list(corpus)
    encoded = model.encode_documents(
        [corpus[doc_id] for doc_id in ids], batch_size=batch_size, show_progress_bar=show_progress_bar, **encode_kwargs
    )
    result = EncodedCorpus.from_embeddings(ids, encoded, dtype=dtype, metadata=key)
    if cache_path is not None:
        result.save(cache_path)
    return result
