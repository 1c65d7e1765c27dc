#!/usr/bin/env bash
# GPU checks and benchmarks on a CUDA machine (python3 with a CUDA torch, pybind11,
# scikit-build-core, cmake, pytest, pytest-benchmark, opencv, onnx already installed).
#   bash bench/gpu_run.sh OUTDIR [tests] [bench-model] [bench-e2e] [bench-hrnet] [bench-core]
#                        [sparse-gpu-tests] [bench-sparse-gpu] [bench-backbone]
# Data/models: SEMCBIR_DATA and SEMCBIR_MODELS (defaults: ../shared/data, ../shared/models).
set -uo pipefail
out=${1:?output dir}; shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1 SEMCBIR_CACHE=${SEMCBIR_CACHE:-/tmp/semcbir_cache}
python3 -m pip install -q --no-build-isolation --no-deps . > "$out/install.log" 2>&1 || { tail -30 "$out/install.log"; exit 1; }
python3 -c "import semcbir_fast as s, torch; print('semcbir_fast', s.__version__, s.backend(), s.active_isa(), '| torch', torch.__version__, torch.cuda.get_device_name(0))"
BENCH="python3 -m pytest --benchmark-only -p no:cacheprovider --benchmark-group-by=group --benchmark-columns=min,median,rounds"
for step in "$@"; do
  case $step in
    tests) python3 -m pytest tests -q -rs -p no:cacheprovider -x 2>&1 | tee "$out/tests.log" | tail -25 ;;
    gpu-tests) python3 -m pytest tests -m gpu -q -rs -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log" | tail -25 ;;
    bench-model) $BENCH bench/bench_segment.py -s -m gpu -k "model_forward or postprocess or encode" \
                   --benchmark-json="$out/bench_segment_model.json" 2>&1 | grep -E "bench_segment\]|passed|failed|Error" ;;
    bench-e2e) $BENCH bench/bench_segment.py -s -m gpu -k "segment_513 or index_corel1k" \
                   --benchmark-json="$out/bench_segment_e2e.json" 2>&1 | grep -E "bench_segment\]|passed|failed|Error" ;;
    bench-hrnet) $BENCH bench/bench_hrnet.py -k cuda --benchmark-json="$out/bench_hrnet.json" 2>&1 | tail -15 ;;
    bench-core) $BENCH bench/bench_sbs.py bench/bench_hamming.py --benchmark-json="$out/bench_core.json" 2>&1 | tail -5 ;;
    sparse-gpu-tests) python3 -m pytest tests/test_sparse_sbs.py tests/test_sparse_sbs_index.py -q -rs \
                   -p no:cacheprovider 2>&1 | tee "$out/sparse_gpu_tests.log" | tail -15 ;;
    # exact dense and sparse top-k on device-resident codes (search/gpu.py): N = 1M, 64 blocks,
    # nq = 1 and 64; prints TB/s of the dense scan and queries/s, checked against the CPU scan
    bench-sparse-gpu) python3 bench/bench_sparse_sbs.py --gpu --n 1000000 --levels 3 2>&1 \
                   | tee "$out/bench_sparse_gpu.log" | tail -20 ;;
    # EfficientNet-Lite0/1/2 forward passes and Backbone.extract (images/s = 1000 / ms_per_image)
    bench-backbone) $BENCH bench/bench_backbone.py -s --benchmark-json="$out/bench_backbone.json" 2>&1 \
                   | grep -E "forward|extract corel|passed|failed|Error" ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
