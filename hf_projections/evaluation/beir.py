"""Load BEIR-format retrieval data sets and training pairs.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``)
and ``qrels/<split>.tsv`` (header ``query-id	corpus-id	score``); ``.jsonl.gz`` variants are accepted.
Data sets are addressed by name: the loader looks in ``$HF_PROJECTIONS_DATA/<name>/`` and otherwise loads
the public copy from the Hugging Face Hub (``BeIR/<name>`` and ``BeIR/<name>-qrels``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "HF_PROJECTIONS_DATA"
# BEIR scores these sets with ignore_identical_ids=True: the query text itself is also a corpus document.
IGNORE_IDENTICAL_IDS = frozenset({"arguana", "quora"})
TRAIN_PAIR_FILES = ("train.jsonl", "train.jsonl.gz")
PAIR_COLUMNS = ("query_id", "query", "positive_id", "positive")


class BeirFormatError(ValueError):
    """A BEIR file has a bad row; the message names the file and the line."""


@dataclass
class BeirDataset:
    """One split of a BEIR data set, in memory.

    Attributes:
        name: data set name (e.g. ``"scifact"``).
        split: qrels split (e.g. ``"test"``).
        corpus: ``{doc_id: text}``, text is ``title + " " + text`` when the title is non-empty.
        queries: ``{query_id: text}``, only the queries that have judgments in this split.
        qrels: ``{query_id: {doc_id: relevance}}``; may point at doc ids missing from the corpus (kept, as
            in the official release, so scores stay comparable with published numbers).
        ignore_identical_ids: when True a query's own id is never counted among its results.
    """

    name: str
    split: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    ignore_identical_ids: bool = False
    source: str = field(default="", compare=False)

    def __repr__(self) -> str:
        judgments = sum(len(docs) for docs in self.qrels.values())
        return (
            f"BeirDataset(name={self.name!r}, split={self.split!r}, docs={len(self.corpus)}, "
            f"queries={len(self.queries)}, judgments={judgments}, "
            f"ignore_identical_ids={self.ignore_identical_ids}, source={self.source!r})"
        )


# --------------------------------------------------------------------------- locating files


def data_roots() -> list[Path]:
    """Folders named by ``$HF_PROJECTIONS_DATA`` (``os.pathsep``-separated), in order."""
    value = os.environ.get(DATA_ENV_VAR, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def resolve_data_dir(name: str) -> Path | None:
    """Return the local folder of data set ``name``, or None when there is none.

    ``name`` may itself be a path to a folder; otherwise ``$HF_PROJECTIONS_DATA/<name>/`` is used.
    """
    as_path = Path(name).expanduser()
    if (os.sep in name or name.startswith(".")) and as_path.is_dir():
        return as_path
    for root in data_roots():
        candidate = root / name
        if candidate.is_dir():
            return candidate
    return None


def _find_file(folder: Path, stem: str, suffixes=(".jsonl", ".jsonl.gz")) -> Path:
    looked = [folder / f"{stem}{suffix}" for suffix in suffixes]
    for path in looked:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no {stem} file in {folder}: looked for {', '.join(str(p) for p in looked)}. "
        f"{DATA_ENV_VAR} should point to a folder of BEIR sets (each with corpus.jsonl, queries.jsonl, "
        f"qrels/<split>.tsv)."
    )


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, decoded_line)`` for non-blank lines; bad UTF-8 raises naming file and line."""
    with _open_binary(path) as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BeirFormatError(f"{path}:{line_number}: not valid UTF-8 ({error})") from None
            if line.strip():
                yield line_number, line


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for line_number, line in _iter_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BeirFormatError(f"{path}:{line_number}: malformed JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise BeirFormatError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
        yield line_number, row


def _require_str(row: dict, key: str, where: str, allow_int: bool = False) -> str:
    if key not in row or row[key] is None:
        raise BeirFormatError(f"{where}: missing field {key!r} (fields present: {sorted(row)})")
    value = row[key]
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise BeirFormatError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def join_title(title: str | None, text: str) -> str:
    """BEIR / sentence-transformers document text: ``title + " " + text`` when the title is non-empty."""
    title = (title or "").strip()
    return f"{title} {text}" if title else text


# --------------------------------------------------------------------------- readers


def read_corpus(path: str | Path) -> dict[str, str]:
    """Read ``corpus.jsonl(.gz)`` into ``{doc_id: title + " " + text}``; bad rows raise naming file and line."""
    path = Path(path)
    corpus: dict[str, str] = {}
    for line_number, row in _iter_jsonl(path):
        where = f"{path}:{line_number}"
        doc_id = _require_str(row, "_id", where, allow_int=True)
        text = _require_str(row, "text", where)
        title = row.get("title")
        if title is not None and not isinstance(title, str):
            raise BeirFormatError(f"{where}: field 'title' must be a string, got {type(title).__name__}")
        if doc_id in corpus:
            raise BeirFormatError(f"{where}: duplicate document id {doc_id!r}")
        corpus[doc_id] = join_title(title, text)
    return corpus


def read_queries(path: str | Path) -> dict[str, str]:
    """Read ``queries.jsonl(.gz)`` into ``{query_id: text}``; bad rows raise naming file and line."""
    path = Path(path)
    queries: dict[str, str] = {}
    for line_number, row in _iter_jsonl(path):
        where = f"{path}:{line_number}"
        query_id = _require_str(row, "_id", where, allow_int=True)
        text = _require_str(row, "text", where)
        if query_id in queries:
            raise BeirFormatError(f"{where}: duplicate query id {query_id!r}")
        queries[query_id] = text
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id	corpus-id	score``, header optional) into ``{qid: {doc_id: rel}}``."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line_number, line in _iter_lines(path):
        fields = line.rstrip("\r\n").split("\t")
        if line_number == 1 and fields[:2] == ["query-id", "corpus-id"]:
            continue  # header
        where = f"{path}:{line_number}"
        if len(fields) != 3:
            raise BeirFormatError(
                f"{where}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}"
            )
        query_id, doc_id, score_text = (value.strip() for value in fields)
        if not query_id or not doc_id:
            raise BeirFormatError(f"{where}: empty query-id or corpus-id")
        try:
            score = int(score_text)
        except ValueError:
            raise BeirFormatError(f"{where}: score must be an integer, got {score_text!r}") from None
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != score:
            raise BeirFormatError(
                f"{where}: pair ({query_id!r}, {doc_id!r}) judged twice with different scores "
                f"({judged[doc_id]} and {score})"
            )
        judged[doc_id] = score
    return qrels


def _check_qrels(
    qrels: dict[str, dict[str, int]], queries: dict[str, str], corpus: dict[str, str], source: str
) -> None:
    """Unknown query ids are an error; unknown doc ids only warn (the official ArguAna has 5, kept)."""
    unknown_queries = [qid for qid in qrels if qid not in queries]
    if unknown_queries:
        raise BeirFormatError(
            f"{source}: {len(unknown_queries)} qrels rows name query ids missing from the queries file, "
            f"e.g. {unknown_queries[:5]}"
        )
    unknown_docs = sorted({doc for judged in qrels.values() for doc in judged if doc not in corpus})
    if unknown_docs:
        warnings.warn(
            f"{source}: {len(unknown_docs)} judged doc ids are not in the corpus (kept, those judgments can "
            f"never be retrieved), e.g. {unknown_docs[:3]}",
            stacklevel=3,
        )


def _assemble(name, split, corpus, all_queries, qrels, source, ignore_identical_ids) -> BeirDataset:
    _check_qrels(qrels, all_queries, corpus, source)
    queries = {qid: all_queries[qid] for qid in qrels}
    if ignore_identical_ids is None:
        ignore_identical_ids = name.lower() in IGNORE_IDENTICAL_IDS
    return BeirDataset(name, split, corpus, queries, qrels, bool(ignore_identical_ids), source)


def load_beir_folder(
    folder: str | Path, split: str = "test", name: str | None = None, ignore_identical_ids: bool | None = None
) -> BeirDataset:
    """Load one split of a BEIR-format folder. ``ignore_identical_ids=None`` picks it by data set name."""
    folder = Path(folder)
    name = name or folder.name
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise FileNotFoundError(
            f"no qrels for split {split!r}: looked for {qrels_path}; splits available in {folder}: "
            f"{available or 'none'}"
        )
    corpus = read_corpus(_find_file(folder, "corpus"))
    all_queries = read_queries(_find_file(folder, "queries"))
    qrels = read_qrels(qrels_path)
    return _assemble(name, split, corpus, all_queries, qrels, str(qrels_path), ignore_identical_ids)


# --------------------------------------------------------------------------- Hub


def _column_str(row: dict, key: str, source: str, index: int) -> str:
    value = row.get(key)
    if value is None:
        raise BeirFormatError(f"{source} row {index}: missing field {key!r} (fields present: {sorted(row)})")
    return str(value)


def load_beir_hub(name: str, split: str = "test", ignore_identical_ids: bool | None = None) -> BeirDataset:
    """Load the public BEIR copy from the Hub: ``BeIR/<name>`` (configs corpus, queries) + ``BeIR/<name>-qrels``."""
    repo, qrels_repo = f"BeIR/{name}", f"BeIR/{name}-qrels"
    corpus_rows = datasets.load_dataset(repo, "corpus", split="corpus")
    query_rows = datasets.load_dataset(repo, "queries", split="queries")
    qrels_rows = datasets.load_dataset(qrels_repo, split=split)

    corpus: dict[str, str] = {}
    for index, row in enumerate(corpus_rows):
        doc_id = _column_str(row, "_id", f"{repo} corpus", index)
        if doc_id in corpus:
            raise BeirFormatError(f"{repo} corpus row {index}: duplicate document id {doc_id!r}")
        corpus[doc_id] = join_title(row.get("title"), _column_str(row, "text", f"{repo} corpus", index))
    all_queries: dict[str, str] = {}
    for index, row in enumerate(query_rows):
        query_id = _column_str(row, "_id", f"{repo} queries", index)
        if query_id in all_queries:
            raise BeirFormatError(f"{repo} queries row {index}: duplicate query id {query_id!r}")
        all_queries[query_id] = _column_str(row, "text", f"{repo} queries", index)
    qrels: dict[str, dict[str, int]] = {}
    for index, row in enumerate(qrels_rows):
        where = f"{qrels_repo} {split} row {index}"
        query_id = _column_str(row, "query-id", where, index)
        doc_id = _column_str(row, "corpus-id", where, index)
        qrels.setdefault(query_id, {})[doc_id] = int(_column_str(row, "score", where, index))
    return _assemble(name, split, corpus, all_queries, qrels, f"hub:{qrels_repo}/{split}", ignore_identical_ids)


# --------------------------------------------------------------------------- public entry point


def load_beir(
    name: str, split: str = "test", source: str = "auto", ignore_identical_ids: bool | None = None
) -> BeirDataset:
    """Load split ``split`` of BEIR data set ``name``.

    Args:
        name: data set name (``"scifact"``, ``"arguana"``, ...) or a path to a BEIR-format folder.
        split: qrels split (``"test"``, ``"train"``, ``"dev"``).
        source: ``"auto"`` (local folder if any, else the Hub), ``"local"`` or ``"hub"``.
        ignore_identical_ids: drop hits whose doc id equals the query id; None = True for arguana/quora.
    """
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"source must be one of 'auto', 'local', 'hub', got {source!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty data set name or folder path, got {name!r}")
    if source != "hub":
        folder = resolve_data_dir(name)
        if folder is not None:
            return load_beir_folder(folder, split, name=Path(name).name, ignore_identical_ids=ignore_identical_ids)
        looked = [str(root / name) for root in data_roots()]
        hint = (
            f"looked in {looked}" if looked else f"{DATA_ENV_VAR} is not set"
        ) + f"; {DATA_ENV_VAR} should point to a folder of BEIR sets (e.g. <folder>/{name}/corpus.jsonl)"
        if source == "local":
            raise FileNotFoundError(f"no local folder for data set {name!r}: {hint}")
        logger.info("no local folder for %r (%s); loading BeIR/%s from the Hub", name, hint, name)
    else:
        hint = "local folders not searched (source='hub')"
    try:
        return load_beir_hub(name, split, ignore_identical_ids=ignore_identical_ids)
    except BeirFormatError:
        raise
    except Exception as error:  # network, missing repo or split: say where we looked
        raise FileNotFoundError(
            f"could not load data set {name!r} split {split!r}: {hint}; and the Hub copy "
            f"(BeIR/{name}, BeIR/{name}-qrels) failed: {type(error).__name__}: {error}"
        ) from error


# --------------------------------------------------------------------------- training pairs


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
    for line_number, row in _iter_jsonl(path):
        where = f"{path}:{line_number}"
        query = _require_str(row, "query", where)
        text = _require_str(row, "text", where)
        title = row.get("title")
        doc_key = "_id" if "_id" in row else "positive_id"
        doc_id = _require_str(row, doc_key, where, allow_int=True) if doc_key in row else f"line-{line_number}"
        if "query_id" in row:
            query_id = _require_str(row, "query_id", where, allow_int=True)
        else:
            query_id = "genq-" + hashlib.sha1(query.encode("utf-8")).hexdigest()[:16]
        columns["query_id"].append(query_id)
        columns["query"].append(query)
        columns["positive_id"].append(doc_id)
        columns["positive"].append(join_title(title if isinstance(title, str) else None, text))
    return columns


def load_training_pairs(spec: str, max_pairs: int | None = None, seed: int = 0) -> datasets.Dataset:
    """Load (query, positive) training pairs as a ``datasets.Dataset``.

    Columns: ``query_id``, ``query``, ``positive_id``, ``positive`` (title + " " + text), one row per pair.

    Args:
        spec: ``"<name>:<split>"`` uses the judged pairs (score > 0) of that qrels split, e.g.
            ``"scifact:train"``; ``"<name>"`` uses ``<folder>/train.jsonl(.gz)`` rows with ``query`` and
            ``text`` columns, e.g. ``"arguana-genq"``.
        max_pairs: keep a seeded random sample of at most this many pairs (file order is kept).
        seed: seed of that sample.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be '<name>:<split>' or '<name>', got {spec!r}")
    if max_pairs is not None and (not isinstance(max_pairs, int) or max_pairs < 1):
        raise ValueError(f"max_pairs must be a positive int or None, got {max_pairs!r}")
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
        path = _find_file(folder, "train")
        columns = _pairs_from_file(path)
    total = len(columns["query"])
    if total == 0:
        raise ValueError(f"training spec {spec!r} gave no pairs")
    if max_pairs is not None and max_pairs < total:
        keep = sorted(random.Random(seed).sample(range(total), max_pairs))
        columns = {key: [values[i] for i in keep] for key, values in columns.items()}
    return datasets.Dataset.from_dict(columns)


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
