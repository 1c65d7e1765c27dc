#!/usr/bin/env bash
# Main job: set up from scratch (scripts/setup.sh), index Corel-1K with the embedded default
# segmentation model (ade20k-mnv2) and search it. CUDA is used when present; on a 2-core CPU the
# 1000 images take about 10 minutes (the label maps are segmented once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA=${SEMCBIR_DATA:-../shared/data}
semcbir index "$DATA/corel1k/images" -o corel1k.sbsi --levels 2
semcbir search corel1k.sbsi "$DATA/corel1k/images/300.jpg" "$DATA/corel1k/images/700.jpg" -k 10
