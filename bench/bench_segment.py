"""Segmentation front end: model throughput, post-processing, SBS encoders, end-to-end indexing.

Run from the repository root (``-s`` shows one summary line per case)::

    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_segment.py --benchmark-only -s \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds \
        --benchmark-json=bench_segment.json

CPU-only machines run the small CPU cases (a few images, few rounds) and skip the CUDA ones.
Data: Corel-1K under ``$SEMCBIR_DATA/corel1k/images`` (fallback ``../shared/data``); the
default model is converted from ``$SEMCBIR_MODELS/ade20k_deeplabv3_mnv2.onnx`` into
``$SEMCBIR_CACHE`` at first use.

Groups (``extra_info`` holds ``images_per_s``, device name, torch version, dtype, batch):

- ``model-513``: the default model (``ade20k-mnv2``, DeepLabV3+ MobileNetV2) on a
  ``(B, 3, 513, 513)`` normalised batch already on the device: forward only. CPU fp32 B=1;
  CUDA fp32 / fp16 / bf16 autocast, channels_last, B = 1, 8, 32, 64; ``optimize=True``
  (frozen + ``torch.jit.optimize_for_inference``) for some cases.
- ``segment-513``: :meth:`Segmenter.segment` on in-memory 513x513 uint8 images: upload,
  normalise, model, logits -> labels at image size, labels back to the host.
- ``postprocess``: logits -> label maps for Corel-sized images (384x256), the three ways:
  ``sparse`` / ``dense`` argmax of the bilinear logits (identical results) and ``labels``
  (argmax, then nearest).
- ``encode``: SBS codes of 64 Corel-sized label maps with 151 classes: ``torch`` (on the
  maps' device, codes to the host) vs ``cpp`` (maps to the host, then ``encode_sbs``), which
  is what ``index_images(encoder="auto")`` chooses between.
- ``cpu-runtimes``: the default model on real Corel-1K images (16, batch 16, 2 decode
  threads), :meth:`Segmenter.segment` end to end in each CPU runtime: ``torch`` (float
  port, one image per model call: today's CPU default for ``runtime="torch"``),
  ``torch-b16`` (the whole batch of 16 in one call, the behaviour before), ``torch-opt``
  (``optimize=True``), ``litert`` (int8 TFLite, the ``runtime="auto"`` CPU default) and
  ``onnxruntime``. ``extra_info`` has ms per image and the pixel agreement with the float
  port's label maps (mean and worst image). ``docs/segmentation_speed.md`` has the table.
- ``index-corel1k``: :func:`index_images` over the 1000 Corel-1K JPEGs (CPU: 8 images),
  end to end from file names to codes. A second, instrumented run (``timings=``) records
  the share of the wall time in decode (waiting for decoded images), upload, segment,
  download and encode in ``extra_info["shares"]``; it synchronises CUDA at each stage
  boundary, so its shares are exact and its throughput slightly lower.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from semcbir_fast import encode_sbs
from semcbir_fast._paths import data_root, models_root
from semcbir_fast.sbs_torch import encode_sbs_torch
from semcbir_fast.segment import Segmenter, index_images, load_segmenter

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
COREL = Path(data_root()) / "corel1k" / "images"
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _device_name(dev: str) -> str:
    if dev == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu x{os.cpu_count()} (torch threads {torch.get_num_threads()})"


@functools.cache
def _segmenter(dev: str, dtype: str, optimize: bool = False, runtime: str = "torch") -> Segmenter:
    """The default model; ``runtime="torch"`` (the float port) unless asked otherwise, so
    that the model-513 / segment-513 / postprocess groups measure the same thing on every
    machine."""
    if not (models_root() / "ade20k_deeplabv3_mnv2.onnx").is_file():
        pytest.skip(f"default model source absent under {models_root()} (set SEMCBIR_MODELS)")
    if runtime not in ("torch", "auto"):
        from semcbir_fast.segment import runtime_available

        if not runtime_available(runtime):
            pytest.skip(f"runtime {runtime} is not installed")
    return load_segmenter("ade20k-mnv2", device=dev, dtype=DTYPES[dtype], optimize=optimize,
                          runtime=runtime)


def _corel(n: int) -> list[Path]:
    files = [COREL / f"{i}.jpg" for i in range(1000)]
    files = [f for f in files if f.is_file()]
    if len(files) < 1000:
        pytest.skip(f"Corel-1K absent under {COREL} (set SEMCBIR_DATA)")
    if n >= 1000:
        return files
    step = 1000 // n
    return files[::step][:n]  # spread over the 10 categories


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _record(benchmark, images: int, line: str, **info) -> float:
    med = benchmark.stats.stats.median
    ips = images / med if med > 0 else float("inf")
    benchmark.extra_info.update(images=images, images_per_s=ips, torch=torch.__version__, **info)
    print(f"\n[bench_segment] {line}: {ips:,.1f} images/s (median {med * 1e3:.2f} ms)")
    return ips


def _rounds(dev: str, cpu: int = 2, cuda: int = 10) -> dict:
    return {"rounds": cpu, "warmup_rounds": 1} if dev == "cpu" else {"rounds": cuda, "warmup_rounds": 3}


# --------------------------------------------------------------------------------------
# model-513
# --------------------------------------------------------------------------------------
MODEL_CASES = [("cpu", "fp32", 1, False), ("cpu", "fp32", 1, True)] + [
    pytest.param("cuda", dt, b, False, marks=[pytest.mark.gpu, needs_cuda])
    for dt in ("fp32", "fp16", "bf16") for b in (1, 8, 32, 64)
] + [
    pytest.param("cuda", dt, 64, True, marks=[pytest.mark.gpu, needs_cuda])
    for dt in ("fp32", "fp16")
]


@pytest.mark.parametrize("dev, dtype, batch, optimize", MODEL_CASES)
def test_model_forward_513(benchmark, dev: str, dtype: str, batch: int, optimize: bool) -> None:
    benchmark.group = "model-513"
    seg = _segmenter(dev, dtype, optimize)
    x = torch.randn(batch, 3, 513, 513, device=dev).clamp_(-1, 1)
    if dev == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode():
            out = seg._forward(x)
        _sync(dev)
        return out

    out = benchmark.pedantic(run, **_rounds(dev, cpu=3, cuda=20))
    assert out.shape == (batch, 151, 129, 129)
    _record(benchmark, batch, f"model-513 {dev} {dtype} b{batch} optimize={optimize}",
            device=_device_name(dev), dtype=dtype, batch=batch, optimize=optimize,
            channels_last=dev == "cuda")


# --------------------------------------------------------------------------------------
# segment-513
# --------------------------------------------------------------------------------------
SEGMENT_CASES = [("cpu", "fp32", 1, 2)] + [
    pytest.param("cuda", dt, b, 256, marks=[pytest.mark.gpu, needs_cuda])
    for dt in ("fp32", "fp16", "bf16") for b in (32, 64)
]


@pytest.mark.parametrize("dev, dtype, batch, n", SEGMENT_CASES)
def test_segment_513(benchmark, dev: str, dtype: str, batch: int, n: int) -> None:
    benchmark.group = "segment-513"
    seg = _segmenter(dev, dtype)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (513, 513, 3), dtype=np.uint8) for _ in range(n)]

    def run():
        return seg.segment(images, batch_size=batch, progress=False, num_workers=0)

    res = benchmark.pedantic(run, **_rounds(dev, cpu=1, cuda=3))
    assert len(res.ok) == n and res[0].shape == (513, 513)
    _record(benchmark, n, f"segment-513 {dev} {dtype} b{batch}", device=_device_name(dev),
            dtype=dtype, batch=batch)


# --------------------------------------------------------------------------------------
# postprocess
# --------------------------------------------------------------------------------------
POST_CASES = [("cpu", impl, 2) for impl in ("sparse", "dense", "labels")] + [
    pytest.param("cuda", impl, 64, marks=[pytest.mark.gpu, needs_cuda])
    for impl in ("sparse", "dense", "labels")
]


@functools.cache
def _corel_logits(dev: str, n: int) -> tuple:
    """Model logits (n, 151, 129, 129) of n real 384x256 Corel images."""
    from semcbir_fast.imageio import read_image

    seg = _segmenter(dev, "fp32")
    imgs = [read_image(f) for f in _corel(1000)]
    imgs = [im for im in imgs if im.shape[:2] == (384, 256)][:n]
    with torch.inference_mode():
        groups = seg._upload(imgs)
        x, model_in, resized = seg._prepare(groups)
        logits = seg._forward(x)
    return logits, model_in, resized


@pytest.mark.parametrize("dev, impl, n", POST_CASES)
def test_postprocess(benchmark, dev: str, impl: str, n: int) -> None:
    benchmark.group = "postprocess"
    seg = _segmenter(dev, "fp32")
    logits, model_in, resized = _corel_logits(dev, n)
    mode = "labels" if impl == "labels" else "logits"
    old = seg.logits_impl
    seg.logits_impl = impl if impl != "labels" else old

    def run():
        with torch.inference_mode():
            lab = seg._labels_for_size(logits, (384, 256), model_in, resized, mode)
        _sync(dev)
        return lab

    try:
        lab = benchmark.pedantic(run, **_rounds(dev, cpu=3, cuda=20))
    finally:
        seg.logits_impl = old
    ref = seg._labels_for_size(logits, (384, 256), model_in, resized, "logits")
    agree = float((lab == ref).float().mean())
    if impl != "labels":
        assert agree == 1.0
    _record(benchmark, n, f"postprocess {dev} {impl} (agreement with logits mode {agree:.4f})",
            device=_device_name(dev), impl=impl, agreement=agree)


# --------------------------------------------------------------------------------------
# encode
# --------------------------------------------------------------------------------------
def _voronoi_maps(n: int, h: int = 384, w: int = 256, classes: int = 151) -> np.ndarray:
    """n label maps of a few large regions (seeded Voronoi cells), like real segmentations."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w), np.uint8)
    for i in range(n):
        k = int(rng.integers(3, 25))
        cy, cx = rng.uniform(0, h, k), rng.uniform(0, w, k)
        d = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
        out[i] = rng.choice(classes, k)[d.argmin(0)]
    return out


ENCODE_CASES = [("cpu", impl, lv) for impl in ("torch", "cpp") for lv in (0, 2, 3)] + [
    pytest.param("cuda", impl, lv, marks=[pytest.mark.gpu, needs_cuda])
    for impl in ("torch", "cpp") for lv in (0, 2, 3)
]


@pytest.mark.parametrize("dev, impl, levels", ENCODE_CASES)
def test_encode(benchmark, dev: str, impl: str, levels: int) -> None:
    benchmark.group = f"encode-levels{levels}"
    maps = _voronoi_maps(64)
    labels = torch.from_numpy(maps).to(dev)
    expect = encode_sbs(maps, num_classes=151, levels=levels)

    if impl == "torch":
        def run():
            return encode_sbs_torch(labels, num_classes=151, levels=levels)
    else:
        def run():
            return encode_sbs(labels.cpu().numpy(), num_classes=151, levels=levels)

    codes = benchmark.pedantic(run, rounds=5 if dev == "cpu" else 30, warmup_rounds=1)
    np.testing.assert_array_equal(codes, expect)
    _record(benchmark, 64, f"encode {dev} {impl} levels={levels}", device=_device_name(dev),
            impl=impl, levels=levels, map_size="384x256", num_classes=151)


# --------------------------------------------------------------------------------------
# cpu-runtimes
# --------------------------------------------------------------------------------------
CPU_RUNTIMES = {  # case -> (runtime, optimize, micro_batch)
    "torch": ("torch", False, 1),
    "torch-b16": ("torch", False, None),
    "torch-opt": ("torch", True, 1),
    "litert": ("litert", False, 1),
    "onnxruntime": ("onnxruntime", False, 1),
}


@functools.cache
def _float_labels(n: int) -> tuple:
    """Label maps of the float port (runtime torch) for the first n spread Corel images."""
    files = _corel(n)
    return tuple(_segmenter("cpu", "fp32").segment(files, batch_size=16, progress=False))


@pytest.mark.parametrize("case", list(CPU_RUNTIMES))
def test_cpu_runtimes(benchmark, case: str) -> None:
    benchmark.group = "cpu-runtimes"
    runtime, optimize, micro = CPU_RUNTIMES[case]
    n = 16
    files = _corel(n)
    ref = _float_labels(n)
    seg = _segmenter("cpu", "fp32", optimize, runtime)
    old = seg.micro_batch
    seg.micro_batch = micro

    def run():
        return seg.segment(files, batch_size=16, progress=False)

    try:
        res = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    finally:
        seg.micro_batch = old
    agree = [float((a == b).mean()) for a, b in zip(res, ref)]
    assert min(agree) >= 0.9  # every runtime computes the same network
    med = benchmark.stats.stats.median
    _record(benchmark, n, f"cpu-runtimes {case} ({med / n * 1e3:.0f} ms/image, pixel agreement "
            f"with the float port {np.mean(agree):.4f}, worst {min(agree):.4f})",
            device=_device_name("cpu"), runtime=runtime, optimize=optimize,
            micro_batch=micro, ms_per_image=med / n * 1e3,
            agreement_mean=float(np.mean(agree)), agreement_min=min(agree))


# --------------------------------------------------------------------------------------
# index-corel1k
# --------------------------------------------------------------------------------------
INDEX_CASES = [("cpu", "fp32", 4, 8, "auto", False)] + [
    pytest.param("cuda", dt, b, 1000, enc, opt, marks=[pytest.mark.gpu, needs_cuda])
    for dt, b, enc, opt in [
        ("fp32", 64, "auto", False), ("fp16", 64, "auto", False), ("bf16", 64, "auto", False),
        ("fp16", 32, "auto", False), ("fp16", 128, "auto", False),
        ("fp16", 64, "torch", False), ("fp16", 64, "cpu", False), ("fp16", 64, "auto", True),
    ]
]


@pytest.mark.parametrize("dev, dtype, batch, n, encoder, optimize", INDEX_CASES)
def test_index_corel1k(benchmark, dev: str, dtype: str, batch: int, n: int,
                       encoder: str, optimize: bool) -> None:
    benchmark.group = "index-corel1k"
    seg = _segmenter(dev, dtype, optimize, "auto")  # what the CLI runs (LiteRT on the CPU)
    files = _corel(n)
    kw = {"segmenter": seg, "levels": 2, "batch_size": batch, "encoder": encoder, "progress": False}

    def run():
        return index_images(files, **kw)

    res = benchmark.pedantic(run, rounds=1 if dev == "cpu" else 3, warmup_rounds=1)
    assert res.codes.shape == (n, res.layout.stride) and not res.failed

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    timed = index_images(files[:64] if dev == "cpu" else files, return_labels=True,
                         timings=timings, **kw)
    wall = time.perf_counter() - t0
    check = slice(0, 16)
    np.testing.assert_array_equal(
        timed.codes[check], encode_sbs(timed.labels[check], num_classes=151, levels=2))
    total = timings["total"]
    shares = {k: round(timings.get(k, 0.0) / total, 4)
              for k in ("decode_wait", "upload", "segment", "download", "encode")}
    shares["other"] = round(1.0 - sum(shares.values()), 4)
    ips = _record(benchmark, n, f"index-corel1k {dev} {seg.runtime} {dtype} b{batch} "
                  f"encoder={encoder} optimize={optimize}",
                  device=_device_name(dev), runtime=seg.runtime, dtype=dtype, batch=batch,
                  encoder=encoder,
                  optimize=optimize,
                  shares=shares, decode_cpu_s=timings.get("decode_cpu", 0.0),
                  instrumented_images_per_s=timings["images"] / wall)
    print(f"[bench_segment]   shares of wall time (instrumented run, "
          f"{timings['images'] / wall:,.1f} images/s): {shares}; decode CPU time summed over "
          f"workers {timings.get('decode_cpu', 0.0):.2f} s")
    del ips
