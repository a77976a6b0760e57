"""The one optimisation loop of the package, and the pieces ``ProjectionTrainer`` shares with it.

Cached-feature training (``head`` / ``top-K`` from a feature cache) and Starbucks training from pooled features
run :func:`run_training_loop`: AdamW over head / backbone parameter groups, linear warm-up and decay, gradient
clipping and accumulation, a stop on a non-finite loss, a JSONL log line every ``logging_steps``. At a few
milliseconds per step the ``transformers.Trainer`` machinery would dominate, so these paths use a plain loop;
the Trainer path (``ProjectionTrainer``) builds its optimizer from the same :func:`build_parameter_groups` and
checks its loss with the same :func:`check_finite`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import get_parameter_names

from hf_projections.training.dropout import backbone_dropout
from hf_projections.training.modes import eval_frozen_modules, head_parameter_ids


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss is NaN or infinite: training stops before that step updates any weight
    or writes any checkpoint."""


def check_finite(loss: torch.Tensor, step: int | None = None) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is NaN or infinite."""
    if not bool(torch.isfinite(loss.detach()).all()):
        where = f" at step {step}" if step is not None else ""
        raise NonFiniteLossError(
            f"training loss is {loss.detach().float().item()}{where}; stopped before updating weights or writing a "
            "checkpoint. Lower the learning rate, turn off fp16 (use bf16 or fp32), or check the data for empty "
            "texts; resume from the last checkpoint once fixed."
        )


# --------------------------------------------------------------------------- parameter groups


def decay_parameter_names(model: nn.Module) -> set[str]:
    """Parameter names that get weight decay (not biases, not norms), as ``transformers.Trainer`` decides."""
    forbidden = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    return set(get_parameter_names(model, [nn.LayerNorm], forbidden))


def build_parameter_groups(
    model: nn.Module,
    head_lr: float,
    backbone_lr: float | None,
    weight_decay: float,
    decay_names: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer param groups: (backbone | head) x (decay | no decay), trainable parameters only.

    Each group carries ``"group": "backbone" | "head"``, which the training logs use to name its learning rate.
    Group order is fixed, so an optimizer state saved in a checkpoint maps back onto the same groups on resume.
    Raises ``ValueError`` when backbone parameters train but ``backbone_lr`` is None, or when nothing trains.
    """
    decay_names = decay_parameter_names(model) if decay_names is None else decay_names
    head_ids = head_parameter_ids(model)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if id(parameter) in head_ids else "backbone"
        buckets.setdefault((part, name in decay_names), []).append(parameter)
    if backbone_lr is None and any(part == "backbone" for part, _ in buckets):
        raise ValueError("backbone parameters are trainable but no backbone learning rate was given (backbone_lr)")
    groups = []
    for part, lr in (("backbone", backbone_lr), ("head", head_lr)):
        for decay in (True, False):
            params = buckets.get((part, decay))
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": weight_decay if decay else 0.0, "group": part})
    if not groups:
        raise ValueError("no trainable parameters: check the training mode (set_trainable)")
    return groups


def adamw_options(optim: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """``torch.optim.AdamW`` keyword arguments for transformers' optimizer name: ``adamw_torch_fused`` is one fused
    kernel per step where torch has it for the parameters' device (CPU from torch 2.4, CUDA) and the usual
    per-tensor-list update elsewhere; ``adamw_torch`` is always the latter."""
    if optim != "adamw_torch_fused":
        return {}
    devices = {p.device.type for group in groups for p in group["params"]}
    floating = all(p.is_floating_point() for group in groups for p in group["params"])
    cpu_ok = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)
    return {"fused": True} if floating and devices <= ({"cpu", "cuda"} if cpu_ok else {"cuda"}) else {}


# --------------------------------------------------------------------------- the log


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (and flush: a killed run keeps every line written so far)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=float) + "\n")
        handle.flush()


def learning_rates(optimizer: torch.optim.Optimizer, key: str = "lr", prefix: str = "lr_") -> dict[str, float]:
    """``{"lr_backbone": ..., "lr_head": ...}``: the current learning rate of each named parameter group
    (``key="initial_lr"``: the peak rate the scheduler warms up to and decays from)."""
    rates: dict[str, float] = {}
    for group in optimizer.param_groups:
        rates.setdefault(f"{prefix}{group.get('group', 'all')}", group.get(key, group["lr"]))
    return rates


# --------------------------------------------------------------------------- the loop


def run_training_loop(
    model: nn.Module,
    batches: Callable[[], Iterable[Any]],
    compute_loss: Callable[[Any], torch.Tensor],
    args,
    total_steps: int,
    n_rows: int,
    batch_rows: Callable[[Any], int],
    log_path: str | os.PathLike | None = None,
    description: str = "Training",
) -> dict[str, Any]:
    """Train ``model``'s trainable parameters for ``total_steps`` optimizer steps; the model is updated in place.

    Args:
        batches: returns a fresh iterable of batches (one epoch); called again whenever it runs out.
        compute_loss: the scalar training loss of one batch.
        args: a resolved ``ProjectionTrainingArguments``: ``head_lr``, ``backbone_lr``, ``weight_decay``,
            ``warmup_ratio``, ``max_grad_norm``, ``gradient_accumulation_steps``, ``logging_steps``, ``seed``,
            ``show_progress_bar``.
        n_rows: training rows per epoch (the log's ``epoch`` is samples seen / ``n_rows``).
        batch_rows: rows in one batch.
        log_path: JSONL file, one line per ``logging_steps`` steps: step, epoch, loss (mean over the window) and the
            learning rate of each parameter group (``lr_head``, ``lr_backbone``).

    Returns:
        ``{"steps", "samples", "seconds", "samples_per_second", "steps_per_second", "loss", "learning_rates"}``
        (``loss``: the mean of the last logging window; ``learning_rates``: the peak rate per parameter group as
        the optimizer got it, ``{"head": ..., "backbone": ...}``).
    """
    groups = build_parameter_groups(model, args.head_lr, args.backbone_lr, args.weight_decay)
    optimizer = torch.optim.AdamW(groups, **adamw_options(getattr(args, "optim", "adamw_torch"), groups))
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(args.warmup_ratio * total_steps), total_steps)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    accumulation = args.gradient_accumulation_steps

    torch.manual_seed(args.seed)
    progress = tqdm(total=total_steps, disable=not args.show_progress_bar or total_steps < 20, desc=description)
    model.train()
    eval_frozen_modules(model)
    step, micro, samples, window, last_loss = 0, 0, 0, [], float("nan")
    started = time.perf_counter()
    with backbone_dropout(model, getattr(args, "backbone_dropout", None)):  # the backbone's own again on exit
        try:
            while step < total_steps:
                for batch in batches():
                    value = compute_loss(batch)
                    check_finite(value, step + 1)
                    (value / accumulation).backward()
                    window.append(value.item())
                    samples += batch_rows(batch)
                    micro += 1
                    if micro % accumulation:
                        continue
                    if args.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    progress.update(1)
                    if step % args.logging_steps == 0 or step == total_steps:
                        record = {"step": step, "epoch": samples / n_rows, "loss": sum(window) / len(window),
                                  **learning_rates(optimizer)}
                        progress.set_postfix(loss=f"{record['loss']:.4f}")
                        if log_path is not None:
                            append_jsonl(log_path, record)
                        last_loss, window = record["loss"], []
                    if step >= total_steps:
                        break
        finally:
            progress.close()
            model.eval()
    seconds = time.perf_counter() - started
    return {
        "steps": step,
        "samples": samples,
        "seconds": seconds,
        "samples_per_second": samples / seconds if seconds else float("inf"),
        "steps_per_second": step / seconds if seconds else float("inf"),
        "loss": last_loss,
        "learning_rates": learning_rates(optimizer, key="initial_lr", prefix=""),
    }
