"""Precision of the frozen backbone pass that fills a feature cache: ``fp32`` (exact), ``bf16`` (autocast) or
``auto`` (bf16 where the hardware runs it natively, else fp32).

On a CPU with AMX tiles (Intel Sapphire Rapids and later) the bf16 pass of MiniLM runs 2.7x faster than fp32, with
token states at cosine 0.99997 of the fp32 ones; on a CPU with AVX512-BF16 dot-product instructions (measured on an
AMD EPYC Zen 4) it runs 2.2x faster (bf16 matmuls 2.8x; ``benchmarks/backbone_precision.py``), at cosine 0.99997.
On CPUs with neither (AVX2 only), bf16 is emulated and up to 7x *slower*, hence ``auto``. The precision is part of a
cache's key, so bf16 and fp32 states never mix.
"""

from __future__ import annotations

import contextlib

import torch

from hf_projections.checks import one_of

BACKBONE_PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 matmuls run natively: a GPU that supports bf16, or a CPU with AMX tiles or AVX512-BF16."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has("_is_amx_tile_supported") or cpu_has("_is_avx512_bf16_supported")
    return False


def cpu_has(probe_name: str) -> bool:
    """One of torch.cpu's ISA probes (private in torch 2.x, so probed defensively: absent or failing means no)."""
    probe = getattr(torch.cpu, probe_name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def resolve_backbone_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` or ``bf16``: ``auto`` becomes ``bf16`` where :func:`native_bf16` holds, else ``fp32``."""
    one_of("backbone_precision", precision, BACKBONE_PRECISIONS)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def backbone_autocast(precision: str, device: torch.device | str):
    """The context a frozen backbone pass runs in: bf16 autocast for ``bf16``, nothing for ``fp32``."""
    device = torch.device(device)
    if resolve_backbone_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
