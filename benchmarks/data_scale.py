"""The paper's claim against data scale (head mode): does a better head's gain over ``linear`` grow with data?

Runs the ``data-8k``, ``data-32k`` and ``data-120k`` sweep presets (linear vs ffn2-x2-res, geglu-x2-res,
swiglu-x2-res; the squad + nq-qed + arguana-genq mix; one epoch per size; 3 seeds; SciFact, ArguAna and SQuAD dev)
into ``<output>/<preset>/`` with one shared feature cache (resumable: finished runs are kept), then writes
``<output>/data_scale.json``, ``table.md`` and ``delta.png`` (Δ vs linear against training pairs, paired by seed).

    python benchmarks/data_scale.py --output benchmarks/results/data-scale
    python benchmarks/data_scale.py --output benchmarks/results/data-scale --report-only   # tables from finished runs
    python benchmarks/data_scale.py --output runs/data-scale --presets data-8k,data-32k \
        --cache-dir runs/layer-mix/cache --backbone-precision auto    # read the layer-mix run's bf16 cache
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_projections.atomic import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from hf_projections.sweep import PRESETS, SweepSettings, run_sweep  # noqa: E402
from hf_projections.sweep.report import result_rows, summarise  # noqa: E402
from hf_projections.sweep.runner import read_finished_runs  # noqa: E402
from hf_projections.sweep.settings import DATA_SCALE_PAIRS, DATA_SCALE_SIZES  # noqa: E402
from hf_projections.training import default_backbone  # noqa: E402
from benchmarks import common  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/data-scale"))
    parser.add_argument("--presets", default=",".join(DATA_SCALE_SIZES), help="comma-separated data-scale presets")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the presets')")
    parser.add_argument("--heads", default=None, help="comma-separated heads (default: the presets'); a later run "
                        "with more heads adds them to the same folders")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache (default: OUTPUT/cache); a cache over more pairs or more layers that "
                             "holds the last one (benchmarks/layer_mix.py --cache-all-pairs) serves every size")
    common.add_backbone_precision(parser, "must match the cache --cache-dir points at")
    parser.add_argument("--report-only", action="store_true", help="only summarise the runs already finished")
    return parser.parse_args(argv)


def _paired(values: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, int]:
    differences = [values[s] - baseline[s] for s in values if s in baseline]
    if not differences:
        return float("nan"), float("nan"), 0
    return statistics.fmean(differences), statistics.stdev(differences) if len(differences) > 1 else 0.0, len(differences)


def summarise_scale(folders: dict[str, Path]) -> dict:
    """Per preset and head: pairs, per-set and average NDCG@10 (mean ± std over seeds), Δ vs linear paired by seed."""
    summary = {}
    for name, folder in folders.items():
        records = list(read_finished_runs(folder / "runs.jsonl").values())
        if not records:
            continue
        settings = SweepSettings.from_dict(json.loads((folder / "settings.json").read_text()))
        rows = [row for row in result_rows(records, settings.dim) if row["split"] == "test"]
        by_head = summarise(rows)
        baseline = by_head.get("linear", {}).get("seed_averages", {})
        summary[name] = {
            "pairs": settings.max_pairs or DATA_SCALE_PAIRS,
            "steps": settings.steps,
            "heads": {
                head: {
                    "datasets": {k: list(v) for k, v in entry["datasets"].items()},
                    "average": list(entry["average"]),
                    "delta_vs_linear": list(_paired(entry["seed_averages"], baseline)),
                    "seeds": sorted(entry["seed_averages"]),
                }
                for head, entry in by_head.items()
            },
        }
    return summary


def table(summary: dict) -> str:
    datasets = sorted({d for size in summary.values() for head in size["heads"].values() for d in head["datasets"]})
    header = ["pairs", "head", *[f"{d}" for d in datasets], "average", "Δ vs linear (paired)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in sorted(summary.values(), key=lambda s: s["pairs"]):
        for head, entry in sorted(size["heads"].items(), key=lambda item: (item[0] != "linear", item[0])):
            cells = [f"{size['pairs']:,}", f"`{head}`"]
            cells += [f"{100 * entry['datasets'][d][0]:.2f} ± {100 * entry['datasets'][d][1]:.2f}" if d in entry["datasets"] else ""
                      for d in datasets]
            mean, std = entry["average"]
            delta, delta_std, _ = entry["delta_vs_linear"]
            cells += [f"{100 * mean:.2f} ± {100 * std:.2f}", f"{100 * delta:+.2f} ± {100 * delta_std:.2f}",
                      ", ".join(map(str, entry["seeds"]))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(summary.values(), key=lambda s: s["pairs"])
    heads = sorted({h for s in sizes for h in s["heads"] if h != "linear"})
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for head in heads:
        points = [(s["pairs"], *s["heads"][head]["delta_vs_linear"][:2]) for s in sizes if head in s["heads"]]
        axis.errorbar([p[0] for p in points], [100 * p[1] for p in points], yerr=[100 * p[2] for p in points],
                      marker="o", capsize=3, label=head)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.axhline(2.0, color="grey", linewidth=0.8, linestyle="--", label="paper's +2.0")
    axis.set_xscale("log")
    axis.set_xlabel("training pairs (squad + nq-qed + arguana-genq, one epoch)")
    axis.set_ylabel("Δ average NDCG@10 vs linear (x100), paired by seed")
    axis.set_title("Head-only training on frozen MiniLM: gain over linear vs data size")
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)


def main(argv=None, **changes) -> dict:
    """Run (unless ``--report-only``) and summarise; ``changes`` replace preset fields (tests use a tiny budget)."""
    args = parse_args(argv)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATA_SCALE_SIZES]
    if unknown:
        raise SystemExit(f"unknown data-scale presets {unknown}; known: {list(DATA_SCALE_SIZES)}")
    folders = {name: args.output / name for name in names}
    if not args.report_only:
        backbone = changes.pop("backbone", None) or default_backbone()
        if args.backbone_precision is not None:
            changes["backbone_precision"] = args.backbone_precision
        # Largest first: the smaller samples' texts are subsets of its cache, so they need no backbone pass.
        for name in sorted(names, key=lambda n: -(DATA_SCALE_SIZES[n] or DATA_SCALE_PAIRS)):
            settings = PRESETS[name].replace(backbone=backbone, **changes)
            if args.seeds:
                settings = settings.replace(seeds=[int(s) for s in args.seeds.split(",")])
            if args.heads:
                settings = settings.replace(heads=[h.strip() for h in args.heads.split(",") if h.strip()])
            run_sweep(settings, folders[name], cache_dir=args.cache_dir or args.output / "cache")
    summary = summarise_scale(folders)
    atomic_write_json(args.output / "data_scale.json", summary)
    text = table(summary)
    atomic_write_text(args.output / "table.md", text)
    if summary:
        plot(summary, args.output / "delta.png")
    print(text)
    return summary


if __name__ == "__main__":
    main()
