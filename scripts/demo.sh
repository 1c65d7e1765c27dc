#!/usr/bin/env bash
# Main job: set up from scratch (scripts/setup.sh), index Corel-1K with the embedded default
# segmentation model (ade20k+voc: ADE20K with the Pascal VOC objects painted over it) and
# search it. CUDA is used when present. Re-runnable: a second run finds the index complete
# and only searches; an interrupted run continues where it stopped (the index is saved
# every 256 images).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA=${SEMCBIR_DATA:-../shared/data}
semcbir index "$DATA/corel1k/images" -o corel1k.sbsi --levels 2 --append
semcbir search corel1k.sbsi "$DATA/corel1k/images/300.jpg" "$DATA/corel1k/images/700.jpg" -k 10
echo "Browse it: semcbir serve corel1k.sbsi  (then open http://127.0.0.1:8000)"
