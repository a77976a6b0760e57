"""Knowledge-distillation data in PyLate's layout: queries, documents and, per query, candidate ids with teacher
scores, as three JSONL files in one folder::

    queries.jsonl     {"query_id": "q1", "text": "..."}                        (``_id`` is accepted for the id)
    documents.jsonl   {"document_id": "d7", "text": "...", "title": "..."}    (``_id``; or a BEIR corpus.jsonl)
    train.jsonl       {"query_id": "q1", "document_ids": ["d7", "d2", ...], "scores": [12.5, 9.1, ...]}

(``.jsonl.gz`` variants are read too.) Read as training rows, a folder gives the columns the training collator
takes: ``query``, the first candidate as ``positive`` and the others as ``negative_1..n`` (the candidate *slots*;
the KL loss scores each query against all of its candidates and does not need a positive), and ``scores``. Files
this package writes (``training.teacher_scores``) list each query's labelled positive first.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path

from hf_projections.atomic import atomic_write
from hf_projections.checks import is_number
from hf_projections.data.beir_files import BeirFormatError, find_file, iter_jsonl, join_title, require_str

QUERIES_STEM, DOCUMENTS_STEM, SCORES_STEM = "queries", "documents", "train"


def is_distillation_folder(folder: str | os.PathLike) -> bool:
    """True for a folder holding PyLate-layout distillation files (queries, documents or corpus, train)."""
    folder = Path(folder)
    has = lambda stem: any((folder / f"{stem}{suffix}").is_file() for suffix in (".jsonl", ".jsonl.gz"))  # noqa: E731
    return has(QUERIES_STEM) and (has(DOCUMENTS_STEM) or has("corpus")) and has(SCORES_STEM) and _first_row_has_candidates(folder)


def _first_row_has_candidates(folder: Path) -> bool:
    for _, row in iter_jsonl(find_file(folder, SCORES_STEM)):
        return "document_ids" in row
    return False


def _texts(path: Path, id_keys: Sequence[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line, row in iter_jsonl(path):
        where = f"{path}:{line}"
        key = next((k for k in id_keys if k in row), id_keys[0])
        item_id = require_str(row, key, where, allow_int=True)
        if item_id in texts:
            raise BeirFormatError(f"{where}: duplicate id {item_id!r}")
        title = row.get("title")
        texts[item_id] = join_title(title if isinstance(title, str) else None, require_str(row, "text", where))
    return texts


def read_distillation_rows(folder: str | os.PathLike) -> dict[str, list]:
    """The rows of a distillation folder as columns: ``query_id``, ``query``, ``positive_id``, ``positive``,
    ``negative_1..n``, ``negative_ids``, ``scores`` (every row must list the same number of candidates, >= 2).

    Raises ``BeirFormatError`` naming the file and line of a bad row (an unknown id, scores that do not match the
    candidates, ...).
    """
    folder = Path(folder)
    queries = _texts(find_file(folder, QUERIES_STEM), ("query_id", "_id"))
    try:
        documents_path = find_file(folder, DOCUMENTS_STEM)
    except FileNotFoundError:
        documents_path = find_file(folder, "corpus")
    documents = _texts(documents_path, ("document_id", "_id"))
    scores_path = find_file(folder, SCORES_STEM)
    columns: dict[str, list] = {"query_id": [], "query": [], "positive_id": [], "positive": [], "negative_ids": [], "scores": []}
    width = None
    for line, row in iter_jsonl(scores_path):
        where = f"{scores_path}:{line}"
        query_id = require_str(row, "query_id", where, allow_int=True)
        ids, scores = row.get("document_ids"), row.get("scores")
        if not isinstance(ids, list) or len(ids) < 2:
            raise BeirFormatError(f"{where}: 'document_ids' must be a list of at least 2 candidate ids, got {ids!r}")
        if not isinstance(scores, list) or len(scores) != len(ids) or not all(is_number(s) for s in scores):
            raise BeirFormatError(f"{where}: 'scores' must be {len(ids)} numbers, one per candidate, got {scores!r}")
        if width is None:
            width = len(ids)
        elif len(ids) != width:
            raise BeirFormatError(f"{where}: {len(ids)} candidates, but earlier rows have {width} (every row needs the same number)")
        if query_id not in queries:
            raise BeirFormatError(f"{where}: query id {query_id!r} is not in {QUERIES_STEM}.jsonl")
        ids = [str(i) for i in ids]
        unknown = [i for i in ids if i not in documents]
        if unknown:
            raise BeirFormatError(f"{where}: document ids {unknown[:3]} are not in {documents_path.name}")
        columns["query_id"].append(query_id)
        columns["query"].append(queries[query_id])
        columns["positive_id"].append(ids[0])
        columns["positive"].append(documents[ids[0]])
        columns["negative_ids"].append(ids[1:])
        for slot, doc_id in enumerate(ids[1:], start=1):
            columns.setdefault(f"negative_{slot}", []).append(documents[doc_id])
        columns["scores"].append([float(s) for s in scores])
    if width is None:
        raise BeirFormatError(f"{scores_path} holds no rows")
    return columns


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def write_distillation_folder(folder: str | os.PathLike, queries: dict[str, str], documents: dict[str, str],
                              candidates: Sequence[tuple[str, Sequence[str], Sequence[float]]],
                              compress: bool = False) -> Path:
    """Write ``queries``, ``documents`` (``{id: text}``) and ``candidates`` (``(query_id, document_ids, scores)``)
    in the PyLate layout, each file atomically; returns the folder."""
    folder = Path(folder)
    suffix = ".jsonl.gz" if compress else ".jsonl"
    files = {
        QUERIES_STEM: _jsonl({"query_id": q, "text": t} for q, t in queries.items()),
        DOCUMENTS_STEM: _jsonl({"document_id": d, "text": t} for d, t in documents.items()),
        SCORES_STEM: _jsonl({"query_id": q, "document_ids": list(ids), "scores": [float(s) for s in scores]}
                            for q, ids, scores in candidates),
    }
    for stem, payload in files.items():
        data = gzip.compress(payload, mtime=0) if compress else payload
        atomic_write(folder / f"{stem}{suffix}", lambda temp, data=data: Path(temp).write_bytes(data))
    return folder
