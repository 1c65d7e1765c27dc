"""The embedded default segmenter: DeepLabV3+ / MobileNetV2 on ADE20K, in native PyTorch.

The source is the int8-weight ONNX file ``ade20k_deeplabv3_mnv2.onnx`` (TF Hub
``sayakpaul/deeplabv3-mobilenetv2-ade20k``, converted with tf2onnx 1.16.1, opset 13).
:func:`load_ade20k_from_onnx` dequantises its constants and maps them onto the module built
by :func:`build_ade20k_mnv2`; :func:`ensure_ade20k_torchscript` does that once and caches a
TorchScript file plus its sidecar (see :mod:`semcbir_fast.models.sidecar`).

For the CPU fast path, :func:`ensure_ade20k_litert` caches the shipped int8 TFLite file cut
at the same 1/4-resolution logits (run by LiteRT, ``ai-edge-litert``), and
:func:`ensure_ade20k_onnx` the ONNX graph cut there (run by onnxruntime); the segmenter
turns all three into label maps through the same geometry
(:mod:`semcbir_fast.segment.runtimes`, ``docs/segmentation_speed.md``).

Architecture (read off the ONNX graph; output stride 8, ~2.2 M parameters)
-------------------------------------------------------------------------
Backbone, MobileNetV2 (width 1.0) without its last 1x1 conv; batch norms are folded into the
convolutions, activations are ReLU6::

    stem     3x3 s2 conv 3->32                                   (1/2)
    block  0 t=1  32->16                                          (1/2)
    block  1 t=6  16->24  s2                                      (1/4)
    block  2 t=6  24->24  (its depthwise output, 144 ch, is the decoder's low-level input)
    block  3 t=6  24->32  s2                                      (1/8)
    block  4-5    32->32
    block  6 t=6  32->64  (stride 2 of plain MobileNetV2 removed: output stride 8)
    block  7-9    64->64  depthwise rate 2
    block 10      64->96  rate 2
    block 11-12   96->96  rate 2
    block 13      96->160 rate 2 (stride removed)
    block 14-15  160->160 rate 4
    block 16     160->320 rate 4

In the graph every atrous depthwise conv is a space-to-batch rewrite (Pad, SpaceToDepth,
VALID conv, DepthToSpace, Slice, then the batch norm as Mul + Add); here it is one
``nn.Conv2d(dilation=r, padding=r)``, which computes the same function.

Head, DeepLabV3+ with the light "MobileNet" ASPP (no atrous branches), activations ReLU::

    aspp0      1x1 conv 320->256                      on the 1/8 features
    pooling    global average -> 1x1 conv 320->256 -> broadcast back to 1/8
    projection concat (pooling, aspp0) 512 -> 1x1 conv -> 256
    decoder    bilinear (align_corners) 1/8 -> 1/4; concat with 1x1 conv 144->48 of the
               low-level features; two separable convs (3x3 depthwise + ReLU, 1x1 + ReLU)
               304->256->256
    logits     1x1 conv 256->151

Output resolution (a choice of this port)
-----------------------------------------
The graph ends with a bilinear ``align_corners`` resize of the 1/4 logits (129x129 for a
513x513 input) to 513x513. By default :class:`DeepLabV3PlusMobileNetV2` returns the 1/4
logits, ``((H - 1) // 4 + 1, (W - 1) // 4 + 1)``: the segmenter resizes logits to each
image's own size anyway, and full-size 151-channel logits cost 159 MB per 513x513 image in
float32 plus an extra CPU resize. Logit ``(i, j)`` sits on input pixel ``(4 i, 4 j)``, so
``F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=True)`` reproduces the
graph exactly; ``build_ade20k_mnv2(upsample=True)`` builds a module that does it inside.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
from semcbir_fast.models.sidecar import SegmenterMeta

__all__ = [
    "LOGITS_TENSOR",
    "MODEL_NAME",
    "NUM_CLASSES",
    "SOURCE_FILENAME",
    "TFLITE_SOURCE_FILENAME",
    "DeepLabV3PlusMobileNetV2",
    "build_ade20k_mnv2",
    "ensure_ade20k_litert",
    "ensure_ade20k_onnx",
    "ensure_ade20k_torchscript",
    "load_ade20k_from_onnx",
    "read_ade20k_labels",
]

MODEL_NAME = "ade20k-mnv2"
NUM_CLASSES = 151
INPUT_SIZE = (513, 513)
SOURCE_FILENAME = "ade20k_deeplabv3_mnv2.onnx"
LABELS_FILENAME = "ade20k_labels.txt"
# Bump when the port changes in a way that alters the converted file: old caches reconvert.
CONVERTER_VERSION = 1

_PUBLISHED = (
    "It is published on TF Hub as 'sayakpaul/deeplabv3-mobilenetv2-ade20k' (TFLite) and was "
    "converted to ONNX with tf2onnx 1.16.1 (opset 13)."
)

# (expansion t, output channels, stride, depthwise dilation) of MobileNetV2 blocks 0..16 as
# found in the graph (output stride 8: strides of blocks 6 and 13 removed, rates 2 and 4).
_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1), (6, 24, 1, 1),
    (6, 32, 2, 1), (6, 32, 1, 1), (6, 32, 1, 1),
    (6, 64, 1, 1), (6, 64, 1, 2), (6, 64, 1, 2), (6, 64, 1, 2),
    (6, 96, 1, 2), (6, 96, 1, 2), (6, 96, 1, 2),
    (6, 160, 1, 2), (6, 160, 1, 4), (6, 160, 1, 4),
    (6, 320, 1, 4),
)
_LOW_LEVEL_BLOCK = 2  # decoder taps the depthwise activation of this block


# --------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int = 1, *, stride: int = 1, dilation: int = 1,
          groups: int = 1) -> nn.Conv2d:
    """Conv2d with bias (batch norm folded) and 'same' symmetric padding."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k - 1) // 2,
                     dilation=dilation, groups=groups, bias=True)


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand + ReLU6] -> 3x3 depthwise + ReLU6 -> 1x1 project.

    ``forward`` returns ``(output, depthwise_activation)``; the second feeds the decoder.
    """

    def __init__(self, cin: int, cout: int, expand: int, stride: int, dilation: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand: nn.Module = (
            nn.Sequential(_conv(cin, hidden), nn.ReLU6()) if expand != 1 else nn.Identity()
        )
        self.dw = nn.Sequential(
            _conv(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden),
            nn.ReLU6(),
        )
        self.project = _conv(hidden, cout)
        self.residual: bool = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dw(self.expand(x))
        y = self.project(h)
        if self.residual:
            y = y + x
        return y, h


class DeepLabV3PlusMobileNetV2(nn.Module):
    """DeepLabV3+ with a dilated MobileNetV2 backbone (output stride 8), ADE20K layout.

    Parameters
    ----------
    num_classes : int
        Output channels of the classifier (151 for the ADE20K model: 0 "others" + 150).
    upsample : bool
        If True, ``forward`` resizes the logits to the input size (bilinear,
        ``align_corners=True``, as the source graph does). If False (default), it returns
        the 1/4-resolution logits; see the module docstring.

    Notes
    -----
    ``forward(x)`` takes float ``(N, 3, H, W)`` RGB normalised as ``(rgb - 127.5) / 127.5``
    (any ``N``, ``H``, ``W``; the model was trained at 513x513) and returns logits
    ``(N, num_classes, (H - 1) // 4 + 1, (W - 1) // 4 + 1)``, or ``(N, num_classes, H, W)``
    with ``upsample=True``. Works with channels_last inputs, CUDA, and fp16/bf16 autocast.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, *, upsample: bool = False) -> None:
        super().__init__()
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.upsample: bool = bool(upsample)
        self.low_level_block: int = _LOW_LEVEL_BLOCK
        self.stem = nn.Sequential(_conv(3, 32, 3, stride=2), nn.ReLU6())
        blocks = []
        cin = 32
        for t, cout, stride, dilation in _BLOCKS:
            blocks.append(_InvertedResidual(cin, cout, t, stride, dilation))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        low_ch = 24 * 6
        self.aspp0 = nn.Sequential(_conv(cin, 256), nn.ReLU())
        self.image_pool = nn.Sequential(_conv(cin, 256), nn.ReLU())
        self.aspp_project = nn.Sequential(_conv(512, 256), nn.ReLU())
        self.low_level = nn.Sequential(_conv(low_ch, 48), nn.ReLU())
        self.decoder = nn.Sequential(
            _conv(304, 304, 3, groups=304), nn.ReLU(),
            _conv(304, 256), nn.ReLU(),
            _conv(256, 256, 3, groups=256), nn.ReLU(),
            _conv(256, 256), nn.ReLU(),
        )
        self.classifier = _conv(256, int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError("input must be (N, 3, H, W) normalised RGB, got shape "
                             + str(list(x.shape)))
        in_h, in_w = x.shape[2], x.shape[3]
        x = self.stem(x)
        low = x
        for i, blk in enumerate(self.blocks):
            x, hidden = blk(x)
            if i == self.low_level_block:
                low = hidden
        # ASPP ("MobileNet" variant): 1x1 branch + image pooling branch.
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))
        pooled = pooled.expand(-1, -1, x.shape[2], x.shape[3])
        x = self.aspp_project(torch.cat([pooled, self.aspp0(x)], dim=1))
        # Decoder: 1/8 -> 1/4, fuse with low-level features.
        low = self.low_level(low)
        x = F.interpolate(x, size=[low.shape[2], low.shape[3]], mode="bilinear",
                          align_corners=True)
        x = self.decoder(torch.cat([x, low.to(x.dtype)], dim=1))
        x = self.classifier(x)
        if self.upsample:
            x = F.interpolate(x, size=[in_h, in_w], mode="bilinear", align_corners=True)
        return x


def build_ade20k_mnv2(*, upsample: bool = False) -> DeepLabV3PlusMobileNetV2:
    """Build the ADE20K DeepLabV3+ / MobileNetV2 module with random weights (eval mode).

    Parameters
    ----------
    upsample : bool
        Resize the logits to the input size inside ``forward`` (default False: 1/4 size).

    Returns
    -------
    DeepLabV3PlusMobileNetV2
        151 output classes; load weights with :func:`load_ade20k_from_onnx`.
    """
    return DeepLabV3PlusMobileNetV2(NUM_CLASSES, upsample=upsample).eval()


def _conv_slots(model: DeepLabV3PlusMobileNetV2) -> dict[str, nn.Conv2d]:
    """Every conv of ``model`` by role name, backbone first in data-flow order."""
    slots: dict[str, nn.Conv2d] = {"stem": model.stem[0]}
    for i, blk in enumerate(model.blocks):
        if isinstance(blk.expand, nn.Sequential):
            slots[f"blocks.{i}.expand"] = blk.expand[0]
        slots[f"blocks.{i}.dw"] = blk.dw[0]
        slots[f"blocks.{i}.project"] = blk.project
    slots.update({
        "aspp0": model.aspp0[0],
        "image_pool": model.image_pool[0],
        "aspp_project": model.aspp_project[0],
        "low_level": model.low_level[0],
        "decoder.dw0": model.decoder[0],
        "decoder.pw0": model.decoder[2],
        "decoder.dw1": model.decoder[4],
        "decoder.pw1": model.decoder[6],
        "classifier": model.classifier,
    })
    return slots


# --------------------------------------------------------------------------------------
# ONNX import
# --------------------------------------------------------------------------------------


class _ConvRecord:
    """One Conv of the ONNX graph with its dequantised, batch-norm-folded parameters."""

    def __init__(self, node: Any, weight: np.ndarray, bias: np.ndarray, stride: int,
                 dilation: int, padding: int, groups: int) -> None:
        self.node = node
        self.weight = weight
        self.bias = bias
        self.stride = stride
        self.dilation = dilation
        self.padding = padding
        self.groups = groups

    def describe(self) -> str:
        return (f"Conv {self.node.name!r} weight {list(self.weight.shape)} stride "
                f"{self.stride} dilation {self.dilation} padding {self.padding} "
                f"groups {self.groups}")


class _Graph:
    """Small helper over an ONNX graph: constants (dequantised) and producer/consumer maps."""

    def __init__(self, model: Any, path: Path) -> None:
        from onnx import numpy_helper

        self.path = path
        self.graph = model.graph
        self._to_array = numpy_helper.to_array
        self.init = {t.name: t for t in self.graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
        self._cache: dict[str, np.ndarray | None] = {}

    def error(self, what: str) -> ValueError:
        return ValueError(
            f"{self.path} is not the DeepLabV3+ MobileNetV2 ADE20K graph this loader reads "
            f"({what}). Pass the ONNX file {SOURCE_FILENAME} from the project's shared models "
            f"folder. {_PUBLISHED}"
        )

    @staticmethod
    def attrs(node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str) -> np.ndarray | None:
        """Value of a constant tensor (initializer, Constant, or DequantizeLinear of those)."""
        if name in self._cache:
            return self._cache[name]
        value: np.ndarray | None = None
        if name in self.init:
            value = self._to_array(self.init[name])
        elif name in self.producer:
            node = self.producer[name]
            if node.op_type == "Constant":
                a = self.attrs(node)
                if "value" in a:
                    value = self._to_array(a["value"])
            elif node.op_type == "DequantizeLinear":
                value = self._dequantize(node)
        self._cache[name] = value
        return value

    def _dequantize(self, node: Any) -> np.ndarray | None:
        q = self.const(node.input[0])
        scale = self.const(node.input[1])
        if q is None or scale is None:
            return None
        zp = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        x = q.astype(np.float32)
        if zp is not None:
            zp_f = zp.astype(np.float32)
        else:
            zp_f = np.zeros_like(scale, dtype=np.float32)
        scale = scale.astype(np.float32)
        if scale.ndim == 1 and scale.size > 1:  # per-channel: broadcast along `axis`
            axis = int(self.attrs(node).get("axis", 1))
            axis = axis % x.ndim
            shape = [1] * x.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
            if zp_f.size == scale.size:
                zp_f = zp_f.reshape(shape)
        elif scale.ndim > 1:
            raise self.error(f"DequantizeLinear {node.name!r} has a {scale.ndim}-D scale")
        return ((x - zp_f) * scale).astype(np.float32)

    def only_consumer(self, name: str, op_type: str) -> Any | None:
        nodes = self.consumers.get(name, [])
        if len(nodes) == 1 and nodes[0].op_type == op_type:
            return nodes[0]
        return None

    def producer_of(self, name: str, op_type: str) -> Any | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _read_conv(g: _Graph, node: Any) -> _ConvRecord:
    """Parameters of one Conv, with the space-to-batch pattern turned into a dilation."""
    w = g.const(node.input[1])
    if w is None:
        raise g.error(f"Conv {node.name!r} has a non-constant weight")
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 != 1:
        raise g.error(f"Conv {node.name!r} has weight shape {list(w.shape)}, expected a "
                      "square odd 2-D kernel")
    b = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    bias = np.zeros(w.shape[0], np.float32) if b is None else b.astype(np.float32).reshape(-1)
    a = g.attrs(node)
    strides = list(a.get("strides", [1, 1]))
    dilations = list(a.get("dilations", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise g.error(f"Conv {node.name!r} uses auto_pad")
    if len(set(strides)) != 1 or len(set(dilations)) != 1 or len(set(pads)) != 1:
        raise g.error(f"Conv {node.name!r} is not symmetric (strides {strides}, dilations "
                      f"{dilations}, pads {pads})")
    k = int(w.shape[2])
    stride, dilation, padding = int(strides[0]), int(dilations[0]), int(pads[0])
    groups = int(a.get("group", 1))
    weight = w.astype(np.float32)

    # Space-to-batch atrous conv: Pad -> Reshape -> SpaceToDepth(r) -> Transpose -> Conv
    # (VALID) -> Transpose -> DepthToSpace(r) -> Slice -> Reshape -> Mul -> Add.
    tr_in = g.producer_of(node.input[0], "Transpose")
    s2d = g.producer_of(tr_in.input[0], "SpaceToDepth") if tr_in is not None else None
    if s2d is not None:
        rate = int(g.attrs(s2d)["blocksize"])
        reshape_in = g.producer_of(s2d.input[0], "Reshape")
        pad = g.producer_of(reshape_in.input[0], "Pad") if reshape_in is not None else None
        pad_amounts = g.const(pad.input[1]) if pad is not None else None
        need = rate * (k - 1) // 2
        if pad_amounts is None or padding != 0 or stride != 1 or dilation != 1:
            raise g.error(f"unexpected space-to-batch pattern around Conv {node.name!r}")
        begins = pad_amounts.reshape(-1)[: pad_amounts.size // 2]
        if int(begins[-1]) != need or int(begins[-2]) != need:
            raise g.error(f"space-to-batch Pad before Conv {node.name!r} pads {begins.tolist()}"
                          f" at the start, expected {need} ('same' padding for rate {rate})")
        # Follow the output to the batch-norm Mul/Add and fold them in.
        t = g.only_consumer(node.output[0], "Transpose")
        d2s = g.only_consumer(t.output[0], "DepthToSpace") if t is not None else None
        sl = g.only_consumer(d2s.output[0], "Slice") if d2s is not None else None
        rs = g.only_consumer(sl.output[0], "Reshape") if sl is not None else None
        if rs is None or int(g.attrs(d2s)["blocksize"]) != rate:
            raise g.error(f"no DepthToSpace/Slice/Reshape after space-to-batch Conv "
                          f"{node.name!r}")
        mul = g.only_consumer(rs.output[0], "Mul")
        add = g.only_consumer(mul.output[0], "Add") if mul is not None else None
        if mul is not None and add is not None:
            m = g.const(mul.input[1])
            c = g.const(add.input[1])
            if m is None or c is None or m.size != w.shape[0] or c.size != w.shape[0]:
                raise g.error(f"batch-norm Mul/Add after Conv {node.name!r} are not "
                              f"per-channel constants")
            m = m.astype(np.float32).reshape(-1)
            weight = weight * m[:, None, None, None]
            bias = bias * m + c.astype(np.float32).reshape(-1)
        dilation, padding = rate, need
    return _ConvRecord(node, weight, bias, stride, dilation, padding, groups)


def _assign_roles(g: _Graph, records: list[_ConvRecord],
                  slots: dict[str, nn.Conv2d]) -> dict[str, _ConvRecord]:
    """Name every Conv of the graph after the module slot it fills."""
    head_shapes = {
        "aspp_project": (256, 512, 1, 1),
        "low_level": (48, 144, 1, 1),
        "decoder.dw0": (304, 1, 3, 3),
        "decoder.pw0": (256, 304, 1, 1),
        "decoder.dw1": (256, 1, 3, 3),
        "decoder.pw1": (256, 256, 1, 1),
        "classifier": (NUM_CLASSES, 256, 1, 1),
    }
    roles: dict[str, _ConvRecord] = {}
    for role, shape in head_shapes.items():
        hits = [r for r in records if tuple(r.weight.shape) == shape]
        if len(hits) != 1:
            raise g.error(f"expected exactly one Conv with weight {list(shape)} ({role}), "
                          f"found {len(hits)}")
        roles[role] = hits[0]
    # The two 320->256 1x1 convs: the image-pooling one reads the AveragePool.
    pools = [n for n in g.graph.node if n.op_type == "AveragePool"]
    if len(pools) != 1:
        raise g.error(f"expected one AveragePool (image pooling branch), found {len(pools)}")
    pool_in = pools[0].input[0]
    for r in records:
        src = g.producer.get(r.node.input[0])
        if src is not None and src.op_type == "Reshape":
            src = g.producer.get(src.input[0])
        if src is pools[0]:
            roles["image_pool"] = r
        elif r.node.input[0] == pool_in and tuple(r.weight.shape[2:]) == (1, 1):
            roles["aspp0"] = r
    for role in ("image_pool", "aspp0"):
        if role not in roles:
            raise g.error(f"could not find the {role} branch of the ASPP")
    taken = {id(r) for r in roles.values()}
    backbone = [r for r in records if id(r) not in taken]  # graph order is topological
    backbone_slots = [s for s in slots if s not in roles]
    if len(backbone) != len(backbone_slots):
        raise g.error(f"expected {len(backbone_slots)} backbone convolutions, found "
                      f"{len(backbone)}")
    roles.update(zip(backbone_slots, backbone))
    return roles


def load_ade20k_from_onnx(onnx_path: str | os.PathLike[str], *,
                          upsample: bool = False) -> DeepLabV3PlusMobileNetV2:
    """Build the module and load the weights of ``ade20k_deeplabv3_mnv2.onnx`` into it.

    The int8 constants are dequantised as ``(q - zero_point) * scale`` (per-tensor, or
    per-channel along the DequantizeLinear ``axis``); batch norms left as Mul/Add after the
    space-to-batch convolutions are folded into them. Every convolution is checked against
    the module (shape, stride, dilation, padding, groups) before anything is copied.

    Parameters
    ----------
    onnx_path : str or os.PathLike
        The ONNX file (needs the ``onnx`` package, imported here only).
    upsample : bool
        Passed to :func:`build_ade20k_mnv2`.

    Returns
    -------
    DeepLabV3PlusMobileNetV2
        In eval mode, float32, on the CPU.

    Raises
    ------
    FileNotFoundError
        If ``onnx_path`` does not exist.
    ValueError
        If the file is not an ONNX model, or not this graph.
    ImportError
        If the ``onnx`` package is missing.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"onnx_path: no file at {path}")
    g = _Graph(_read_onnx(path, "converting the ADE20K model", "onnx_path: "), path)
    if len(g.graph.output) != 1:
        raise g.error(f"{len(g.graph.output)} graph outputs, expected 1")
    records = [_read_conv(g, n) for n in g.graph.node if n.op_type == "Conv"]
    model = build_ade20k_mnv2(upsample=upsample)
    slots = _conv_slots(model)
    if len(records) != len(slots):
        raise g.error(f"{len(records)} Conv nodes, expected {len(slots)}")
    roles = _assign_roles(g, records, slots)
    for role, conv in slots.items():
        rec = roles[role]
        want = (tuple(conv.weight.shape), conv.stride[0], conv.dilation[0], conv.padding[0],
                conv.groups)
        got = (tuple(rec.weight.shape), rec.stride, rec.dilation, rec.padding, rec.groups)
        if want != got:
            raise g.error(f"{role}: {rec.describe()}, expected weight {list(want[0])} stride "
                          f"{want[1]} dilation {want[2]} padding {want[3]} groups {want[4]}")
    # The decoder must tap the depthwise activation of block _LOW_LEVEL_BLOCK.
    tap = g.producer.get(roles["low_level"].node.input[0])
    dw_out = roles[f"blocks.{_LOW_LEVEL_BLOCK}.dw"].node.output[0]
    if tap is None or tap.op_type != "Clip" or tap.input[0] != dw_out:
        raise g.error("the decoder's low-level features are not the ReLU6 of block "
                      f"{_LOW_LEVEL_BLOCK}'s depthwise conv")
    with torch.no_grad():
        for role, conv in slots.items():
            rec = roles[role]
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(rec.weight)))
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(rec.bias)))
    return model.eval()


# --------------------------------------------------------------------------------------
# Cached TorchScript conversion
# --------------------------------------------------------------------------------------


def read_ade20k_labels(path: str | os.PathLike[str]) -> list[str]:
    """Read ``ade20k_labels.txt`` (``index<TAB>name`` lines, indices 0..150 in order).

    Parameters
    ----------
    path : str or os.PathLike
        The labels file.

    Returns
    -------
    list of str
        151 class names, index 0 first ("others").
    """
    return read_labels(path, count=NUM_CLASSES, filename=LABELS_FILENAME, beside="ONNX model")


def _find_source(source: str | os.PathLike[str] | None, filename: str = SOURCE_FILENAME,
                 kind: str = "ONNX") -> Path:
    return find_source(source, filename=filename, kind=kind,
                       what="the ADE20K segmentation model", published=_PUBLISHED)


def ensure_ade20k_torchscript(*, source: str | os.PathLike[str] | None = None,
                              cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cached TorchScript ADE20K model, converting it from ONNX at first use.

    Writes ``<cache_dir>/ade20k-mnv2.pt`` (TorchScript, float32, CPU, 1/4-size logits; see
    the module docstring), its sidecar ``ade20k-mnv2.json`` and ``ade20k-mnv2.stamp.json``
    (SHA-256 and size of the source ONNX and of the ``.pt``, converter version). A later call
    re-uses the files when the stamp matches the source and the ``.pt`` is intact; otherwise
    (changed source, corrupt or truncated file) it converts again. Each file is written to a
    temporary name and renamed into place.

    Parameters
    ----------
    source : str or os.PathLike, optional
        The ONNX file; default ``models_root() / "ade20k_deeplabv3_mnv2.onnx"``
        (``SEMCBIR_MODELS``, fallback ``../shared/models``). Class names are read from
        ``ade20k_labels.txt`` beside it (fallback: in ``models_root()``).
    cache_dir : str or os.PathLike, optional
        Where to write; default :func:`semcbir_fast._paths.cache_dir` (``SEMCBIR_CACHE``,
        default ``~/.cache/semcbir_fast``). Created if missing.

    Returns
    -------
    pathlib.Path
        Path of ``ade20k-mnv2.pt``; load it with ``torch.jit.load`` and the sidecar with
        :func:`semcbir_fast.models.sidecar.read_sidecar`.

    Raises
    ------
    FileNotFoundError
        If the source ONNX or its labels file cannot be found (the message says where to
        put them and where the model is published).
    ValueError
        If the source is not the expected graph.
    """
    src = _find_source(source)

    return _ensure_converted(src, f"{MODEL_NAME}.pt", cache_dir, lambda tmp: save_torchscript(
        load_ade20k_from_onnx(src).requires_grad_(False), tmp))


def _sidecar(labels: Path) -> SegmenterMeta:
    return SegmenterMeta(name=MODEL_NAME, num_classes=NUM_CLASSES,
                         class_names=read_ade20k_labels(labels), mean=[127.5] * 3,
                         std=[127.5] * 3, input_size=INPUT_SIZE)


def _ensure_converted(src: Path, filename: str, cache_dir: str | os.PathLike[str] | None,
                      convert: Any) -> Path:
    """``<cache_dir>/filename`` converted from ``src`` by ``convert(tmp_path)``, with its
    sidecar and stamp; re-used while the stamp matches ``src`` and the file is intact."""
    return ensure_converted(src, filename, cache_dir, convert, name=MODEL_NAME,
                            num_classes=NUM_CLASSES, sidecar=_sidecar,
                            labels_filename=LABELS_FILENAME,
                            converter_version=CONVERTER_VERSION)


# --------------------------------------------------------------------------------------
# The shipped graphs, cut at the 1/4-resolution logits, for the int8 / ONNX runtimes
# --------------------------------------------------------------------------------------

#: name of the 1/4-resolution logits (1x129x129x151 for a 513x513 input) in both shipped
#: graphs: the output of the classifier conv, before the two bilinear resizes to 513x513
LOGITS_TENSOR = "tfl.conv_2d40"
TFLITE_SOURCE_FILENAME = "ade20k_deeplabv3_mnv2.tflite"


def _tflite_logits_model(buf: bytes, path: Path) -> bytes:
    """The TFLite flatbuffer ``buf`` with its graph ending at :data:`LOGITS_TENSOR`.

    The operators after the classifier (two ``RESIZE_BILINEAR`` with ``align_corners``, to
    513x513) are dropped and the logits become the only output; everything else, the int8
    weights included, is kept byte for byte. Needs the flatbuffer schema shipped with
    ``ai-edge-litert`` (``ai_edge_litert.schema_py_generated``) and ``flatbuffers``.
    """
    schema = tflite_schema(f"cutting {path.name} for the LiteRT runtime")

    def bad(what: str) -> ValueError:
        return ValueError(
            f"{path} is not the DeepLabV3 MobileNetV2 ADE20K TFLite graph this loader reads "
            f"({what}). Pass {TFLITE_SOURCE_FILENAME} from the project's shared models "
            f"folder. {_PUBLISHED}"
        )

    model = read_tflite(schema, buf, bad)
    sg = model.subgraphs[0]
    names = tensor_names(sg)
    if LOGITS_TENSOR not in names:
        raise bad(f"no tensor {LOGITS_TENSOR!r}")
    idx = names.index(LOGITS_TENSOR)
    shape = [int(v) for v in sg.tensors[idx].shape]
    if shape != [1, 129, 129, NUM_CLASSES] or sg.tensors[idx].type != schema.TensorType.FLOAT32:
        raise bad(f"{LOGITS_TENSOR} has shape {shape}, expected float32 [1, 129, 129, "
                  f"{NUM_CLASSES}]")
    k = only_producer(sg, idx, LOGITS_TENSOR, bad)
    tail_ops = [builtin_code(model, op) for op in sg.operators[k + 1:]]
    if tail_ops != [schema.BuiltinOperator.RESIZE_BILINEAR] * 2:
        raise bad("the logits are not followed by exactly two RESIZE_BILINEAR operators")
    ishape = [int(v) for v in sg.tensors[int(sg.inputs[0])].shape]
    if len(sg.inputs) != 1 or ishape != [1, *INPUT_SIZE, 3]:
        raise bad(f"input shape {ishape}, expected [1, {INPUT_SIZE[0]}, {INPUT_SIZE[1]}, 3]")
    sg.operators = sg.operators[: k + 1]
    sg.outputs = np.array([idx], dtype=np.int32)
    return pack_tflite(model, len(buf))


def _read_onnx(path: Path, task: str, prefix: str = "") -> Any:
    """The ModelProto of ``path`` (external data not loaded). ImportError naming ``task``
    without the ``onnx`` package; ValueError (``prefix`` first) for a file that is not one."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{task} needs the 'onnx' package: pip install onnx "
            "(or pip install semcbir_fast[segment])"
        ) from exc
    from google.protobuf.message import Error as ProtobufError  # onnx depends on protobuf

    try:
        return onnx.load(str(path), load_external_data=False)
    except (ProtobufError, ValueError) as exc:  # not a protobuf ModelProto
        raise ValueError(f"{prefix}{path} is not a readable ONNX model ({exc}). "
                         f"Pass {SOURCE_FILENAME}. {_PUBLISHED}") from None


def _onnx_logits_model(path: Path) -> bytes:
    """The ONNX graph of ``path`` ending at :data:`LOGITS_TENSOR` (NCHW ``1x151x129x129``),
    the nodes that only fed the final resizes removed."""
    proto = _read_onnx(path, "cutting the ADE20K ONNX graph")
    import onnx  # present: _read_onnx has imported it

    g = _Graph(proto, path)
    if g.producer_of(LOGITS_TENSOR, "Conv") is None:
        raise g.error(f"no Conv output named {LOGITS_TENSOR!r}")
    graph = proto.graph
    # keep the nodes the logits depend on (graph order is topological: walk it backwards)
    need = {LOGITS_TENSOR}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(
        LOGITS_TENSOR, onnx.TensorProto.FLOAT, [1, NUM_CLASSES, 129, 129]))
    return proto.SerializeToString()


def ensure_ade20k_litert(*, source: str | os.PathLike[str] | None = None,
                         cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cached int8 TFLite file of the default model for the LiteRT runtime.

    The shipped ``ade20k_deeplabv3_mnv2.tflite`` (int8 weights, float activations) is cut
    at its 1/4-resolution logits (:data:`LOGITS_TENSOR`, ``1x129x129x151`` NHWC): the
    segmenter resizes logits to each image's own size with the same geometry as for the
    PyTorch port, so the graph's own resize to 513x513 (40 M floats per image) is dropped.
    Written once to ``<cache_dir>/ade20k-mnv2.litert.tflite`` with its sidecar
    ``ade20k-mnv2.litert.json`` and a stamp, like :func:`ensure_ade20k_torchscript`.

    Parameters
    ----------
    source : str or os.PathLike, optional
        The TFLite file; default ``models_root() / "ade20k_deeplabv3_mnv2.tflite"``.
    cache_dir : str or os.PathLike, optional
        Where to write (default ``SEMCBIR_CACHE``).

    Raises
    ------
    FileNotFoundError
        The TFLite file or its labels file is missing.
    ValueError
        The file is not this graph.
    ImportError
        ``ai-edge-litert`` (its flatbuffer schema) is not installed.
    """
    src = _find_source(source, TFLITE_SOURCE_FILENAME, "TFLite")
    return _ensure_converted(
        src, f"{MODEL_NAME}.litert.tflite", cache_dir,
        lambda tmp: Path(tmp).write_bytes(_tflite_logits_model(src.read_bytes(), src)))


def ensure_ade20k_onnx(*, source: str | os.PathLike[str] | None = None,
                       cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cached ONNX graph of the default model for onnxruntime.

    ``ade20k_deeplabv3_mnv2.onnx`` cut at :data:`LOGITS_TENSOR` (NCHW ``1x151x129x129``;
    input NHWC ``1x513x513x3`` as in the source), written once to
    ``<cache_dir>/ade20k-mnv2.ort.onnx`` with its sidecar and stamp. onnxruntime folds the
    int8 weights' DequantizeLinear into float constants, so this computes the same float
    function as the PyTorch port (in the source's space-to-batch form).
    """
    src = _find_source(source)
    return _ensure_converted(src, f"{MODEL_NAME}.ort.onnx", cache_dir,
                             lambda tmp: Path(tmp).write_bytes(_onnx_logits_model(src)))
