#!/usr/bin/env bash
# Main job: set up from scratch (scripts/setup.sh) and run the end-to-end demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python examples/msrc_demo.py "$@"
