#!/usr/bin/env bash
# Fresh machine -> the main job: set up .venv (offline MiniLM backbone + plotting), then run the `quick`
# sweep (linear vs the paper's best heads, 2 seeds, trained on arguana-genq, evaluated on SciFact and
# ArguAna test). Extra arguments go to `hf-projections sweep`, e.g. `--preset paper --output runs/paper`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "offline,plot"
source scripts/env.sh
hf-projections sweep --preset quick --output runs/quick "$@"
