"""The GPU job (``benchmarks/gpu/``) runs on this CPU end to end with a tiny budget before it ever meets a GPU:
the ``gpu-paper`` preset's six heads, a top-K mode, bf16 asked (fp32 on CPU), a time limit that stops and a rerun that
goes on, and the data copy that travels to the device loading as the original does."""

from __future__ import annotations

import json

from hf_projections.data import load_beir, read_training_mix
from hf_projections.sweep import PRESETS


def test_gpu_preset_is_the_papers_grid_end_to_end():
    settings = PRESETS["gpu-paper"].resolved()
    assert settings.heads == ("linear", "ffn2-x2", "ffn2-x2-res", "ffn2-x2-res-identity", "geglu-x2-res", "swiglu-x2-res")
    assert settings.seeds == (0, 1, 2) and settings.mode == "top-6" and settings.batch_size >= 64
    assert settings.max_pairs is None and settings.steps * settings.batch_size <= 120_610 < (settings.steps + 1) * 64
    assert settings.precision == "bf16" and 5e-5 <= settings.backbone_lr <= 1e-4
    assert set(settings.eval_data) == {"scifact", "arguana", "squad-dev"} and settings.max_eval_queries is None


def test_gpu_grid_dry_run_on_cpu_stops_at_its_time_limit_and_resumes(tiny_backbone, tmp_path, mixed_data_root):
    from benchmarks.gpu import paper_grid

    output = tmp_path / "grid"
    tiny = dict(backbone=tiny_backbone, train_data=("cats", "genes"), eval_data=("tinyset",), mode="top-2", steps=2,
                batch_size=4, dim=8, document_max_length=16, seeds=(0,))
    argv = ["--output", str(output), "--device", "cpu"]
    assert paper_grid.main([*argv, "--time-limit", "0"], **tiny) == []  # no run fits in 0 s
    records = paper_grid.main(argv, **tiny)
    assert [r["head"] for r in records] == list(PRESETS["gpu-paper"].heads)
    assert all(r["train_steps"] == 2 and 0.0 <= r["eval"]["tinyset"]["metrics"]["ndcg@10"] <= 1.0 for r in records)
    saved = json.loads((output / "settings.json").read_text())
    assert saved["mode"] == "top-2" and saved["precision"] == "bf16" and saved["device"] == "cpu"
    assert (output / "table.md").exists() and (output / "runs" / "linear" / "seed0" / "model" / "config.json").exists()
    again = paper_grid.main([*argv, "--seeds", "0,1", "--heads", "linear,ffn2-x2-res"], **{**tiny, "seeds": (0, 1)})
    assert len(again) == 6 + 2  # the six finished runs were kept, only seed 1 trained


def test_device_data_copy_loads_like_the_original(tmp_path, monkeypatch, mixed_data_root):
    from benchmarks.gpu import prepare

    monkeypatch.setattr(prepare, "EVAL_SETS", ("tinyset",))
    monkeypatch.setattr(prepare, "TRAIN_SETS", ("cats", "genes"))
    original = load_beir("tinyset", "test"), read_training_mix(["cats", "genes"])
    prepare.copy_data(tmp_path / "copy")
    assert (tmp_path / "copy" / "tinyset" / "corpus.jsonl.gz").exists()
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "copy"))
    copied = load_beir("tinyset", "test"), read_training_mix(["cats", "genes"])
    assert copied[0].corpus == original[0].corpus and copied[0].queries == original[0].queries
    assert copied[0].qrels == original[0].qrels and copied[1] == original[1]
