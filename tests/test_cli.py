"""The command line: heads, train (head mode from the cache by default), eval on a saved model, and bad input."""

from __future__ import annotations

import json

import pytest
from test_sweep import _write_data
from transformers import AutoModel

import hf_projections  # noqa: F401
from hf_projections.cli import main
from hf_projections.training import recipe_for


@pytest.fixture
def data(tmp_path, monkeypatch):
    _write_data(tmp_path / "data")
    monkeypatch.setenv("HF_PROJECTIONS_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_heads_lists_every_preset(capsys):
    assert main(["heads", "--d-in", "32", "--d-out", "8"]) == 0
    out = capsys.readouterr().out
    assert "ffn2-x2-res" in out and "swiglu-x2-res" in out and "MACs/token" in out


def test_heads_sizes_a_layer_mix(capsys):
    def linear_params(*extra):
        assert main(["heads", "--d-in", "32", "--d-out", "8", *extra]) == 0
        out = capsys.readouterr().out
        return out, int(next(line.split()[2].replace(",", "") for line in out.splitlines() if line.startswith("linear ")))

    _, plain = linear_params()
    out, scalar = linear_params("--projection-layers=-1,-2,-3")
    assert "scalar mix -> width 32" in out and scalar == plain + 4  # three weights and a scale
    out, concat = linear_params("--projection-layers=-1,-2,-3", "--layer-mix", "concat")
    assert "concat mix -> width 96" in out and concat == 3 * 32 * 8

def test_train_then_eval_a_saved_model(tiny_backbone, data, tmp_path, capsys):
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


def test_train_without_flags_uses_the_measured_recipe(tiny_backbone, data, tmp_path):
    output = tmp_path / "model"
    assert main(["train", "--backbone", tiny_backbone, "--data", "tinypairs", "--output", str(output),
                 "--batch-size", "4", "--no-show-progress-bar"]) == 0
    recipe = recipe_for("head")
    summary = json.loads((output / "train_summary.json").read_text())
    arguments = summary["arguments"]
    assert arguments["mode"] == "head" and arguments["use_cache"] and summary["cached"]
    assert (arguments["projection"], arguments["temperature"]) == (recipe.projection, recipe.temperature)
    assert summary["learning_rates"] == {"head": recipe.head_lr}
    model = AutoModel.from_pretrained(output)
    assert model.config.projection["type"] == "linear"
    assert model.config.query_marker is None and model.config.document_marker is None
    assert model.config.augment_queries is recipe.augment_queries is False
    # the head reads the recipe's scalar mix of the last three layers (the tiny backbone: its 2 blocks + embeddings)
    assert model.config.projection_layers == list(recipe.projection_layers) == [-1, -2, -3]
    assert model.config.layer_mix == recipe.layer_mix == "scalar"
    assert arguments["projection_layers"] == [-1, -2, -3]


def test_train_projection_layers_minus_one_gives_a_last_layer_head(tiny_backbone, data, tmp_path):
    output = tmp_path / "model"
    assert main(["train", "--backbone", tiny_backbone, "--data", "tinypairs", "--output", str(output),
                 "--batch-size", "4", "--max-steps", "2", "--projection-layers=-1", "--no-show-progress-bar"]) == 0
    model = AutoModel.from_pretrained(output)
    assert model.config.projection_layers is None and model.layer_mix is None


def _trained(output):
    summary = json.loads((output / "train_summary.json").read_text())
    log = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    return summary, [row for row in log if "lr_head" in row]


def test_head_mode_learning_rate_reaches_the_optimizer(tiny_backbone, data, tmp_path):
    output = tmp_path / "head"
    assert main(["train", "--backbone", tiny_backbone, "--data", "tinypairs", "--mode", "head", "--head-lr", "0.003",
                 "--batch-size", "4", "--max-steps", "10", "--logging-steps", "1", "--output", str(output)]) == 0
    summary, log = _trained(output)
    assert summary["learning_rates"] == {"head": 0.003}  # the optimizer's peak rate: the flag, not a default
    assert max(row["lr_head"] for row in log) == pytest.approx(0.003)  # warm-up reaches it at step 1 of 10
    assert all("lr_backbone" not in row for row in log)  # nothing of the backbone trains


@pytest.mark.parametrize("cache", ["--use-cache", "--no-use-cache"])
def test_top_k_learning_rates_reach_the_optimizer(tiny_backbone, data, tmp_path, cache):
    output = tmp_path / "top"
    assert main(["train", "--backbone", tiny_backbone, "--data", "tinypairs", "--mode", "top-2", "--lr", "2e-4",
                 "--head-lr", "0.004", "--batch-size", "4", "--max-steps", "10", "--logging-steps", "1",
                 "--save-steps", "100", cache, "--output", str(output)]) == 0
    summary, log = _trained(output)
    assert summary["cached"] == (cache == "--use-cache")
    assert summary["learning_rates"] == {"backbone": 2e-4, "head": 0.004}
    assert log and all(row["lr_backbone"] == pytest.approx(0.05 * row["lr_head"]) for row in log)


def test_learning_rate_flags_have_one_meaning():
    from hf_projections.cli import build_parser

    parsed = build_parser().parse_args(["train", "--data", "x", "--mode", "full", "--lr", "1e-4", "--head-lr", "1e-3"])
    assert (parsed.backbone_lr, parsed.head_lr) == (1e-4, 1e-3)
    parsed = build_parser().parse_args(["sweep", "--mode", "top-2", "--lr", "1e-4", "--head-lr", "1e-3"])
    assert (parsed.backbone_lr, parsed.head_lr) == (1e-4, 1e-3)


def test_sweep_passes_training_precision_and_time_limit(monkeypatch, tmp_path):
    import hf_projections.sweep as sweep
    from hf_projections.cli import main

    calls = []
    monkeypatch.setattr(sweep, "run_sweep", lambda settings, **kwargs: calls.append((settings, kwargs)))
    main(["sweep", "--backbone", "B", "--mode", "top-6", "--precision", "bf16", "--time-limit", "1.5",
          "--output", str(tmp_path / "out")])
    (settings, kwargs), = calls
    assert (settings.precision, settings.mode, kwargs["time_limit"]) == ("bf16", "top-6", 90.0)
    main(["sweep", "--backbone", "B", "--output", str(tmp_path / "out")])
    assert calls[-1][0].precision == "auto" and calls[-1][1]["time_limit"] is None

def _plain_encoder(tiny_backbone):
    return tiny_backbone  # a BERT folder: an encoder, not an hf-projections model


BAD_INPUT = [
    (["heads", "--d-out", "0"], "must be a positive int"),
    (["heads", "--d-in", "many"], "expected a int"),
    (["train", "--data", "tinypairs", "--backbone", "/no/such/dir", "--output", "OUT"], "no folder at '/no/such/dir'"),
    (["train", "--data", "tinypairs", "--backbone", "BACKBONE", "--mode", "sideways", "--output", "OUT"],
     "'full', 'head' or 'top-K'"),
    (["train", "--data", "tinypairs", "--backbone", "BACKBONE", "--lr", "1e-3", "--output", "OUT"],
     "mode 'head' trains no backbone layer"),
    (["train", "--data", "nope:train", "--backbone", "BACKBONE", "--output", "OUT"], "nope"),
    (["train", "--data", "tinypairs", "--backbone", "BACKBONE", "--projection", "{bad json", "--output", "OUT"],
     "projection is not valid JSON"),
    (["train", "--data", "tinypairs", "--backbone", "BACKBONE", "--projection", "ffn9", "--output", "OUT"], "ffn9"),
    (["train", "--backbone", "BACKBONE", "--output", "OUT"], "the following arguments are required: --data"),
    (["eval", "--model", "/no/such/dir"], "no folder at '/no/such/dir'"),
    (["eval", "--model", "BACKBONE"], "not an hf-projections one"),
    (["sweep", "--preset", "huge"], "unknown sweep preset 'huge'"),
    (["sweep", "--backbone", "BACKBONE", "--mode", "full"], "mode must be 'head' or 'top-K'"),
    (["sweep", "--backbone", "BACKBONE", "--heads", "ffn2,glu-x2"], "must include the 'linear' baseline"),
    (["sweep", "--backbone", "BACKBONE", "--lr", "1e-3"], "mode 'head' trains no backbone layer"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT, ids=[" ".join(a[:3]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_status_2(tiny_backbone, data, tmp_path, capsys, argv, message):
    argv = [tiny_backbone if a == "BACKBONE" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    error_lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0], captured.err
    assert not (tmp_path / "out").exists() or "sweep" in argv  # a refused train writes nothing


def test_sweep_precision_choices_are_the_sweeps():
    from hf_projections.cli import build_parser
    from hf_projections.sweep.settings import SWEEP_PRECISIONS

    sweep = next(a for a in build_parser()._subparsers._group_actions[0].choices["sweep"]._actions
                 if a.dest == "precision")
    assert tuple(sweep.choices) == SWEEP_PRECISIONS


def test_a_command_closes_the_process_group_it_ran_under(tmp_path, capsys):
    # What `accelerate launch` leaves open; left open, gloo can abort a rank at exit after training succeeded.
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert main(["heads"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
