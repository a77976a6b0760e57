"""The command line: heads, train (head mode from the cache), eval on a saved model."""

from __future__ import annotations

import json

from test_sweep import _write_data
from transformers import AutoModel

import hf_projections  # noqa: F401
from hf_projections.cli import main


def test_heads_lists_every_preset(capsys):
    assert main(["heads", "--d-in", "32", "--d-out", "8"]) == 0
    out = capsys.readouterr().out
    assert "ffn2-x2-res" in out and "swiglu-x2-res" in out and "MACs/token" in out


def test_train_then_eval_a_saved_model(tiny_backbone, tmp_path, monkeypatch, capsys):
    _write_data(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    output = tmp_path / "model"
    code = main(["train", "--backbone", tiny_backbone, "--data", "tinyset:test", "--data", "tinypairs",
                 "--projection", "ffn2-x2-res", "--mode", "head", "--dim", "8", "--batch-size", "4",
                 "--epochs", "2", "--output", str(output)])
    assert code == 0
    model = AutoModel.from_pretrained(output)
    assert model.config.projection["type"] == "ffn" and model.config.dim == 8

    report = tmp_path / "eval.json"
    assert main(["eval", "--model", str(output), "--data", "tinyset", "--json", str(report)]) == 0
    assert "ndcg@10" in capsys.readouterr().out.lower()
    results = json.loads(report.read_text())
    assert "tinyset" in json.dumps(results)


def test_bad_input_is_a_message_not_a_traceback(tiny_backbone, capsys):
    code = main(["train", "--backbone", tiny_backbone, "--data", "nope:train", "--mode", "sideways",
                 "--output", "unused"])
    assert code == 2
    assert "error" in capsys.readouterr().err
