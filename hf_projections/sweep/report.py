"""Sweep outputs: results.csv / results.json (one row per head x seed x data set x dim), a markdown table
(mean ± std over seeds, delta vs ``linear``; with Matryoshka dims a second table per dim), a bar chart of the
full dim with seed error bars, and a card per run."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from hf_projections.atomic import atomic_write, atomic_write_json, atomic_write_text
from hf_projections.heads.layer_mix import describe_head_input

METRICS = ("ndcg@10", "recall@100", "mrr@10")


def _evaluations(record: dict, full_dim: int | None):
    """``(split, dim, data set, evaluation)`` of one run record: the full dim, then each truncated dim."""
    full_dim = record.get("dim", full_dim)
    parts = [(full_dim, record["eval"], record.get("validation", {}))]
    truncated = record.get("eval_by_dim", {})
    parts += [(int(d), truncated[d], record.get("validation_by_dim", {}).get(d, {})) for d in sorted(truncated, key=int)]
    for dim, test, validation in parts:
        yield from (("test", dim, name, evaluation) for name, evaluation in test.items())
        yield from (("validation", dim, name, evaluation) for name, evaluation in validation.items())


def result_rows(records: list[dict], full_dim: int | None = None) -> list[dict]:
    """Flatten run records into one row per head x seed x data set x dim (``split``: ``test`` or ``validation``;
    ``dim``: the run's full dim, or a Matryoshka dim; ``full_dim`` names it for records that do not)."""
    rows = []
    for record in sorted(records, key=lambda r: (r["head"], r["seed"])):
        for split, dim, dataset, evaluation in _evaluations(record, full_dim):
            rows.append({
                "head": record["head"],
                "seed": record["seed"],
                "dataset": dataset,
                "split": split,
                "dim": dim,
                **{metric: evaluation["metrics"][metric] for metric in METRICS},
                "params": record["params"],
                "train_seconds": round(record["train_seconds"], 2),
            })
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict], metric: str = "ndcg@10", dim: int | None = None) -> dict[str, dict]:
    """Per head: ``{dataset: (mean, std)}``, the average over data sets per seed (mean, std), params, seeds.

    The average is over the test sets; a sweep with validation sets only averages those. Only rows at ``dim``
    count (default: the largest dim in ``rows``, i.e. the full one).
    """
    dims = {row["dim"] for row in rows if row.get("dim") is not None}
    dim = dim if dim is not None else max(dims, default=None)
    rows = [row for row in rows if row.get("dim") in (None, dim)]
    averaged_split = "test" if any(row.get("split", "test") == "test" for row in rows) else "validation"
    by_head: dict[str, dict] = defaultdict(lambda: {"datasets": defaultdict(list), "seeds": defaultdict(dict)})
    for row in rows:
        entry = by_head[row["head"]]
        entry["datasets"][row["dataset"]].append(row[metric])
        entry.setdefault("seeds_seen", set()).add(row["seed"])
        if row.get("split", "test") == averaged_split:
            entry["seeds"][row["seed"]][row["dataset"]] = row[metric]
        entry["params"] = row["params"]
    summary = {}
    for head, entry in by_head.items():
        averages = {seed: statistics.fmean(per_set.values()) for seed, per_set in entry["seeds"].items()}
        summary[head] = {
            "datasets": {name: _mean_std(values) for name, values in entry["datasets"].items()},
            "average": _mean_std(list(averages.values())),
            "seed_averages": averages,
            "params": entry["params"],
            "n_seeds": len(entry["seeds_seen"]),
        }
    return summary


def markdown_table(summary: dict[str, dict], metric: str = "ndcg@10", by_dim: dict[int, dict] | None = None) -> str:
    """Heads as rows; per data set mean ± std (x100), the average, and its delta vs ``linear``: the mean ± std
    over seeds of the per-seed difference (runs of one seed share their batches, so the pairing removes
    that part of the seed noise).

    With ``by_dim`` (``{dim: summary}``, e.g. Matryoshka dims) the table has a ``dim`` column and one block of
    heads per dim, largest first; the delta is against ``linear`` at the same dim.
    """
    groups = [(None, summary)] if by_dim is None else sorted(by_dim.items(), key=lambda item: -item[0])
    datasets = sorted({name for _, group in groups for entry in group.values() for name in entry["datasets"]})
    dim_column = ["dim"] if by_dim is not None else []
    header = ["head", *dim_column, "params", *[f"{d} {metric}" for d in datasets], "average", "Δ vs linear", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dim, group in groups:
        baseline = group.get("linear", {}).get("seed_averages", {})
        for head, entry in sorted(group.items(), key=lambda item: -item[1]["average"][0]):
            cells = [f"`{head}`", *([str(dim)] if dim_column else []), f"{entry['params']:,}"]
            for name in datasets:
                mean, std = entry["datasets"].get(name, (float("nan"), 0.0))
                cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
            mean, std = entry["average"]
            cells += [f"{100 * mean:.2f} ± {100 * std:.2f}", _paired_delta(entry.get("seed_averages", {}), baseline),
                      str(entry["n_seeds"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _paired_delta(averages: dict, baseline: dict) -> str:
    """``"+0.35 ± 0.80"``: mean ± std (x100) over the seeds both have of ``averages[seed] - baseline[seed]``."""
    differences = [averages[seed] - baseline[seed] for seed in sorted(averages) if seed in baseline]
    if not differences:
        return "n/a"
    mean, std = _mean_std(differences)
    return f"{100 * mean:+.2f} ± {100 * std:.2f}"


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def plot(summary: dict[str, dict], path: Path, metric: str = "ndcg@10", title: str = "") -> bool:
    """Grouped bars (one group per head, one bar per data set + average) with seed std as error bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[sweep] matplotlib is not installed (pip install 'hf-projections[plot]'): no plot written")
        return False
    heads = sorted(summary, key=lambda h: -summary[h]["average"][0])
    series = sorted({n for entry in summary.values() for n in entry["datasets"]}) + ["average"]
    width = 0.8 / len(series)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(heads) + 2), 4.2))
    for i, name in enumerate(series):
        stats = [summary[h]["average"] if name == "average" else summary[h]["datasets"].get(name, (0, 0)) for h in heads]
        positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(heads))]
        axis.bar(positions, [100 * m for m, _ in stats], width, yerr=[100 * s for _, s in stats], capsize=3, label=name)
    axis.set_xticks(range(len(heads)), heads, rotation=30, ha="right")
    axis.set_ylabel(f"{metric} (x100), mean ± std over seeds")
    low = min(100 * summary[h]["datasets"][n][0] for h in heads for n in summary[h]["datasets"])
    axis.set_ylim(max(0.0, low - 10), None)
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)
    return True


def _head_input(settings) -> str:
    return "head input: " + describe_head_input(getattr(settings, "projection_layers", None), settings.layer_mix)


def write_report(records: list[dict], settings, output: Path, machine: dict) -> str:
    """Write results.csv/json, table.md and results.png into ``output``; print and return the table."""
    rows = result_rows(records, settings.dim)
    if not rows:
        return ""
    summary = summarise(rows, dim=settings.dim)
    write_csv(output / "results.csv", rows)
    atomic_write_json(output / "results.json", {"settings": settings.to_dict(), "machine": machine, "rows": rows})
    table = markdown_table(summary)
    matryoshka_dims = getattr(settings, "matryoshka_dims", None)
    if matryoshka_dims:
        by_dim = {dim: summarise(rows, dim=dim) for dim in sorted({row["dim"] for row in rows})}
        weights = getattr(settings, "matryoshka_weights", None)
        table += (
            f"\nPer Matryoshka dim (trained on dims {', '.join(map(str, sorted({*matryoshka_dims, settings.dim})))}, "
            f"weights {', '.join(map(str, weights)) if weights else '1 each'}; each dim evaluated on the first d "
            f"features, re-normalised):\n\n" + markdown_table(summary, by_dim=by_dim)
        )
    seeds = ", ".join(str(s) for s in settings.seeds)
    budget = (
        f"mode `{settings.mode}`, train `{settings.train_label()}` ({settings.max_pairs or 'all'} pairs), "
        f"{settings.steps} steps x batch {settings.batch_size}, head lr {settings.head_lr}{_backbone_lr(settings)}, "
        f"temperature {settings.temperature}, "
        f"query/document length {settings.query_max_length}/{settings.document_max_length}, "
        f"{_tokenisation(settings)}, "
        f"test queries per set: {settings.max_eval_queries or 'all'} (seeded sample, full corpus), "
        f"head init `{getattr(settings, 'branch_init', 'random')}`, {_head_input(settings)}, "
        f"validation: {_validation(settings)}, "
        f"seeds {seeds}; machine: {machine['platform']}, {machine['usable_cpus']} CPUs, torch {machine['torch']}"
    )
    atomic_write_text(output / "table.md", f"NDCG@10 x100; average over the test splits; {budget}\n\n{table}")
    plot(summary, output / "results.png", title=f"{settings.train_label()} -> {', '.join(settings.eval_data) or 'validation'}")
    print(table)
    return table


def _backbone_lr(settings) -> str:
    """``", backbone lr 5e-05"`` in top-K modes (where backbone layers train), else nothing."""
    if getattr(settings, "mode", "head") == "head":
        return ""
    return f", backbone lr {settings.backbone_lr}"


def _validation(settings) -> str:
    count = getattr(settings, "validation_queries", 0)
    return f"{count} held-out training queries (`-val` column, not in the average)" if count else "none"


def _tokenisation(settings) -> str:
    """How texts were tokenised, in words: ColBERT markers and [MASK] query augmentation on or off."""
    markers = "with" if getattr(settings, "markers", True) else "without"
    augment = "[MASK]-augmented" if getattr(settings, "augment_queries", True) else "unaugmented"
    return f"{markers} [unused0]/[unused1] markers, {augment} queries"


def write_run_card(run_dir: Path, record: dict, settings) -> None:
    """A model card (``README.md``) for one sweep run: its head, budget and measured test metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    from hf_projections.integrations.model_card import hub_base_model

    data = ModelCardData(
        library_name="hf-projections",
        base_model=hub_base_model(settings.backbone),  # the Hub id; None for a local folder the Hub cannot know
        tags=["colbert", "late-interaction", "hf-projections", "sentence-transformers"],
        datasets=list(settings.train_sets()),
    )
    evaluations = [(name, evaluation) for name, evaluation in record["eval"].items()]
    for dim, by_name in record.get("eval_by_dim", {}).items():  # Matryoshka dims, smallest first
        evaluations += [(f"{name} @ dim {dim}", evaluation) for name, evaluation in by_name.items()]
    metric_lines = "\n".join(
        f"| {name} | " + " | ".join(f"{evaluation['metrics'][m]:.4f}" for m in METRICS) + " |"
        for name, evaluation in evaluations
    )
    dims = getattr(settings, "matryoshka_dims", None)
    dims_argument = f", matryoshka_dims={list(dims)}" if dims else ""
    if not getattr(settings, "markers", True):
        dims_argument += ", query_marker=None, document_marker=None"
    if not getattr(settings, "augment_queries", True):
        dims_argument += ", augment_queries=False"
    body = f"""---
{data.to_yaml()}
---

# Sweep run `{record['key']}`

A `{record['head']}` projection head ({record['params']:,} parameters, {record['macs_per_token']:,} MACs per token)
trained on cached `{settings.backbone}` features (mode `{settings.mode}`) with seed {record['seed']}:
{settings.steps} steps x batch {settings.batch_size} of `{settings.train_label()}` pairs, head lr {settings.head_lr}{_backbone_lr(settings)},
temperature {settings.temperature}, in-batch negatives; {_tokenisation(settings)}. Final training loss
{record['final_loss']:.4f}.

## Evaluation (test splits, measured by this run)

| data set | {' | '.join(METRICS)} |
|---|{'---|' * len(METRICS)}
{metric_lines}

## Use

```python
from hf_projections import ColBERTModel
from hf_projections.modeling import load_head

model = ColBERTModel.from_backbone("{settings.backbone}", projection="{record['head']}", dim={settings.dim}{dims_argument})
load_head(model, "head")  # this folder's head/ (safetensors + spec)
```
"""
    atomic_write_text(run_dir / "README.md", ModelCard(body).content)
