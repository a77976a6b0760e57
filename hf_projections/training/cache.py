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

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from hf_projections.checks import positive_int
from hf_projections.modeling.backbone import backbone_layers
from hf_projections.training.backbone_precision import backbone_autocast, resolve_backbone_precision
from hf_projections.training.cache_keys import cache_description, cache_key, text_sha1
from hf_projections.training.feature_cache import STORAGE_DTYPES, FeatureCache, default_cache_dir


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
    layer: int | Sequence[int] | None = None,
    dtype: torch.dtype | str = torch.float16,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
    precision: str = "fp32",
) -> FeatureCache:
    """Return a cache holding ``texts``: an identical one, else one built the same way over more texts
    (:func:`find_covering_cache`), else a new one.

    Args:
        model: ``ColBERTModel`` / ``DenseEmbeddingModel`` (its backbone, tokenizer and length settings are used).
        texts: texts to cache; duplicates are stored once (look rows up with ``FeatureCache.rows_of``).
        is_query: tokenise as queries (query marker, [MASK] augmentation) or as documents.
        cache_dir: root folder (default :func:`default_cache_dir`).
        layer: None caches ``last_hidden_state`` (head mode); ``L - k`` caches the input of the last ``k``
            layers (top-k mode, BERT-like encoders); a sequence of block counts caches those layers side by side,
            `(tokens, len(layer) * hidden_size)` per text (head mode with a layer-mix head).
        dtype: storage dtype, ``float16`` (default, half the disk) or ``float32`` (exact).
        batch_size: backbone batch size (texts are length-sorted into batches).
        precision: the backbone pass's precision, ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 where the device
            runs it natively, see ``training.backbone_precision``); part of the cache key.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    positive_int("batch_size", batch_size)
    dtype_name = _storage_dtype_name(dtype)
    unique = list(dict.fromkeys(texts))
    if not unique:
        raise ValueError("texts is empty: nothing to cache")
    layer = _checked_layer(model, layer)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    device = next(model.backbone.parameters()).device
    precision = resolve_backbone_precision(precision, device)
    description = cache_description(model, unique, is_query, layer, dtype_name, precision)
    key = cache_key(description)
    final = root / key
    if (final / "meta.json").exists():
        return FeatureCache(final)
    covering = find_covering_cache(root, description, unique)
    if covering is not None:
        return covering

    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".building-{key}-{os.getpid()}-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a shared cache should be readable
    try:
        with backbone_autocast(precision, device):
            _write_cache(model, unique, is_query, layer, STORAGE_DTYPES[dtype_name], batch_size, show_progress_bar,
                         staging)
        meta = {
            "key": key,
            "description": description,
            "hidden_size": int(model.config.hidden_size) * (len(layer) if isinstance(layer, tuple) else 1),
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


def _checked_layer(model, layer) -> int | tuple[int, ...] | None:
    """``layer`` as None, an int, or a tuple of ints (several layers), each in ``0..L`` (backbone blocks applied)."""
    if layer is None:
        return None
    depth = len(backbone_layers(model.backbone))
    several = not isinstance(layer, int)
    values = list(layer) if several and isinstance(layer, Sequence) and not isinstance(layer, str) else [layer]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= depth for v in values):
        raise ValueError(f"layer must be an int in 0..{depth} (backbone blocks applied) or a non-empty list of them, "
                         f"got {layer!r}")
    return tuple(values) if several else values[0]


def find_covering_cache(root: Path, description: dict, texts: Sequence[str]) -> FeatureCache | None:
    """A cache under ``root`` made the same way as ``description`` (same backbone weights, tokenizer, settings,
    layer and dtype) that holds every one of ``texts`` among others, or None: a sweep over a sample of a corpus
    reads the states of a cache built for more of it (each text's states do not depend on the other texts).

    For a layer-mix cache, one holding more layers also covers (read through :meth:`FeatureCache.with_layers`): its
    backbone fingerprint is the same when both include the highest layer wanted, which the full key compares. A
    ``last_hidden_state`` request is covered the same way by a layer-mix cache whose highest layer is the last one
    (:meth:`FeatureCache.top_layer_as_last`; equal fingerprints mean exactly that), so a one-layer baseline reads the
    states its layer-mix runs read."""
    wanted_layers = description["layer"] if isinstance(description["layer"], list) else None
    wants_last = description["layer"] == "last"
    ignored = ("texts", "n_texts", "layer")
    same = {k: v for k, v in description.items() if k not in ignored}
    for meta_path in sorted(root.glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            other = meta["description"]
        except (OSError, ValueError, KeyError):
            continue
        if {k: v for k, v in other.items() if k not in ignored} != same:
            continue
        if other.get("layer") == description["layer"]:
            if other["n_texts"] <= len(texts):  # same layers and texts would have been the exact key
                continue
        elif not (isinstance(other.get("layer"), list) and other["n_texts"] >= len(texts)
                  and (wants_last or (wanted_layers and set(wanted_layers) <= set(other["layer"])))):
            continue
        cache = FeatureCache(meta_path.parent)
        try:
            cache.rows_of(texts)
        except KeyError:
            continue
        if other["layer"] == description["layer"]:
            return cache
        return cache.top_layer_as_last() if wants_last else cache.with_layers(wanted_layers)
    return None


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
                hidden = model.hidden_states_at(**inputs, layers=list(layer) if isinstance(layer, tuple) else layer)
                if isinstance(layer, tuple):  # several layers: side by side in each token's row
                    hidden = torch.cat(hidden, dim=-1)
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
