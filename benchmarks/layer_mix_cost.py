"""What layer-mix input costs: encode time vs the same head on the last layer, and the head-mode feature cache.

Encode: one ``ColBERTModel`` per (head, input) encodes one fixed batch of real SciFact documents padded/truncated to
180 tokens, pre-tokenised; every round times every model once in a rotated order; medians and per-round (paired)
ratios against the same head reading the last layer. ``last-control`` (a second last-layer linear model) shows the
noise floor. The mix type matters for the head (``concat`` widens its input), the layer count for the backbone pass
(hooks capture the lower layers' states during the same forward).

Cache: the head-mode feature cache of ``--cache-docs`` documents (fp16, as training builds it) for the last layer
and for 2 and 3 layers side by side (the mix type does not change the cache): bytes on disk and build seconds,
each built into a fresh folder, interleaved over ``--cache-rounds`` rounds.

    python benchmarks/layer_mix_cost.py            # a few minutes on 2 CPU cores
    python benchmarks/layer_mix_cost.py --quick    # seconds (tiny sizes, smoke test)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.encode_overhead import document_batch  # noqa: E402
from hf_projections.training.arguments import default_backbone  # noqa: E402

NAME = "layer_mix_cost"
HEADS = ("linear", "ffn2-x2-res")
# input name -> (projection_layers, layer_mix); None reads the last layer only
INPUTS = {
    "last": (None, "scalar"),
    "layers2-scalar": ([-1, -2], "scalar"),
    "layers2-concat": ([-1, -2], "concat"),
    "layers3-scalar": ([-1, -2, -3], "scalar"),
    "layers3-concat": ([-1, -2, -3], "concat"),
}
CACHE_INPUTS = {"last": None, "layers2": [-1, -2], "layers3": [-1, -2, -3]}
CONTROL = "last-control"


def parse_args(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="scifact", help="BEIR set whose documents are encoded and cached")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per encoded batch")
    parser.add_argument("--tokens", type=int, default=180, help="every document is padded/truncated to this length")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10, help="timed encode rounds (every model once per round)")
    parser.add_argument("--cache-docs", type=int, default=512, help="documents in each timed cache build")
    parser.add_argument("--cache-rounds", type=int, default=2, help="rounds of cache builds (every input once)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.tokens, args.rounds, args.cache_docs, args.cache_rounds = 4, 24, 2, 16, 1
    return args


def _models(backbone: str, dim: int) -> dict:
    import torch

    from hf_projections import ColBERTModel

    models = {}
    for head in HEADS:
        for name, (layers, mix) in INPUTS.items():
            torch.manual_seed(0)
            models[(head, name)] = ColBERTModel.from_backbone(
                backbone, projection=head, dim=dim, projection_layers=layers, layer_mix=mix).eval()
    torch.manual_seed(1)
    models[("linear", CONTROL)] = ColBERTModel.from_backbone(backbone, projection="linear", dim=dim).eval()
    return models


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_cache(backbone: str, texts: list[str], dim: int, rounds: int) -> list[dict]:
    """Build seconds and disk bytes of the head-mode cache of ``texts`` for each of :data:`CACHE_INPUTS`."""
    import time

    from hf_projections import ColBERTModel
    from hf_projections.training.cache import build_feature_cache
    from hf_projections.training.cached_training import cache_layer_for_mode

    models = {name: ColBERTModel.from_backbone(backbone, projection="linear", dim=dim, projection_layers=layers).eval()
              for name, layers in CACHE_INPUTS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    sizes: dict[str, int] = {}
    for round_number in range(rounds):
        names = list(models)
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            model = models[name]
            with tempfile.TemporaryDirectory(prefix="layer-mix-cache-") as folder:
                started = time.perf_counter()
                build_feature_cache(model, texts, is_query=False, cache_dir=folder,
                                    layer=cache_layer_for_mode(model, "head"), show_progress_bar=False)
                seconds[name].append(time.perf_counter() - started)
                sizes[name] = _folder_bytes(Path(folder))
    base_seconds, base_bytes = common.median(seconds["last"]), sizes["last"]
    return [{"input": name, "layers": CACHE_INPUTS[name] or [-1], "bytes": sizes[name],
             "bytes_ratio": sizes[name] / base_bytes, "build_s": common.spread(seconds[name]),
             "build_ratio": common.median(seconds[name]) / base_seconds,
             "paired_build_ratio": common.paired_ratio_median(seconds[name], seconds["last"])} for name in models]


def run(args) -> dict:
    import torch

    from hf_projections.evaluation import load_beir
    from hf_projections.heads import describe

    notes = common.setup(args)
    common.quiet_transformers()
    backbone = args.backbone or default_backbone()
    models = _models(backbone, args.dim)
    batch, data = document_batch(next(iter(models.values())), args.corpus, args.batch_size, args.tokens)

    def encode_with(model):
        def call():
            with torch.inference_mode():
                return model(**batch).token_embeddings
        return call

    labels = {key: f"{key[0]} / {key[1]}" for key in models}
    timings = common.interleaved_timings({labels[key]: encode_with(model) for key, model in models.items()},
                                         args.rounds)
    rows = []
    for (head, name), model in models.items():
        base = timings[labels[(head, "last")]]
        mix_params = sum(p.numel() for p in model.layer_mix.parameters()) if model.layer_mix is not None else 0
        rows.append({
            "head": head,
            "input": name,
            "head_params": describe(model.projection)["params"],
            "layer_mix_params": mix_params,
            "encode_s": common.spread(timings[labels[(head, name)]]),
            "ratio_vs_last": common.median(timings[labels[(head, name)]]) / common.median(base),
            "paired_ratio_vs_last": common.paired_ratio_median(timings[labels[(head, name)]], base),
        })
    texts = list(load_beir(args.corpus).corpus.values())[:args.cache_docs]
    cache_rows = measure_cache(backbone, texts, args.dim, args.cache_rounds)
    control = next(row for row in rows if row["input"] == CONTROL)
    return {
        "description": "encode time and head-mode cache cost of layer-mix input vs the last layer",
        "backbone": backbone,
        "data": {"corpus": args.corpus, **data, "cache_documents": len(texts)},
        "sizes": {"batch_size": args.batch_size, "tokens": args.tokens, "dim": args.dim, "rounds": args.rounds,
                  "cache_rounds": args.cache_rounds, "torch_threads": torch.get_num_threads(),
                  "hidden_size": next(iter(models.values())).config.hidden_size},
        "quick": args.quick,
        "notes": notes,
        "rows": rows,
        "cache_rows": cache_rows,
        "summary": {"noise_floor": abs(control["paired_ratio_vs_last"] - 1),
                    "max_encode_overhead": max(row["paired_ratio_vs_last"] for row in rows) - 1},
    }


def print_table(result: dict) -> None:
    print(f"{'head':<12} {'input':<15} {'ratio':>7} {'paired':>7} {'median s':>9} {'mix params':>10}")
    for row in result["rows"]:
        print(f"{row['head']:<12} {row['input']:<15} {row['ratio_vs_last']:>7.3f} {row['paired_ratio_vs_last']:>7.3f} "
              f"{row['encode_s']['median']:>9.4f} {row['layer_mix_params']:>10}")
    for row in result["cache_rows"]:
        print(f"cache {row['input']:<8} {row['bytes'] / 2**20:8.1f} MiB ({row['bytes_ratio']:.2f}x)  build "
              f"{row['build_s']['median']:.1f} s ({row['paired_build_ratio']:.2f}x)")


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print_table(result)
    common.write_section(NAME, result, args.output)
    return result


if __name__ == "__main__":
    main()
