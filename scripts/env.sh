# Sourced by scripts/run.sh and scripts/test.sh after set-up: the venv, offline Hub, and the data folder.
# shellcheck disable=SC1091
source .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${HF_PROJECTIONS_DATA:-}" ] && [ -d ../shared/data ]; then
    HF_PROJECTIONS_DATA="$(cd ../shared/data && pwd)"
    export HF_PROJECTIONS_DATA
fi
