"""Knowledge distillation: PyLate's data layout read and written, teacher scores from our models and from a
cross-encoder, and a student trained on them with the KL loss."""

from __future__ import annotations

import json

import pytest
import torch
from test_sweep import _write_data

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.cli import main
from hf_projections.data import BeirFormatError, load_training_pairs
from hf_projections.data.distillation import read_distillation_rows, write_distillation_folder
from hf_projections.training import ProjectionTrainingArguments, train
from hf_projections.training.teacher_scores import build_distillation_data, load_teacher, score_candidates

QUERIES = {"q1": "cat risk", "q2": "gene study"}
DOCUMENTS = {"d1": "the cat", "d2": "a gene", "d3": "the study of a cat", "d4": "risk of the drug"}
CANDIDATES = [("q1", ["d1", "d3", "d4"], [9.0, 5.0, 1.0]), ("q2", ["d2", "d3", "d1"], [8.0, 6.5, 0.5])]


def test_layout_round_trips_into_training_rows(tmp_path):
    write_distillation_folder(tmp_path / "kd", QUERIES, DOCUMENTS, CANDIDATES)
    rows = load_training_pairs(str(tmp_path / "kd"))
    assert rows["query"] == ["cat risk", "gene study"] and rows["positive"] == ["the cat", "a gene"]
    assert rows["negative_1"] == ["the study of a cat", "the study of a cat"] and rows["negative_2"] == ["risk of the drug", "the cat"]
    assert rows["scores"] == [[9.0, 5.0, 1.0], [8.0, 6.5, 0.5]] and rows["negative_ids"][0] == ["d3", "d4"]
    write_distillation_folder(tmp_path / "gz", QUERIES, DOCUMENTS, CANDIDATES, compress=True)
    assert read_distillation_rows(tmp_path / "gz") == read_distillation_rows(tmp_path / "kd")


@pytest.mark.parametrize(("row", "message"), [
    ({"query_id": "q1", "document_ids": ["d1", "d3"], "scores": [1.0]}, "must be 2 numbers"),
    ({"query_id": "q1", "document_ids": ["d1", "d2", "nope"], "scores": [1.0, 2.0, 3.0]}, r"document ids \['nope'\]"),
    ({"query_id": "q9", "document_ids": ["d1", "d2", "d3"], "scores": [1.0, 2.0, 3.0]}, "query id 'q9'"),
    ({"query_id": "q1", "document_ids": ["d1"], "scores": [1.0]}, "at least 2 candidate ids"),
    ({"query_id": "q1", "document_ids": ["d1", "d2", "d3", "d4"], "scores": [1, 2, 3, 4]}, "earlier rows have 3"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    folder = write_distillation_folder(tmp_path / "kd", QUERIES, DOCUMENTS, CANDIDATES)
    with (folder / "train.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    with pytest.raises(BeirFormatError, match=rf"train\.jsonl:3: .*{message}"):
        read_distillation_rows(folder)


ROWS = [{"query": "cat risk", "positive": "the cat", "negative_1": "a gene", "negative_2": "risk of the drug"},
        {"query": "gene study", "positive": "a gene", "negative_1": "the cat", "negative_2": "the study"}]


@pytest.mark.parametrize("cls", [ColBERTModel, DenseEmbeddingModel])
def test_our_models_score_candidates_with_their_own_similarity(tiny_backbone, cls):
    teacher = cls.from_backbone(tiny_backbone, projection="linear", dim=8)
    scores = score_candidates(teacher, ROWS, show_progress_bar=False)
    for row, row_scores in zip(ROWS, scores):
        expected = teacher.score([row["query"]], [row["positive"], row["negative_1"], row["negative_2"]])[0]
        torch.testing.assert_close(torch.tensor(row_scores), expected.float(), atol=1e-5, rtol=0)


def test_a_cross_encoder_scores_query_document_pairs():
    class FakeCrossEncoder:
        def predict(self, pairs, batch_size=32, show_progress_bar=False):
            return [float(len(set(q.split()) & set(d.split()))) for q, d in pairs]  # shared words

    assert score_candidates(FakeCrossEncoder(), ROWS, show_progress_bar=False) == [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    with pytest.raises(TypeError, match="predict"):
        score_candidates(object(), ROWS)


def test_teacher_scores_then_a_student_learns_them(tiny_backbone, tmp_path, monkeypatch, capsys):
    _write_data(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    torch.manual_seed(0)
    teacher = ColBERTModel.from_backbone(tiny_backbone, projection="ffn2-x2-res", dim=8)
    teacher.save_pretrained(tmp_path / "teacher")
    assert isinstance(load_teacher(tmp_path / "teacher"), ColBERTModel)
    with pytest.raises(ValueError, match="no scoring head"):
        load_teacher(tiny_backbone)

    assert main(["teacher-scores", "--teacher", str(tmp_path / "teacher"), "--data", "tinypairs", "--candidates", "4",
                 "--output", str(tmp_path / "kd")]) == 0
    assert "--loss distillation" in capsys.readouterr().out
    rows = load_training_pairs(str(tmp_path / "kd"))
    assert len(rows) == 24 and len(rows[0]["scores"]) == 4 and "negative_3" in rows.column_names
    # the file holds what the teacher computes for those candidates
    first = rows[0]
    expected = teacher.score([first["query"]], [first["positive"], first["negative_1"], first["negative_2"], first["negative_3"]])
    torch.testing.assert_close(torch.tensor(first["scores"]), expected[0], atol=1e-4, rtol=0)
    assert json.loads((tmp_path / "kd" / "distillation.json").read_text())["num_candidates"] == 4

    for cache in (True, False):
        output = tmp_path / f"student-{cache}"
        args = ProjectionTrainingArguments(backbone=tiny_backbone, dim=8, loss="distillation", batch_size=4,
                                           max_steps=12, logging_steps=4, use_cache=cache, cache_dir=tmp_path / "cache",
                                           output_dir=output, show_progress_bar=False, save_steps=None)
        train(str(tmp_path / "kd"), args)
        losses = [json.loads(line)["loss"] for line in (output / "training_log.jsonl").read_text().splitlines()
                  if "loss" in json.loads(line)]
        assert len(losses) == 3 and losses[-1] < losses[0], (cache, losses)


def test_build_needs_two_candidates(tmp_path):
    with pytest.raises(ValueError, match="num_candidates must be >= 2"):
        build_distillation_data("x", object(), tmp_path, num_candidates=1)
