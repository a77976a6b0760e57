"""Choose the sweep's training recipe on held-out *training* queries, never on test queries.

Each variant is one sweep (``linear`` vs the paper's best head, same seeds) that changes one knob of the
quick budget (temperature, marker tokens, query augmentation, head init, learning rate, steps) and evaluates
only on ``validation_queries``
GenQ queries held out of the training pairs (``eval_data`` is empty, so no test query is encoded or scored).
All variants share one feature cache. Writes ``<output>/choices.json`` and ``choices.md``: validation NDCG@10
per head and variant, and the residual head's delta vs ``linear`` under the same variant.

    python benchmarks/choose_recipe.py --output benchmarks/results/choices
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from hf_projections.atomic import atomic_write_json, atomic_write_text
from hf_projections.sweep import SweepSettings, run_sweep

# Changes to the quick preset (whose recipe is ``hf_projections.training.recipes.HEAD``). The first rows walk
# from ColBERT's defaults to the recipe one knob at a time; the rest vary one knob around the recipe.
COLBERT_TOKENS = {"markers": True, "augment_queries": True}
VARIANTS: dict[str, dict] = {
    "ColBERT defaults (temperature 1, markers, [MASK] queries)": {"temperature": 1.0, **COLBERT_TOKENS},
    "temperature 0.5, markers, [MASK] queries": {"temperature": 0.5, **COLBERT_TOKENS},
    "temperature 0.25, markers, [MASK] queries": COLBERT_TOKENS,
    "temperature 0.25, [MASK] queries": {"augment_queries": True},
    "recipe (temperature 0.25, no markers, plain queries)": {},
    "recipe, temperature 0.1": {"temperature": 0.1},
    "recipe, temperature 0.5": {"temperature": 0.5},
    "recipe, branch_init=zero": {"branch_init": "zero"},
    "recipe, lr=3e-3": {"head_lr": 3e-3},
    "recipe, lr=3e-4": {"head_lr": 3e-4},
    "recipe, steps=1500": {"steps": 1500},
    "recipe, steps=1500, branch_init=zero": {"steps": 1500, "branch_init": "zero"},
    # Top-K modes (the last K backbone layers train with the head, at backbone_lr; the head stays at lr).
    "recipe, top-2, backbone_lr=1e-5": {"mode": "top-2", "backbone_lr": 1e-5},
    "recipe, top-2, backbone_lr=3e-5": {"mode": "top-2", "backbone_lr": 3e-5},
    "recipe, top-2, backbone_lr=1e-4": {"mode": "top-2", "backbone_lr": 1e-4},
    # Backbone dropout off while the top layers train (1.15x faster top-2, 1.40x full on a 2-core CPU).
    "recipe, top-2, backbone_lr=1e-4, backbone_dropout=0": {"mode": "top-2", "backbone_lr": 1e-4, "backbone_dropout": 0.0},
    # Layer-mix input (the head reads the last 2 or 3 frozen layers): decides colbertize's default on held-out queries.
    "recipe, layers -1,-2,-3 scalar": {"projection_layers": (-1, -2, -3), "layer_mix": "scalar"},
    "recipe, layers -1,-2,-3 concat": {"projection_layers": (-1, -2, -3), "layer_mix": "concat"},
    "recipe, layers -1,-2 scalar": {"projection_layers": (-1, -2), "layer_mix": "scalar"},
    "recipe, layers -1,-2 concat": {"projection_layers": (-1, -2), "layer_mix": "concat"},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/choices"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: OUTPUT/cache)")
    parser.add_argument("--variants", default=";".join(VARIANTS), help="';'-separated names from VARIANTS")
    parser.add_argument("--heads", default="linear,ffn2-x2-res")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--validation-queries", type=int, default=500)
    parser.add_argument("--backbone", default=None)
    return parser.parse_args(argv)


def main(argv=None, **budget_changes) -> None:
    """Run the variants; ``budget_changes`` replace fields of the quick budget (tests use a tiny one)."""
    args = parse_args(argv)
    names = [n.strip() for n in args.variants.split(";") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if args.backbone is None:
        from hf_projections.training import default_backbone

        args.backbone = default_backbone()
    base = SweepSettings.from_preset("quick").replace(
        backbone=args.backbone,
        heads=args.heads.split(","),
        seeds=[int(s) for s in args.seeds.split(",")],
        eval_data=(),
        validation_queries=args.validation_queries,
        **budget_changes,
    )
    cache_dir = args.cache_dir or args.output / "cache"
    results = {}
    for name in names:
        started = time.perf_counter()
        settings = base.replace(**VARIANTS[name])
        output = args.output / slug(name)
        twin = linear_twin(name)
        if twin is not None:
            reuse_linear_runs(args.output / slug(twin), output)
        records = run_sweep(settings, output, cache_dir=cache_dir)
        per_head: dict[str, list[float]] = {}
        for record in records:
            (validation,) = record["validation"].values()
            per_head.setdefault(record["head"], []).append(validation["metrics"]["ndcg@10"])
        results[name] = {"changes": VARIANTS[name], "ndcg@10": per_head, "seconds": time.perf_counter() - started}
        atomic_write_json(args.output / "choices.json", {"base": base.resolved().to_dict(), "variants": results})
    atomic_write_text(args.output / "choices.md", choices_table(results, base))
    print((args.output / "choices.md").read_text())


def linear_twin(name: str) -> str | None:
    """The variant that differs from ``name`` only in ``branch_init`` (so its linear runs are the same), if any."""
    changes = VARIANTS[name]
    if "branch_init" not in changes:
        return None
    rest = {k: v for k, v in changes.items() if k != "branch_init"}
    return next((other for other, c in VARIANTS.items() if c == rest), None)


def reuse_linear_runs(base_output: Path, output: Path) -> None:
    """``branch_init`` does not touch a ``linear`` head: seed ``output`` with the twin variant's linear runs
    (same budget, same seeds, so the same deterministic result) instead of training them again."""
    base_runs = base_output / "runs.jsonl"
    if (output / "runs.jsonl").exists() or not base_runs.exists():
        return
    lines = [line for line in base_runs.read_text().splitlines() if line and json.loads(line).get("head") == "linear"]
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "runs.jsonl", "".join(line + "\n" for line in lines))


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "=-." else "_" for c in name).strip("_")


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * std:.2f}"


def choices_table(results: dict, base: SweepSettings) -> str:
    heads = list(dict.fromkeys(h for r in results.values() for h in r["ndcg@10"]))
    base = base.resolved()
    lines = [
        f"Validation NDCG@10 x100 on {base.validation_queries} held-out `{base.train_data}` queries (corpus: every "
        f"passage of the {base.max_pairs or 'all'} sampled training pairs); the quick preset otherwise ({base.steps} "
        f"steps x {base.batch_size}, head lr {base.head_lr}, temperature {base.temperature}, markers {base.markers}, [MASK] "
        f"query augmentation {base.augment_queries}, mode `{base.mode}`, frozen backbone), each variant changing what "
        f"its name says; mean ± std over seeds {', '.join(map(str, base.seeds))}. No test query was used.",
        "",
        "| variant | " + " | ".join(f"`{h}`" for h in heads) + " | best non-linear Δ vs linear |",
        "|---|" + "---|" * (len(heads) + 1),
    ]
    for name, result in results.items():
        means = {h: statistics.fmean(v) for h, v in result["ndcg@10"].items()}
        others = [means[h] - means["linear"] for h in means if h != "linear"]
        cells = [_mean_std(result["ndcg@10"][h]) if h in means else "" for h in heads]
        best = f"{100 * max(others):+.2f}" if others else "n/a (no non-linear head)"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
