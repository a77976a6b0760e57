#!/usr/bin/env bash
# Fresh machine -> green test suite: set up .venv with the dev extras, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "dev,offline"
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${HF_PROJECTIONS_DATA:-}" ] && [ -d ../shared/data ]; then
    export HF_PROJECTIONS_DATA="$(cd ../shared/data && pwd)"
fi
python -m pytest tests "$@"
