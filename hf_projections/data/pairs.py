"""Training pairs: (query, positive) rows from a ``train.jsonl(.gz)`` file or from a BEIR split's judgments, a
held-out split by query for choices, and pairs turned back into a BEIR set to score."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hf_projections.checks import positive_int
from hf_projections.data.beir import BeirDataset, load_beir
from hf_projections.data.beir_files import DATA_ENV_VAR, find_file, iter_jsonl, join_title, require_str, resolve_data_dir
from hf_projections.data.distillation import is_distillation_folder, read_distillation_rows

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

TRAIN_PAIR_FILES = ("train.jsonl", "train.jsonl.gz")
PAIR_COLUMNS = ("query_id", "query", "positive_id", "positive")
SOURCE_COLUMN = "source"  # which training set a mixed row came from


def _pairs_from_qrels(dataset: BeirDataset) -> dict[str, list]:
    columns: dict[str, list] = {key: [] for key in PAIR_COLUMNS}
    skipped = 0
    for query_id, judged in dataset.qrels.items():
        for doc_id, score in judged.items():
            if score <= 0:
                continue
            if doc_id not in dataset.corpus:
                skipped += 1
                continue
            columns["query_id"].append(query_id)
            columns["query"].append(dataset.queries[query_id])
            columns["positive_id"].append(doc_id)
            columns["positive"].append(dataset.corpus[doc_id])
    if skipped:
        logger.warning("%s:%s: skipped %d judged pairs whose doc is not in the corpus", dataset.name, dataset.split, skipped)
    return columns


def _pairs_from_file(path: Path) -> dict[str, list]:
    """Rows with ``query`` and ``text`` (+ ``title``, ``_id``/``positive_id``, ``query_id``) -> pair columns.

    Rows without a query id share an id when their query text is identical (``genq-<sha1 prefix>``), so a
    held-out split by query never puts the same query text on both sides.
    """
    columns: dict[str, list] = {key: [] for key in PAIR_COLUMNS}
    for line_number, row in iter_jsonl(path):
        where = f"{path}:{line_number}"
        query = require_str(row, "query", where)
        text = require_str(row, "text", where)
        title = row.get("title")
        doc_key = "_id" if "_id" in row else "positive_id"
        doc_id = require_str(row, doc_key, where, allow_int=True) if doc_key in row else f"line-{line_number}"
        if "query_id" in row:
            query_id = require_str(row, "query_id", where, allow_int=True)
        else:
            query_id = "genq-" + hashlib.sha1(query.encode("utf-8")).hexdigest()[:16]
        columns["query_id"].append(query_id)
        columns["query"].append(query)
        columns["positive_id"].append(doc_id)
        columns["positive"].append(join_title(title if isinstance(title, str) else None, text))
    return columns


def read_training_pairs(spec: str, max_pairs: int | None = None, seed: int = 0) -> dict[str, list]:
    """The rows :func:`load_training_pairs` gives, as plain columns ``{name: [values]}`` (no ``datasets`` needed)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be '<name>:<split>' or '<name>', got {spec!r}")
    if max_pairs is not None:
        positive_int("max_pairs", max_pairs)
    name, _, split = spec.partition(":")
    if split:
        columns = _pairs_from_qrels(load_beir(name, split))
    else:
        folder = resolve_data_dir(name)
        if folder is None:
            raise FileNotFoundError(
                f"no local folder for training set {name!r} ({DATA_ENV_VAR}={os.environ.get(DATA_ENV_VAR)!r}); "
                f"use '<name>:<split>' for judged pairs of a BEIR set, or put {name}/train.jsonl(.gz) under "
                f"{DATA_ENV_VAR}"
            )
        if is_distillation_folder(folder):  # candidates with teacher scores (PyLate's layout)
            columns = read_distillation_rows(folder)
        else:
            columns = _pairs_from_file(find_file(folder, "train"))
    total = len(columns["query"])
    if total == 0:
        raise ValueError(f"training spec {spec!r} gave no pairs")
    if max_pairs is not None and max_pairs < total:
        columns = _select(columns, sorted(random.Random(seed).sample(range(total), max_pairs)))
    return columns


def _select(columns: dict[str, list], rows: Sequence[int]) -> dict[str, list]:
    return {key: [values[i] for i in rows] for key, values in columns.items()}


def load_training_pairs(spec: str, max_pairs: int | None = None, seed: int = 0) -> datasets.Dataset:
    """Load (query, positive) training pairs as a ``datasets.Dataset``.

    Columns: ``query_id``, ``query``, ``positive_id``, ``positive`` (title + " " + text), one row per pair.

    Args:
        spec: ``"<name>:<split>"`` uses the judged pairs (score > 0) of that qrels split, e.g.
            ``"scifact:train"``; ``"<name>"`` (or a folder path) uses ``<folder>/train.jsonl(.gz)`` rows with
            ``query`` and ``text`` columns, e.g. ``"arguana-genq"``, or a distillation folder (queries, documents,
            candidate ids with teacher scores: ``data.distillation``), whose rows carry ``negative_i`` and ``scores``.
        max_pairs: keep a seeded random sample of at most this many pairs (file order is kept).
        seed: seed of that sample.
    """
    import datasets

    return datasets.Dataset.from_dict(read_training_pairs(spec, max_pairs, seed))


def read_training_mix(specs: str | Sequence[str], max_pairs: int | None = None, seed: int = 0) -> dict[str, list]:
    """The rows :func:`load_training_mix` gives, as plain columns ``{name: [values]}`` (no ``datasets`` needed)."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise ValueError("no training set given: name at least one, e.g. 'arguana-genq' or 'scifact:train'")
    if len(set(specs)) != len(specs):
        raise ValueError(f"a training set is named twice: {specs}")
    if max_pairs is not None:
        positive_int("max_pairs", max_pairs)
    parts = [read_training_pairs(spec) for spec in specs]
    sizes = [len(part["query"]) for part in parts]
    total = sum(sizes)
    if max_pairs is not None and max_pairs < total:
        exact = [max_pairs * size / total for size in sizes]
        quotas = [int(share) for share in exact]
        for index in sorted(range(len(parts)), key=lambda i: exact[i] - quotas[i], reverse=True)[: max_pairs - sum(quotas)]:
            quotas[index] += 1
        parts = [_select(part, sorted(random.Random(seed).sample(range(size), quota))) if quota < size else part
                 for part, size, quota in zip(parts, sizes, quotas)]
    mixed: dict[str, list] = {}
    for spec, part in zip(specs, parts):
        if mixed and set(part) != set(mixed) - {SOURCE_COLUMN}:
            raise ValueError(f"training sets {specs} have different columns and cannot be mixed")
        for key, values in part.items():
            mixed.setdefault(key, []).extend(values)
        mixed.setdefault(SOURCE_COLUMN, []).extend([spec] * len(part["query"]))
    return mixed


def load_training_mix(specs: str | Sequence[str], max_pairs: int | None = None, seed: int = 0) -> datasets.Dataset:
    """The pairs of one or more training sets (see :func:`load_training_pairs`), with a ``source`` column naming each
    row's set.

    ``max_pairs`` caps the total: each set gives its share in proportion to its size (largest remainders), a seeded
    sample of its rows in file order, so one set gives exactly ``load_training_pairs(spec, max_pairs, seed)``.
    """
    import datasets

    return datasets.Dataset.from_dict(read_training_mix(specs, max_pairs, seed))


def holdout_split(
    pairs: datasets.Dataset, fraction: float = 0.1, seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split training pairs by query into ``(train, held_out)``; no query id lands on both sides.

    ``held_out`` holds about ``fraction`` of the distinct query ids (at least one), for model choices that
    must not touch test queries.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if "query_id" not in pairs.column_names:
        raise ValueError(f"pairs need a 'query_id' column, got columns {pairs.column_names}")
    query_ids = list(dict.fromkeys(pairs["query_id"]))
    if len(query_ids) < 2:
        raise ValueError(f"need at least 2 distinct queries to hold some out, got {len(query_ids)}")
    n_held = min(len(query_ids) - 1, max(1, round(fraction * len(query_ids))))
    held = set(random.Random(seed).sample(query_ids, n_held))
    is_held = [qid in held for qid in pairs["query_id"]]
    train_idx = [i for i, flag in enumerate(is_held) if not flag]
    held_idx = [i for i, flag in enumerate(is_held) if flag]
    return pairs.select(train_idx), pairs.select(held_idx)


def pairs_to_beir(
    pairs: datasets.Dataset, corpus: dict[str, str] | None = None, name: str = "heldout", split: str = "heldout"
) -> BeirDataset:
    """Turn (held-out) training pairs into a ``BeirDataset`` to score with ``evaluate_model``.

    ``corpus`` defaults to the distinct positives of ``pairs`` themselves; pass the full corpus (e.g.
    ``load_beir("scifact").corpus``) for a harder, realistic search.
    """
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    own_corpus: dict[str, str] = {}
    for row in pairs:
        queries.setdefault(row["query_id"], row["query"])
        qrels.setdefault(row["query_id"], {})[row["positive_id"]] = 1
        own_corpus.setdefault(row["positive_id"], row["positive"])
    return BeirDataset(name, split, corpus if corpus is not None else own_corpus, queries, qrels, False, "pairs")
