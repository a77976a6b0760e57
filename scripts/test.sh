#!/usr/bin/env bash
# Fresh machine -> green test suite: set up .venv with the dev extras, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "dev,offline"
source scripts/env.sh
python -m pytest tests "$@"
