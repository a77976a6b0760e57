"""BEIR data sets in memory: one split of a local folder or of the public Hub copy, checked.

``load_beir(name)`` looks in ``$HF_PROJECTIONS_DATA/<name>/`` and otherwise loads ``BeIR/<name>`` and
``BeIR/<name>-qrels`` from the Hugging Face Hub through ``datasets`` (imported only then).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from hf_projections.data.beir_files import (
    DATA_ENV_VAR,
    BeirFormatError,
    data_roots,
    find_file,
    join_title,
    read_corpus,
    read_qrels,
    read_queries,
    resolve_data_dir,
)

logger = logging.getLogger(__name__)

# BEIR scores these sets with ignore_identical_ids=True: the query text itself is also a corpus document.
IGNORE_IDENTICAL_IDS = frozenset({"arguana", "quora"})


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
    corpus = read_corpus(find_file(folder, "corpus"))
    all_queries = read_queries(find_file(folder, "queries"))
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
    import datasets

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
