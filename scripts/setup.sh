#!/usr/bin/env bash
# Creates .venv and installs semcbir_fast with its test extras, from scratch.
# torch is pinned to the CPU build that this workplace keeps on disk (an unpinned torch
# would pull a multi-GB CUDA build); the package itself only asks for torch>=2.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
step() { echo "setup [$1/4] $2 ($(( SECONDS ))s)" >&2; }
if [ ! -x .venv/bin/python ]; then
  step 1 "creating .venv"
  "$PY" -m venv .venv
else
  step 1 "using the existing .venv"
fi
. .venv/bin/activate
step 2 "upgrading pip"
python -m pip install -q --upgrade pip
step 3 "installing torch ${SEMCBIR_TORCH_VERSION:-2.13.0} (CPU build)"
python -m pip install -q "torch==${SEMCBIR_TORCH_VERSION:-2.13.0}"
step 4 "building the C++ core and installing semcbir_fast with its test extras (about a minute)"
python -m pip install -q ".[test,bench,ray]"
echo "setup done in ${SECONDS}s: . .venv/bin/activate to use semcbir" >&2
