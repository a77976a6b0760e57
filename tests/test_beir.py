"""BEIR loading: local folders, every bad-row error, the Hub path (monkeypatched) and training pairs."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import datasets
import pytest

from hf_projections.data import beir_files as beir
from hf_projections.data import (
    BeirFormatError,
    holdout_split,
    load_beir,
    load_training_pairs,
    pairs_to_beir,
    resolve_data_dir,
)

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "cats purr"},
    {"_id": "d2", "title": "", "text": "dogs bark"},
    {"_id": "q1", "title": "Self", "text": "the query itself"},
    {"_id": 7, "text": "integer id, no title"},
]
QUERIES = [
    {"_id": "q1", "text": "what do cats do"},
    {"_id": "q2", "text": "what do dogs do"},
    {"_id": "q3", "text": "a query without test judgments"},
]
TEST_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\t7\t0\n"


def _write_jsonl(path: Path, rows, gz: bool = False) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if gz:
        path = path.with_suffix(".jsonl.gz")
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_beir(root: Path, name: str = "toy", corpus=CORPUS, queries=QUERIES, qrels=TEST_QRELS, gz=False) -> Path:
    folder = root / name
    (folder / "qrels").mkdir(parents=True)
    _write_jsonl(folder / "corpus.jsonl", corpus, gz=gz)
    _write_jsonl(folder / "queries.jsonl", queries)
    (folder / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td2\t1\nq3\td1\t1\n", encoding="utf-8")
    return folder


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(beir.DATA_ENV_VAR, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("gz", [False, True])
def test_load_local_folder(data_root, gz):
    write_beir(data_root, gz=gz)
    data = load_beir("toy")
    assert data.corpus == {"d1": "Cats cats purr", "d2": "dogs bark", "q1": "Self the query itself", "7": "integer id, no title"}
    assert data.queries == {"q1": "what do cats do", "q2": "what do dogs do"}  # q3 has no test judgments
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "7": 0}}
    assert data.ignore_identical_ids is False and data.split == "test" and data.name == "toy"
    assert resolve_data_dir("toy") == data_root / "toy"
    assert resolve_data_dir("absent") is None


def test_train_split_and_folder_path(data_root):
    folder = write_beir(data_root)
    data = load_beir(str(folder), split="train")
    assert data.queries == {"q3": "a query without test judgments"} and data.name == "toy"


def test_arguana_ignores_identical_ids(data_root):
    write_beir(data_root, name="arguana")
    assert load_beir("arguana").ignore_identical_ids is True
    assert load_beir("arguana", ignore_identical_ids=False).ignore_identical_ids is False


def _corrupt(data_root, file: str, content: bytes) -> Path:
    folder = write_beir(data_root)
    path = folder / file
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("corpus.jsonl", b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', "corpus.jsonl:2: malformed JSON"),
        ("corpus.jsonl", b'{"_id": "d1", "text": "ok"}\n\n{"text": "no id"}\n', "corpus.jsonl:3: missing field '_id'"),
        ("corpus.jsonl", b'{"_id": "d1", "title": "t"}\n', "corpus.jsonl:1: missing field 'text'"),
        ("corpus.jsonl", b'{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', "corpus.jsonl:2: duplicate document id 'd1'"),
        ("corpus.jsonl", b'{"_id": "d1", "text": 5}\n', "corpus.jsonl:1: field 'text' must be a string"),
        ("corpus.jsonl", b'["not", "an", "object"]\n', "corpus.jsonl:1: expected a JSON object"),
        ("corpus.jsonl", b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n', "corpus.jsonl:2: not valid UTF-8"),
        ("queries.jsonl", b'{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', "queries.jsonl:2: duplicate query id 'q1'"),
        ("qrels/test.tsv", b"query-id\tcorpus-id\tscore\nq1\td1\n", "test.tsv:2: expected 3 tab-separated fields"),
        ("qrels/test.tsv", b"q1\td1\thigh\n", "test.tsv:1: score must be an integer"),
        ("qrels/test.tsv", b"q1\td1\t1\nq1\td1\t2\n", "test.tsv:2: pair ('q1', 'd1') judged twice"),
    ],
)
def test_bad_rows_name_file_and_line(data_root, file, content, message):
    _corrupt(data_root, file, content)
    with pytest.raises(BeirFormatError) as info:
        load_beir("toy")
    assert message in str(info.value)
    assert str(data_root) in str(info.value)  # the full path, not just the base name


def test_qrels_with_unknown_query_id_is_an_error(data_root):
    write_beir(data_root, qrels="q1\td1\t1\nq9\td1\t1\n")
    with pytest.raises(BeirFormatError, match=r"test.tsv.*query ids missing.*q9"):
        load_beir("toy")


def test_qrels_with_unknown_doc_id_warns_and_keeps_it(data_root):
    write_beir(data_root, qrels="q1\td1\t1\nq2\tmissing-doc\t1\n")
    with pytest.warns(UserWarning, match="missing-doc"):
        data = load_beir("toy")
    assert data.qrels["q2"] == {"missing-doc": 1} and "q2" in data.queries


def test_missing_files_and_folders(data_root, monkeypatch):
    folder = write_beir(data_root)
    with pytest.raises(FileNotFoundError, match=r"split 'dev'.*splits available.*\['test', 'train'\]"):
        load_beir("toy", split="dev")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"queries\.jsonl.*queries\.jsonl\.gz.*HF_PROJECTIONS_DATA"):
        load_beir("toy")
    with pytest.raises(FileNotFoundError, match=r"no local folder.*nowhere.*HF_PROJECTIONS_DATA should point"):
        load_beir("nowhere", source="local")
    monkeypatch.delenv(beir.DATA_ENV_VAR)
    with pytest.raises(FileNotFoundError, match="HF_PROJECTIONS_DATA is not set"):
        load_beir("nowhere", source="local")
    with pytest.raises(ValueError, match="source must be one of"):
        load_beir("toy", source="web")


def _fake_hub(monkeypatch, calls: list):
    tables = {
        ("BeIR/toyhub", "corpus", "corpus"): {"_id": ["d1", "d2"], "title": ["T", ""], "text": ["one", "two"]},
        ("BeIR/toyhub", "queries", "queries"): {"_id": ["1", "2", "3"], "text": ["q one", "q two", "q three"]},
        # the real BeIR qrels store integer ids for some sets (e.g. scifact): they must come back as strings
        ("BeIR/toyhub-qrels", None, "test"): {"query-id": [1, 2], "corpus-id": ["d1", "d2"], "score": [1, 1]},
    }

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        key = (path, name, split)
        if key not in tables:
            raise ConnectionError(f"no such table {key}")
        return datasets.Dataset.from_dict(tables[key])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)


def test_hub_fallback_when_no_local_folder(data_root, monkeypatch):
    calls: list = []
    _fake_hub(monkeypatch, calls)
    data = load_beir("toyhub")
    assert data.corpus == {"d1": "T one", "d2": "two"}
    assert data.queries == {"1": "q one", "2": "q two"}
    assert data.qrels == {"1": {"d1": 1}, "2": {"d2": 1}}
    assert data.source == "hub:BeIR/toyhub-qrels/test"
    assert ("BeIR/toyhub", "corpus", "corpus") in calls and ("BeIR/toyhub-qrels", None, "test") in calls
    with pytest.raises(FileNotFoundError, match=r"split 'dev'.*BeIR/toyhub-qrels.*failed: ConnectionError"):
        load_beir("toyhub", split="dev")


def test_local_folder_wins_over_hub(data_root, monkeypatch):
    calls: list = []
    _fake_hub(monkeypatch, calls)
    write_beir(data_root, name="toyhub")
    assert load_beir("toyhub").source.endswith("test.tsv") and calls == []


def test_training_pairs_from_qrels_split(data_root):
    write_beir(data_root)
    pairs = load_training_pairs("toy:test")
    assert pairs.column_names == ["query_id", "query", "positive_id", "positive"]
    # score 0 judgments are not positives
    assert list(zip(pairs["query_id"], pairs["positive_id"])) == [("q1", "d1"), ("q2", "d2")]
    assert pairs["positive"] == ["Cats cats purr", "dogs bark"]


def test_training_pairs_from_train_file(data_root):
    folder = data_root / "toy-genq"
    folder.mkdir()
    rows = [{"_id": f"d{i % 3}", "title": "T" if i % 2 else "", "text": f"passage {i}", "query": f"query {i // 2}"} for i in range(10)]
    _write_jsonl(folder / "train.jsonl", rows, gz=True)
    pairs = load_training_pairs("toy-genq")
    assert len(pairs) == 10 and pairs["positive"][:2] == ["passage 0", "T passage 1"]
    assert len(set(pairs["query_id"])) == 5  # identical query texts share an id
    sample = load_training_pairs("toy-genq", max_pairs=4, seed=1)
    assert len(sample) == 4 and sample["query"] == sorted(sample["query"], key=lambda q: int(q.split()[1]))
    assert sample["query"] == load_training_pairs("toy-genq", max_pairs=4, seed=1)["query"]

    train, held = holdout_split(pairs, fraction=0.4, seed=0)
    assert len(train) + len(held) == 10
    assert not set(train["query_id"]) & set(held["query_id"])
    assert len(set(held["query_id"])) == 2

    as_beir = pairs_to_beir(held)
    assert set(as_beir.queries) == set(held["query_id"])
    assert all(doc in as_beir.corpus for judged in as_beir.qrels.values() for doc in judged)


def test_training_pairs_errors(data_root):
    with pytest.raises(FileNotFoundError, match="no local folder for training set 'absent'"):
        load_training_pairs("absent")
    (data_root / "bad").mkdir()
    (data_root / "bad" / "train.jsonl").write_text('{"query": "q"}\n', encoding="utf-8")
    with pytest.raises(BeirFormatError, match=r"train.jsonl:1: missing field 'text'"):
        load_training_pairs("bad")
    with pytest.raises(ValueError, match="max_pairs"):
        load_training_pairs("bad", max_pairs=0)
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(datasets.Dataset.from_dict({"query_id": ["a", "b"]}), fraction=1.0)


# --------------------------------------------------------------------------- real data (skipped when absent)


def _real_data_root() -> Path | None:
    value = os.environ.get(beir.DATA_ENV_VAR)
    candidates = [Path(value)] if value else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    return next((path for path in candidates if (path / "scifact").is_dir()), None)


@pytest.fixture
def real_data(monkeypatch) -> Path:
    root = _real_data_root()
    if root is None:
        pytest.skip("real BEIR data not found (set HF_PROJECTIONS_DATA)")
    monkeypatch.setenv(beir.DATA_ENV_VAR, str(root))
    return root


def test_real_scifact_and_arguana_counts(real_data):
    scifact = load_beir("scifact")
    assert (len(scifact.queries), len(scifact.corpus)) == (300, 5183)
    assert sum(len(v) for v in scifact.qrels.values()) == 339
    assert not scifact.ignore_identical_ids
    if (real_data / "arguana").is_dir():
        with pytest.warns(UserWarning, match="5 judged doc ids are not in the corpus"):
            arguana = load_beir("arguana")
        assert (len(arguana.queries), len(arguana.corpus)) == (1406, 8674)
        assert sum(len(v) for v in arguana.qrels.values()) == 1406  # the 5 dangling judgments are kept
        assert arguana.ignore_identical_ids
    assert len(load_training_pairs("scifact:train")) == 919
