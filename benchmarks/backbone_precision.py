"""fp32 vs bf16 for the frozen backbone pass on this machine: what ``backbone_precision="auto"`` decides, and whether
that decision is the faster one.

Measures, side by side in interleaved rounds (medians): a square fp32 and bf16 matmul (GFLOP/s), and the backbone's
forward over one batch of real documents at a fixed length, in fp32 and under bf16 autocast (documents/s), plus how
close the bf16 token states are to the fp32 ones (cosine over the real, unpadded tokens).

Target: ``auto`` picks bf16 exactly where bf16 is the faster pass (its speedup > 1.0x), else fp32.

    python benchmarks/backbone_precision.py            # about a minute on 2 CPU cores
    python benchmarks/backbone_precision.py --quick    # seconds (tiny sizes, smoke test)
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.encode_overhead import document_batch  # noqa: E402
from hf_projections.training.arguments import default_backbone  # noqa: E402

NAME = "backbone_precision"
ISA_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported", "_is_avx512_supported", "_is_avx2_supported")


def parse_args(argv=None):
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="scifact", help="BEIR set whose documents are encoded")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per encoded batch")
    parser.add_argument("--tokens", type=int, default=180, help="every document is padded/truncated to this length")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n x n matmul")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (both precisions once per round)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.tokens, args.matmul_size, args.rounds = 4, 24, 128, 2
    return args


def isa_flags() -> dict[str, bool]:
    """torch.cpu's ISA probes, read as ``native_bf16`` reads them (absent or failing: False)."""
    from hf_projections.training.backbone_precision import cpu_has

    return {name.removeprefix("_is_").removesuffix("_supported"): cpu_has(name) for name in ISA_PROBES}


def matmul_rows(size: int, rounds: int) -> dict[str, dict]:
    import torch

    generator = torch.Generator().manual_seed(0)
    operands = {dtype: (torch.randn(size, size, generator=generator).to(dtype),
                        torch.randn(size, size, generator=generator).to(dtype))
                for dtype in (torch.float32, torch.bfloat16)}
    candidates = {str(dtype).removeprefix("torch."): (lambda a=a, b=b: a @ b) for dtype, (a, b) in operands.items()}
    timings = common.interleaved_timings(candidates, rounds=rounds)
    flops = 2 * size**3
    return {name: {"seconds": common.spread(values), "gflops": flops / common.median(values) / 1e9}
            for name, values in timings.items()}


def encode_rows(model, batch: dict, rounds: int) -> tuple[dict[str, dict], dict[str, float]]:
    import torch

    def forward(bf16: bool):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.backbone(**batch).last_hidden_state.float()

    candidates = {"fp32": lambda: forward(False), "bf16": lambda: forward(True)}
    timings = common.interleaved_timings(candidates, rounds=rounds)
    real = batch["attention_mask"].bool()
    cosine = torch.nn.functional.cosine_similarity(forward(False)[real], forward(True)[real], dim=-1)
    documents = batch["input_ids"].shape[0]
    rows = {name: {"seconds": common.spread(values), "documents_per_s": documents / common.median(values)}
            for name, values in timings.items()}
    # bf16's speedup as the median of per-round ratios (both precisions timed in the same round)
    rows["bf16"]["paired_speedup"] = common.paired_ratio_median(timings["fp32"], timings["bf16"])
    return rows, {"mean": float(cosine.mean()), "min": float(cosine.min())}


def main(argv=None) -> dict:
    import torch

    from hf_projections import ColBERTModel
    from hf_projections.training.backbone_precision import native_bf16, resolve_backbone_precision

    args = parse_args(argv)
    notes = common.setup(args)
    common.quiet_transformers()
    backbone = args.backbone or default_backbone()
    model = ColBERTModel.from_backbone(backbone).eval()
    batch, data = document_batch(model, args.corpus, args.batch_size, args.tokens)
    data["corpus"] = args.corpus

    matmul = matmul_rows(args.matmul_size, args.rounds)
    encode, cosine = encode_rows(model, batch, args.rounds)
    speedup = encode["bf16"]["paired_speedup"]
    auto = resolve_backbone_precision("auto", "cpu")
    faster = "bf16" if speedup > 1.0 else "fp32"
    summary = {"native_bf16": native_bf16("cpu"), "auto": auto, "faster": faster, "encode_speedup_bf16": speedup,
               "matmul_speedup_bf16": matmul["bfloat16"]["gflops"] / matmul["float32"]["gflops"],
               "cosine": cosine, "status": common.status(auto == faster)}
    payload = {"quick": args.quick, "notes": notes, "backbone": str(backbone), "isa": isa_flags(),
               "sizes": {"batch_size": args.batch_size, "tokens": args.tokens, "matmul_size": args.matmul_size,
                         "rounds": args.rounds, "torch_threads": torch.get_num_threads()},
               "data": data, "rows": {"matmul": matmul, "encode": encode}, "summary": summary}
    common.write_section(NAME, payload, args.output)
    print(f"[bench] bf16 vs fp32: encode {speedup:.2f}x, matmul {summary['matmul_speedup_bf16']:.2f}x, cosine "
          f"{cosine['mean']:.5f} (min {cosine['min']:.5f}); auto={auto}, faster={faster}: {summary['status']}")
    return payload


if __name__ == "__main__":
    main()
