"""Reading BEIR-format files: where data sets live, and the corpus / queries / qrels readers.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (header ``query-id	corpus-id	score``); ``.jsonl.gz`` variants are accepted. Data sets are
addressed by name and found under ``$HF_PROJECTIONS_DATA`` (``os.pathsep``-separated folders). Every bad row raises
a :class:`BeirFormatError` naming the file and the line.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

DATA_ENV_VAR = "HF_PROJECTIONS_DATA"


class BeirFormatError(ValueError):
    """A BEIR file has a bad row; the message names the file and the line."""


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


def find_file(folder: Path, stem: str, suffixes=(".jsonl", ".jsonl.gz")) -> Path:
    looked = [folder / f"{stem}{suffix}" for suffix in suffixes]
    for path in looked:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no {stem} file in {folder}: looked for {', '.join(str(p) for p in looked)}. "
        f"{DATA_ENV_VAR} should point to a folder of BEIR sets (each with corpus.jsonl, queries.jsonl, "
        f"qrels/<split>.tsv)."
    )


def open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, decoded_line)`` for non-blank lines; bad UTF-8 raises naming file and line."""
    with open_binary(path) as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BeirFormatError(f"{path}:{line_number}: not valid UTF-8 ({error})") from None
            if line.strip():
                yield line_number, line


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for line_number, line in iter_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BeirFormatError(f"{path}:{line_number}: malformed JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise BeirFormatError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
        yield line_number, row


def require_str(row: dict, key: str, where: str, allow_int: bool = False) -> str:
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


def read_corpus(path: str | Path) -> dict[str, str]:
    """Read ``corpus.jsonl(.gz)`` into ``{doc_id: title + " " + text}``; bad rows raise naming file and line."""
    path = Path(path)
    corpus: dict[str, str] = {}
    for line_number, row in iter_jsonl(path):
        where = f"{path}:{line_number}"
        doc_id = require_str(row, "_id", where, allow_int=True)
        text = require_str(row, "text", where)
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
    for line_number, row in iter_jsonl(path):
        where = f"{path}:{line_number}"
        query_id = require_str(row, "_id", where, allow_int=True)
        text = require_str(row, "text", where)
        if query_id in queries:
            raise BeirFormatError(f"{where}: duplicate query id {query_id!r}")
        queries[query_id] = text
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id	corpus-id	score``, header optional) into ``{qid: {doc_id: rel}}``."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line_number, line in iter_lines(path):
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
