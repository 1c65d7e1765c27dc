"""Tests of the native PyTorch port of the Pascal VOC DeepLabV3 / MobileNetV2 model.

The reference is the TFLite runtime (``ai-edge-litert``) running the shared, fully
quantised file as published (uint8 RGB in, its own 513x513 argmax out) on real images;
tests that need the shared model, the images or ai-edge-litert skip with the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from semcbir_fast._paths import data_root, models_root
from semcbir_fast.models import voc
from semcbir_fast.models.sidecar import read_sidecar
from semcbir_fast.models.voc import (
    NUM_CLASSES,
    SOURCE_FILENAME,
    VOC_TO_ADE20K,
    build_voc_mnv2,
    ensure_voc_litert,
    ensure_voc_torchscript,
    load_voc_from_tflite,
    read_voc_labels,
)

SOURCE = models_root() / SOURCE_FILENAME
MSRC = data_root() / "msrc_v1" / "images"
COREL = data_root() / "corel1k" / "images"
# real images with VOC objects: MSRC cows / sheep / faces / cars / bicycles, Corel people,
# buses, horses (found by the file names' categories, not by the model's output)
IMAGES = [MSRC / "1_10_s.jpg", MSRC / "5_10_s.jpg", MSRC / "6_1_s.jpg", COREL / "0.jpg",
          COREL / "700.jpg"]

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")
needs_source = pytest.mark.skipif(not SOURCE.is_file(), reason=f"shared model {SOURCE} absent "
                                  "(set SEMCBIR_MODELS)")
needs_images = pytest.mark.skipif(not all(p.is_file() for p in IMAGES),
                                  reason="MSRC v1 / Corel-1K images absent (set SEMCBIR_DATA)")


def _litert():
    return pytest.importorskip("ai_edge_litert.interpreter",
                               reason="ai-edge-litert is the reference runtime")


def _rgb513(path) -> np.ndarray:
    """The image resized to 513x513 (bilinear, as the segmenter does) and rounded to uint8:
    what the quantised graph is fed."""
    from semcbir_fast.imageio import read_image

    img = torch.from_numpy(np.ascontiguousarray(read_image(path))).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=(513, 513), mode="bilinear", align_corners=False)
    return img.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def port():
    return load_voc_from_tflite(SOURCE, upsample=True)


@pytest.fixture(scope="module")
def reference():
    mod = _litert()
    it = mod.Interpreter(model_path=str(SOURCE), num_threads=1)
    it.allocate_tensors()
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]

    def run(rgb: np.ndarray) -> np.ndarray:
        it.set_tensor(ind["index"], rgb[None])
        it.invoke()
        return it.get_tensor(outd["index"])[0]

    return run


def test_module_shapes_and_script() -> None:
    net = build_voc_mnv2()
    x = torch.zeros(2, 3, 513, 513)
    with torch.no_grad():
        assert tuple(net(x).shape) == (2, NUM_CLASSES, 33, 33)
        assert tuple(torch.jit.script(net)(torch.zeros(1, 3, 65, 97)).shape) == (1, 21, 5, 7)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.zeros(1, 4, 33, 33))


@needs_source
@needs_images
def test_port_agrees_with_tflite_runtime(port, reference) -> None:
    """The float port's labels against the quantised graph's own output, real images."""
    agree, objects = [], 0
    for p in IMAGES:
        rgb = _rgb513(p)
        ref = reference(rgb)
        x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() - 128.0) / 128.0
        with torch.no_grad():
            lab = port(x).argmax(1)[0].numpy()
        agree.append(float((lab == ref).mean()))
        objects += int((ref > 0).any())
    assert objects >= 4, "the reference should find VOC objects in these images"
    assert min(agree) >= 0.94, agree  # hard images lose a few % (8-bit activations)
    assert np.mean(agree) >= 0.98, agree


@needs_source
@needs_images
def test_litert_cut_matches_source_logits(reference, tmp_path) -> None:
    """The float-in/float-out cut graph computes the source's logits: its labels, resized as
    the graph does, equal the source's on nearly every pixel (the source takes the argmax
    of uint8-requantised 513x513 logits, so ties may break differently)."""
    mod = _litert()
    path = ensure_voc_litert(source=SOURCE, cache_dir=tmp_path)
    meta = read_sidecar(path)
    assert (meta.name, meta.num_classes, meta.input_size) == ("voc-mnv2", 21, (513, 513))
    assert meta.mean == [128.0] * 3 and meta.std == [128.0] * 3
    it = mod.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]
    assert ind["dtype"] == np.float32 and list(outd["shape"]) == [1, 33, 33, 21]
    for p in IMAGES[:2]:
        rgb = _rgb513(p)
        it.set_tensor(ind["index"], ((rgb.astype(np.float32) - 128) / 128)[None])
        it.invoke()
        lg = torch.from_numpy(it.get_tensor(outd["index"])).permute(0, 3, 1, 2)
        lab = F.interpolate(lg, size=(513, 513), mode="bilinear", align_corners=True).argmax(1)
        assert float((lab[0].numpy() == reference(rgb)).mean()) >= 0.99


@needs_source
def test_torchscript_cache_reused_and_rebuilt(tmp_path) -> None:
    path = ensure_voc_torchscript(source=SOURCE, cache_dir=tmp_path)
    meta = read_sidecar(path)
    assert meta.class_names == read_voc_labels(models_root() / "voc_labels.txt")
    assert set(VOC_TO_ADE20K) == set(meta.class_names)
    mtime = path.stat().st_mtime_ns
    assert ensure_voc_torchscript(source=SOURCE, cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # re-used
    path.write_bytes(path.read_bytes()[:1000])  # truncated: converted again
    ensure_voc_torchscript(source=SOURCE, cache_dir=tmp_path)
    stamp = json.loads(path.with_name("voc-mnv2.stamp.json").read_text())
    assert stamp["model_size"] == path.stat().st_size > 1000
    net = torch.jit.load(str(path))
    with torch.no_grad():
        assert tuple(net(torch.zeros(1, 3, 513, 513)).shape) == (1, 21, 33, 33)


def test_bad_sources(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no TFLite file"):
        load_voc_from_tflite(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    pytest.importorskip("ai_edge_litert")
    with pytest.raises(ValueError, match="not the DeepLabV3 MobileNetV2 Pascal VOC"):
        load_voc_from_tflite(junk)
    ade = models_root() / "ade20k_deeplabv3_mnv2.tflite"
    if ade.is_file():  # a real TFLite file of another graph
        with pytest.raises(ValueError, match="not the DeepLabV3 MobileNetV2 Pascal VOC"):
            load_voc_from_tflite(ade)
        with pytest.raises(ValueError, match="not the DeepLabV3 MobileNetV2 Pascal VOC"):
            voc.voc_litert_model_bytes(ade)
    bad = tmp_path / "labels.txt"
    bad.write_text("0\tbackground\n2\tbicycle\n")
    with pytest.raises(ValueError, match="expected index 1"):
        read_voc_labels(bad)
