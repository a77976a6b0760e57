#!/usr/bin/env bash
# On the lent GPU machine, from the repository root (see benchmarks/gpu/README.md for the two `run` calls).
#   stage:  carry .gpu/backbone and .whl; installs the wheels into /tmp/site and restores the backbone to fp32 in
#           /tmp/hfp-backbone (both stay while the machine is warm).
#   grid:   carry .gpu/data; runs the gpu-paper preset into /tmp/gpu-paper (resuming from the committed
#           benchmarks/results/gpu-paper/runs.jsonl when there is one) and copies the summaries to $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="/tmp/site:$PWD"
case "${1:-}" in
  stage)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    python3 - <<'PY'
import torch
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained(".gpu/backbone", dtype=torch.float32)
model.save_pretrained("/tmp/hfp-backbone")
AutoTokenizer.from_pretrained(".gpu/backbone").save_pretrained("/tmp/hfp-backbone")
print("backbone", model.dtype, sum(p.numel() for p in model.parameters()))
PY
    nvidia-smi --query-gpu=name,memory.total --format=csv
    ;;
  grid)
    limit="${2:-420}"
    mkdir -p /tmp/gpu-paper
    if [ -f benchmarks/results/gpu-paper/runs.jsonl ] && [ ! -f /tmp/gpu-paper/runs.jsonl ]; then
      cp benchmarks/results/gpu-paper/runs.jsonl benchmarks/results/gpu-paper/settings.json /tmp/gpu-paper/
    fi
    status=0
    HF_PROJECTIONS_DATA="$PWD/.gpu/data" TQDM_DISABLE=1 python3 benchmarks/gpu/paper_grid.py --output /tmp/gpu-paper \
      --cache-dir /tmp/gpu-cache --backbone /tmp/hfp-backbone --time-limit "$limit" >"$OUT/log.txt" 2>&1 || status=$?
    tail -n 40 "$OUT/log.txt"
    for f in runs.jsonl settings.json results.json table.md results.csv; do
      if [ -f "/tmp/gpu-paper/$f" ]; then cp "/tmp/gpu-paper/$f" "$OUT/"; fi
    done
    exit "$status"
    ;;
  *) echo "usage: $0 stage | grid [time limit in seconds]" >&2; exit 2 ;;
esac
