"""HRNetV2 for semantic segmentation, in native PyTorch and TorchScript-ready.

The network follows Sun et al., "Deep High-Resolution Representation Learning for
Visual Recognition" (HRNetV2, the segmentation variant), as used by the CBIR paper this
library reproduces (HRNet-W48 trained on MSeg, 194 classes, or COCO-Stuff):

* stem: two 3x3 stride-2 convolutions with 64 channels (input -> 1/4 resolution);
* stage 1 (``layer1``): 4 Bottleneck blocks, 64 -> 256 channels;
* stages 2, 3, 4: 2, 3, 4 parallel branches of widths ``C, 2C, 4C, 8C`` at 1/4, 1/8,
  1/16, 1/32 resolution, each branch 4 BasicBlocks per module, modules repeated
  1, 4, 3 times; every module ends with a multi-resolution fusion (a lower-resolution
  branch reaches a higher one through a 1x1 conv + BN and a bilinear resize *to the
  target branch's actual size*; a higher-resolution branch reaches a lower one through
  a chain of strided 3x3 convs + BN); transition layers add each new branch with a
  strided 3x3 conv;
* head (``last_layer``): the four branches resized to the 1/4 branch and concatenated
  (``15C`` channels), then 1x1 conv -> BN -> ReLU -> 1x1 conv to ``num_classes``.

**The logits come out at 1/4 of the input resolution** (``ceil(ceil(H / 2) / 2)``); the
segmenter resizes them to the image size. Inputs of any size work (not only multiples
of 32), for any batch size, in channels_last and under CUDA autocast (fp16 / bf16).

Parameter and buffer names are those of the official HRNet semantic-segmentation code
(``conv1, bn1, conv2, bn2, layer1, transition1..3, stage2..4.<m>.branches /
fuse_layers, last_layer.0/1/3``), which MSeg's HRNet-W48 checkpoints share, so the
released checkpoints load with :func:`hrnet_seg` (``pretrained=``) or
:func:`load_hrnet_checkpoint`.

torch is imported here only; ``import semcbir_fast`` never imports this module.
"""

# No ``from __future__ import annotations`` here: TorchScript reads the annotations of
# the scripted methods and needs them as real types (list[Tensor], Tensor | None).

import numbers
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semcbir_fast.models.export import export_torchscript
from semcbir_fast.models.sidecar import SegmenterMeta

__all__ = [
    "HRNET_MEAN",
    "HRNET_STD",
    "HRNET_WIDTHS",
    "HRNetV2Seg",
    "LoadReport",
    "export_torchscript",
    "hrnet_meta",
    "hrnet_seg",
    "infer_hrnet_config",
    "load_hrnet_checkpoint",
    "normalize_hrnet_state_dict",
]

#: Widths ``C`` of the released HRNetV2 models (branch channels ``C, 2C, 4C, 8C``).
HRNET_WIDTHS = (18, 32, 48)

#: Normalisation of the official HRNet code: ImageNet mean / std on 0..1 RGB, written
#: on the 0..255 scale that :class:`~semcbir_fast.models.sidecar.SegmenterMeta` uses.
HRNET_MEAN = [0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0]  # [123.675, 116.28, 103.53]
HRNET_STD = [0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0]  # [58.395, 57.12, 57.375]

# Stage layout of HRNetV2 (all widths): modules per stage and blocks per branch.
_STAGE1_BLOCKS = 4
_STAGE_MODULES = (1, 4, 3)  # stages 2, 3, 4
_BRANCH_BLOCKS = 4
_STEM_CHANNELS = 64
_BN_MOMENTUM = 0.1  # training-only; does not touch the state dict

# Keys that checkpoints carry next to the network and that are no part of it: the loss
# of the official ``FullModel`` wrapper (``loss.criterion.weight``, class weights) or
# a ``criterion`` attribute on the model.
_AUX_PREFIXES = ("loss.", "criterion.")
# Keys of the ImageNet *classification* HRNet, reported as a hint when unexpected.
_CLS_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
# Wrapper prefixes stripped from keys (DataParallel's ``module.``, FullModel's ``model.``).
_WRAPPER_PREFIXES = ("module.", "model.")


# --------------------------------------------------------------------------- blocks


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=_BN_MOMENTUM)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet basic block, expansion 1)."""

    expansion: int = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convs with a residual connection (expansion 4)."""

    expansion: int = 4

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def _make_layer(block: type, cin: int, planes: int, blocks: int) -> nn.Sequential:
    """``blocks`` residual blocks; the first projects ``cin`` if the width changes."""
    cout = planes * block.expansion
    downsample: nn.Module | None = None
    if cin != cout:
        downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, bias=False), _bn(cout))
    layers = [block(cin, planes, 1, downsample)]
    layers += [block(cout, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


# ------------------------------------------------------- fusion and transition paths
# Official checkpoints store ``None`` where a fusion / transition is the identity; an
# identity module without parameters gives the same state dict and keeps every
# container homogeneous for TorchScript. Each path module takes the target size, so a
# fusion row is one loop over its paths.


class _IdentityPath(nn.Module):
    """Fusion ``i <- i``: the branch itself."""

    def forward(self, x: Tensor, size: list[int]) -> Tensor:
        return x


class _UpPath(nn.Sequential):
    """Fusion from a lower-resolution branch: 1x1 conv + BN, bilinear resize to ``size``."""

    def __init__(self, cin: int, cout: int, align_corners: bool) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel_size=1, bias=False), _bn(cout))
        self.align_corners = align_corners

    def forward(self, x: Tensor, size: list[int]) -> Tensor:  # type: ignore[override]
        for m in self:
            x = m(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)


class _DownPath(nn.Sequential):
    """Fusion from a higher-resolution branch: ``k`` strided 3x3 conv + BN steps.

    Intermediate steps keep the source width and end with ReLU; the last step maps to
    the target width and has no ReLU (the sum is activated after the fusion).
    """

    def __init__(self, cin: int, cout: int, steps: int) -> None:
        mods: list[nn.Module] = []
        for k in range(steps):
            if k == steps - 1:
                mods.append(nn.Sequential(_conv3x3(cin, cout, 2), _bn(cout)))
            else:
                mods.append(nn.Sequential(_conv3x3(cin, cin, 2), _bn(cin), nn.ReLU(inplace=True)))
        super().__init__(*mods)

    def forward(self, x: Tensor, size: list[int]) -> Tensor:  # type: ignore[override]
        for m in self:
            x = m(x)
        return x


class _Transition(nn.Sequential):
    """Input of branch ``i`` of the next stage, read from branch ``src`` of the previous.

    Three forms, matching the official names: no children (same width: identity,
    ``None`` in the official code), ``conv, bn, relu`` children (width change at the
    same resolution) or a chain of ``Sequential(conv, bn, relu)`` children (a new,
    lower-resolution branch made from the lowest existing one).
    """

    def __init__(self, src: int, *mods: nn.Module) -> None:
        super().__init__(*mods)
        self.src = src

    def forward(self, xs: list[Tensor]) -> Tensor:  # type: ignore[override]
        x = xs[self.src]
        for m in self:
            x = m(x)
        return x


def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    layers: list[nn.Module] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            if c != pre[i]:
                layers.append(_Transition(i, _conv3x3(pre[i], c), _bn(c), nn.ReLU(inplace=True)))
            else:
                layers.append(_Transition(i))
        else:
            steps: list[nn.Module] = []
            cin = pre[-1]
            for j in range(i + 1 - len(pre)):
                cout = c if j == i - len(pre) else cin
                steps.append(nn.Sequential(_conv3x3(cin, cout, 2), _bn(cout), nn.ReLU(inplace=True)))
                cin = cout
            layers.append(_Transition(len(pre) - 1, *steps))
    return nn.ModuleList(layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by the multi-resolution fusion."""

    def __init__(self, channels: list[int], blocks: int, align_corners: bool) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            [_make_layer(BasicBlock, c, c, blocks) for c in channels])
        rows: list[nn.Module] = []
        for i in range(n):
            row: list[nn.Module] = []
            for j in range(n):
                if j > i:
                    row.append(_UpPath(channels[j], channels[i], align_corners))
                elif j == i:
                    row.append(_IdentityPath())
                else:
                    row.append(_DownPath(channels[j], channels[i], i - j))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        ys: list[Tensor] = []
        for i, branch in enumerate(self.branches):
            ys.append(branch(xs[i]))
        out: list[Tensor] = []
        for i, row in enumerate(self.fuse_layers):
            size = [ys[i].shape[-2], ys[i].shape[-1]]
            acc = ys[i]
            first = True
            for j, path in enumerate(row):
                z = path(ys[j], size)
                if first:
                    acc = z
                    first = False
                else:
                    acc = acc + z
            out.append(self.relu(acc))
        return out


class _Stage(nn.Sequential):
    """A run of :class:`HighResolutionModule` (a Sequential over lists of tensors)."""

    def forward(self, xs: list[Tensor]) -> list[Tensor]:  # type: ignore[override]
        for m in self:
            xs = m(xs)
        return xs


# -------------------------------------------------------------------------- network


def _is_positive_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) > 0


class HRNetV2Seg(nn.Module):
    """HRNetV2 semantic-segmentation network (see the module docstring).

    Parameters
    ----------
    width : int, default 48
        Channels ``C`` of the highest-resolution branch (branches ``C, 2C, 4C, 8C``);
        the released models use 18, 32 or 48 but any positive int is accepted.
    num_classes : int, default 194
        Output channels of the classifier (194: the MSeg universal taxonomy).
    align_corners : bool, default False
        ``align_corners`` of every bilinear resize (fusion and head). It changes no
        weight; it must match how a checkpoint was trained. ``False`` is the behaviour
        of the HRNet-Semantic-Segmentation v1.1 code that MSeg builds on
        (``F.interpolate`` without ``align_corners``); the later HRNet+OCR code makes
        it a config option (``MODEL.ALIGN_CORNERS``), so set it from that config.

    Notes
    -----
    ``forward(x)`` takes ``(N, 3, H, W)`` normalised RGB (see :data:`HRNET_MEAN`) and
    returns logits ``(N, num_classes, ceil(ceil(H/2)/2), ceil(ceil(W/2)/2))``, i.e. at
    1/4 resolution: callers resize to the image size.
    """

    def __init__(self, width: int = 48, num_classes: int = 194, *,
                 align_corners: bool = False) -> None:
        super().__init__()
        if not _is_positive_int(width):
            raise ValueError(f"width must be a positive int (18, 32 or 48 for the released "
                             f"models), got {width!r}")
        if not _is_positive_int(num_classes):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.width = int(width)
        self.num_classes = int(num_classes)
        self.align_corners = bool(align_corners)

        self.conv1 = nn.Conv2d(3, _STEM_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(_STEM_CHANNELS)
        self.conv2 = nn.Conv2d(_STEM_CHANNELS, _STEM_CHANNELS, kernel_size=3, stride=2,
                               padding=1, bias=False)
        self.bn2 = _bn(_STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_layer(Bottleneck, _STEM_CHANNELS, 64, _STAGE1_BLOCKS)

        pre = [64 * Bottleneck.expansion]
        for s, modules in enumerate(_STAGE_MODULES, start=2):
            cur = [self.width * 2**b for b in range(s)]
            setattr(self, f"transition{s - 1}", _make_transition(pre, cur))
            setattr(self, f"stage{s}", _Stage(*[
                HighResolutionModule(cur, _BRANCH_BLOCKS, self.align_corners)
                for _ in range(modules)]))
            pre = cur

        c = sum(pre)  # 15 * width
        self.last_layer = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1),
            _bn(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, num_classes, kernel_size=1),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # As the official code: N(0, 0.001) convolutions, unit / zero batch norms.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> list[Tensor]:
        """The four branch outputs of stage 4 (1/4, 1/8, 1/16, 1/32 resolution)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs: list[Tensor] = [self.layer1(x)]
        ys: list[Tensor] = []
        for t in self.transition1:
            ys.append(t(xs))
        xs = self.stage2(ys)
        ys = []
        for t in self.transition2:
            ys.append(t(xs))
        xs = self.stage3(ys)
        ys = []
        for t in self.transition3:
            ys.append(t(xs))
        return self.stage4(ys)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes, h, w)`` at 1/4 resolution of ``x`` ``(N, 3, H, W)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError("x must be (N, 3, H, W) normalised RGB, got shape "
                             + str(list(x.shape)))
        xs = self.features(x)
        size = [xs[0].shape[-2], xs[0].shape[-1]]
        feats: list[Tensor] = [xs[0]]
        for k in range(1, len(xs)):
            feats.append(F.interpolate(xs[k], size=size, mode="bilinear",
                                       align_corners=self.align_corners))
        return self.last_layer(torch.cat(feats, 1))


# ------------------------------------------------------------------ checkpoint loading


@dataclass
class LoadReport:
    """What :func:`load_hrnet_checkpoint` did with the keys of a checkpoint.

    Attributes
    ----------
    loaded : list of str
        Keys copied into the model.
    missing : list of str
        Model keys the checkpoint lacks (left as initialised).
    unexpected : list of str
        Checkpoint keys the model does not have.
    mismatched : list of str
        Keys present in both with different shapes, as ``"key: checkpoint (..) vs
        model (..)"`` (skipped).
    ignored : list of str
        Auxiliary checkpoint keys dropped on purpose (loss / criterion weights).
    notes : list of str
        Hints on what the checkpoint is (another stage layout, a classification model).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model key was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """Readable multi-line summary of the problems (grouped by key prefix)."""
        lines: list[str] = []
        if self.missing:
            lines.append(f"missing from the checkpoint ({len(self.missing)} keys): "
                         + _group_keys(self.missing))
        if self.unexpected:
            lines.append(f"unexpected in the checkpoint ({len(self.unexpected)} keys): "
                         + _group_keys(self.unexpected))
        if self.mismatched:
            shown = self.mismatched[:6]
            more = f" ... and {len(self.mismatched) - 6} more" if len(self.mismatched) > 6 else ""
            lines.append(f"shape mismatches ({len(self.mismatched)} keys, skipped): "
                         + "; ".join(shown) + more)
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) if lines else "all keys matched"


def _group_keys(keys: list[str], max_groups: int = 8) -> str:
    """``stage4.2.* (96), last_layer.* (5), ...`` (first two dotted parts, in order)."""
    groups: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        head = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        groups[head] = groups.get(head, 0) + 1
    items = [f"{g}.* ({n})" for g, n in groups.items()]
    if len(items) > max_groups:
        items = items[:max_groups] + [f"... {len(items) - max_groups} more groups"]
    first = ", ".join(keys[:3])
    return ", ".join(items) + f" [e.g. {first}]"


def _read_checkpoint(source: str | os.PathLike[str] | Mapping) -> Mapping:
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"pretrained must be a path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"pretrained checkpoint {path} holds Python objects beyond tensors, which are "
            f"not loaded for safety ({str(exc).splitlines()[0]}). If you trust the file, "
            "load it yourself (torch.load(path, weights_only=False)) and pass the dict as "
            "pretrained="
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"pretrained checkpoint {path} is not a readable torch checkpoint "
                         f"(corrupt or truncated?): {exc}") from None


def _unwrap(ckpt: Mapping) -> Mapping:
    """The state dict inside a checkpoint (``{'state_dict': ...}`` and the like)."""
    for key in ("state_dict", "model_state_dict", "model", "net"):
        inner = ckpt.get(key) if isinstance(ckpt, Mapping) else None
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            return inner
    return ckpt


def normalize_hrnet_state_dict(
    checkpoint: str | os.PathLike[str] | Mapping,
) -> tuple[dict[str, Tensor], list[str]]:
    """Bring a checkpoint to the official HRNet key names.

    Parameters
    ----------
    checkpoint : str, os.PathLike or Mapping
        A file saved with ``torch.save`` (read with ``weights_only=True``), a state dict,
        or a checkpoint dict holding one under ``'state_dict'`` (also
        ``'model_state_dict'``, ``'model'``, ``'net'``).

    Returns
    -------
    state_dict : dict of str to Tensor
        Keys with the wrapper prefixes ``module.`` (DataParallel) and ``model.`` (the
        official ``FullModel``) removed, in any combination.
    ignored : list of str
        Auxiliary keys dropped (``loss.*``, ``criterion.*``: loss class weights).

    Raises
    ------
    ValueError
        If the checkpoint holds no tensors, or two keys collide once stripped.
    """
    raw = _unwrap(_read_checkpoint(checkpoint))
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            continue
        k = key
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        if k.startswith(_AUX_PREFIXES):
            ignored.append(key)
            continue
        if k in out:
            raise ValueError(f"checkpoint keys collide after removing module./model. "
                             f"prefixes: {key!r} -> {k!r} twice")
        out[k] = value
    if not out:
        raise ValueError("checkpoint holds no tensors: expected a state dict or a dict with "
                         f"a 'state_dict' entry, got keys {list(raw)[:8]}")
    return out, ignored


def infer_hrnet_config(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Width, classes and stage layout of an HRNetV2 state dict (official names).

    Returns
    -------
    dict
        ``width`` (from ``transition1.0.0.weight``, or ``None``), ``num_classes`` (from
        ``last_layer.3.weight``, or ``None`` when there is no segmentation head) and
        ``stage_modules`` (modules found in stages 2, 3, 4).
    """
    width: int | None = None
    for key, axis in (("transition1.0.0.weight", 0), ("stage2.0.branches.0.0.conv1.weight", 0),
                      ("transition1.1.0.0.weight", 0)):
        if key in state_dict and state_dict[key].dim() == 4:
            width = int(state_dict[key].shape[axis])
            if key == "transition1.1.0.0.weight":
                width //= 2
            break
    head = state_dict.get("last_layer.3.weight")
    num_classes = int(head.shape[0]) if head is not None else None
    modules = []
    for s in (2, 3, 4):
        idx = {int(m.group(1)) for k in state_dict if (m := re.match(rf"stage{s}\.(\d+)\.", k))}
        modules.append(max(idx) + 1 if idx else 0)
    return {"width": width, "num_classes": num_classes, "stage_modules": tuple(modules)}


def _check_compatible(cfg: dict[str, Any], width: int, num_classes: int, strict: bool,
                      source: str) -> None:
    if cfg["width"] is not None and cfg["width"] != width:
        raise ValueError(
            f"{source} is an HRNetV2-W{cfg['width']} checkpoint (transition1 has "
            f"{cfg['width']} output channels) but the model is HRNetV2-W{width}: build it with "
            f"width={cfg['width']}"
        )
    if strict and cfg["num_classes"] is not None and cfg["num_classes"] != num_classes:
        raise ValueError(
            f"{source} has num_classes={cfg['num_classes']} (last_layer.3.weight) but the "
            f"model has num_classes={num_classes}: build it with num_classes="
            f"{cfg['num_classes']}, or pass strict=False to load all but the classifier"
        )


def load_hrnet_checkpoint(
    model: HRNetV2Seg,
    checkpoint: str | os.PathLike[str] | Mapping,
    *,
    strict: bool = True,
) -> LoadReport:
    """Load HRNet weights with official key names into ``model``.

    Parameters
    ----------
    model : HRNetV2Seg
        The network to fill in place.
    checkpoint : str, os.PathLike or Mapping
        See :func:`normalize_hrnet_state_dict`: official HRNet-Semantic-Segmentation
        and MSeg checkpoints load as they are (``model.`` / ``module.`` prefixes,
        ``{'state_dict': ...}`` wrapping and loss weights are handled).
    strict : bool, default True
        Raise unless every model key is loaded and no checkpoint key is left over.
        With ``strict=False`` the matching keys are loaded, a classifier of another
        ``num_classes`` is skipped, and the rest is reported with a warning.

    Returns
    -------
    LoadReport

    Raises
    ------
    ValueError
        For a checkpoint of another width or stage layout (always), another
        ``num_classes`` (when strict), or missing / unexpected / mis-shaped keys (when
        strict), with a grouped summary of the keys.
    """
    if not isinstance(model, HRNetV2Seg):
        raise TypeError(f"model must be an HRNetV2Seg, got {type(model).__name__}")
    source = _source_name(checkpoint)
    sd, ignored = normalize_hrnet_state_dict(checkpoint)
    _check_compatible(infer_hrnet_config(sd), model.width, model.num_classes, strict, source)
    return _load_normalized(model, sd, ignored, strict=strict, source=source)


def _source_name(checkpoint: object) -> str:
    if isinstance(checkpoint, (str, os.PathLike)):
        return f"checkpoint {os.fspath(checkpoint)}"
    return "checkpoint"


def _load_normalized(model: HRNetV2Seg, sd: Mapping[str, Tensor], ignored: list[str], *,
                     strict: bool, source: str) -> LoadReport:
    own = model.state_dict()
    report = LoadReport(ignored=list(ignored))
    layout = infer_hrnet_config(sd)["stage_modules"]
    if layout != _STAGE_MODULES:
        report.notes.append(
            f"the checkpoint has {layout} modules in stages 2/3/4, HRNetV2 has "
            f"{_STAGE_MODULES}: a truncated file, or another HRNet variant (e.g. "
            "HRNetV2-W18-Small), which this implementation does not build")
    if any(k.startswith(_CLS_PREFIXES) for k in sd):
        report.notes.append(
            "incre_modules / downsamp_modules / final_layer / classifier are keys of the "
            "ImageNet *classification* HRNet: it has no segmentation head; pass "
            "strict=False to load only its backbone")
    to_load: dict[str, Tensor] = {}
    mismatched: set[str] = set()
    for k, v in sd.items():
        if k not in own:
            report.unexpected.append(k)
        elif own[k].shape != v.shape:
            mismatched.add(k)
            report.mismatched.append(f"{k}: checkpoint {tuple(v.shape)} vs model "
                                     f"{tuple(own[k].shape)}")
        else:
            to_load[k] = v
    # num_batches_tracked is training-only bookkeeping; old checkpoints lack it.
    report.missing = [k for k in own if k not in to_load and k not in mismatched
                      and not k.endswith("num_batches_tracked")]
    report.loaded = list(to_load)
    if strict and not report.ok:
        raise ValueError(f"{source} does not match HRNetV2-W{model.width} "
                         f"(num_classes={model.num_classes}):\n{report.summary()}")
    with torch.no_grad():
        model.load_state_dict(to_load, strict=False)
    if not report.ok:
        warnings.warn(f"{source} loaded partially into HRNetV2-W{model.width}:\n"
                      f"{report.summary()}", stacklevel=3)
    return report


# ------------------------------------------------------------------------ public API


def hrnet_seg(
    width: int = 48,
    num_classes: int = 194,
    *,
    pretrained: str | os.PathLike[str] | Mapping | None = None,
    strict: bool = True,
    align_corners: bool = False,
) -> HRNetV2Seg:
    """Build HRNetV2-W``width`` for segmentation, optionally with released weights.

    Parameters
    ----------
    width : int, default 48
        Branch width ``C`` (18, 32, 48 for the released models).
    num_classes : int, default 194
        Classifier outputs (194: MSeg universal taxonomy; 182 / 171 for COCO-Stuff
        depending on the release; 19 for Cityscapes).
    pretrained : str, os.PathLike, Mapping or None
        A checkpoint with official HRNet-Semantic-Segmentation / MSeg key names (file
        or already-loaded dict); see :func:`load_hrnet_checkpoint`. Its width must be
        ``width``; its number of classes must be ``num_classes`` unless ``strict=False``.
    strict : bool, default True
        Passed to :func:`load_hrnet_checkpoint`.
    align_corners : bool, default False
        See :class:`HRNetV2Seg`.

    Returns
    -------
    HRNetV2Seg
        In eval mode. Logits come out at 1/4 of the input resolution.

    Examples
    --------
    >>> model = hrnet_seg(48, 194, pretrained="hrnet_w48_mseg.pth")  # doctest: +SKIP
    >>> logits = model(x)  # (N, 194, H/4, W/4)                          # doctest: +SKIP
    """
    if pretrained is None:
        return HRNetV2Seg(width, num_classes, align_corners=align_corners).eval()
    # Read and check the checkpoint before building: a wrong width fails fast and clearly.
    source = _source_name(pretrained)
    sd, ignored = normalize_hrnet_state_dict(pretrained)
    _check_compatible(infer_hrnet_config(sd), width, num_classes, strict, source)
    model = HRNetV2Seg(width, num_classes, align_corners=align_corners)
    _load_normalized(model, sd, ignored, strict=strict, source=source)
    return model.eval()


def hrnet_meta(
    num_classes: int,
    class_names: list[str] | None = None,
    *,
    name: str = "hrnet-w48",
    input_size: tuple[int, int] | None = None,
    size_divisor: int = 1,
) -> SegmenterMeta:
    """Sidecar description of an HRNet segmenter with the official normalisation.

    Parameters
    ----------
    num_classes : int
        Number of logits channels.
    class_names : list of str, optional
        ``num_classes`` names; ``class_0, class_1, ...`` when omitted.
    name : str, default "hrnet-w48"
    input_size : (H, W), optional
        Fixed size to feed; ``None`` (default) feeds images at their own size, which
        HRNet handles (any size works).
    size_divisor : int, default 1

    Returns
    -------
    SegmenterMeta
        With ``mean`` = :data:`HRNET_MEAN`, ``std`` = :data:`HRNET_STD` (ImageNet on
        the 0..255 scale).
    """
    names = list(class_names) if class_names is not None else [f"class_{i}"
                                                               for i in range(num_classes)]
    return SegmenterMeta(name=name, num_classes=num_classes, class_names=names,
                         mean=list(HRNET_MEAN), std=list(HRNET_STD), input_size=input_size,
                         size_divisor=size_divisor)
