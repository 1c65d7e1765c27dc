"""Throughput of HRNetV2-W48 segmentation at 512x512 (images/s), CPU and CUDA.

Run (GPU machine)::

    PYTHONPATH=python python -m pytest bench/bench_hrnet.py --benchmark-only \
        --benchmark-columns=min,median,max,rounds --benchmark-group-by=group \
        --benchmark-json=hrnet_bench.json

Each case records ``images_per_s`` (batch / median seconds per batch) and the setup
(device, dtype, memory format, batch, threads, TF32 / cuDNN flags) in ``extra_info``.
GPU cases synchronise after every batch; they are skipped without CUDA. The weights are
random (throughput does not depend on them), with BN statistics set so that
activations stay finite in fp16, and every case checks its output shape and finiteness.

Self-contained: needs only torch, pytest-benchmark and ``semcbir_fast.models.hrnet``.
"""

from __future__ import annotations

import math
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

from semcbir_fast.models.hrnet import HRNetV2Seg

SIZE = 512
NUM_CLASSES = 194  # MSeg universal taxonomy, as the paper's model
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def _scaled_model(device: torch.device) -> HRNetV2Seg:
    """W48 with Kaiming weights and unit BN statistics (finite activations in fp16)."""
    torch.manual_seed(0)
    model = HRNetV2Seg(48, NUM_CLASSES)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(0.5)  # damp the residual sums
    return model.eval().to(device)


def _record(benchmark, batch: int, **info) -> None:
    benchmark.extra_info.update(info)
    benchmark.extra_info["batch"] = batch
    benchmark.extra_info["input"] = f"{batch}x3x{SIZE}x{SIZE}"
    benchmark.extra_info["torch"] = torch.__version__
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None with --benchmark-disable
        median = stats["median"]
        benchmark.extra_info["images_per_s"] = float(f"{batch / median:.4g}") if median > 0 else math.nan


def _check(out: torch.Tensor, batch: int) -> None:
    assert out.shape == (batch, NUM_CLASSES, SIZE // 4, SIZE // 4)
    assert torch.isfinite(out).all()


@pytest.fixture(scope="module")
def cpu_model() -> HRNetV2Seg:
    return _scaled_model(torch.device("cpu"))


@pytest.fixture(scope="module")
def cuda_model() -> HRNetV2Seg:
    if not CUDA:
        pytest.skip("needs CUDA")
    return _scaled_model(torch.device("cuda")).to(memory_format=torch.channels_last)


@pytest.mark.benchmark(group="hrnet-w48-512-cpu")
def test_hrnet_w48_cpu_batch1(benchmark, cpu_model: HRNetV2Seg) -> None:
    """CPU, fp32, batch 1: slow (seconds per image), so few rounds."""
    rounds = int(os.environ.get("SEMCBIR_BENCH_CPU_ROUNDS", "3"))
    x = torch.randn(1, 3, SIZE, SIZE)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return cpu_model(x)

    out = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    _check(out, 1)
    _record(benchmark, 1, device="cpu", dtype="float32", memory_format="contiguous",
            threads=torch.get_num_threads())


@needs_cuda
@pytest.mark.benchmark(group="hrnet-w48-512-cuda")
@pytest.mark.parametrize("batch", [1, 8, 32, 64])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_hrnet_w48_cuda(benchmark, cuda_model: HRNetV2Seg, dtype: str, batch: int) -> None:
    """CUDA, channels_last, fp32 (cuDNN defaults, TF32 allowed) or fp16/bf16 autocast."""
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    x = torch.randn(batch, 3, SIZE, SIZE, device=dev).contiguous(
        memory_format=torch.channels_last)
    amp = dtype != "float32"
    amp_dtype = getattr(torch, dtype) if amp else torch.float32

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cuda", dtype=amp_dtype, enabled=amp):
            out = cuda_model(x)
        torch.cuda.synchronize()
        return out

    rounds = 20 if batch <= 8 else 8
    torch.cuda.reset_peak_memory_stats()
    out = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=3)
    _check(out, batch)
    _record(benchmark, batch, device=torch.cuda.get_device_name(), dtype=dtype,
            autocast=amp, memory_format="channels_last",
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
