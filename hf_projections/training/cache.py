"""Cached backbone features: run the frozen part of the backbone once, train (and evaluate) heads from disk.

A head sweep then costs one backbone pass plus seconds-to-minutes per head. For ``head`` mode the cache holds
the backbone's ``last_hidden_state``; for ``top-k`` it holds the output of layer ``L - k`` and the last ``k``
layers run on top of it during training (BERT-like encoders: BERT, MiniLM, RoBERTa, XLM-R, ELECTRA).

On disk, one folder per cache key under the cache directory (``$HF_PROJECTIONS_CACHE`` or
``~/.cache/hf_projections/features``)::

    <key>/states.bin         every real token's hidden state, rows of `hidden_size`, fp16 (or float32)
    <key>/index.safetensors  starts (n,), lengths (n,) int64 and text_sha1 (n, 20) uint8
    <key>/meta.json          what the key was made of, shapes, dtype

The key hashes the texts, the frozen backbone weights, the tokenizer, the query/document length, marker and
augmentation settings, the layer and the storage dtype, so any change gives a new cache. A cache is built in
a temporary sibling folder and moved into place with one ``os.replace``: a killed build leaves no
half-valid cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers.masking_utils import create_bidirectional_mask

from hf_projections.training.modes import backbone_layers

CACHE_ENV_VAR = "HF_PROJECTIONS_CACHE"
CACHE_FORMAT_VERSION = 1
STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}
# Encoders whose layers run as ``layer(hidden_states, attention_mask)`` after ``embeddings(...)``.
LAYERWISE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


def default_cache_dir() -> Path:
    """``$HF_PROJECTIONS_CACHE`` or ``~/.cache/hf_projections/features``."""
    value = os.environ.get(CACHE_ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "hf_projections" / "features"


def text_sha1(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


# --------------------------------------------------------------------------- layer-wise backbone


def check_layerwise_backbone(backbone: nn.Module) -> nn.ModuleList:
    """Return the layers of a BERT-like encoder that can be run layer by layer; raise ``ValueError`` otherwise."""
    model_type = getattr(getattr(backbone, "config", None), "model_type", None)
    if model_type not in LAYERWISE_MODEL_TYPES or not hasattr(backbone, "embeddings"):
        raise ValueError(
            f"layer-wise caching (top-k mode) supports BERT-like encoders ({', '.join(LAYERWISE_MODEL_TYPES)}), "
            f"got model_type={model_type!r} ({type(backbone).__name__}); use mode 'head' (cached) or train top-k "
            "without the cache"
        )
    return backbone_layers(backbone)


def _attention_mask(backbone: nn.Module, hidden: torch.Tensor, mask: torch.Tensor):
    """The encoder's 4-D attention mask (or None when nothing is masked) for `(batch, tokens)` ``mask``."""
    return create_bidirectional_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=mask.long())


def run_layers(backbone: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
    """Run layers ``start .. stop - 1`` of a BERT-like encoder.

    Args:
        hidden: `(batch, tokens, hidden_size)` input of layer ``start`` (output of layer ``start - 1``).
        mask: `(batch, tokens)` bool, True = real token.

    Returns:
        `(batch, tokens, hidden_size)` output of layer ``stop - 1`` (the ``last_hidden_state`` when ``stop`` is None).
    """
    layers = check_layerwise_backbone(backbone)
    attention = _attention_mask(backbone, hidden, mask)
    for layer in layers[start:stop]:
        output = layer(hidden, attention)
        hidden = output[0] if isinstance(output, tuple) else output
    return hidden


def backbone_states(backbone: nn.Module, inputs: dict[str, torch.Tensor], layer: int | None = None) -> torch.Tensor:
    """Hidden states `(batch, tokens, hidden_size)`: ``last_hidden_state`` (``layer=None``) or the output of the
    first ``layer`` layers (0 = embeddings; BERT-like encoders only)."""
    if layer is None:
        return backbone(**inputs).last_hidden_state
    layers = check_layerwise_backbone(backbone)
    if not 0 <= layer <= len(layers):
        raise ValueError(f"layer must be in 0..{len(layers)}, got {layer}")
    hidden = backbone.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"))
    if hasattr(backbone, "embeddings_project"):  # ELECTRA with embedding_size != hidden_size
        hidden = backbone.embeddings_project(hidden)
    return run_layers(backbone, hidden, inputs["attention_mask"].bool(), 0, layer)


# --------------------------------------------------------------------------- cache keys


def _hash_tensors(digest, named_tensors) -> None:
    for name, tensor in named_tensors:
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tuple(data.shape)}|{data.dtype}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def backbone_fingerprint(backbone: nn.Module, layer: int | None) -> str:
    """sha256 of the weights (and buffers) the cached states depend on: all of them for ``layer=None``, else
    everything except layers ``layer..L-1`` (so a top-k-trained model still matches its layer cache)."""
    excluded: set[int] = set()
    if layer is not None:
        for block in backbone_layers(backbone)[layer:]:
            excluded.update(id(t) for t in block.parameters())
            excluded.update(id(t) for t in block.buffers())
    digest = hashlib.sha256(type(backbone).__name__.encode())
    named = [(n, t) for n, t in backbone.named_parameters() if id(t) not in excluded]
    named += [(n, t) for n, t in backbone.named_buffers() if id(t) not in excluded]
    _hash_tensors(digest, sorted(named, key=lambda item: item[0]))
    attention = getattr(getattr(backbone, "config", None), "_attn_implementation", None)
    digest.update(f"attn={attention}".encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the full tokenizer definition (fast tokenizers) or of its class and vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        # Truncation/padding state changes with every call; lengths are part of the key on their own.
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True)
    else:
        text = type(tokenizer).__name__ + json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_description(model, texts: Sequence[str], is_query: bool, layer: int | None, dtype: str) -> dict:
    """Everything a cache depends on (hashed into its key; also stored in meta.json)."""
    config = model.config
    texts_digest = hashlib.sha256()
    for text in texts:
        texts_digest.update(text_sha1(text))
    return {
        "format": CACHE_FORMAT_VERSION,
        "backbone": backbone_fingerprint(model.backbone, layer),
        "tokenizer": tokenizer_fingerprint(model.tokenizer),
        "is_query": bool(is_query),
        "max_length": config.query_max_length if is_query else config.document_max_length,
        "marker": config.query_marker if is_query else config.document_marker,
        "augment": bool(is_query and config.augment_queries),
        "layer": "last" if layer is None else int(layer),
        "dtype": dtype,
        "texts": texts_digest.hexdigest(),
        "n_texts": len(texts),
    }


def cache_key(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- the cache


class FeatureCache:
    """Read-only view of a built cache: per-text hidden states `(tokens_i, hidden_size)` from a memory map.

    Attributes:
        path, key, meta: the folder, its key and its meta.json.
        layer: None (``last_hidden_state``) or the number of backbone layers applied.
        is_query: whether the texts were tokenised as queries.
        hidden_size, dtype: width and storage dtype of the states.
        lengths: `(n,)` int64 real tokens per text.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{self.path} is not a complete feature cache (no meta.json)")
        self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        self.key = self.meta["key"]
        description = self.meta["description"]
        self.layer = None if description["layer"] == "last" else int(description["layer"])
        self.is_query = bool(description["is_query"])
        self.hidden_size = int(self.meta["hidden_size"])
        self.dtype = STORAGE_DTYPES[description["dtype"]]
        try:
            index = load_file(str(self.path / "index.safetensors"))
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"feature cache {self.key} at {self.path} is damaged: index.safetensors is not readable ({error}); "
                f"delete the folder {self.path} so that the cache is rebuilt"
            ) from error
        self.starts = torch.from_numpy(index["starts"].astype(np.int64))
        self.lengths = torch.from_numpy(index["lengths"].astype(np.int64))
        self._hashes = index["text_sha1"]
        self._row_of: dict[bytes, int] | None = None
        n_tokens = int(self.meta["n_tokens"])
        np_dtype = np.float16 if self.dtype == torch.float16 else np.float32
        self._check_states_file(n_tokens * self.hidden_size * np.dtype(np_dtype).itemsize, n_tokens)
        # Copy-on-write map: read-only on disk, but a writable array, so torch can view it without a copy.
        mapped = (
            np.memmap(self.path / "states.bin", dtype=np_dtype, mode="c", shape=(n_tokens, self.hidden_size))
            if n_tokens
            else np.zeros((0, self.hidden_size), dtype=np_dtype)
        )
        self._states = torch.from_numpy(mapped)  # (n_tokens, hidden_size), texts one after another

    def _check_states_file(self, expected: int, n_tokens: int) -> None:
        """Raise a ``ValueError`` naming this cache when ``states.bin`` is missing or not ``expected`` bytes long
        (meta.json's ``n_tokens`` x ``hidden_size`` x dtype size): a damaged cache is never memory-mapped."""
        states_file = self.path / "states.bin"
        size = states_file.stat().st_size if states_file.is_file() else None
        if size == expected:
            return
        found = "is missing" if size is None else f"has {size} bytes"
        raise ValueError(
            f"feature cache {self.key} at {self.path} is damaged: states.bin {found}, but meta.json expects {expected} "
            f"bytes ({n_tokens} tokens x {self.hidden_size} x {self.meta['description']['dtype']}); delete the folder "
            f"{self.path} so that the cache is rebuilt"
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def __repr__(self) -> str:
        return (
            f"FeatureCache(path={str(self.path)!r}, texts={len(self)}, tokens={int(self.lengths.sum())}, "
            f"hidden_size={self.hidden_size}, layer={self.meta['description']['layer']}, is_query={self.is_query})"
        )

    def load_into_memory(self) -> FeatureCache:
        """Copy all states into RAM (same dtype) for faster batches; returns self."""
        self._states = self._states.clone()
        return self

    def rows_of(self, texts: Sequence[str]) -> list[int]:
        """Row of each text in this cache; raises ``KeyError`` naming a text that was not cached."""
        if self._row_of is None:
            self._row_of = {bytes(h): i for i, h in enumerate(self._hashes)}
        rows = []
        for text in texts:
            row = self._row_of.get(text_sha1(text))
            if row is None:
                raise KeyError(f"text not in feature cache {self.key}: {text[:80]!r}")
            rows.append(row)
        return rows

    def states(self, row: int) -> torch.Tensor:
        """`(tokens_row, hidden_size)` float32 states of one text."""
        start, length = int(self.starts[row]), int(self.lengths[row])
        return self._states[start : start + length].float()

    def batch(self, rows: Sequence[int] | torch.Tensor, dtype: torch.dtype = torch.float32):
        """Padded states of several texts.

        Returns:
            hidden `(len(rows), max_tokens, hidden_size)` in ``dtype`` (zeros at padding) and mask
            `(len(rows), max_tokens)` bool, True = real token.
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(rows) else 0
        mask = torch.arange(width)[None, :] < lengths[:, None]
        hidden = torch.zeros(len(rows), width, self.hidden_size, dtype=dtype)
        # A text's states are one contiguous slice: copying slices (casting on the way) is several times
        # faster than gathering every token row with one big index.
        for position, (start, length) in enumerate(zip(self.starts[rows].tolist(), lengths.tolist())):
            hidden[position, :length] = self._states[start : start + length]
        return hidden, mask


def _storage_dtype_name(dtype: torch.dtype | str) -> str:
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in STORAGE_DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    return name


@torch.no_grad()
def build_feature_cache(
    model,
    texts: Sequence[str],
    is_query: bool,
    cache_dir: str | os.PathLike | None = None,
    layer: int | None = None,
    dtype: torch.dtype | str = torch.float16,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> FeatureCache:
    """Return the cache of ``texts`` (building it unless an identical one exists).

    Args:
        model: ``ColBERTModel`` / ``DenseEmbeddingModel`` (its backbone, tokenizer and length settings are used).
        texts: texts to cache; duplicates are stored once (look rows up with ``FeatureCache.rows_of``).
        is_query: tokenise as queries (query marker, [MASK] augmentation) or as documents.
        cache_dir: root folder (default :func:`default_cache_dir`).
        layer: None caches ``last_hidden_state`` (head mode); ``L - k`` caches the input of the last ``k``
            layers (top-k mode, BERT-like encoders).
        dtype: storage dtype, ``float16`` (default, half the disk) or ``float32`` (exact).
        batch_size: backbone batch size (texts are length-sorted into batches).
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dtype_name = _storage_dtype_name(dtype)
    unique = list(dict.fromkeys(texts))
    if not unique:
        raise ValueError("texts is empty: nothing to cache")
    if layer is not None:
        layers = check_layerwise_backbone(model.backbone)
        if not 0 <= layer <= len(layers):
            raise ValueError(f"layer must be in 0..{len(layers)}, got {layer}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    description = cache_description(model, unique, is_query, layer, dtype_name)
    key = cache_key(description)
    final = root / key
    if (final / "meta.json").exists():
        return FeatureCache(final)

    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".building-{key}-{os.getpid()}-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a shared cache should be readable
    try:
        _write_cache(model, unique, is_query, layer, STORAGE_DTYPES[dtype_name], batch_size, show_progress_bar, staging)
        meta = {
            "key": key,
            "description": description,
            "hidden_size": _hidden_size(model),
            "n_tokens": int(load_file(str(staging / "index.safetensors"))["lengths"].sum()),
            "backbone_name": getattr(model.config, "backbone_name", None),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        # meta.json last: a folder without it is never treated as a cache.
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(staging, final)
        except OSError:
            if not (final / "meta.json").exists():  # not a concurrent identical build: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return FeatureCache(final)


def _remove_abandoned_builds(root: Path) -> None:
    """Delete staging folders left by killed builds (their process id no longer runs)."""
    for folder in root.glob(".building-*"):
        parts = folder.name.split("-")
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


def _hidden_size(model) -> int:
    return int(model.config.hidden_size)


def _write_cache(model, texts, is_query, layer, dtype, batch_size, show_progress_bar, folder: Path) -> None:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    starts = np.zeros(len(texts), dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    n_batches = (len(texts) + batch_size - 1) // batch_size
    if show_progress_bar is None:
        show_progress_bar = n_batches >= 8
    was_training = model.training
    model.eval()
    device = next(model.backbone.parameters()).device
    written = 0
    try:
        with open(folder / "states.bin", "wb") as handle:
            for begin in tqdm(range(0, len(texts), batch_size), disable=not show_progress_bar, desc="Caching features"):
                index = order[begin : begin + batch_size]
                inputs = model.tokenize([texts[i] for i in index], is_query=is_query).to(device)
                hidden = backbone_states(model.backbone, dict(inputs), layer)
                mask = inputs["attention_mask"].bool()
                for row, (states, row_mask) in zip(index, zip(hidden, mask)):
                    real = states[row_mask].to(dtype).cpu().numpy()
                    handle.write(real.tobytes())
                    starts[row], lengths[row] = written, len(real)
                    written += len(real)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        model.train(was_training)
    hashes = np.stack([np.frombuffer(text_sha1(t), dtype=np.uint8) for t in texts])
    save_file({"starts": starts, "lengths": lengths, "text_sha1": hashes}, str(folder / "index.safetensors"))


# --------------------------------------------------------------------------- using a cache


def is_multi_vector(model) -> bool:
    """True for ColBERT-style models (token embeddings), False for pooled single-vector models."""
    return not hasattr(model, "pool")


def cached_hidden_states(model, hidden: torch.Tensor, mask: torch.Tensor, layer: int | None) -> torch.Tensor:
    """Finish the backbone on cached states: identity for ``last_hidden_state`` caches, else run the
    remaining layers ``layer..L-1`` of ``model.backbone``. `(batch, tokens, hidden_size)` in and out."""
    if layer is None:
        return hidden
    return run_layers(model.backbone, hidden, mask, layer)


@torch.no_grad()
def encode_from_cache(
    model,
    cache: FeatureCache,
    texts: Sequence[str] | None = None,
    batch_size: int = 256,
    truncate_dim: int | None = None,
    show_progress_bar: bool | None = None,
):
    """Encode cached texts with the model's current head (and top layers, for a layer cache) - no backbone pass.

    Args:
        texts: which texts, in which order (default: all cached texts in cache order).

    Returns:
        ``ColBERTModel``: list of `(tokens_i, dim)` float32 CPU tensors; ``DenseEmbeddingModel``: `(n, dim)`.
    """
    rows = list(range(len(cache))) if texts is None else cache.rows_of(texts)
    multi_vector = is_multi_vector(model)
    order = sorted(range(len(rows)), key=lambda i: int(cache.lengths[rows[i]]), reverse=True)
    device = next(model.parameters()).device
    dtype = next(model.projection.parameters()).dtype
    n_batches = (len(rows) + batch_size - 1) // batch_size
    if show_progress_bar is None:
        show_progress_bar = n_batches >= 8
    was_training = model.training
    model.eval()
    results: list = [None] * len(rows)
    try:
        for begin in tqdm(range(0, len(rows), batch_size), disable=not show_progress_bar, desc="Encoding from cache"):
            index = order[begin : begin + batch_size]
            hidden, mask = cache.batch([rows[i] for i in index], dtype=dtype)
            hidden, mask = hidden.to(device), mask.to(device)
            hidden = cached_hidden_states(model, hidden, mask, cache.layer)
            embeddings = model.project(hidden, mask, truncate_dim=truncate_dim)
            for position, i in enumerate(index):
                item = embeddings[position]
                results[i] = (item[mask[position]] if multi_vector else item).float().cpu()
    finally:
        model.train(was_training)
    if multi_vector:
        return results
    return torch.stack(results) if results else torch.empty(0, truncate_dim or model.config.dim)
