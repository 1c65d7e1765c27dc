"""The Pascal VOC "things" model: DeepLabV3 / MobileNetV2 (fully quantised), in native PyTorch.

The source is ``deeplabv3_mnv2_pascal_quant.tflite`` (google-coral/test_data, commit
104342d2, Apache-2.0): DeepLabV3 with a MobileNetV2 backbone trained on Pascal VOC 2012,
21 labels (0 "background" + 20 object classes), every weight and activation uint8. It is
the second model of the composite segmenter ``"ade20k+voc"``
(:mod:`semcbir_fast.segment.composite`, ``docs/composite.md``): it paints the objects that
the ADE20K model lumps together ("animal") or misses over the ADE20K map.

- :func:`load_voc_from_tflite` reads the weights from the TFLite flatbuffer, dequantises
  them (``(q - zero_point) * scale``; int32 biases ``q * scale``) and maps them onto the
  module built by :func:`build_voc_mnv2`, checking every convolution's shape, stride,
  dilation and fused activation against the graph;
- :func:`ensure_voc_torchscript` does that once and caches a TorchScript file with its
  sidecar (:mod:`semcbir_fast.models.sidecar`), like the ADE20K port
  (:mod:`semcbir_fast.models.ade20k`);
- :func:`ensure_voc_litert` caches the shipped int8 graph for the LiteRT runtime, cut at its
  33x33 logits and wrapped so that it takes and returns float32 (a ``QUANTIZE`` op in front,
  a ``DEQUANTIZE`` op behind; everything between kept byte for byte), so that the
  segmenter runs it like any other TFLite model.

Architecture (read off the TFLite graph; output stride 16, ~2.1 M parameters)
----------------------------------------------------------------------------
MobileNetV2 (width 1.0) without its last 1x1 conv, batch norms folded, ReLU6::

    stem     3x3 s2 conv 3->32                           (1/2)
    block  0 t=1  32->16
    block  1 t=6  16->24  s2                             (1/4)
    block  2      24->24
    block  3 t=6  24->32  s2                             (1/8)
    block  4-5    32->32
    block  6 t=6  32->64  s2                             (1/16)
    block  7-9    64->64
    block 10-12   64->96, 96->96
    block 13      96->160 (stride 2 of plain MobileNetV2 removed: output stride 16)
    block 14-15  160->160 depthwise rate 2
    block 16     160->320 rate 2

Head, DeepLabV3 with the light "MobileNet" ASPP and no decoder, ReLU::

    aspp0      1x1 conv 320->256
    pooling    global average -> 1x1 conv 320->256 -> broadcast to 33x33
    projection concat (pooling, aspp0) 512 -> 1x1 conv -> 256
    logits     1x1 conv 256->21                    (33x33 for a 513x513 input)

The graph then resizes the logits to 513x513 (bilinear, ``align_corners``) and takes the
argmax. :class:`DeepLabV3MobileNetV2` returns the 33x33 logits (logit ``(i, j)`` on input
pixel ``(16 i, 16 j)``); the segmenter resizes them to each image with the same
"corners" geometry (:mod:`semcbir_fast.segment.geometry`).

Input normalisation: the graph's input is uint8 RGB with scale 1/128 and zero point 128,
so the float port takes ``(rgb - 128) / 128`` (sidecar ``mean = std = 128``).

Agreement with the TFLite runtime (``tests/test_voc.py``, ``bench/bench_composite.py
agreement``): on 70 real images (every 20th Corel-1K, every 12th MSRC v1 image) the float
port's labels match the quantised graph's own 513x513 output on 99.2 % of the pixels on
average (median image 99.8 %, 94 % of the images >= 97 %, worst 85.4 %): a fully quantised
source rounds every activation to 8 bits, the float port does not (``docs/composite.md``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semcbir_fast._paths import models_root
from semcbir_fast.models._port import (
    builtin_code,
    ensure_converted,
    find_source,
    only_producer,
    pack_tflite,
    read_labels,
    read_tflite,
    save_torchscript,
    tensor_names,
    tflite_schema,
)
from semcbir_fast.models.ade20k import _conv, _InvertedResidual
from semcbir_fast.models.sidecar import SegmenterMeta

__all__ = [
    "INPUT_SIZE",
    "LABELS_FILENAME",
    "MODEL_NAME",
    "NUM_CLASSES",
    "SOURCE_FILENAME",
    "VOC_TO_ADE20K",
    "DeepLabV3MobileNetV2",
    "build_voc_mnv2",
    "ensure_voc_litert",
    "ensure_voc_torchscript",
    "load_voc_from_tflite",
    "read_voc_labels",
    "voc_litert_model_bytes",
]

MODEL_NAME = "voc-mnv2"
NUM_CLASSES = 21
INPUT_SIZE = (513, 513)
SOURCE_FILENAME = "deeplabv3_mnv2_pascal_quant.tflite"
LABELS_FILENAME = "voc_labels.txt"
#: the 33x33x21 uint8 logits of the source graph (output of the classifier conv)
LOGITS_TENSOR = "logits/semantic/BiasAdd;logits/semantic/Conv2D;logits/semantic/biases1"
# Bump when the port changes in a way that alters the converted files: old caches reconvert.
CONVERTER_VERSION = 1

_PUBLISHED = (
    "It is the Coral Edge TPU project's deeplabv3_mnv2_pascal_quant.tflite "
    "(google-coral/test_data, commit 104342d2, Apache-2.0)."
)

#: The VOC classes under the names of the ADE20K label space (``ade20k_labels.txt``) where
#: ADE20K has the same thing; the other VOC classes keep their own name (and are appended
#: to a merged label space); ``None``: never painted over another model's map. This is the
#: class mapping of the ``"ade20k+voc"`` composite (``docs/composite.md``), fixed by the
#: class definitions alone.
VOC_TO_ADE20K: dict[str, str | None] = {
    "background": None,
    "aeroplane": "airplane",
    "bicycle": "bicycle",
    "bird": "bird",
    "boat": "boat",
    "bottle": "bottle",
    "bus": "bus",
    "car": "car",
    "cat": "cat",
    "chair": "chair",
    "cow": "cow",
    "diningtable": "table",
    "dog": "dog",
    "horse": "horse",
    "motorbike": "minibike",
    "person": "person",
    "pottedplant": "plant",
    "sheep": "sheep",
    "sofa": "sofa",
    "train": "train",
    "tvmonitor": "television",
}

# (expansion t, output channels, stride, depthwise dilation) of blocks 0..16 as found in
# the graph (output stride 16: stride of block 13 removed, rate 2 from block 14 on).
_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1), (6, 24, 1, 1),
    (6, 32, 2, 1), (6, 32, 1, 1), (6, 32, 1, 1),
    (6, 64, 2, 1), (6, 64, 1, 1), (6, 64, 1, 1), (6, 64, 1, 1),
    (6, 96, 1, 1), (6, 96, 1, 1), (6, 96, 1, 1),
    (6, 160, 1, 1), (6, 160, 1, 2), (6, 160, 1, 2),
    (6, 320, 1, 2),
)


# --------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------


class DeepLabV3MobileNetV2(nn.Module):
    """DeepLabV3 (light ASPP, no decoder) on a MobileNetV2 of output stride 16.

    Parameters
    ----------
    num_classes : int
        Classifier outputs (21 for Pascal VOC: 0 "background" + 20 objects).
    upsample : bool
        If True, ``forward`` resizes the logits to the input size (bilinear,
        ``align_corners=True``, as the source graph does); default False: 1/16 size.

    Notes
    -----
    ``forward(x)`` takes float ``(N, 3, H, W)`` RGB normalised as ``(rgb - 128) / 128`` and
    returns logits ``(N, num_classes, (H - 1) // 16 + 1, (W - 1) // 16 + 1)`` (33x33 for
    the 513x513 input it was trained at), or ``(N, num_classes, H, W)`` with
    ``upsample=True``. Scriptable; runs on CUDA and under fp16 / bf16 autocast.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, *, upsample: bool = False) -> None:
        super().__init__()
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.upsample: bool = bool(upsample)
        self.stem = nn.Sequential(_conv(3, 32, 3, stride=2), nn.ReLU6())
        blocks = []
        cin = 32
        for t, cout, stride, dilation in _BLOCKS:
            blocks.append(_InvertedResidual(cin, cout, t, stride, dilation))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.aspp0 = nn.Sequential(_conv(cin, 256), nn.ReLU())
        self.image_pool = nn.Sequential(_conv(cin, 256), nn.ReLU())
        self.aspp_project = nn.Sequential(_conv(512, 256), nn.ReLU())
        self.classifier = _conv(256, int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError("input must be (N, 3, H, W) normalised RGB, got shape "
                             + str(list(x.shape)))
        in_h, in_w = x.shape[2], x.shape[3]
        x = self.stem(x)
        for blk in self.blocks:
            x, _ = blk(x)
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))
        pooled = pooled.expand(-1, -1, x.shape[2], x.shape[3])
        x = self.aspp_project(torch.cat([pooled, self.aspp0(x)], dim=1))
        x = self.classifier(x)
        if self.upsample:
            x = F.interpolate(x, size=[in_h, in_w], mode="bilinear", align_corners=True)
        return x


def build_voc_mnv2(*, upsample: bool = False) -> DeepLabV3MobileNetV2:
    """The VOC DeepLabV3 / MobileNetV2 module with random weights (eval mode); load the
    weights with :func:`load_voc_from_tflite`."""
    return DeepLabV3MobileNetV2(NUM_CLASSES, upsample=upsample).eval()


def _conv_slots(model: DeepLabV3MobileNetV2) -> list[tuple[str, nn.Conv2d, str]]:
    """``(role, conv, fused activation)`` of every conv, in the graph's data-flow order."""
    slots: list[tuple[str, nn.Conv2d, str]] = [("stem", model.stem[0], "relu6")]
    for i, blk in enumerate(model.blocks):
        if isinstance(blk.expand, nn.Sequential):
            slots.append((f"blocks.{i}.expand", blk.expand[0], "relu6"))
        slots.append((f"blocks.{i}.dw", blk.dw[0], "relu6"))
        slots.append((f"blocks.{i}.project", blk.project, "none"))
    slots += [("aspp0", model.aspp0[0], "relu"), ("image_pool", model.image_pool[0], "relu"),
              ("aspp_project", model.aspp_project[0], "relu"),
              ("classifier", model.classifier, "none")]
    return slots


# --------------------------------------------------------------------------------------
# TFLite import
# --------------------------------------------------------------------------------------


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(
        f"{path} is not the DeepLabV3 MobileNetV2 Pascal VOC TFLite graph this loader reads "
        f"({what}). Pass {SOURCE_FILENAME} from the project's shared models folder. "
        f"{_PUBLISHED}"
    )


def _read_model(path: Path) -> tuple[Any, Any, bytes]:
    """``(schema module, ModelT, raw bytes)`` of a TFLite file, with clear errors."""
    schema = tflite_schema(f"reading {SOURCE_FILENAME}")
    buf = path.read_bytes()
    return schema, read_tflite(schema, buf, lambda what: _bad(path, what)), buf


def _dequantize(model: Any, tensor: Any, path: Path) -> np.ndarray:
    """Float value of a constant (uint8 / int8 / int32) tensor of ``model``."""
    data = model.buffers[tensor.buffer].data
    if data is None:
        raise _bad(path, f"tensor {tensor.name!r} has no constant data")
    dt = {2: np.int32, 3: np.uint8, 9: np.int8}.get(int(tensor.type))
    if dt is None:
        raise _bad(path, f"tensor {tensor.name!r} has type {tensor.type}, expected a "
                   "quantised constant")
    q = np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=dt)
    q = q.reshape([int(v) for v in tensor.shape]).astype(np.float64)
    qp = tensor.quantization
    if qp is None or qp.scale is None or len(qp.scale) == 0:
        raise _bad(path, f"tensor {tensor.name!r} has no quantisation parameters")
    scale = np.asarray(qp.scale, dtype=np.float64)
    zp = np.asarray(qp.zeroPoint if qp.zeroPoint is not None else [0] * len(scale),
                    dtype=np.float64)
    if scale.size > 1:  # per-channel along quantizedDimension
        shape = [1] * q.ndim
        shape[int(qp.quantizedDimension)] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def load_voc_from_tflite(source: str | os.PathLike[str] | None = None, *,
                         upsample: bool = False) -> DeepLabV3MobileNetV2:
    """The PyTorch port with the dequantised weights of the VOC TFLite file.

    Parameters
    ----------
    source : str or os.PathLike, optional
        The TFLite file; default ``models_root() / "deeplabv3_mnv2_pascal_quant.tflite"``
        (``SEMCBIR_MODELS``, fallback ``../shared/models``).
    upsample : bool
        Build the module with the final resize to the input size inside (default False).

    Returns
    -------
    DeepLabV3MobileNetV2
        In eval mode, float32, CPU.

    Raises
    ------
    FileNotFoundError
        The file is missing (the message says where to put it).
    ValueError
        The file is not this graph: each of its 56 convolutions is checked for kind, shape,
        stride, dilation, padding and fused activation against the module.
    """
    path = _find_source(source)
    schema, model, _ = _read_model(path)
    sg = model.subgraphs[0]
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    convs = []
    for op in sg.operators:
        kind = ops.get(builtin_code(model, op), "?")
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            convs.append((kind, op))
    net = build_voc_mnv2(upsample=upsample)
    slots = _conv_slots(net)
    if len(convs) != len(slots):
        raise _bad(path, f"{len(convs)} convolutions, expected {len(slots)}")
    acts = {0: "none", 1: "relu", 3: "relu6"}
    state: dict[str, torch.Tensor] = {}
    for (role, conv, act), (kind, op) in zip(slots, convs):
        depthwise = conv.groups > 1
        if depthwise != (kind == "DEPTHWISE_CONV_2D"):
            raise _bad(path, f"{role}: found {kind}")
        o = op.builtinOptions
        got = (int(o.strideH), int(o.dilationHFactor), int(o.padding),
               acts.get(int(o.fusedActivationFunction), "?"))
        want = (conv.stride[0], conv.dilation[0], 0, act)  # padding 0 = SAME
        if got != want:
            raise _bad(path, f"{role}: stride/dilation/padding/activation {got}, "
                       f"expected {want}")
        w = _dequantize(model, sg.tensors[op.inputs[1]], path)
        b = _dequantize(model, sg.tensors[op.inputs[2]], path)
        # TFLite: conv [out, kh, kw, in], depthwise [1, kh, kw, ch] -> torch [out, in/g, kh, kw]
        w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
        if tuple(w.shape) != tuple(conv.weight.shape) or b.shape != tuple(conv.bias.shape):
            raise _bad(path, f"{role}: weight {list(w.shape)}, expected "
                       f"{list(conv.weight.shape)}")
        state[f"{role}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        state[f"{role}.bias"] = torch.from_numpy(b)
    with torch.no_grad():
        for role, conv, _ in slots:
            conv.weight.copy_(state[f"{role}.weight"])
            conv.bias.copy_(state[f"{role}.bias"])
    return net


# --------------------------------------------------------------------------------------
# The shipped graph for the LiteRT runtime: float32 in, 33x33 float32 logits out
# --------------------------------------------------------------------------------------


def voc_litert_model_bytes(source: str | os.PathLike[str] | None = None) -> bytes:
    """The VOC TFLite graph cut at its 33x33 logits, with float32 input and output.

    A ``QUANTIZE`` op (float32 -> uint8 with the input's own scale 1/128 and zero point
    128) is put in front and a ``DEQUANTIZE`` op behind the uint8 logits; the two resizes
    and the argmax after them are dropped. The operators in between, and their uint8
    weights, are kept as they are. With the sidecar's normalisation ``(rgb - 128) / 128``
    the graph then sees exactly the uint8 RGB it was built for.
    """
    path = _find_source(source)
    schema, model, buf = _read_model(path)
    sg = model.subgraphs[0]
    names = tensor_names(sg)
    if LOGITS_TENSOR not in names:
        raise _bad(path, f"no tensor {LOGITS_TENSOR!r}")
    idx = names.index(LOGITS_TENSOR)
    logits = sg.tensors[idx]
    if [int(v) for v in logits.shape] != [1, 33, 33, NUM_CLASSES] or logits.type != 3:
        raise _bad(path, f"logits shape {list(logits.shape)}, expected uint8 [1, 33, 33, 21]")
    if len(sg.inputs) != 1:
        raise _bad(path, f"{len(sg.inputs)} inputs, expected 1")
    in_idx = int(sg.inputs[0])
    inp = sg.tensors[in_idx]
    if [int(v) for v in inp.shape] != [1, *INPUT_SIZE, 3] or inp.type != 3:
        raise _bad(path, f"input {list(inp.shape)}, expected uint8 [1, 513, 513, 3]")
    k = only_producer(sg, idx, LOGITS_TENSOR, lambda what: _bad(path, what))

    def opcode(builtin: int) -> int:
        for j, c in enumerate(model.operatorCodes):
            if max(int(c.builtinCode), int(c.deprecatedBuiltinCode)) == builtin:
                return j
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(c)
        return len(model.operatorCodes) - 1

    def float_tensor(name: bytes, shape: list[int]) -> int:
        b = schema.BufferT()
        model.buffers.append(b)
        t = schema.TensorT()
        t.name, t.shape, t.type = name, np.array(shape, dtype=np.int32), schema.TensorType.FLOAT32
        t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    f_in = float_tensor(b"input_float", [1, *INPUT_SIZE, 3])
    f_out = float_tensor(b"logits_float", [1, 33, 33, NUM_CLASSES])
    quant = schema.OperatorT()
    quant.opcodeIndex = opcode(schema.BuiltinOperator.QUANTIZE)
    quant.inputs, quant.outputs = np.array([f_in], np.int32), np.array([in_idx], np.int32)
    quant.builtinOptionsType = schema.BuiltinOptions.QuantizeOptions
    quant.builtinOptions = schema.QuantizeOptionsT()
    deq = schema.OperatorT()
    deq.opcodeIndex = opcode(schema.BuiltinOperator.DEQUANTIZE)
    deq.inputs, deq.outputs = np.array([idx], np.int32), np.array([f_out], np.int32)
    deq.builtinOptionsType = schema.BuiltinOptions.DequantizeOptions
    deq.builtinOptions = schema.DequantizeOptionsT()
    sg.operators = [quant, *sg.operators[: k + 1], deq]
    sg.inputs = np.array([f_in], dtype=np.int32)
    sg.outputs = np.array([f_out], dtype=np.int32)
    return pack_tflite(model, len(buf))


# --------------------------------------------------------------------------------------
# Files: labels, source lookup, cached conversions
# --------------------------------------------------------------------------------------


def read_voc_labels(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The 21 class names of ``voc_labels.txt`` (``index<TAB>name``, 0 = "background").

    Raises ``FileNotFoundError`` (missing) or ``ValueError`` (malformed, wrong count).
    """
    path = Path(path) if path is not None else models_root() / LABELS_FILENAME
    return read_labels(path, count=NUM_CLASSES, filename=LABELS_FILENAME,
                       beside="TFLite model")


def _find_source(source: str | os.PathLike[str] | None) -> Path:
    return find_source(source, filename=SOURCE_FILENAME, kind="TFLite",
                       what="the Pascal VOC segmentation model", published=_PUBLISHED)


def _sidecar(labels: Path) -> SegmenterMeta:
    return SegmenterMeta(name=MODEL_NAME, num_classes=NUM_CLASSES,
                         class_names=read_voc_labels(labels), mean=[128.0] * 3,
                         std=[128.0] * 3, input_size=INPUT_SIZE)


def _ensure(src: Path, filename: str, cache_dir: str | os.PathLike[str] | None,
            convert: Any) -> Path:
    """``<cache_dir>/filename`` made from ``src`` by ``convert(tmp_path)``, with its sidecar
    and a stamp (source and output SHA-256); re-used while both match."""
    return ensure_converted(src, filename, cache_dir, convert, name=MODEL_NAME,
                            num_classes=NUM_CLASSES, sidecar=_sidecar,
                            labels_filename=LABELS_FILENAME,
                            converter_version=CONVERTER_VERSION)


def ensure_voc_torchscript(*, source: str | os.PathLike[str] | None = None,
                           cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cached TorchScript VOC model (``<cache_dir>/voc-mnv2.pt`` with its sidecar
    ``voc-mnv2.json`` and a stamp), converted from the TFLite file at first use and
    re-converted when the source or the converted file changes.

    Parameters
    ----------
    source : str or os.PathLike, optional
        The TFLite file (default ``models_root() / "deeplabv3_mnv2_pascal_quant.tflite"``);
        class names from ``voc_labels.txt`` beside it (fallback: in ``models_root()``).
    cache_dir : str or os.PathLike, optional
        Where to write (default ``SEMCBIR_CACHE`` or ``~/.cache/semcbir_fast``).
    """
    src = _find_source(source)

    return _ensure(src, f"{MODEL_NAME}.pt", cache_dir, lambda tmp: save_torchscript(
        load_voc_from_tflite(src).requires_grad_(False), tmp))


def ensure_voc_litert(*, source: str | os.PathLike[str] | None = None,
                      cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cached float-in / float-out int8 TFLite file of :func:`voc_litert_model_bytes`
    (``<cache_dir>/voc-mnv2.litert.tflite`` with its sidecar and stamp)."""
    src = _find_source(source)
    return _ensure(src, f"{MODEL_NAME}.litert.tflite", cache_dir,
                   lambda tmp: Path(tmp).write_bytes(voc_litert_model_bytes(src)))
