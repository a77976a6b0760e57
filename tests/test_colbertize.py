"""colbertize: a frozen encoder in, a trained, evaluated ColBERT model (adapter or full copy) with its card out."""

from __future__ import annotations

import json

import pytest
import torch
from test_sweep import _write_data
from transformers import AutoModel

import hf_projections  # noqa: F401
from hf_projections.cli import main
from hf_projections.colbertize import colbertize
from hf_projections.training import ProjectionTrainingArguments

QUERIES = ["gene effect", "cats study"]
DOCUMENTS = ["the gene study of gene effect", "the cats study of cats effect", "an unrelated text"]


@pytest.fixture
def data(tmp_path, monkeypatch):
    _write_data(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _arguments(**changes):
    return ProjectionTrainingArguments(batch_size=4, dim=8, show_progress_bar=False, **changes)


@pytest.mark.parametrize("save", ["model", "adapter"])
def test_colbertize_writes_a_model_that_loads_with_the_same_scores(tiny_backbone, data, tmp_path, save):
    output = tmp_path / "colbert"
    result = colbertize(tiny_backbone, "tinypairs", output, eval_data=["tinyset"], save=save, arguments=_arguments())
    assert set(result.evaluation) == {"tinyset"} and 0.0 <= result.evaluation["tinyset"]["ndcg@10"] <= 1.0
    files = {path.name for path in output.iterdir()}
    assert {"README.md", "evaluation.json", "train_summary.json", "training_log.jsonl"} <= files
    assert ("adapter_config.json" in files) is (save == "adapter")
    assert ("model.safetensors" in files) is (save == "model")  # the adapter keeps no copy of the encoder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".colbert-")]  # the scratch folder is gone
    loaded = AutoModel.from_pretrained(output)
    torch.testing.assert_close(loaded.score(QUERIES, DOCUMENTS), result.model.score(QUERIES, DOCUMENTS))
    card = (output / "README.md").read_text(encoding="utf-8")
    assert "tinypairs" in card and "ndcg@10" in card.lower()
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["arguments"]["mode"] == "head" and summary["arguments"]["projection"] == "linear"
    assert loaded.config.projection_layers == [-1, -2, -3] and loaded.config.layer_mix == "scalar"  # the recipe's mix
    assert "**Head input:** backbone layers -1, -2, -3 (scalar mix)" in card and "| head_input |" not in card  # stated once


def test_colbertize_cli_and_bad_input(tiny_backbone, data, tmp_path, capsys):
    output = tmp_path / "cli"
    assert main(["colbertize", "--backbone", tiny_backbone, "--data", "tinypairs", "--output", str(output),
                 "--eval-data", "tinyset", "--batch-size", "4", "--save", "model"]) == 0
    out = capsys.readouterr().out
    assert "ndcg@10" in out.lower() and str(output) in out
    before = (output / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a model"):
        colbertize(tiny_backbone, "tinypairs", output, arguments=_arguments())
    assert (output / "model.safetensors").read_bytes() == before  # the refused call wrote nothing
    with pytest.raises(ValueError, match="save must be one of 'adapter', 'model'"):
        colbertize(tiny_backbone, "tinypairs", tmp_path / "x", save="copy")
    with pytest.raises(ValueError, match="mode='head'"):
        colbertize(tiny_backbone, "tinypairs", tmp_path / "y", arguments=_arguments(mode="top-1"))
