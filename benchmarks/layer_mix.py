"""What layer-mix input adds (head mode): the head reading the last 2 or 3 MiniLM layers (scalar mix or side by
side) against the same head on the last layer, for ``linear`` and ``ffn2-x2-res``, paired by seed.

Fills one feature cache of the last 3 layers first (``fill_sweep_cache``; with ``--cache-all-pairs`` over all 120,610
pairs of the mix, so the data-scale sizes can read it too), then runs the ``layers3-*`` and ``layers2-*`` sweep
presets (the 32k data-scale budget: squad + nq-qed + arguana-genq, one epoch, 3 seeds, SciFact / ArguAna / SQuAD
dev) into ``<output>/<preset>/`` and the last-layer baseline (``data-32k``'s ``linear`` and ``ffn2-x2-res``) into
``<output>/last``, all from that cache: one backbone pass, and the baseline reads the very states the mixes read
(its last layer), seed by seed. ``--baseline DIR`` uses a finished last-layer sweep folder instead. Writes
``<output>/layer_mix.json``, ``table.md`` and ``delta.png``.

    python benchmarks/layer_mix.py --output benchmarks/results/layer-mix --cache-all-pairs
    python benchmarks/layer_mix.py --output benchmarks/results/layer-mix --report-only   # tables from finished runs
    python benchmarks/layer_mix.py --output runs/layer-mix --backbone-precision auto    # bf16 cache where native
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_scale import _paired  # noqa: E402
from hf_projections.atomic import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from hf_projections.sweep import PRESETS, SweepSettings, fill_sweep_cache, run_sweep  # noqa: E402
from hf_projections.sweep.report import result_rows, summarise  # noqa: E402
from hf_projections.sweep.runner import read_finished_runs  # noqa: E402
from hf_projections.training import default_backbone  # noqa: E402
from benchmarks import common  # noqa: E402

LAYER_PRESETS = ("layers3-scalar", "layers3-concat", "layers2-scalar", "layers2-concat")  # widest cache first
HEADS = ("linear", "ffn2-x2-res")
LAST = "last"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/layer-mix"))
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a finished sweep folder of the last-layer runs (data-32k with linear and ffn2-x2-res); "
                             "default: run them into OUTPUT/last from the shared cache")
    parser.add_argument("--presets", default=",".join(LAYER_PRESETS), help="comma-separated layer-mix presets")
    parser.add_argument("--cache-dir", type=Path, default=None, help="shared feature cache (default: OUTPUT/cache)")
    parser.add_argument("--cache-all-pairs", action="store_true",
                        help="fill the shared cache over every pair of the mix (not only the 32k sample)")
    common.add_backbone_precision(parser, "every input reads the same cache")
    parser.add_argument("--report-only", action="store_true", help="only summarise the runs already finished")
    return parser.parse_args(argv)


def _by_head(folder: Path) -> dict:
    records = list(read_finished_runs(folder / "runs.jsonl").values())
    if not records:
        return {}
    settings = SweepSettings.from_dict(json.loads((folder / "settings.json").read_text()))
    return summarise([row for row in result_rows(records, settings.dim) if row["split"] == "test"])


def summarise_layer_mix(folders: dict[str, Path]) -> dict:
    """Per input (``last`` first) and head: per-set and average NDCG@10 (mean ± std over seeds), Δ vs the same head
    on the last layer and Δ vs ``linear`` on the same input, both paired by seed."""
    heads_by_input = {name: _by_head(folder) for name, folder in folders.items()}
    last = heads_by_input.get(LAST, {})
    summary = {}
    for name, by_head in heads_by_input.items():
        if not by_head:
            continue
        linear = by_head.get("linear", {}).get("seed_averages", {})
        summary[name] = {
            head: {
                "datasets": {k: list(v) for k, v in entry["datasets"].items()},
                "average": list(entry["average"]),
                "delta_vs_last_layer": list(_paired(entry["seed_averages"],
                                                    last.get(head, {}).get("seed_averages", {}))),
                "delta_vs_linear": list(_paired(entry["seed_averages"], linear)),
                "seeds": sorted(entry["seed_averages"]),
            }
            for head, entry in sorted(by_head.items()) if head in HEADS
        }
    return summary


def _spread(value: float, spread: float, seeds: int, sign: str = "") -> str:
    """``mean ± std`` x100; one seed has no spread to show, so it reads ``mean (1 seed)``."""
    text = f"{100 * value:{sign}.2f}"
    return f"{text} ± {100 * spread:.2f}" if seeds > 1 else f"{text} (1 seed)"


def table(summary: dict) -> str:
    datasets = sorted({d for heads in summary.values() for entry in heads.values() for d in entry["datasets"]})
    header = ["input", "head", *datasets, "average", "Δ vs last layer (paired)", "Δ vs linear (paired)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, heads in summary.items():
        for head in HEADS:
            if head not in heads:
                continue
            entry = heads[head]
            seeds = len(entry["seeds"])
            cells = [name, f"`{head}`"]
            cells += [_spread(*entry["datasets"][d][:2], seeds) if d in entry["datasets"] else "" for d in datasets]
            cells.append(_spread(*entry["average"][:2], seeds))
            for key in ("delta_vs_last_layer", "delta_vs_linear"):
                delta, spread, pairs = entry[key]
                cells.append(_spread(delta, spread, pairs, "+") if pairs else "n/a")
            cells.append(", ".join(map(str, entry["seeds"])))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = [name for name in summary if name != LAST]
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / len(HEADS)
    for offset, head in enumerate(HEADS):
        points = [summary[name].get(head, {}).get("delta_vs_last_layer", [float("nan"), 0.0, 0]) for name in inputs]
        axis.bar([i + (offset - (len(HEADS) - 1) / 2) * width for i in range(len(inputs))],
                 [100 * p[0] for p in points], width, yerr=[100 * p[1] for p in points], capsize=3, label=head)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xticks(range(len(inputs)), inputs)
    axis.set_ylabel("Δ average NDCG@10 vs last layer (x100), paired by seed")
    axis.set_title("Layer-mix input, head-only on frozen MiniLM (32k pairs)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)


def main(argv=None, **changes) -> dict:
    """Run (unless ``--report-only``) and summarise; ``changes`` replace preset fields (tests use a tiny budget)."""
    args = parse_args(argv)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in LAYER_PRESETS]
    if unknown:
        raise SystemExit(f"unknown layer-mix presets {unknown}; known: {list(LAYER_PRESETS)}")
    baseline = args.baseline if args.baseline is not None else args.output / LAST
    folders = {LAST: baseline, **{name: args.output / name for name in names}}
    if not args.report_only:
        backbone = changes.pop("backbone", None) or default_backbone()
        if args.backbone_precision is not None:
            changes["backbone_precision"] = args.backbone_precision
        cache_dir = args.cache_dir or args.output / "cache"
        widest = PRESETS[LAYER_PRESETS[0]].replace(backbone=backbone, **changes)
        fill_sweep_cache(widest.replace(max_pairs=None) if args.cache_all_pairs else widest, cache_dir)
        grid = {name: PRESETS[name].replace(backbone=backbone, **changes) for name in names}
        if args.baseline is None:
            grid = {LAST: PRESETS["data-32k"].replace(backbone=backbone, heads=HEADS, **changes), **grid}
        # Seed-major: every input gets a seed before any gets the next, so a stopped measurement is paired as far
        # as it went (each sweep folder resumes; adding seeds to a folder keeps its budget).
        for count in range(1, len(widest.seeds) + 1):
            for name, settings in grid.items():  # the seeds so far: finished runs are skipped
                run_sweep(settings.replace(seeds=widest.seeds[:count]), folders[name], cache_dir=cache_dir)
    summary = summarise_layer_mix(folders)
    atomic_write_json(args.output / "layer_mix.json", {"baseline": str(baseline), "inputs": summary})
    text = table(summary)
    atomic_write_text(args.output / "table.md", text)
    if len(summary) > 1:
        plot(summary, args.output / "delta.png")
    print(text)
    return summary


if __name__ == "__main__":
    main()
