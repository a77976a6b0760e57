"""``FeatureCache``: read-only view of a built cache of backbone states (see ``training.cache`` for the layout).

Each text's hidden states are one contiguous slice of a memory-mapped fp16 (or float32) file; a damaged cache is
named and never memory-mapped.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from hf_projections.training.cache_keys import text_sha1

CACHE_ENV_VAR = "HF_PROJECTIONS_CACHE"
STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def default_cache_dir() -> Path:
    """``$HF_PROJECTIONS_CACHE`` or ``~/.cache/hf_projections/features``."""
    value = os.environ.get(CACHE_ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "hf_projections" / "features"


class FeatureCache:
    """Read-only view of a built cache: per-text hidden states `(tokens_i, hidden_size)` from a memory map.

    Attributes:
        path, key, meta: the folder, its key and its meta.json.
        layer: None (``last_hidden_state``), the number of backbone layers applied, or a tuple of them (a layer-mix
            cache: each token's row holds those layers' states side by side, in that order).
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
        layer = description["layer"]
        self.layer = None if layer == "last" else (tuple(map(int, layer)) if isinstance(layer, list) else int(layer))
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
        self._layer_positions: list[int] | None = None  # a layer view's stored layers, see with_layers

    def with_layers(self, layers: Sequence[int]) -> FeatureCache:
        """A view of this layer-mix cache that reads only ``layers`` (block counts it holds, in the order given):
        `(tokens, len(layers) * hidden)` per text, columns picked as rows are read (nothing is copied up front).
        A cache of the last 3 layers thus serves a head that mixes the last 2."""
        if not isinstance(self.layer, tuple):
            raise ValueError(f"with_layers needs a layer-mix cache (several layers side by side); this one holds {self.layer}")
        stored = list(self.layer)
        missing = [layer for layer in layers if layer not in stored]
        if not layers or missing:
            raise ValueError(f"with_layers: layers {list(missing or layers)} are not in this cache, which holds {stored}")
        per_layer = self.hidden_size // len(stored)
        view = copy.copy(self)
        view.layer = tuple(int(layer) for layer in layers)
        view.hidden_size = per_layer * len(view.layer)
        view._layer_positions = [stored.index(layer) for layer in view.layer]
        return view

    def top_layer_as_last(self) -> FeatureCache:
        """A view of this layer-mix cache that reads only its highest layer as a ``last_hidden_state`` cache (layer
        None), for a one-layer head. Only valid when that layer is the backbone's last, which
        :func:`~hf_projections.training.cache.find_covering_cache` checks through the backbone fingerprint."""
        view = self.with_layers([max(self.layer)] if isinstance(self.layer, tuple) else [])
        view.layer = None
        return view

    def _read(self, start: int, length: int) -> torch.Tensor:
        """Stored rows ``start:start+length`` `(length, hidden_size)` in the storage dtype, a layer view's columns only."""
        block = self._states[start : start + length]
        if self._layer_positions is None:
            return block
        return block.view(length, -1, self.hidden_size // len(self._layer_positions))[:, self._layer_positions].reshape(length, -1)

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
            f"hidden_size={self.hidden_size}, layer={self.meta['description']['layer']}, is_query={self.is_query}"
            + (f", reading layers {list(self.layer)}" if self._layer_positions is not None else "") + ")"
        )

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
        return self._read(int(self.starts[row]), int(self.lengths[row])).float()

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
            hidden[position, :length] = self._read(start, length)
        return hidden, mask

    def packed(self, rows: Sequence[int] | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """States of several texts one after another, no padding: `(sum of their lengths, hidden_size)` in ``dtype``
        (split it with ``self.lengths[rows]``). For token-wise work (a head, a layer mix) this skips the padded
        batch's allocation and the padding's share of the work."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        lengths = self.lengths[rows]
        packed = torch.empty(int(lengths.sum()), self.hidden_size, dtype=dtype)
        offset = 0
        for start, length in zip(self.starts[rows].tolist(), lengths.tolist()):
            packed[offset : offset + length] = self._read(start, length)
            offset += length
        return packed
