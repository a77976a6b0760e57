"""Sweep outputs: results.csv / results.json (one row per head x seed x data set), a markdown table
(mean ± std over seeds, delta vs ``linear``), a bar chart with seed error bars, and a card per run."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from hf_projections.io import atomic_write, atomic_write_json, atomic_write_text

METRICS = ("ndcg@10", "recall@100", "mrr@10")


def result_rows(records: list[dict]) -> list[dict]:
    """Flatten run records into one row per head x seed x data set (``split``: ``test`` or ``validation``)."""
    rows = []
    for record in sorted(records, key=lambda r: (r["head"], r["seed"])):
        evaluations = [("test", item) for item in record["eval"].items()]
        evaluations += [("validation", item) for item in record.get("validation", {}).items()]
        for split, (dataset, evaluation) in evaluations:
            rows.append({
                "head": record["head"],
                "seed": record["seed"],
                "dataset": dataset,
                "split": split,
                **{metric: evaluation["metrics"][metric] for metric in METRICS},
                "params": record["params"],
                "train_seconds": round(record["train_seconds"], 2),
            })
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict], metric: str = "ndcg@10") -> dict[str, dict]:
    """Per head: ``{dataset: (mean, std)}``, the average over data sets per seed (mean, std), params, seeds.

    The average is over the test sets; a sweep with validation sets only averages those.
    """
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
        averages = [statistics.fmean(per_set.values()) for per_set in entry["seeds"].values()]
        summary[head] = {
            "datasets": {name: _mean_std(values) for name, values in entry["datasets"].items()},
            "average": _mean_std(averages),
            "params": entry["params"],
            "n_seeds": len(entry["seeds_seen"]),
        }
    return summary


def markdown_table(summary: dict[str, dict], metric: str = "ndcg@10") -> str:
    """Heads as rows; per data set mean ± std (x100), the average, and its delta vs ``linear``."""
    datasets = sorted({name for entry in summary.values() for name in entry["datasets"]})
    baseline = summary.get("linear", {}).get("average", (float("nan"), 0))[0]
    header = ["head", "params", *[f"{d} {metric}" for d in datasets], "average", "Δ vs linear", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for head, entry in sorted(summary.items(), key=lambda item: -item[1]["average"][0]):
        cells = [f"`{head}`", f"{entry['params']:,}"]
        for name in datasets:
            mean, std = entry["datasets"].get(name, (float("nan"), 0.0))
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}")
        mean, std = entry["average"]
        cells += [f"{100 * mean:.2f} ± {100 * std:.2f}", f"{100 * (mean - baseline):+.2f}", str(entry["n_seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


def write_report(records: list[dict], settings, output: Path, machine: dict) -> str:
    """Write results.csv/json, table.md and results.png into ``output``; print and return the table."""
    rows = result_rows(records)
    if not rows:
        return ""
    summary = summarise(rows)
    write_csv(output / "results.csv", rows)
    atomic_write_json(output / "results.json", {"settings": settings.to_dict(), "machine": machine, "rows": rows})
    table = markdown_table(summary)
    seeds = ", ".join(str(s) for s in settings.seeds)
    budget = (
        f"mode `{settings.mode}`, train `{settings.train_data}` ({settings.max_pairs or 'all'} pairs), "
        f"{settings.steps} steps x batch {settings.batch_size}, lr {settings.lr}, temperature {settings.temperature}, "
        f"test queries per set: {settings.max_eval_queries or 'all'} (seeded sample, full corpus), "
        f"head init `{getattr(settings, 'branch_init', 'random')}`, validation: "
        f"{getattr(settings, 'validation_queries', 0) or 'none'} held-out training queries (`-val` column, not in the average), "
        f"seeds {seeds}; machine: {machine['platform']}, {machine['usable_cpus']} CPUs, torch {machine['torch']}"
    )
    atomic_write_text(output / "table.md", f"NDCG@10 x100; average over the test splits; {budget}\n\n{table}")
    plot(summary, output / "results.png", title=f"{settings.train_data} -> {', '.join(settings.eval_data) or 'validation'}")
    print(table)
    return table


def write_run_card(run_dir: Path, record: dict, settings) -> None:
    """A model card (``README.md``) for one sweep run: its head, budget and measured test metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    from hf_projections.integrations.model_card import hub_base_model

    data = ModelCardData(
        library_name="hf-projections",
        base_model=hub_base_model(settings.backbone),  # the Hub id; None for a local folder the Hub cannot know
        tags=["colbert", "late-interaction", "hf-projections", "sentence-transformers"],
        datasets=[settings.train_data],
    )
    metric_lines = "\n".join(
        f"| {name} | " + " | ".join(f"{evaluation['metrics'][m]:.4f}" for m in METRICS) + " |"
        for name, evaluation in record["eval"].items()
    )
    body = f"""---
{data.to_yaml()}
---

# Sweep run `{record['key']}`

A `{record['head']}` projection head ({record['params']:,} parameters, {record['macs_per_token']:,} MACs per token)
trained on frozen `{settings.backbone}` features (mode `{settings.mode}`) with seed {record['seed']}:
{settings.steps} steps x batch {settings.batch_size} of `{settings.train_data}` pairs, lr {settings.lr},
temperature {settings.temperature}, in-batch negatives. Final training loss {record['final_loss']:.4f}.

## Evaluation (test splits, measured by this run)

| data set | {' | '.join(METRICS)} |
|---|{'---|' * len(METRICS)}
{metric_lines}

## Use

```python
from hf_projections import ColBERTModel
from hf_projections.integrations.peft import load_head

model = ColBERTModel.from_backbone("{settings.backbone}", projection="{record['head']}", dim={settings.dim})
load_head(model, "head")  # this folder's head/ (safetensors + spec)
```
"""
    atomic_write_text(run_dir / "README.md", ModelCard(body).content)
