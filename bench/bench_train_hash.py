"""Training speed of paper 002's network (images per second), CPU and CUDA when present.

Run from the repository root (``-s`` prints one summary line per case)::

    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_train_hash.py --benchmark-only -s \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds \
        --benchmark-json=bench_train_hash.json

Groups (``extra_info``: ``images_per_s`` of the best round, device, torch threads, sizes):

- ``hash-backbone-maps``: the one frozen-backbone pass per image that training caches
  (:func:`semcbir_fast.hashing.data.backbone_maps`, 32 Corel-1K files, read + crop +
  EfficientNet-Lite0 at 224 px, cache off);
- ``hash-train-step``: one SGD step on cached maps of 32 Corel-1K images, per phase
  (``seg``: PSP branch + segmentation head against 56 x 56 masks; ``hash``: FC layers +
  hash layer + softmax on the global descriptor and the pooled class maps), for the
  paper's sizes (PSP on stage3+stage5, 128 channels, FC 4096-4096) and the small ones of
  docs/deephash.md's evaluation (stage3, 64 channels, FC 1024-1024). Each case checks
  that the loss is finite.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from semcbir_fast._paths import data_root

COREL = data_root() / "corel1k" / "images"
N = 32
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIZES = {"paper": {"psp_input": "stage3+stage5", "seg_channels": 128, "fc": (4096, 4096)},
         "eval": {"psp_input": "stage3", "seg_channels": 64, "fc": (1024, 1024)}}

pytestmark = pytest.mark.skipif(not COREL.is_dir(), reason="Corel-1K images not present")


def _paths() -> list[str]:
    return [str(COREL / f"{i}.jpg") for i in range(0, 1000, 1000 // N)][:N]


@functools.cache
def _maps() -> dict[str, np.ndarray]:
    from semcbir_fast.hashing.data import backbone_maps

    return backbone_maps(_paths(), use_cache=False, device="cpu")


def _info(benchmark, dev: str, **kw) -> None:
    benchmark.extra_info.update(device=torch.cuda.get_device_name() if dev == "cuda" else
                                f"cpu x{os.cpu_count()} (torch threads "
                                f"{torch.get_num_threads()})", torch=torch.__version__, **kw)


@pytest.mark.benchmark(group="hash-backbone-maps")
def test_backbone_maps(benchmark) -> None:
    from semcbir_fast.deep.extract import clear_memo
    from semcbir_fast.hashing.data import backbone_maps

    def run():
        clear_memo()
        return backbone_maps(_paths(), use_cache=False, device="cpu")

    out = benchmark.pedantic(run, rounds=2, iterations=1)
    assert out["stage3"].shape == (N, 40, 28, 28) and np.isfinite(out["glob"]).all()
    ips = N / benchmark.stats.stats.min
    _info(benchmark, "cpu", images=N, images_per_s=round(ips, 1))
    print(f"\nbackbone maps cpu: {ips:.1f} images/s")


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("phase", ["seg", "hash"])
@pytest.mark.benchmark(group="hash-train-step")
def test_train_step(benchmark, dev: str, size: str, phase: str) -> None:
    import torch.nn.functional as F
    from semcbir_fast.models.hashnet import HashNet, HashNetConfig

    m = _maps()
    torch.manual_seed(0)
    cfg = HashNetConfig(num_classes=10, num_seg_classes=150, bits=48, **SIZES[size])
    net = HashNet(cfg).to(dev).train()
    s3 = torch.from_numpy(m["stage3"]).float().to(dev)
    s5 = torch.from_numpy(m["stage5"]).float().to(dev)
    g = torch.from_numpy(m["glob"]).float().to(dev)
    y = torch.arange(N, device=dev) % 10
    tgt = torch.randint(0, 150, (N, 56, 56), device=dev)
    if phase == "seg":
        params = list(net.psp.parameters())
    else:
        params = list(net.fc.parameters()) + list(net.hash.parameters()) + \
            list(net.classifier.parameters())
        with torch.no_grad():
            pooled, _ = net.pooled_segmentation(s3, s5)
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step() -> float:
        if phase == "seg":
            out = F.interpolate(net.segment(s3, s5), size=(56, 56), mode="bilinear",
                                align_corners=False)
            loss = F.cross_entropy(out, tgt)
        else:
            _, logits = net.head(g, pooled)
            loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    step()  # warm-up
    loss = benchmark.pedantic(step, rounds=3, iterations=1)
    assert np.isfinite(loss)
    ips = N / benchmark.stats.stats.min
    _info(benchmark, dev, batch=N, sizes=size, phase=phase, images_per_s=round(ips, 1))
    print(f"\n{phase} step {size} {dev}: {ips:.1f} images/s")
