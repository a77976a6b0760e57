"""``colbertize``: from a dense sentence encoder to a ready late-interaction (ColBERT) model in one call.

The encoder stays frozen; only a projection head is trained on its token states, with the best head-only recipe this
project measured (``training.recipes.HEAD``: a linear head on a scalar mix of the last three layers, temperature
0.25, plain queries, one epoch), from one backbone pass that runs in bf16 where the hardware has it
(``backbone_precision="auto"``; NDCG@10 within seed noise of fp32, README). The result is evaluated and written with its model card::

    result = colbertize("sentence-transformers/all-MiniLM-L6-v2", "arguana-genq", "minilm-colbert")
    result.model.score(["a query"], ["a document"])          # (1, 1) MaxSim

By default the output folder holds the projection *adapter* (the head's weights, kilobytes to a few MB, plus the
config naming the encoder), which ``AutoModel.from_pretrained(folder)`` turns back into the full model; with
``save="model"`` it holds a full copy (encoder included) instead.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_projections.atomic import atomic_write_json
from hf_projections.checks import one_of

SAVE_FORMATS = ("adapter", "model")
EVALUATION_NAME = "evaluation.json"
# What a finished output folder holds besides the model files (the training record and the evaluation).
RECORD_FILES = ("train_summary.json", "training_log.jsonl")


@dataclass
class ColbertizeResult:
    """What :func:`colbertize` made: the trained ``ColBERTModel``, where it was written, and its evaluation results
    (``run_evaluation``'s records, one per test split scored)."""

    model: object
    output_dir: Path
    results: list[dict]
    seconds: float

    @property
    def evaluation(self) -> dict[str, dict[str, float]]:
        """``{data set: {metric: value}}``."""
        return {result["data"]: result["metrics"] for result in self.results}


def colbertize(encoder: str, data: str | Sequence[str] = "arguana-genq", output_dir: str = "colbert", *,
               eval_data: Sequence[str] = ("scifact",), save: str = "adapter", arguments=None,
               overwrite: bool = False) -> ColbertizeResult:
    """Train a projection head on a frozen ``encoder`` and write a ready ColBERT model with its card and evaluation.

    Args:
        encoder: any ``AutoModel`` encoder, a Hub id or a local folder (e.g. the offline MiniLM).
        data: training pairs (a data set name, several, or a ``datasets.Dataset``), as for ``train``.
        output_dir: the folder to write; it must not hold a model already unless ``overwrite``.
        eval_data: BEIR sets scored on their test split after training (empty: no evaluation).
        save: ``"adapter"`` (the head alone, loadable with ``AutoModel.from_pretrained``) or ``"model"`` (a full
            copy, encoder included).
        arguments: ``ProjectionTrainingArguments`` to start from (its ``backbone``, ``mode`` and ``output_dir`` are
            set here); default: the head-only recipe with a bf16 backbone pass where the hardware has it.
    """
    from hf_projections.evaluation import run_evaluation
    from hf_projections.integrations.model_card import write_model_card
    from hf_projections.training import ProjectionTrainingArguments, train

    one_of("save", save, SAVE_FORMATS)
    output = Path(output_dir)
    _check_output(output, overwrite)
    base = arguments or ProjectionTrainingArguments(backbone_precision="auto")
    if base.mode != "head":
        raise ValueError(f"colbertize trains the head alone on a frozen encoder (mode='head'), got mode={base.mode!r}; "
                         "use `hf-projections train` for top-K or full training")
    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Train into a scratch folder beside the output: train() saves a full model there, which the adapter format
    # does not keep; the output only ever receives finished files.
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-", dir=output.parent) as scratch:
        model = train(data, base.replace(backbone=encoder, output_dir=scratch, mode="head"))
        model.eval()
        results = run_evaluation(model, list(eval_data)) if eval_data else []
        summary = json.loads((Path(scratch) / RECORD_FILES[0]).read_text(encoding="utf-8"))
        output.mkdir(parents=True, exist_ok=True)
        if save == "adapter":
            from hf_projections.integrations.projection_adapter import save_projection_adapter

            save_projection_adapter(model, output)
        else:
            model.save_pretrained(output)
        for name in RECORD_FILES:
            if (Path(scratch) / name).exists():
                shutil.copyfile(Path(scratch) / name, output / name)
    seconds = time.perf_counter() - started
    result = ColbertizeResult(model=model, output_dir=output, results=results, seconds=seconds)
    atomic_write_json(output / EVALUATION_NAME, {"split": "test", "results": results, "seconds": seconds})
    write_model_card(model, output, training=_card_training(summary, data), evaluation=result.evaluation)
    return result


def _check_output(output: Path, overwrite: bool) -> None:
    holds_model = any((output / name).exists() for name in ("config.json", "adapter_config.json"))
    if holds_model and not overwrite:
        raise FileExistsError(f"{output} already holds a model; choose another output folder or pass overwrite=True")


def _card_training(summary: dict, data) -> dict:
    """The model card's training facts from ``train_summary.json``."""
    arguments = summary.get("arguments", {})
    return {
        "datasets": data if isinstance(data, (list, tuple)) else [str(data)],
        "pairs": summary.get("pairs"),
        "mode": "head-only (frozen encoder)",
        "steps": summary.get("steps"),
        "batch_size": arguments.get("batch_size"),
        "learning_rate": arguments.get("head_lr"),
        "temperature": arguments.get("temperature"),
        "loss": arguments.get("loss"),
        "backbone_pass": arguments.get("backbone_precision"),
        "seed": arguments.get("seed"),
        "train_time_s": round(summary.get("wall_seconds", 0.0), 1),
    }

