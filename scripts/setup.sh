#!/usr/bin/env bash
# Create (or reuse) .venv and install the package with the extras given as arguments (e.g. "dev,offline").
# torch is installed first and pinned to the 2.13.0 CPU wheel: a bare `torch` requirement would pull a
# multi-GB CUDA build. Set HF_PROJECTIONS_TORCH to install another torch spec (e.g. on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-offline}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" >/dev/null 2>&1; then
    pip install -q "${HF_PROJECTIONS_TORCH:-torch==2.13.0}"
fi
pip install -q -e ".[${extras}]"
python -c "import hf_projections" # fail here, not later, when the install is broken
