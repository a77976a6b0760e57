"""Train a ColBERT with a better projection head (the paper's ``ffn2-x2-res`` by default).

Runs ``hf_projections.training.train`` on BEIR training pairs ($HF_PROJECTIONS_DATA, default ``scifact:train``)
and saves a model that loads with ``AutoModel.from_pretrained(path, trust_remote_code=True)``. The defaults
finish in a few minutes on a laptop CPU; raise ``--max-pairs``/``--epochs`` (and use a GPU) for real runs.

    python examples/train_colbert.py
    python examples/train_colbert.py --projection glu-x2-res --mode head --max-pairs 2000 --epochs 3
    python examples/train_colbert.py --data scifact:train arguana-genq --mode top-2 --output runs/ffn2-x2-res
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_projections import describe
from hf_projections.training import ProjectionTrainingArguments, train

SAMPLE_QUERY = "what causes scurvy?"
SAMPLE_DOCUMENTS = ["Scurvy is a disease resulting from a lack of vitamin C.",
                    "The mitochondrion is the powerhouse of the cell."]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", help="encoder name/path (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--projection", default="ffn2-x2-res", help="head preset or JSON spec")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--data", nargs="+", default=["scifact:train"], help="training specs ('<set>:<split>' or '<set>')")
    parser.add_argument("--mode", default="full", help="'full', 'head' (backbone frozen) or 'top-K'")
    parser.add_argument("--max-pairs", type=int, default=128, help="pairs sampled per data spec")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--query-max-length", type=int, default=32)
    parser.add_argument("--document-max-length", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs/train-colbert")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    projection = json.loads(args.projection) if args.projection.lstrip().startswith("{") else args.projection
    training_args = ProjectionTrainingArguments(
        backbone=args.backbone,
        projection=projection,
        mode=args.mode,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_pairs=args.max_pairs,
        dim=args.dim,
        seed=args.seed,
        output_dir=args.output,
        save_steps=None,
        query_max_length=args.query_max_length,
        document_max_length=args.document_max_length,
    )  # learning rates, temperature and query tokens: the mode's measured recipe
    model = train(list(args.data), training_args)
    head = describe(model.projection)
    summary_path = Path(args.output) / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    print(f"trained a {head['type']} head ({head['params']:,} params) in mode {args.mode}: "
          f"{summary.get('steps', '?')} steps, final loss {summary.get('loss', '?')}")
    scores = model.score([SAMPLE_QUERY], SAMPLE_DOCUMENTS)[0].tolist()
    print(f"{SAMPLE_QUERY!r}: " + ", ".join(f"{s:.2f}" for s in scores))
    print(f"saved to {args.output}; evaluate it with: python examples/evaluate_beir.py --model {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
