"""``hf-projections`` command line: list heads, train, evaluate, index and search a corpus, sweep, write model cards of
a sweep, score distillation candidates with a teacher.

Each subcommand parses its arguments here and calls one library function, so everything the CLI does is also
available from Python; ``train``'s flags are generated from ``ProjectionTrainingArguments``, so the two never
drift apart. A user mistake exits with status 2 and one line naming what is wrong and what is allowed. Heavy
imports happen inside the subcommands to keep ``--help`` fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing


def _split_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _number_list(kind: type):
    def parse(value: str) -> list:
        try:
            return [kind(item) for item in _split_list(value)]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {value!r}") from error

    parse.__name__ = f"{kind.__name__}_list"
    return parse


def _positive(kind: type):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {value!r}") from error
        if number < 1:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {value!r}")
        return number

    parse.__name__ = kind.__name__
    return parse


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of the dataclass ``cls`` (``--field-name`` plus ``metadata["aliases"]``, help from
    ``metadata["help"]``), skipping fields with ``metadata["cli"] = False``.

    Unset flags are left out of the parsed namespace (``argparse.SUPPRESS``), so the dataclass' own defaults (and the
    recipe behind its ``None`` fields) apply. bools get ``--x`` / ``--no-x``; lists are comma-separated.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True):
            continue
        kind = hints[field.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        flags = [f"--{field.name.replace('_', '-')}", *field.metadata.get("aliases", [])]
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = field.metadata.get("help", "") + (f" [default: {default}]" if default is not None else "")
        options: dict = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            options["type"] = _number_list(typing.get_args(kind)[0])
            options["metavar"] = "A,B,..."
        elif kind in (int, float, str):
            options["type"] = kind
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no command-line form for type {kind!r}")
        parser.add_argument(*flags, **options)


def cmd_heads(args: argparse.Namespace) -> None:
    from hf_projections.heads import build_projection, describe, list_projections
    from hf_projections.heads.layer_mix import build_layer_mix, layer_mix_width

    catalogue = list_projections()
    layers = args.projection_layers
    # A layer-mix head reads the mix's output: n x d_in wide side by side (concat), d_in after a scalar mix.
    d_in = layer_mix_width(args.layer_mix, len(layers), args.d_in) if layers else args.d_in
    mix_params = sum(p.numel() for p in build_layer_mix(args.layer_mix, len(layers)).parameters()) if layers else 0
    rows = [(name, spec["type"], describe(build_projection(name, d_in, args.d_out)))
            for name, spec in catalogue["presets"].items()]  # build first: a bad size fails before any output
    print(f"{'preset':<24} {'type':<10} {'params':>10} {'MACs/token':>11}   (d_in={args.d_in}, d_out={args.d_out})")
    if layers:
        print(f"  head input: layers {', '.join(map(str, layers))}, {args.layer_mix} mix -> width {d_in}; "
              f"params include the mix's {mix_params}")
    for name, kind, info in rows:
        print(f"{name:<24} {kind:<10} {info['params'] + mix_params:>10,} {info['macs_per_token']:>11,}")
    print("\ntypes and their arguments (defaults):")
    for name, fields in catalogue["types"].items():
        print(f"  {name}: {json.dumps(fields)}")


def cmd_train(args: argparse.Namespace) -> None:
    from hf_projections.training import ProjectionTrainingArguments, train

    names = {field.name for field in dataclasses.fields(ProjectionTrainingArguments)}
    training_args = ProjectionTrainingArguments(**{k: v for k, v in vars(args).items() if k in names})
    train(args.data, training_args)
    print(f"saved the trained model to {training_args.output_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    from hf_projections.evaluation import format_table, load_model, run_evaluation, write_json

    if args.index:
        from hf_projections.evaluation.index_eval import evaluate_index

        names = args.data or [None]
        results = [evaluate_index(args.index, name, split=args.split, batch_size=args.batch_size) for name in names]
        if args.json:
            write_json(args.json, results, index=args.index, split=args.split)
        print(format_table(results))
        return
    if not args.model:
        raise ValueError("eval needs --model DIR (a saved hf-projections model) or --index DIR (a built index)")
    model = load_model(args.model)
    results = run_evaluation(model, args.data or ["scifact"], split=args.split, batch_size=args.batch_size,
                             json_path=args.json)
    print(format_table(results))


def _read_corpus_argument(data: str) -> tuple[dict[str, str], str]:
    """``(corpus, source)`` from a data set name or a ``corpus.jsonl(.gz)`` file."""
    from pathlib import Path

    from hf_projections.data import load_beir
    from hf_projections.data.beir_files import read_corpus

    if data.endswith((".jsonl", ".jsonl.gz")):
        if not Path(data).is_file():
            raise FileNotFoundError(f"no corpus file {data}: give a data set name or a corpus.jsonl(.gz) file")
        return read_corpus(data), ""
    return load_beir(data, "test").corpus, data


def cmd_index(args: argparse.Namespace) -> None:
    from hf_projections.evaluation import load_model
    from hf_projections.retrieval.indexing import build_index

    corpus, source = _read_corpus_argument(args.data)
    model = load_model(args.model)
    options = {key: value for key, value in (("url", args.url), ("collection", args.collection), ("engine", args.engine))
               if value}
    index = build_index(model, corpus, args.path, backend=args.backend, model_name=args.model, source=source,
                        chunk_size=args.chunk_size, batch_size=args.batch_size, options=options)
    print(f"indexed {len(index)} documents into {args.path} ({args.backend})")
    index.close()


def cmd_search(args: argparse.Namespace) -> None:
    from hf_projections.evaluation import load_model
    from hf_projections.retrieval.indexing import open_index, search_texts

    index = open_index(args.index)
    try:
        model = load_model(index.manifest.model)
        scores, ids = search_texts(model, index, args.query, k=args.k)
        for query, row_ids, row_scores in zip(args.query, ids, scores.tolist()):
            print(f"query: {query}")
            for rank, (doc_id, score) in enumerate(zip(row_ids, row_scores), start=1):
                text = " ".join(index.text(doc_id).split())
                print(f"{rank:>3}. {score:8.4f}  {doc_id}  {text[:100]}{'...' if len(text) > 100 else ''}")
    finally:
        index.close()


def cmd_sweep(args: argparse.Namespace) -> None:
    from hf_projections.sweep import SweepSettings, run_sweep
    from hf_projections.training import default_backbone

    settings = SweepSettings.from_preset(args.preset)
    overrides = {
        "backbone": args.backbone,
        "heads": args.heads,
        "seeds": args.seeds,
        "train_data": args.train_data,
        "eval_data": args.eval_data,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "head_lr": args.head_lr,
        "backbone_lr": args.backbone_lr,
        "backbone_dropout": args.backbone_dropout,
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
        "backbone_precision": args.backbone_precision,
        "precision": args.precision,
        "projection_layers": args.projection_layers,
        "layer_mix": args.layer_mix,
    }
    settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
    if settings.backbone is None:
        settings = settings.replace(backbone=default_backbone())
    time_limit = args.time_limit * 60 if args.time_limit is not None else None
    run_sweep(settings, output_dir=args.output, cache_dir=args.cache_dir, time_limit=time_limit)


def cmd_teacher_scores(args: argparse.Namespace) -> None:
    from hf_projections.training.teacher_scores import build_distillation_data

    folder = build_distillation_data(args.data, args.teacher, args.output, num_candidates=args.candidates,
                                     negatives_method=args.negatives_method, max_pairs=args.max_pairs, seed=args.seed,
                                     batch_size=args.batch_size)
    print(f"wrote teacher scores to {folder}; train on them with: hf-projections train --data {folder} --loss distillation")


def cmd_colbertize(args: argparse.Namespace) -> None:
    from hf_projections.colbertize import colbertize
    from hf_projections.evaluation import format_table
    from hf_projections.training import ProjectionTrainingArguments, default_backbone

    arguments = ProjectionTrainingArguments(backbone_precision=args.backbone_precision, seed=args.seed,
                                            max_pairs=args.max_pairs, batch_size=args.batch_size)
    result = colbertize(args.backbone or default_backbone(), args.data, args.output, eval_data=args.eval_data,
                        save=args.save, arguments=arguments, overwrite=args.overwrite)
    if result.results:
        print(format_table(result.results))
    print(f"wrote the ColBERT {args.save} to {result.output_dir} in {result.seconds / 60:.1f} min; load it with "
          f"AutoModel.from_pretrained({str(result.output_dir)!r})")


def cmd_cards(args: argparse.Namespace) -> None:
    from hf_projections.sweep.cards import write_head_cards

    for path in write_head_cards(args.sweep, args.output, sweep_name=args.name):
        print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    from hf_projections.heads.layer_mix import LAYER_MIXES
    from hf_projections.training.arguments import ProjectionTrainingArguments
    from hf_projections.training.backbone_precision import BACKBONE_PRECISIONS

    parser = argparse.ArgumentParser(prog="hf-projections", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    heads = sub.add_parser("heads", help="list projection types and presets with their sizes")
    heads.add_argument("--d-in", type=_positive(int), default=384, help="input width (the backbone's hidden size)")
    heads.add_argument("--d-out", type=_positive(int), default=128, help="output width")
    heads.add_argument("--projection-layers", type=_number_list(int),
                       help="size the heads for a mix of these backbone layers, e.g. -1,-2,-3")
    heads.add_argument("--layer-mix", choices=LAYER_MIXES, default="scalar",
                       help="how --projection-layers combine (concat widens the head's input)")
    heads.set_defaults(func=cmd_heads)

    train = sub.add_parser("train", help="train a projection head (and optionally backbone layers) on pairs",
                           description="Unset options take the measured recipe of the mode (hf_projections.training.recipes).")
    train.add_argument("--data", action="append", required=True,
                       help="training pairs, e.g. arguana-genq or scifact:train (repeatable)")
    add_dataclass_arguments(train, ProjectionTrainingArguments)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="evaluate a saved model (or a built index) on BEIR-format data sets")
    evaluate.add_argument("--model", help="a folder saved by hf-projections (or a Hub id)")
    evaluate.add_argument("--index", help="score this built index instead (its model encodes the queries)")
    evaluate.add_argument("--data", type=_split_list, help="comma-separated data set names (default: scifact; with "
                          "--index, the set it was built from)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--batch-size", type=_positive(int), default=32)
    evaluate.add_argument("--json", help="write the results as JSON here")
    evaluate.set_defaults(func=cmd_eval)

    index = sub.add_parser("index", help="encode a corpus with a model into an index (resumable: run it again to go on)")
    index.add_argument("--model", required=True, help="a folder saved by hf-projections (or a Hub id)")
    index.add_argument("--data", required=True, help="a data set name (its corpus) or a corpus.jsonl(.gz) file")
    index.add_argument("--backend", choices=("exact", "qdrant", "muvera", "voyager"), default="exact",
                       help="exact: safetensors shards, exact MaxSim; qdrant: a Qdrant collection (embedded by default); "
                       "muvera: Qdrant with MUVERA candidates re-ranked by MaxSim; voyager: exact's shards plus a "
                       "token-HNSW graph for candidates, re-ranked by MaxSim")
    index.add_argument("--path", required=True, help="the index folder")
    index.add_argument("--engine", choices=("edge", "local"),
                       help="qdrant/muvera embedded engine: edge (Qdrant Edge, in-process Rust; the default) or local "
                       "(qdrant-client's embedded mode)")
    index.add_argument("--url", help="qdrant/muvera: a Qdrant server or cluster instead of an embedded engine")
    index.add_argument("--collection", help="qdrant: the collection name (default: documents)")
    index.add_argument("--chunk-size", type=_positive(int), default=512, help="documents per resumable build step")
    index.add_argument("--batch-size", type=_positive(int), default=32)
    index.set_defaults(func=cmd_index)

    search = sub.add_parser("search", help="search a built index with query texts")
    search.add_argument("--index", required=True, help="the index folder")
    search.add_argument("--k", type=_positive(int), default=10)
    search.add_argument("query", nargs="+", help="one or more query texts")
    search.set_defaults(func=cmd_search)

    sweep = sub.add_parser("sweep", help="train and evaluate a grid of heads x seeds under one budget")
    sweep.add_argument("--preset", default="quick",
                       help="quick | paper | matryoshka | data-8k | data-32k | data-120k | layers2-scalar | "
                       "layers2-concat | layers3-scalar | layers3-concat | gpu-paper")
    sweep.add_argument("--output", default="runs/sweep")
    sweep.add_argument("--cache-dir", help="backbone feature cache (default: OUTPUT/cache); shareable between sweeps")
    sweep.add_argument("--backbone")
    sweep.add_argument("--heads", type=_split_list, help="comma-separated presets (overrides the preset's grid)")
    sweep.add_argument("--seeds", type=_number_list(int))
    sweep.add_argument("--train-data", type=_split_list, help="training set(s), comma-separated (mixed: one set per batch)")
    sweep.add_argument("--eval-data", type=lambda v: [] if v.strip() == "none" else _split_list(v),
                       help="comma-separated BEIR sets scored on their test split; 'none' with --validation-queries")
    sweep.add_argument("--steps", type=int)
    sweep.add_argument("--batch-size", type=int)
    sweep.add_argument("--head-lr", type=float, help="the head's learning rate (default: the recipe's)")
    sweep.add_argument("--backbone-lr", "--lr", type=float,
                       help="learning rate of the trained backbone layers (top-K modes; default: the recipe's)")
    sweep.add_argument("--backbone-dropout", type=float,
                       help="top-K: dropout of the training backbone layers (0: off; default: the backbone's own)")
    sweep.add_argument("--temperature", type=float)
    sweep.add_argument("--max-pairs", type=int)
    sweep.add_argument("--train-threads", type=int, help="torch threads while training (default: all cores)")
    sweep.add_argument("--backbone-precision", choices=BACKBONE_PRECISIONS,
                       help="the frozen backbone pass that fills the cache (auto: bf16 on a CPU with AMX or AVX512-BF16, or a bf16 GPU)")
    # The choices are sweep.settings.SWEEP_PRECISIONS, written out: importing the sweep here slows every command.
    sweep.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                       help="training autocast (auto: bf16 on a GPU that has it, fp32 on the CPU; bf16: autocast on the CPU too)")
    sweep.add_argument("--projection-layers", type=_number_list(int),
                       help="the head reads a mix of these layers, e.g. -1,-2,-3 (head mode; cached side by side)")
    sweep.add_argument("--layer-mix", choices=LAYER_MIXES, help="how --projection-layers combine (default scalar)")
    sweep.add_argument("--time-limit", type=_positive(float),
                       help="minutes: start no run that would end past it (the same command later goes on)")
    sweep.add_argument("--max-eval-queries", type=int, help="seeded sample of test queries per set (full corpus)")
    sweep.add_argument("--validation-queries", type=int,
                       help="hold out this many training queries and report metrics on them (for choices)")
    sweep.add_argument("--branch-init", choices=("random", "zero"),
                       help="zero: residual heads start as the same seed's linear head")
    sweep.add_argument("--mode", help="head (frozen backbone) | top-K (last K backbone layers + head)")
    sweep.add_argument("--matryoshka-dims", type=_number_list(int),
                       help="train and evaluate nested dims too, e.g. 32,64,96,128 (ascending, each <= the dim)")
    sweep.add_argument("--matryoshka-weights", type=_number_list(float),
                       help="one loss weight per trained dim (the Matryoshka dims plus the full dim); default 1 each")
    sweep.add_argument("--markers", action=argparse.BooleanOptionalAction, default=None,
                       help="ColBERT's [unused0]/[unused1] query/document marker tokens (default: the recipe's)")
    sweep.add_argument("--augment-queries", action=argparse.BooleanOptionalAction, default=None,
                       help="pad queries with attended [MASK] tokens (default: the recipe's)")
    sweep.set_defaults(func=cmd_sweep)

    colbertize = sub.add_parser("colbertize", help="turn a dense encoder into a ColBERT model: train a projection head "
                                "on its frozen token states (the best measured head-only recipe), evaluate, write it")
    colbertize.add_argument("--backbone", help="the encoder, a folder or Hub id (default: the offline MiniLM)")
    colbertize.add_argument("--data", action="append", required=True, help="training pairs (repeatable)")
    colbertize.add_argument("--output", required=True, help="the folder to write")
    colbertize.add_argument("--eval-data", type=lambda v: [] if v.strip() == "none" else _split_list(v),
                            default=["scifact"], help="BEIR sets scored on their test split ('none': skip)")
    colbertize.add_argument("--save", choices=("adapter", "model"), default="adapter",
                            help="adapter: the head alone (default, AutoModel loads it with the encoder); model: a full copy")
    colbertize.add_argument("--max-pairs", type=_positive(int), help="train on a seeded sample of this many pairs")
    colbertize.add_argument("--batch-size", type=_positive(int), default=32, help="training pairs per step")
    colbertize.add_argument("--seed", type=int, default=0)
    colbertize.add_argument("--backbone-precision", choices=BACKBONE_PRECISIONS, default="auto",
                            help="the frozen backbone pass (auto: bf16 on a CPU with AMX or AVX512-BF16, or a bf16 GPU)")
    colbertize.add_argument("--overwrite", action="store_true", help="replace a model already in --output")
    colbertize.set_defaults(func=cmd_colbertize)

    teacher = sub.add_parser("teacher-scores", help="mine candidates per training pair, score them with a teacher, "
                             "write PyLate's distillation layout (for train --loss distillation)")
    teacher.add_argument("--teacher", required=True, help="an hf-projections model or a sentence-transformers CrossEncoder")
    teacher.add_argument("--data", action="append", required=True, help="training pairs (repeatable)")
    teacher.add_argument("--output", required=True, help="folder for queries.jsonl, documents.jsonl, train.jsonl")
    teacher.add_argument("--candidates", type=_positive(int), default=8, help="candidates per query: the positive + N-1 negatives")
    teacher.add_argument("--negatives-method", choices=("bm25", "model"), default="bm25",
                         help="how candidates are mined (model: the teacher itself ranks each source's passages)")
    teacher.add_argument("--max-pairs", type=_positive(int), help="sample at most this many pairs per data set")
    teacher.add_argument("--batch-size", type=_positive(int), default=32)
    teacher.add_argument("--seed", type=int, default=0)
    teacher.set_defaults(func=cmd_teacher_scores)

    cards = sub.add_parser("cards", help="write a model card per head of a finished sweep (mean ± std over seeds)")
    cards.add_argument("--sweep", required=True, help="the sweep's output folder (with results.json)")
    cards.add_argument("--output", required=True, help="folder for <head>.md cards")
    cards.add_argument("--name", help="the sweep's name in the cards (default: the folder name)")
    cards.set_defaults(func=cmd_cards)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse printed the usage and its error (or --help): return its status
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        args.func(args)
    except (ValueError, OSError) as error:  # bad input (FileNotFoundError is an OSError): one line, no traceback
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"hf-projections {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()
    return 0


def _close_process_group() -> None:
    """Under `accelerate launch`/torchrun the Trainer opens a process group that nobody closes; gloo's threads still
    running at interpreter exit can abort a rank (SIGABRT) after training has succeeded."""
    torch = sys.modules.get("torch")  # only if the command imported it: --help stays fast
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
