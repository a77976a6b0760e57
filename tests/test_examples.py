"""Smoke tests: every script in examples/ runs end to end in a subprocess with tiny settings.

The tiny backbone comes from the conftest fixture and a tiny BEIR set is written here, so nothing is
downloaded and each script finishes in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DOCS = {
    "d1": "the cat of the dog", "d2": "protein cell gene study", "d3": "risk of cancer in the drug effect",
    "d4": "a claim is a study", "d5": "gene and protein", "d6": "the dog is a cat",
}
QUERIES = {"q1": "cat dog", "q2": "gene protein", "q3": "drug risk", "q4": "claim study", "q5": "dog"}
QRELS = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4", "q5": "d6"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """``<root>/tinyset``: a BEIR folder with test and train qrels (the same judgments)."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "tinyset"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in DOCS.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    rows = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items())
    for split in ("test", "train"):
        (folder / "qrels" / f"{split}.tsv").write_text(rows)
    return root


def run_example(script: str, *args: str, data_root: Path, cwd: Path) -> str:
    env = {**os.environ, "HF_PROJECTIONS_DATA": str(data_root), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


TINY_MODEL = ["--dim", "16"]
TINY_TRAINING = ["--data", "tinyset:train", "--max-steps", "2", "--max-pairs", "8", "--batch-size", "4",
                 "--query-max-length", "12", "--document-max-length", "24"]


def test_every_example_is_smoke_tested():
    # A new example script needs a smoke test below (and its name here).
    tested = {"upgrade_colbert_head.py", "sentence_transformers_usage.py", "evaluate_beir.py", "train_colbert.py",
              "train_lora_head.py", "train_starbucks.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_upgrade_colbert_head(tiny_backbone, data_root, tmp_path):
    out = run_example("upgrade_colbert_head.py", "--backbone", tiny_backbone, *TINY_MODEL, "--dataset", "tinyset",
                      "--max-docs", "4", "--output", str(tmp_path / "upgraded"), data_root=data_root, cwd=tmp_path)
    assert "largest change" in out and "layout: sentence-transformers" in out
    config = json.loads((tmp_path / "upgraded" / "config.json").read_text())
    assert config["projection"]["type"] == "ffn" and config["projection"]["residual"] is True


@pytest.mark.parametrize("model_type", ["colbert", "dense"])
def test_sentence_transformers_usage(tiny_backbone, data_root, tmp_path, model_type):
    out = run_example("sentence_transformers_usage.py", "--backbone", tiny_backbone, *TINY_MODEL, "--model-type",
                      model_type, "--output", str(tmp_path / "st"), data_root=data_root, cwd=tmp_path)
    assert "largest difference to the original model" in out
    assert (tmp_path / "st" / "modules.json").exists()


def test_evaluate_beir_fresh_model(tiny_backbone, data_root, tmp_path):
    out = run_example("evaluate_beir.py", "--backbone", tiny_backbone, *TINY_MODEL, "--dataset", "tinyset",
                      "--output", str(tmp_path / "eval.json"), data_root=data_root, cwd=tmp_path)
    assert "| tinyset | test |" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert 0.0 <= report["results"][0]["metrics"]["ndcg@10"] <= 1.0


def test_evaluate_beir_saved_model_updates_its_card(tiny_backbone, data_root, tmp_path):
    from hf_projections import ColBERTModel

    ColBERTModel.from_backbone(tiny_backbone, projection="linear", dim=16).save_pretrained(tmp_path / "model")
    out = run_example("evaluate_beir.py", "--model", str(tmp_path / "model"), "--dataset", "tinyset",
                      "--max-docs", "5", "--max-queries", "4", "--update-card",
                      "--output", str(tmp_path / "eval.json"), data_root=data_root, cwd=tmp_path)
    assert "subsample: 4/5 queries" in out
    assert "| tinyset (subsample) |" in (tmp_path / "model" / "README.md").read_text()


def test_train_colbert(tiny_backbone, data_root, tmp_path):
    out = run_example("train_colbert.py", "--backbone", tiny_backbone, *TINY_MODEL, *TINY_TRAINING,
                      "--output", str(tmp_path / "trained"), data_root=data_root, cwd=tmp_path)
    assert "2 steps" in out
    assert (tmp_path / "trained" / "model.safetensors").exists()


def test_train_lora_head(tiny_backbone, data_root, tmp_path):
    out = run_example("train_lora_head.py", "--backbone", tiny_backbone, *TINY_MODEL, *TINY_TRAINING,
                      "--output", str(tmp_path / "lora"), data_root=data_root, cwd=tmp_path)
    assert "2 steps" in out
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "lora" / "merged" / "model.safetensors").exists()


def test_train_starbucks(tiny_backbone, data_root, tmp_path):
    out = run_example("train_starbucks.py", "--backbone", tiny_backbone, "--dim", "16", "--pairs", "1:8,2:16",
                      "--train-data", "tinyset:train", "--eval-data", "tinyset", "--max-pairs", "8", "--steps", "3",
                      "--batch-size", "4", "--seeds", "0,1", "--query-max-length", "12", "--document-max-length", "24",
                      "--cache-dir", str(tmp_path / "cache"), "--save-model", str(tmp_path / "model"),
                      "--output", str(tmp_path / "starbucks"), data_root=data_root, cwd=tmp_path)
    assert "| 1 | 8 |" in out and "starbucks - baseline" in out
    report = json.loads((tmp_path / "starbucks.json").read_text())
    assert set(report["summary"]) == {"starbucks", "baseline", "separate"}
    assert set(report["summary"]["starbucks"]) == {"1,8", "1,16", "2,8", "2,16"}  # the layers x dims grid
    assert set(report["summary"]["separate"]) == {"1,8", "2,16"} and len(report["runs"]["baseline"]) == 2
    assert 0.0 <= report["summary"]["starbucks"]["1,8"]["ndcg@10"][0] <= 1.0
    assert (tmp_path / "starbucks.md").read_text().startswith("# Starbucks 2D Matryoshka")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["starbucks_pairs"] == [[1, 8], [2, 16]]
