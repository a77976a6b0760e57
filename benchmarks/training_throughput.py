"""Training throughput (samples/s) of the three training modes on one backbone and real training pairs.

``full`` trains everything through ``transformers.Trainer``; ``top-K`` (default ``top-2``) and ``head`` train
from cached backbone features (one backbone pass first, then no backbone pass per step for ``head``, only the
last K layers for ``top-K``). All three go through ``hf_projections.training.train`` with the same pairs,
head and batch size, each in a fresh output and cache folder, and the (mode, path) candidates take turns in
rotated order for ``--rounds`` rounds (medians).

``--paths`` names the training paths compared (the first is the reference of ``vs`` columns):

- ``fp32``: the path as it was: fp32, the backbone's own dropout (MiniLM 0.1) in the layers that train, and the
  optimizer each path had (the Trainer's fused AdamW for ``full``, the per-tensor-list AdamW in the cached loop);
- ``fp32+no-dropout``: ``backbone_dropout=0`` (no masks to draw, attention in one fused kernel) and the fused AdamW
  everywhere (``optim="adamw_torch_fused"``, now the default);
- ``bf16`` / ``bf16+no-dropout``: the same with bf16 autocast for the training passes (fp32 master weights) and for
  the backbone pass that fills the feature cache; on a CPU this only pays with AMX tiles or AVX512-BF16
  (``native_bf16`` is recorded), so the default paths include them only there;
- ``...+buckets``: the same with ``length_buckets=4``: each batch's queries and documents run through the training
  layers in 4 length-sorted chunks trimmed to their own longest text (the same batch, loss and gradients, less
  padding to compute).

Reported per mode: training-loop samples/s (the Trainer's ``train_samples_per_second`` for ``full``; the
cached loop's own count for the others), the one-time feature-cache build, and samples/s with that build
included (what a single short run sees; the cached modes amortise it over more steps and over a sweep).

``--sweep-dir DIR`` also reads a finished ``hf-projections sweep`` folder (e.g. ``--preset quick``) and
reports its run count, training/evaluation seconds and the cache build.

    python benchmarks/training_throughput.py [--sweep-dir /tmp/quick1]
    python benchmarks/training_throughput.py --quick
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from hf_projections.training.arguments import default_backbone  # noqa: E402

NAME = "training_throughput"
# Training paths: precision, backbone dropout during training, optimizer (None: what each path had before).
PATHS = {
    "fp32": {"precision": "fp32", "backbone_dropout": None, "optim": None},
    "fp32+no-dropout": {"precision": "fp32", "backbone_dropout": 0.0, "optim": "adamw_torch_fused"},
    "bf16": {"precision": "bf16", "backbone_dropout": None, "optim": None},
    "bf16+no-dropout": {"precision": "bf16", "backbone_dropout": 0.0, "optim": "adamw_torch_fused"},
    "bf16+no-dropout+buckets": {"precision": "bf16", "backbone_dropout": 0.0, "optim": "adamw_torch_fused",
                                "length_buckets": 4},
    "fp32+no-dropout+buckets": {"precision": "fp32", "backbone_dropout": 0.0, "optim": "adamw_torch_fused",
                                "length_buckets": 4},
}


def optimizer_before(mode: str) -> str:
    """The AdamW each path used before ``optim`` existed: the Trainer's default (fused) for ``full``, the cached loop's
    plain ``torch.optim.AdamW`` (per-tensor lists) otherwise."""
    return "adamw_torch_fused" if mode == "full" else "adamw_torch"


def parse_args(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--train-data", default="arguana-genq", help="training pairs (load_training_pairs spec)")
    parser.add_argument("--pairs", type=int, default=256, help="training pairs sampled (seeded)")
    parser.add_argument("--projection", default="ffn2-x2-res")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=2, help="K of the top-K mode")
    parser.add_argument("--full-steps", type=int, default=6)
    parser.add_argument("--top-steps", type=int, default=12)
    parser.add_argument("--head-steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paths", default=None, help=f"comma-separated from {', '.join(PATHS)} (the first is the "
                        "reference; default: fp32,fp32+no-dropout, and the bf16 paths on hardware that runs bf16)")
    parser.add_argument("--sweep-dir", type=Path, default=None, help="a sweep output folder to summarise")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.batch_size, args.rounds = 16, 4, 1
        args.full_steps, args.top_steps, args.head_steps = 2, 2, 4
    if args.paths is not None:
        args.paths = [p.strip() for p in str(args.paths).split(",") if p.strip()]
        if not args.paths or set(args.paths) - set(PATHS):
            parser.error(f"--paths takes names from {', '.join(PATHS)}, got {args.paths}")
    return args


def default_paths() -> list[str]:
    from hf_projections.training.backbone_precision import native_bf16

    return [name for name, path in PATHS.items() if path["precision"] == "fp32" or native_bf16("cpu")]


def train_once(args, backbone: str, rows, mode: str, steps: int, workdir: Path, path: str = "fp32") -> dict:
    """One ``train(...)`` call in a fresh output/cache folder along training path ``path``; returns its
    ``train_summary.json``."""
    from hf_projections.training import ProjectionTrainingArguments, train

    output = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{mode}-{path}-"))
    cached = mode != "full"
    extra = {"query_max_length": 8, "document_max_length": 32} if args.quick else {}
    knobs = PATHS[path]
    train(rows, ProjectionTrainingArguments(
        backbone=backbone, projection=args.projection, mode=mode, max_steps=steps,
        batch_size=args.batch_size, output_dir=str(output / "run"), save_steps=None, logging_steps=max(1, steps),
        use_cache=cached, cache_dir=str(output / "cache") if cached else None, precision=knobs["precision"],
        backbone_precision=knobs["precision"], backbone_dropout=knobs["backbone_dropout"],
        optim=knobs["optim"] or optimizer_before(mode), length_buckets=knobs.get("length_buckets", 1),
        show_progress_bar=False, seed=0,
        projection_layers=[-1],  # the last layer in every mode, as in the committed figures (the head recipe mixes 3)
        **extra,
    ))
    return json.loads((output / "run" / "train_summary.json").read_text(encoding="utf-8"))


def summarise_sweep(folder: Path) -> dict:
    """Run count, seconds and settings of a sweep output folder (``runs.jsonl``, ``settings.json``)."""
    folder = Path(folder)
    runs_path, settings_path = folder / "runs.jsonl", folder / "settings.json"
    if not runs_path.is_file():
        return {"folder": str(folder), "error": "no runs.jsonl (not a sweep folder, or no run finished yet)"}
    records = []
    for line in runs_path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of a killed sweep
            continue
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    eval_seconds = sum(v.get("seconds", 0.0) for r in records for v in r.get("eval", {}).values())
    result = {
        "folder": str(folder),
        "runs": len(records),
        "heads": sorted({r["head"] for r in records}),
        "seeds": sorted({r["seed"] for r in records}),
        "steps_per_run": settings.get("steps"),
        "batch_size": settings.get("batch_size"),
        "max_pairs": settings.get("max_pairs"),
        "mode": settings.get("mode"),
        "train_seconds_total": sum(r.get("train_seconds", 0.0) for r in records),
        "eval_seconds_total": eval_seconds,
        "cache_seconds_last_session": max((r.get("cache_seconds_this_session", 0.0) for r in records), default=0.0),
        "complete": (folder / "results.json").is_file(),
    }
    steps, batch = settings.get("steps"), settings.get("batch_size")
    if steps and batch and result["train_seconds_total"]:
        result["head_samples_per_second"] = len(records) * steps * batch / result["train_seconds_total"]
    finished = folder / "results.json"
    if finished.is_file() and settings_path.is_file():
        # settings.json is written when a session starts, results.json when it ends.
        result["wall_seconds_last_session_estimate"] = os.path.getmtime(finished) - os.path.getmtime(settings_path)
    return result


def run(args) -> dict:
    import torch

    from hf_projections.evaluation import load_training_pairs

    notes = common.setup(args)
    common.quiet_transformers()
    backbone = args.backbone or default_backbone()
    rows = load_training_pairs(args.train_data, max_pairs=args.pairs, seed=0)
    from hf_projections.training.backbone_precision import native_bf16

    top_mode = f"top-{args.top_k}"
    modes = {"full": args.full_steps, top_mode: args.top_steps, "head": args.head_steps}
    paths = args.paths or default_paths()
    keys = [(mode, path) for mode in modes for path in paths]
    summaries: dict[tuple[str, str], list[dict]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as workdir:
        candidates = {key: (lambda k=key: summaries[k].append(train_once(args, backbone, rows, k[0], modes[k[0]],
                                                                        Path(workdir), path=k[1])))
                      for key in keys}
        timings = common.interleaved_timings(candidates, args.rounds, warmup=0)

    results = []
    for (mode, path), runs in summaries.items():
        loop_rates = [run["samples_per_second"] for run in runs]
        with_cache = [run["steps"] * args.batch_size / (run["seconds"] + run.get("cache_seconds", 0.0))
                      for run in runs]
        results.append({
            "mode": mode,
            "path": path,
            "precision": PATHS[path]["precision"],
            "backbone_dropout": PATHS[path]["backbone_dropout"],
            "optim": PATHS[path]["optim"] or optimizer_before(mode),
            "length_buckets": PATHS[path].get("length_buckets", 1),
            "cached": bool(runs[0]["cached"]),
            "steps": runs[0]["steps"],
            "samples_per_step": args.batch_size,
            "samples_per_second": common.median(loop_rates),
            "samples_per_second_all": loop_rates,
            "cache_build_s": common.median([run.get("cache_seconds", 0.0) for run in runs]),
            "samples_per_second_incl_cache": common.median(with_cache),
            "trainable_params": runs[0]["parameters"].get("trainable") if isinstance(runs[0]["parameters"], dict)
            else runs[0]["parameters"],
            "train_call_wall_s": common.spread(timings[(mode, path)]),
        })
    baseline = {row["mode"]: row for row in results if row["path"] == paths[0]}
    full_rate = baseline["full"]["samples_per_second"]
    for row in results:
        row["speedup_vs_full"] = row["samples_per_second"] / full_rate
        # the same mode on the first path listed (fp32: the path as it was), measured in the same rounds
        row["speedup_vs_first_path"] = row["samples_per_second"] / baseline[row["mode"]]["samples_per_second"]
        row["speedup_incl_cache_vs_first_path"] = (row["samples_per_second_incl_cache"]
                                                   / baseline[row["mode"]]["samples_per_second_incl_cache"])
    payload = {
        "description": "training samples/s of full (Trainer) vs cached top-K and head modes",
        "backbone": backbone,
        "data": {"train_data": args.train_data, "pairs": len(rows)},
        "sizes": {"batch_size": args.batch_size, "projection": args.projection, "steps": modes,
                  "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "paths": paths},
        "native_bf16": native_bf16("cpu"),
        "quick": args.quick,
        "notes": notes,
        "rows": results,
        "summary": {f"{row['mode']} {row['path']}": round(row["speedup_vs_first_path"], 2) for row in results},
    }
    if args.sweep_dir is not None:
        payload["sweep"] = summarise_sweep(args.sweep_dir)
    return payload


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(f"{'mode':<8} {'path':<16} {'samples/s':>10} {'x full':>7} {'x first':>7} {'cache s':>8} "
          f"{'samples/s incl. cache':>22}")
    for row in result["rows"]:
        print(f"{row['mode']:<8} {row['path']:<16} {row['samples_per_second']:>10.1f} {row['speedup_vs_full']:>7.1f} "
              f"{row['speedup_vs_first_path']:>7.2f} {row['cache_build_s']:>8.1f} "
              f"{row['samples_per_second_incl_cache']:>22.1f}")
    if "sweep" in result:
        print("sweep:", json.dumps(result["sweep"], indent=1))
    common.write_section(NAME, result, args.output)
    return result


if __name__ == "__main__":
    main()
