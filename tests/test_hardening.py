"""Hardening: damaged or missing checkpoint files, processes killed mid-save and mid-training, degenerate input.

Tests marked ``xfail(strict=True)`` pin known bugs (see the reason): they start passing, and then fail as
XPASS, once the bug is fixed; drop the marker then.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hf_projections import ColBERTModel
from hf_projections.evaluation import load_beir, load_training_pairs
from hf_projections.data import BeirFormatError
from hf_projections.retrieval import EncodedCorpus, encode_corpus, maxsim_topk
from hf_projections.training import ProjectionTrainingArguments, build_feature_cache, last_complete_checkpoint, train
from hf_projections.training.cache import FeatureCache

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CHILD_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
             "TRANSFORMERS_VERBOSITY": "error"}


def known_bug(reason: str, raises: type[BaseException]):
    """Pin a known bug: the test fails today with ``raises``; a fix makes it XPASS (then drop the marker)."""
    return pytest.mark.xfail(strict=True, raises=raises, reason="bug: " + reason)


def make_model(backbone, seed=0, projection="ffn2-x2-res"):
    torch.manual_seed(seed)
    return ColBERTModel.from_backbone(backbone, projection=projection, dim=8, query_max_length=8, document_max_length=16)


def assert_same_weights(model, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)


def same_weights(model, expected: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return set(state) == set(expected) and all(torch.equal(state[name], expected[name]) for name in state)


@pytest.fixture(scope="module")
def saved(tiny_backbone, tmp_path_factory):
    """A saved ColBERTModel (ffn2-x2-res head) and its state dict."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    model = make_model(tiny_backbone)
    model.save_pretrained(folder)
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def damaged(saved, tmp_path):
    """A fresh copy of the saved model folder to break."""
    folder = tmp_path / "damaged"
    shutil.copytree(saved[0], folder)
    return folder


# --------------------------------------------------------------------------- damaged or missing files


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


@pytest.mark.parametrize("damage", [truncate_half, random_bytes], ids=["truncated", "random-bytes"])
def test_corrupted_weights_are_never_loaded(damaged, damage):
    damage(damaged / "model.safetensors")
    with pytest.raises((SafetensorError, ValueError, OSError)):
        ColBERTModel.from_pretrained(damaged)


def test_corrupted_weights_error_names_the_file(damaged):
    truncate_half(damaged / "model.safetensors")
    with pytest.raises(Exception, match="model.safetensors"):
        ColBERTModel.from_pretrained(damaged)


def test_missing_weights_file_is_named(damaged):
    (damaged / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        ColBERTModel.from_pretrained(damaged)


def test_missing_config_is_refused(damaged):
    (damaged / "config.json").unlink()
    with pytest.raises((ValueError, OSError)):
        ColBERTModel.from_pretrained(damaged)


def test_missing_config_error_names_the_file(damaged):
    (damaged / "config.json").unlink()
    with pytest.raises((ValueError, OSError), match="config.json"):
        ColBERTModel.from_pretrained(damaged)


def rewrite_weights(folder: Path, change) -> str:
    """Apply ``change(state)`` to the saved safetensors file; returns the first projection tensor's name."""
    path = folder / "model.safetensors"
    state = load_file(str(path))
    name = sorted(k for k in state if k.startswith("projection."))[0]
    change(state, name)
    save_file(state, str(path), {"format": "pt"})
    return name


def test_head_weight_of_wrong_shape_is_refused(damaged):
    def grow(state, name):
        state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])

    rewrite_weights(damaged, grow)
    with pytest.raises((RuntimeError, ValueError)):
        ColBERTModel.from_pretrained(damaged)


def test_head_weight_of_wrong_shape_error_names_the_tensor(damaged):
    def grow(state, name):
        state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])

    name = rewrite_weights(damaged, grow)
    with pytest.raises((RuntimeError, ValueError), match=name.replace(".", r"\.")):
        ColBERTModel.from_pretrained(damaged)


def test_head_weight_of_wrong_shape_error_gives_both_shapes(damaged):
    def grow(state, name):
        state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])

    name = rewrite_weights(damaged, grow)
    shape = tuple(load_file(str(damaged / "model.safetensors"))[name].shape)
    expected = f"{name}: checkpoint {shape} vs model {(shape[0] - 1, *shape[1:])}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        ColBERTModel.from_pretrained(damaged)


def shard(folder: Path) -> list[Path]:
    """Split the saved model.safetensors into two shards plus model.safetensors.index.json; returns the shards."""
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(state)
    shards = [folder / "model-00001-of-00002.safetensors", folder / "model-00002-of-00002.safetensors"]
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    for path, part in zip(shards, halves):
        save_file({name: state[name] for name in part}, str(path), {"format": "pt"})
    weight_map = {name: path.name for path, part in zip(shards, halves) for name in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return shards


def test_sharded_checkpoint_loads_and_a_damaged_shard_is_named(saved, damaged):
    shards = shard(damaged)
    assert_same_weights(ColBERTModel.from_pretrained(damaged), saved[1])
    truncate_half(shards[1])
    with pytest.raises(ValueError, match="model-00002-of-00002.safetensors: not a readable safetensors file"):
        ColBERTModel.from_pretrained(damaged)
    shards[1].unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors is missing"):
        ColBERTModel.from_pretrained(damaged)


def test_missing_head_tensor_is_refused(damaged):
    name = rewrite_weights(damaged, lambda state, name: state.pop(name))
    with pytest.raises((ValueError, RuntimeError), match=name.replace(".", r"\.")):
        ColBERTModel.from_pretrained(damaged)


def test_saving_writes_no_pickle(saved):
    folder, _ = saved
    assert [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES] == []
    assert (folder / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="safetensors only"):
        ColBERTModel.from_pretrained(folder).save_pretrained(folder.parent / "again", safe_serialization=False)


def test_pickle_only_checkpoint_is_refused_without_unpickling(damaged, monkeypatch):
    state = load_file(str(damaged / "model.safetensors"))
    (damaged / "model.safetensors").unlink()
    torch.save(state, damaged / "pytorch_model.bin")
    unpickled = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a) or real_load(*a, **k))
    with pytest.raises(OSError, match="model.safetensors"):
        ColBERTModel.from_pretrained(damaged)
    assert unpickled == []


def test_corrupted_corpus_file_is_named(tmp_path):
    corpus = EncodedCorpus.from_embeddings(["a", "b"], [torch.randn(2, 4), torch.randn(3, 4)])
    path = corpus.save(tmp_path / "corpus.safetensors")
    truncate_half(path)
    with pytest.raises(ValueError, match="corpus.safetensors: not a readable safetensors file"):
        EncodedCorpus.load(path)
    with pytest.raises(FileNotFoundError, match="no encoded corpus"):
        EncodedCorpus.load(tmp_path / "missing.safetensors")


def test_truncated_feature_cache_is_named(tiny_backbone, tmp_path):
    cache = build_feature_cache(make_model(tiny_backbone), ["cat dog", "gene"], is_query=False, cache_dir=tmp_path)
    truncate_half(cache.path / "states.bin")
    with pytest.raises(ValueError, match=cache.key):
        FeatureCache(cache.path)


# --------------------------------------------------------------------------- killed while saving

SAVE_LOOP = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from hf_projections import ColBERTModel
    from hf_projections.retrieval import EncodedCorpus
    from hf_projections.training import build_feature_cache

    torch.set_num_threads(1)
    root, backbone = Path(sys.argv[1]), sys.argv[2]
    models, corpora = [], []
    for seed, tag in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        model = ColBERTModel.from_backbone(backbone, projection="ffn2-x2-res", dim=8)
        model.save_pretrained(root / f"reference-{tag}")
        models.append(model)
        n = 3000 if tag == "a" else 4000
        corpora.append(EncodedCorpus.from_embeddings([f"{tag}{i}" for i in range(n)], torch.randn(n, 64)))
    models[0].save_pretrained(root / "model")
    corpora[0].save(root / "corpus.safetensors")
    print("ready", flush=True)
    for i in range(10**9):
        models[i % 2].save_pretrained(root / "model")
        corpora[i % 2].save(root / "corpus.safetensors")
        build_feature_cache(models[0], [f"text number {i}", "cat"], is_query=False, cache_dir=root / "cache")
""")


def start_save_loop(root: Path, backbone: str) -> subprocess.Popen:
    root.mkdir(parents=True)
    script = root.parent / "save_loop.py"
    script.write_text(SAVE_LOOP)
    return subprocess.Popen([sys.executable, str(script), str(root), backbone], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=CHILD_ENV)


def test_sigkill_mid_save_leaves_old_or_new_artefacts(tiny_backbone, tmp_path):
    # Three writers at once (one process start's worth of waiting), each killed at its own random moment.
    rng = random.Random()
    roots = [tmp_path / f"run{i}" for i in range(3)]
    children = [start_save_loop(root, tiny_backbone) for root in roots]
    try:
        for child in children:
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        for child in children:
            child.send_signal(signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 0.15))
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert all(child.returncode == -signal.SIGKILL for child in children)

    references = [ColBERTModel.from_pretrained(roots[0] / f"reference-{tag}").state_dict() for tag in "ab"]
    for root in roots:
        loaded = ColBERTModel.from_pretrained(root / "model")
        assert any(same_weights(loaded, reference) for reference in references), root
        assert not [p for p in (root / "model").iterdir() if p.suffix in PICKLE_SUFFIXES]

        corpus = EncodedCorpus.load(root / "corpus.safetensors")
        assert (len(corpus), corpus.ids[0]) in ((3000, "a0"), (4000, "b0"))

        cache_root = root / "cache"
        finished = [p for p in cache_root.iterdir() if not p.name.startswith(".")] if cache_root.exists() else []
        for folder in finished:  # every visible cache folder is complete
            cache = FeatureCache(folder)
            assert len(cache) == 2 and cache.states(cache.rows_of(["cat"])[0]).shape[1] == 32
        # the next build in another process sweeps away the killed build's staging folder
        build_feature_cache(make_model(tiny_backbone), ["cat"], is_query=False, cache_dir=cache_root)
        assert not list(cache_root.glob(".building-*"))


class Killed(BaseException):
    """Stands in for SIGKILL at one exact point of a save (the files written so far stay as they are)."""


def kill_before_replacing(monkeypatch, file_name: str) -> None:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == file_name:
            raise Killed
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_save_killed_before_any_replace_keeps_the_old_model(tiny_backbone, saved, damaged, monkeypatch):
    _, old_state = saved
    kill_before_replacing(monkeypatch, "README.md")  # the first file moved into place
    with pytest.raises(Killed):
        make_model(tiny_backbone, seed=5).save_pretrained(damaged)
    monkeypatch.undo()
    assert_same_weights(ColBERTModel.from_pretrained(damaged), old_state)


def test_save_of_another_head_killed_between_files_never_loads_a_mix(tiny_backbone, saved, damaged, monkeypatch):
    _, old_state = saved
    new_model = make_model(tiny_backbone, seed=5, projection="linear")
    kill_before_replacing(monkeypatch, "model.safetensors")
    with pytest.raises(Killed):
        new_model.save_pretrained(damaged)
    monkeypatch.undo()
    try:
        loaded = ColBERTModel.from_pretrained(damaged)
    except (ValueError, RuntimeError, OSError):
        return  # refusing the torn folder with an error is fine
    assert same_weights(loaded, old_state) or same_weights(loaded, new_model.state_dict())


# --------------------------------------------------------------------------- killed while training

TRAIN_ROWS = {
    "query": ["the cat", "a dog", "gene study", "cancer risk", "drug effect", "cell protein", "claim of the", "risk gene"],
    "positive": ["cat is the", "dog of a", "the gene claim study", "risk of cancer drug", "the effect of a drug",
                 "protein in the cell", "a claim", "gene risk study"],
}
TRAIN_SETTINGS = dict(projection="ffn2-x2-res", mode="full", max_steps=20, batch_size=4, dim=8, save_steps=2,
                      logging_steps=1, show_progress_bar=False, query_max_length=8, document_max_length=16, seed=0,
                      backbone_lr=1e-3)
TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys, datasets, torch
    from hf_projections.training import ProjectionTrainingArguments, train

    torch.set_num_threads(1)
    output, backbone, rows, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    train(datasets.Dataset.from_dict(rows), ProjectionTrainingArguments(backbone=backbone, output_dir=output, **settings))
""")


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(tiny_backbone, tmp_path):
    rows = datasets.Dataset.from_dict(TRAIN_ROWS)
    killed_dir = tmp_path / "killed"
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    child = subprocess.Popen(
        [sys.executable, str(script), str(killed_dir), tiny_backbone, json.dumps(TRAIN_ROWS), json.dumps(TRAIN_SETTINGS)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while last_complete_checkpoint(killed_dir) is None:
            assert child.poll() is None, f"training ended before its first checkpoint: {child.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    checkpoint = last_complete_checkpoint(killed_dir)
    killed_at = int(checkpoint.rsplit("-", 1)[1])
    assert 2 <= killed_at < TRAIN_SETTINGS["max_steps"], "the kill must land mid-run for this test to mean anything"

    # single-threaded like the child, so both runs do the same float operations
    resumed = train(rows, ProjectionTrainingArguments(backbone=tiny_backbone, output_dir=killed_dir,
                                                      resume_from_checkpoint=True, **TRAIN_SETTINGS))
    summary = json.loads((killed_dir / "train_summary.json").read_text())
    assert summary["resumed_from"] == checkpoint and summary["steps"] == TRAIN_SETTINGS["max_steps"]
    straight = train(rows, ProjectionTrainingArguments(backbone=tiny_backbone, output_dir=tmp_path / "straight",
                                                       **TRAIN_SETTINGS))
    expected = straight.state_dict()
    for name, tensor in resumed.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)
    saved_state = ColBERTModel.from_pretrained(killed_dir).state_dict()
    for name, tensor in saved_state.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)
    # the training log keeps one line per step, none duplicated by the interrupted run
    steps = [json.loads(line)["step"] for line in (killed_dir / "training_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, TRAIN_SETTINGS["max_steps"] + 1))


# --------------------------------------------------------------------------- degenerate input


@pytest.fixture(scope="module")
def model(tiny_backbone):
    return make_model(tiny_backbone)


def test_empty_texts_encode_to_their_special_tokens(model):
    # "" -> [CLS] [D] [SEP]; queries are always padded to query_max_length with [MASK]
    assert [e.shape for e in model.encode_documents(["", "cat"])] == [(3, 8), (4, 8)]
    assert [e.shape for e in model.encode_queries([""])] == [(8, 8)]
    assert model.encode_documents([]) == [] and model.encode_queries([]) == []
    scores = model.score([""], ["", "cat"])
    assert scores.shape == (1, 2) and bool(torch.isfinite(scores).all())


def test_overlong_inputs_are_truncated_to_the_configured_length(model):
    long_text = "protein " * 1000
    assert model.encode_queries([long_text])[0].shape == (model.config.query_max_length, 8)
    assert model.encode_documents([long_text])[0].shape == (model.config.document_max_length, 8)


def test_non_text_inputs_are_rejected(model):
    with pytest.raises(TypeError, match="list of strings"):
        model.tokenize([b"\xff\xfe"], is_query=False)
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_documents([b"bytes"])


def test_a_bare_string_or_none_is_rejected_clearly(model):
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_documents("cat")
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_documents(["cat", None])


def test_empty_corpus_and_empty_documents_are_rejected():
    with pytest.raises(ValueError, match="doc_embeddings is empty"):
        maxsim_topk([torch.randn(3, 8)], [], k=2)
    with pytest.raises(ValueError, match="no token vectors"):
        maxsim_topk([torch.randn(3, 8)], [torch.randn(0, 8), torch.randn(2, 8)], k=2)
    scores, indices = maxsim_topk([], [torch.randn(2, 8)], k=2)
    assert scores.shape == (0, 1) and indices.shape == (0, 1)
    with pytest.raises(ValueError, match="non-empty dict"):
        encode_corpus(None, {})


def test_query_without_tokens_is_rejected_clearly():
    with pytest.raises(ValueError, match="quer(y|ies)"):
        maxsim_topk([torch.randn(0, 8)], [torch.randn(2, 8)], k=1)


def test_duplicate_document_ids_are_rejected():
    with pytest.raises(ValueError, match="not unique"):
        EncodedCorpus.from_embeddings(["a", "a"], [torch.randn(2, 4), torch.randn(1, 4)])


def write_beir(root: Path, name: str, corpus: bytes, queries: bytes, qrels: bytes) -> None:
    folder = root / name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_bytes(queries)
    (folder / "qrels" / "test.tsv").write_bytes(qrels)


CORPUS = b'{"_id": "d1", "title": "", "text": "cat"}\n{"_id": "d2", "title": "", "text": "dog"}\n'
QUERIES = b'{"_id": "q1", "text": "cat"}\n'
QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\n"


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "message"),
    [
        (CORPUS + b'{"_id": "d3", "title": "", "text": "caf\xe9"}\n', QUERIES, QRELS, r"corpus\.jsonl:3: not valid UTF-8"),
        (CORPUS, b'{"_id": "q1", "text": "\xff"}\n', QRELS, r"queries\.jsonl:1: not valid UTF-8"),
        (CORPUS, QUERIES, QRELS + b"q1\td\xff\t1\n", r"test\.tsv:3: not valid UTF-8"),
        (CORPUS + b'{"_id": "d1", "title": "", "text": "again"}\n', QUERIES, QRELS, r"corpus\.jsonl:3: duplicate document id 'd1'"),
        (CORPUS, QUERIES + QUERIES, QRELS, r"queries\.jsonl:2: duplicate query id 'q1'"),
        (CORPUS, QUERIES, QRELS + b"q1\td1\t2\n", r"test\.tsv:3: pair .* judged twice with different scores"),
    ],
    ids=["corpus-bytes", "query-bytes", "qrels-bytes", "duplicate-doc", "duplicate-query", "conflicting-qrels"],
)
def test_bad_beir_files_name_file_and_line(tmp_path, monkeypatch, corpus, queries, qrels, message):
    write_beir(tmp_path, "broken", corpus, queries, qrels)
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path))
    with pytest.raises(BeirFormatError, match=message):
        load_beir("broken", source="local")


def test_training_pairs_with_bad_bytes_or_no_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.jsonl").write_bytes(b'{"_id": "d1", "query": "caf\xe9", "text": "x"}\n')
    with pytest.raises(BeirFormatError, match=r"train\.jsonl:1: not valid UTF-8"):
        load_training_pairs("bad")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.jsonl").write_bytes(b"")
    with pytest.raises(ValueError, match="gave no pairs"):
        load_training_pairs("empty")


def test_empty_strings_and_duplicate_pairs_train(tiny_backbone, tmp_path):
    rows = datasets.Dataset.from_dict({"query": ["", "", "cat", "cat"], "positive": ["", "dog", "", "dog"]})
    model = train(rows, ProjectionTrainingArguments(backbone=tiny_backbone, projection="linear", mode="head", max_steps=2,
                                                    batch_size=2, dim=8, output_dir=tmp_path / "run",
                                                    cache_dir=tmp_path / "cache", show_progress_bar=False))
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    with pytest.raises(ValueError, match="batch_size=2 is larger than the 0 training rows"):
        train(datasets.Dataset.from_dict({"query": [], "positive": []}), ProjectionTrainingArguments(
            backbone=tiny_backbone, mode="head", batch_size=2, output_dir=tmp_path / "none", cache_dir=tmp_path / "cache",
            show_progress_bar=False))


def test_saved_files_get_the_usual_mode_not_owner_only(tmp_path):
    # mkstemp/mkdtemp make owner-only files; a saved model must be readable as a plain write would leave it.
    import os
    import stat

    from hf_projections.atomic import atomic_write_json, staged_directory

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "config.json", {"a": 1})
        with staged_directory(tmp_path / "model") as staging:
            os.makedirs(os.path.join(staging, "sub"))
            atomic_write_json(os.path.join(staging, "sub", "weights.json"), {})
            private = os.path.join(staging, "adapter_model.safetensors")  # safetensors' save_file writes 0o600
            open(private, "w").close()
            os.chmod(private, 0o600)
    finally:
        os.umask(old)
    for path, mode in [(tmp_path / "config.json", 0o644), (tmp_path / "model" / "sub", 0o755),
                       (tmp_path / "model" / "sub" / "weights.json", 0o644),
                       (tmp_path / "model" / "adapter_model.safetensors", 0o644)]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
