"""The paper's grid end-to-end in one short GPU run: the ``gpu-paper`` sweep preset (linear, ffn2-x2, ffn2-x2-res,
ffn2-x2-res-identity, geglu-x2-res, swiglu-x2-res x 3 seeds; top-6 mode, i.e. all six MiniLM layers train with the
head; all 120,610 squad + nq-qed + arguana-genq pairs, one epoch at batch 64, bf16; every test query of SciFact,
ArguAna and SQuAD dev), written as any CPU sweep is (``runs.jsonl``, ``results.json``, ``table.md``, run cards).

Stops starting runs when ``--time-limit`` would be passed, and goes on from ``runs.jsonl`` when run again, so the
grid can be finished over several GPU commands (or sessions: carry the output folder back). The steps to run it on
a lent GPU machine, and its size limits, are in ``benchmarks/gpu/README.md``.

    python benchmarks/gpu/paper_grid.py --output runs/gpu-paper --backbone /tmp/backbone --time-limit 420
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable from a plain checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hf_projections.sweep import PRESETS, run_sweep  # noqa: E402
from hf_projections.training import default_backbone  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/gpu-paper"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: OUTPUT/cache)")
    parser.add_argument("--backbone", default=None, help="encoder folder (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds: start no run that would end later")
    parser.add_argument("--heads", default=None, help="comma-separated heads (default: the preset's six)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--device", default=None, help="cuda (default when there is a GPU) or cpu")
    return parser.parse_args(argv)


def main(argv=None, **changes) -> list[dict]:
    """Run the preset (``changes`` replace its fields: the CPU dry run in the tests uses a tiny budget)."""
    args = parse_args(argv)
    started = time.perf_counter()
    backbone = args.backbone or changes.pop("backbone", None) or default_backbone()
    settings = PRESETS["gpu-paper"].replace(backbone=backbone, **changes)
    if args.heads:
        settings = settings.replace(heads=[h.strip() for h in args.heads.split(",") if h.strip()])
    if args.seeds:
        settings = settings.replace(seeds=[int(s) for s in args.seeds.split(",")])
    if args.device:
        settings = settings.replace(device=args.device)
    records = run_sweep(settings, args.output, cache_dir=args.cache_dir, time_limit=args.time_limit)
    print(f"[gpu-paper] {len(records)} runs in {args.output} after {time.perf_counter() - started:.0f} s")
    return records


if __name__ == "__main__":
    main()
