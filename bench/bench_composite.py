"""Composite segmenter (``"ade20k+voc"``) against the single ADE20K model: speed and quality.

Speed, pytest-benchmark group ``composite-cpu`` (run from the repository root)::

    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_composite.py --benchmark-only -s \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds

:meth:`Segmenter.segment` end to end (decode, resize, model(s), logits -> labels at image
size) on 8 real Corel-1K images in each CPU runtime, for ``ade20k-mnv2``, ``voc-mnv2`` and
``ade20k+voc``; ``extra_info`` has ms per image. The composite's labels are checked inside
against its members run alone and merged by the documented rule. With CUDA, the same on
the GPU (images per second, batch 16).

Quality, without pytest (the label maps come from the per-image cache that
``semcbir eval`` fills, so after the evaluations this takes seconds)::

    PYTHONPATH=python .venv/bin/python bench/bench_composite.py pixels     # MSRC v1
    PYTHONPATH=python .venv/bin/python bench/bench_composite.py agreement  # port vs TFLite

``pixels``: pixel accuracy and mIoU of each model's MSRC v1 label maps against the ground
truth, model classes mapped to MSRC's by
:data:`semcbir_fast.eval.metrics.MSRC_V1_SYNONYMS`. ``agreement``: share of pixels on which
the PyTorch VOC port (float) and the quantised TFLite file (LiteRT) agree, on every 20th
Corel-1K image and every 12th MSRC v1 image. ``docs/composite.md`` has the numbers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from semcbir_fast._paths import data_root, models_root

MODELS = ("ade20k-mnv2", "voc-mnv2", "ade20k+voc")


def _corel(n: int) -> list[str]:
    root = data_root() / "corel1k" / "images"
    return [str(root / f"{k}.jpg") for k in range(0, 1000, 1000 // n)][:n]


def _merged_reference(seg, paths: list[str]) -> list[np.ndarray]:
    """The composite's rule applied by hand to its members' own label maps."""
    out = []
    for p in paths:
        lab = seg.luts[0][seg.members[0].segment(p)]
        for member, lut in zip(seg.members[1:], seg.luts[1:]):
            v = lut[member.segment(p)]
            lab = np.where(v >= 0, v, lab)
        out.append(lab)
    return out


CASES = [(m, rt) for rt in ("litert", "torch") for m in MODELS]


@pytest.mark.parametrize("model, runtime", CASES)
def test_composite_cpu(benchmark, model: str, runtime: str) -> None:
    pytest.importorskip("pytest_benchmark")
    torch = pytest.importorskip("torch")
    from semcbir_fast.segment import load_segmenter, runtime_available

    if not runtime_available(runtime):
        pytest.skip(f"{runtime} not installed")
    paths = _corel(8)
    if not Path(paths[0]).is_file():
        pytest.skip("Corel-1K images absent (set SEMCBIR_DATA)")
    benchmark.group = "composite-cpu"
    seg = load_segmenter(model, device="cpu", runtime=runtime)
    seg.segment(paths[:1], progress=False)  # warm-up
    res = benchmark.pedantic(lambda: seg.segment(paths, progress=False), rounds=2,
                             iterations=1)
    if model == "ade20k+voc":
        for got, want in zip(res, _merged_reference(seg, paths)):
            np.testing.assert_array_equal(got, want)
    ms = benchmark.stats.stats.min / len(paths) * 1e3
    benchmark.extra_info.update(ms_per_image=round(ms, 1), runtime=runtime,
                                images=len(paths), threads=torch.get_num_threads())
    print(f"\n{model} ({runtime}, cpu): {ms:.0f} ms/image")


@pytest.mark.parametrize("model", MODELS)
def test_composite_cuda(benchmark, model: str) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from semcbir_fast.segment import load_segmenter

    paths = _corel(64)
    benchmark.group = "composite-cuda"
    seg = load_segmenter(model, device="cuda")
    seg.segment(paths[:16], progress=False, batch_size=16)
    benchmark.pedantic(lambda: seg.segment(paths, progress=False, batch_size=16),
                       rounds=3, iterations=1)
    ips = len(paths) / benchmark.stats.stats.min
    benchmark.extra_info.update(images_per_s=round(ips, 1),
                                device=torch.cuda.get_device_name())
    print(f"\n{model} (cuda): {ips:.0f} images/s")


def pixels() -> None:
    """MSRC v1 pixel accuracy / mIoU of each model against the ground truth."""
    from semcbir_fast.eval.cache import segment_cached
    from semcbir_fast.eval.datasets import load_dataset
    from semcbir_fast.eval.metrics import (
        MSRC_V1_SYNONYMS,
        map_classes_by_name,
        segmentation_scores,
    )

    ds = load_dataset("msrc", None)
    gts = [ds.read_label_map(i) for i in range(len(ds))]
    assert ds.label_classes is not None
    print(f"MSRC v1: {len(ds)} images, classes {ds.label_classes[1:]}")
    for model in MODELS:
        maps, info = segment_cached([str(p) for p in ds.images], model=model, device="cpu",
                                    progress=False)
        lut = map_classes_by_name(info["class_names"], ds.label_classes, MSRC_V1_SYNONYMS)
        sc = segmentation_scores(maps, gts, lut, len(ds.label_classes),
                                 ignore_index=ds.ignore_index)
        per = ", ".join(f"{ds.label_classes[c]} {v:.2f}" for c, v in sc["iou"].items())
        print(f"{model:12s} ({info['runtime']}, cache {info['cache']}): pixel accuracy "
              f"{sc['pixel_accuracy']:.3f}, mIoU {sc['miou']:.3f} | {per}")


def agreement() -> None:
    """Pixel agreement of the VOC PyTorch port with the TFLite runtime on real images."""
    import torch
    import torch.nn.functional as F
    from ai_edge_litert.interpreter import Interpreter
    from semcbir_fast.imageio import read_image
    from semcbir_fast.models.voc import SOURCE_FILENAME, load_voc_from_tflite

    src = models_root() / SOURCE_FILENAME
    net = load_voc_from_tflite(src, upsample=True)
    it = Interpreter(model_path=str(src), num_threads=2)
    it.allocate_tensors()
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]
    root = data_root()
    paths = [root / "corel1k" / "images" / f"{k}.jpg" for k in range(0, 1000, 20)]
    paths += sorted((root / "msrc_v1" / "images").glob("*_s.jpg"))[::12]
    agree, t0 = [], time.perf_counter()
    for p in paths:
        img = torch.from_numpy(np.ascontiguousarray(read_image(p))).permute(2, 0, 1)[None]
        img = F.interpolate(img.float(), size=(513, 513), mode="bilinear", align_corners=False)
        rgb = img.round().clamp(0, 255)
        it.set_tensor(ind["index"], rgb[0].permute(1, 2, 0).to(torch.uint8).numpy()[None])
        it.invoke()
        ref = it.get_tensor(outd["index"])[0]
        with torch.no_grad():
            lab = net((rgb - 128.0) / 128.0).argmax(1)[0].numpy()
        agree.append(float((lab == ref).mean()))
    a = np.array(agree)
    print(f"VOC port vs TFLite (LiteRT) on {len(a)} real images: mean {a.mean():.4f}, "
          f"median {np.median(a):.4f}, min {a.min():.4f}, share of images >= 0.97: "
          f"{(a >= 0.97).mean():.2f} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    modes = {"pixels": pixels, "agreement": agreement}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(modes)}}}")
    modes[sys.argv[1]]()
