"""Tests of the native PyTorch port of the ADE20K DeepLabV3+ / MobileNetV2 model.

The reference is onnxruntime on the shared ONNX file; tests that need the shared model,
the Corel-1K images, onnx or onnxruntime skip with the reason when those are absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from semcbir_fast._paths import data_root, models_root
from semcbir_fast.models import ade20k
from semcbir_fast.models.ade20k import (
    NUM_CLASSES,
    SOURCE_FILENAME,
    build_ade20k_mnv2,
    ensure_ade20k_torchscript,
    load_ade20k_from_onnx,
    read_ade20k_labels,
)
from semcbir_fast.models.sidecar import read_sidecar

SOURCE = models_root() / SOURCE_FILENAME
LABELS = models_root() / "ade20k_labels.txt"
COREL = data_root() / "corel1k" / "images"

# TorchScript is the project's model format; torch >= 2.10 marks torch.jit as deprecated.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")

needs_source = pytest.mark.skipif(
    not SOURCE.is_file(),
    reason=f"shared model {SOURCE} absent (set SEMCBIR_MODELS to the folder holding it)",
)
needs_corel = pytest.mark.skipif(
    not (COREL / "0.jpg").is_file(),
    reason=f"Corel-1K images absent at {COREL} (set SEMCBIR_DATA)",
)

# 50 images, every 20th: five of each of the 10 categories. The quick test uses every 200th.
AGREEMENT_IDS = list(range(0, 1000, 20))
QUICK_IDS = list(range(0, 1000, 200))


def _onnx():
    return pytest.importorskip("onnx", reason="the onnx package is needed for conversion")


def _image(k: int) -> np.ndarray:
    """Corel image ``k`` as the model input: 513x513 RGB float32 HWC in [-1, 1]."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is needed to decode the test images")
    bgr = cv2.imread(str(COREL / f"{k}.jpg"), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {COREL / f'{k}.jpg'}"
    rgb = cv2.resize(bgr, (513, 513), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    return ((rgb.astype(np.float32) - 127.5) / 127.5).copy()


def _nchw(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    if not SOURCE.is_file():
        pytest.skip(f"shared model {SOURCE} absent (set SEMCBIR_MODELS)")
    _onnx()
    return load_ade20k_from_onnx(SOURCE)


@pytest.fixture(scope="module")
def ort_session():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference")
    if not SOURCE.is_file():
        pytest.skip(f"shared model {SOURCE} absent (set SEMCBIR_MODELS)")
    opts = ort.SessionOptions()
    # Few threads and no spin-waiting: CI runners and dev boxes are often shared.
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(SOURCE), opts, providers=["CPUExecutionProvider"])


# Per-image results shared by the quick and the 50-image test: (agreement, max |diff|).
_RESULTS: dict[int, tuple[float, float]] = {}


def _compare(model: torch.nn.Module, session, ids: list[int]) -> dict[int, tuple[float, float]]:
    name = session.get_inputs()[0].name
    for k in ids:
        if k in _RESULTS:
            continue
        x = _image(k)
        ref = session.run(None, {name: x[None]})[0][0]  # (513, 513, 151) NHWC logits
        with torch.inference_mode():
            low = model(_nchw([x]))[0]  # (151, 129, 129)
            ours = F.interpolate(low[None], size=(513, 513), mode="bilinear",
                                 align_corners=True)[0]
            agree = (ours.argmax(0).numpy() == ref.argmax(-1)).mean()
        # The graph's final resize is align_corners 129 -> 513: its pixel (4i, 4j) is
        # exactly logit (i, j), so the logits are compared there (cheap, no interpolation).
        diff = np.abs(low.permute(1, 2, 0).numpy() - ref[::4, ::4]).max()
        _RESULTS[k] = (float(agree), float(diff))
    return {k: _RESULTS[k] for k in ids}


def _check_agreement(res: dict[int, tuple[float, float]], node) -> None:
    agree = np.array([a for a, _ in res.values()])
    worst = min(res, key=lambda k: res[k][0])
    max_diff = max(d for _, d in res.values())
    node.user_properties.append(("argmax_agreement_mean", float(agree.mean())))
    node.user_properties.append(("argmax_agreement_min", float(agree.min())))
    node.user_properties.append(("logits_max_abs_diff", max_diff))
    # Measured: 99.9998 % of pixels over the 50 images, worst image 99.9989 %, max |diff|
    # 8e-5 on logits of magnitude ~25. The port is exact up to float rounding.
    assert agree.mean() >= 0.999, f"argmax agreement {agree.mean():.6f} < 0.999"
    assert agree.min() >= 0.99, f"image {worst}.jpg: argmax agreement {agree.min():.6f}"
    assert max_diff < 1e-3, f"logits differ from onnxruntime by up to {max_diff:.3e}"


# ---------------------------------------------------------------- agreement with ONNX


@needs_source
@needs_corel
def test_agreement_with_onnxruntime_quick(model, ort_session, request) -> None:
    _check_agreement(_compare(model, ort_session, QUICK_IDS), request.node)


@pytest.mark.slow
@needs_source
@needs_corel
def test_agreement_with_onnxruntime_50_images(model, ort_session, request) -> None:
    res = _compare(model, ort_session, AGREEMENT_IDS)
    assert len(res) == 50
    _check_agreement(res, request.node)


# ---------------------------------------------------------------- module behaviour


@pytest.mark.parametrize("size", [(513, 513), (257, 193), (64, 97)])
def test_output_shape(size: tuple[int, int]) -> None:
    net = build_ade20k_mnv2()
    h, w = size
    with torch.inference_mode():
        y = net(torch.zeros(2, 3, h, w))
    assert y.shape == (2, NUM_CLASSES, (h - 1) // 4 + 1, (w - 1) // 4 + 1)
    with torch.inference_mode():
        y = build_ade20k_mnv2(upsample=True)(torch.zeros(1, 3, h, w))
    assert y.shape == (1, NUM_CLASSES, h, w)


def test_forward_rejects_bad_input() -> None:
    net = build_ade20k_mnv2()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\[1, 4, 33, 33\]"):
        net(torch.zeros(1, 4, 33, 33))
    scripted = torch.jit.script(net)
    with pytest.raises(Exception, match=r"\(N, 3, H, W\)"):
        scripted(torch.zeros(3, 33, 33))


def test_batch_and_channels_last_match_single(model) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 129, 161) * 2 - 1
    with torch.inference_mode():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
        cl = model(x.contiguous(memory_format=torch.channels_last))
    # Same maths, different summation order: float rounding only (logits ~ 1-25).
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-3)
    torch.testing.assert_close(cl.contiguous(), batch, rtol=0, atol=1e-3)


def test_torchscript_roundtrip_identical(model, tmp_path: Path) -> None:
    scripted = torch.jit.script(model)
    path = tmp_path / "m.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    torch.manual_seed(1)
    x = torch.rand(2, 3, 161, 129) * 2 - 1
    with torch.inference_mode():
        ref = model(x)
        assert torch.equal(scripted(x), ref)
        assert torch.equal(loaded(x), ref)


# ---------------------------------------------------------------- ONNX import errors


def test_missing_onnx_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="onnx_path"):
        load_ade20k_from_onnx(tmp_path / "nope.onnx")


def test_not_an_onnx_file(tmp_path: Path) -> None:
    _onnx()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffnot a protobuf" * 7)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        load_ade20k_from_onnx(bad)


def test_wrong_onnx_graph(tmp_path: Path) -> None:
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(ValueError, match=r"not the DeepLabV3\+ MobileNetV2 ADE20K graph.*"
                                         r"1 Conv nodes, expected 60"):
        load_ade20k_from_onnx(path)


@pytest.mark.parametrize("axis", [0, 1, -4])
def test_dequantize_per_tensor_and_per_channel(tmp_path: Path, axis: int) -> None:
    _onnx()
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=(4, 3, 3, 3), dtype=np.int8)
    ax = axis % 4
    n = q.shape[ax]
    scale = rng.uniform(0.01, 0.1, size=n).astype(np.float32)
    zp = rng.integers(-5, 5, size=n, dtype=np.int8)
    inits = [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(zp, "z"),
             numpy_helper.from_array(np.float32(0.05), "s1"),
             numpy_helper.from_array(np.int8(3), "z1")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=axis),
             helper.make_node("DequantizeLinear", ["q", "s1", "z1"], ["w1"])]
    graph = helper.make_graph(nodes, "dq", [], [], inits)
    g = ade20k._Graph(helper.make_model(graph), tmp_path / "dq.onnx")
    shape = [1, 1, 1, 1]
    shape[ax] = n
    want = (q.astype(np.float32) - zp.reshape(shape)) * scale.reshape(shape)
    np.testing.assert_allclose(g.const("w"), want, rtol=1e-6)
    np.testing.assert_allclose(g.const("w1"), (q.astype(np.float32) - 3) * np.float32(0.05),
                               rtol=1e-6)


@needs_source
def test_altered_graph_is_rejected(tmp_path: Path) -> None:
    onnx = _onnx()
    proto = onnx.load(str(SOURCE))
    stem = next(n for n in proto.graph.node if n.op_type == "Conv")
    for attr in stem.attribute:
        if attr.name == "strides":
            attr.ints[:] = [1, 1]
    path = tmp_path / "altered.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match=r"stem: .*stride 1.*expected .*stride 2"):
        load_ade20k_from_onnx(path)


def test_labels_file(tmp_path: Path) -> None:
    if LABELS.is_file():
        names = read_ade20k_labels(LABELS)
        assert len(names) == NUM_CLASSES and names[:3] == ["others", "wall", "building"]
    bad = tmp_path / "labels.txt"
    bad.write_text("0\tothers\n2\twall\n")
    with pytest.raises(ValueError, match="expected index 1"):
        read_ade20k_labels(bad)
    with pytest.raises(FileNotFoundError, match="ade20k_labels.txt"):
        read_ade20k_labels(tmp_path / "missing.txt")


# ---------------------------------------------------------------- cached conversion


def test_missing_source_explicit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"source: no ONNX file at .*nope\.onnx"):
        ensure_ade20k_torchscript(source=tmp_path / "nope.onnx", cache_dir=tmp_path)


def test_missing_source_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCBIR_MODELS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError) as info:
        ensure_ade20k_torchscript(cache_dir=tmp_path / "cache")
    msg = str(info.value)
    for needle in ("SEMCBIR_MODELS", "../shared/models", str(tmp_path / "empty"),
                   "sayakpaul/deeplabv3-mobilenetv2-ade20k", "tf2onnx 1.16.1", "opset 13"):
        assert needle in msg, f"{needle!r} missing from: {msg}"
    assert not (tmp_path / "cache" / "ade20k-mnv2.pt").exists()


@needs_source
def test_ensure_converts_once_and_reuses(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _onnx()
    path = ensure_ade20k_torchscript(cache_dir=tmp_path)
    assert path == tmp_path / "ade20k-mnv2.pt" and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ade20k-mnv2.json", "ade20k-mnv2.pt", "ade20k-mnv2.stamp.json"]
    meta = read_sidecar(path)
    assert meta.name == "ade20k-mnv2" and meta.num_classes == 151
    assert meta.class_names[:2] == ["others", "wall"] and len(meta.class_names) == 151
    assert meta.mean == [127.5] * 3 and meta.std == [127.5] * 3
    assert meta.input_size == (513, 513)

    # Second call: no conversion, files untouched.
    mtime = path.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("reconverted although the cache is valid")

    monkeypatch.setattr(ade20k, "load_ade20k_from_onnx", boom)
    assert ensure_ade20k_torchscript(cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime

    # The cached file is a working TorchScript model of the contract.
    net = torch.jit.load(str(path))
    with torch.inference_mode():
        y = net(torch.zeros(1, 3, 65, 65))
    assert y.shape == (1, 151, 17, 17) and y.dtype == torch.float32


@needs_source
@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete_stamp", "bad_sidecar"])
def test_ensure_detects_damaged_cache(tmp_path: Path, damage: str) -> None:
    _onnx()
    path = ensure_ade20k_torchscript(cache_dir=tmp_path)
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * len(good))
    elif damage == "delete_stamp":
        (tmp_path / "ade20k-mnv2.stamp.json").unlink()
    else:
        (tmp_path / "ade20k-mnv2.json").write_text("{not json")
    assert ensure_ade20k_torchscript(cache_dir=tmp_path) == path
    torch.jit.load(str(path))  # loads again
    assert read_sidecar(path).num_classes == 151
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@needs_source
def test_ensure_reconverts_when_source_changes(tmp_path: Path) -> None:
    onnx = _onnx()
    from onnx import numpy_helper

    src_dir = tmp_path / "models"
    src_dir.mkdir()
    proto = onnx.load(str(SOURCE))
    src = src_dir / SOURCE_FILENAME
    onnx.save(proto, str(src))
    (src_dir / "ade20k_labels.txt").write_bytes(LABELS.read_bytes())
    cache = tmp_path / "cache"
    path = ensure_ade20k_torchscript(source=src, cache_dir=cache)
    x = torch.zeros(1, 3, 65, 65)
    with torch.inference_mode():
        before = torch.jit.load(str(path))(x)

    # Shift the classifier bias of class 3 by +1: a changed source must reconvert.
    for i, init in enumerate(proto.graph.initializer):
        if init.name == "std.constant89":  # bias of the 151-way classifier
            bias = numpy_helper.to_array(init).copy()
            bias[3] += 1.0
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(bias, init.name))
            break
    else:
        pytest.fail("classifier bias initializer not found")
    onnx.save(proto, str(src))
    stamp = json.loads((cache / "ade20k-mnv2.stamp.json").read_text())
    assert ensure_ade20k_torchscript(source=src, cache_dir=cache) == path
    assert json.loads((cache / "ade20k-mnv2.stamp.json").read_text()) != stamp
    with torch.inference_mode():
        after = torch.jit.load(str(path))(x)
    diff = after - before
    torch.testing.assert_close(diff[:, 3], torch.ones_like(diff[:, 3]), rtol=0, atol=1e-5)
    diff[:, 3] = 0
    assert diff.abs().max() == 0


def test_import_semcbir_fast_does_not_import_torch() -> None:
    import subprocess
    import sys

    import semcbir_fast

    code = "import sys, semcbir_fast; assert 'torch' not in sys.modules"
    env = dict(os.environ)
    pkg_parent = str(Path(semcbir_fast.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_source
@needs_corel
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_and_autocast(tmp_path: Path) -> None:
    """The cached TorchScript file on CUDA: fp32 matches the CPU, fp16 autocast argmax >= 98 %."""
    path = ensure_ade20k_torchscript(cache_dir=tmp_path)
    cpu = torch.jit.load(str(path))
    gpu = torch.jit.load(str(path), map_location="cuda")
    x = _nchw([_image(k) for k in (0, 150, 310, 470, 630, 950)])
    with torch.inference_mode():
        ref = cpu(x)
        ref_label = ref.argmax(1)
        old_tf32 = torch.backends.cudnn.allow_tf32
        try:
            torch.backends.cudnn.allow_tf32 = False
            out = gpu(x.cuda()).float().cpu()
        finally:
            torch.backends.cudnn.allow_tf32 = old_tf32
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-3)
        xc = x.cuda().contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16):
            half = gpu(xc)
        assert half.dtype == torch.float16 and torch.isfinite(half).all()
        agree = (half.float().argmax(1).cpu() == ref_label).float().mean(dim=(1, 2))
        assert agree.min() >= 0.98, f"fp16 autocast argmax agreement per image {agree.tolist()}"
        if torch.cuda.is_bf16_supported():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                bf = gpu(xc)
            assert bf.dtype == torch.bfloat16 and torch.isfinite(bf.float()).all()
            agree_bf = (bf.float().argmax(1).cpu() == ref_label).float().mean()
            assert agree_bf >= 0.9, f"bf16 autocast argmax agreement {agree_bf:.4f}"
