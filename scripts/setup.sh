#!/usr/bin/env bash
# Creates .venv and installs semcbir_fast with its test extras, from scratch.
# torch is pinned to the CPU build that this workplace keeps on disk (an unpinned torch
# would pull a multi-GB CUDA build); the package itself only asks for torch>=2.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${SEMCBIR_TORCH_VERSION:-2.13.0}"
python -m pip install -q ".[test,bench]"
