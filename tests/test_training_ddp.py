"""Data-parallel training on the CPU: 2 processes (torchrun, gloo) finish and agree on the final weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import datasets, torch
    from transformers import TrainingArguments
    from hf_projections import ColBERTModel
    from hf_projections.training import ProjectionTrainer

    torch.set_num_threads(1)
    backbone, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = ColBERTModel.from_backbone(backbone, projection="ffn2-x2-res", dim=16, query_max_length=8,
                                       document_max_length=16)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    words = "the a of cat dog gene protein cell claim study cancer risk drug effect".split()
    rows = datasets.Dataset.from_dict({
        "query": [f"{words[i % 14]} {words[(3 * i) % 14]}" for i in range(16)],
        "positive": [f"{words[(3 * i) % 14]} {words[i % 14]} {words[(5 * i) % 14]}" for i in range(16)],
    })
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=2, max_steps=4, learning_rate=1e-3,
                             save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                             remove_unused_columns=False, dataloader_drop_last=True, ddp_backend="gloo")
    trainer = ProjectionTrainer(model=model, args=args, train_dataset=rows, head_learning_rate=1e-2)
    trainer.train()
    digest = hashlib.sha256()
    changed = False
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
        changed |= not torch.equal(tensor, initial[name])
    rank = int(os.environ["RANK"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump({"world_size": trainer.args.world_size, "digest": digest.hexdigest(), "changed": changed}, handle)
    # Without this, gloo's threads can still be running at interpreter exit and abort one rank (SIGABRT).
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_cpu_training_agrees(tiny_backbone, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(script), tiny_backbone, str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"torchrun failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(report["world_size"] == 2 and report["changed"] for report in reports)
    assert reports[0]["digest"] == reports[1]["digest"]
