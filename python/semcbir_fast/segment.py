"""Semantic segmentation front end: images -> label maps -> SBS codes.

Three entry points:

- :func:`load_segmenter` loads a TorchScript segmentation model (a registered name such as
  ``"ade20k-mnv2"``, or a ``.pt`` file with its JSON sidecar) onto a device;
- :meth:`Segmenter.segment` turns images (paths, bytes, arrays, tensors) into one label map
  per image, in the image's own size;
- :func:`index_images` streams images through the segmenter and the SBS encoder and returns
  the codes, ready for :func:`semcbir_fast.hamming_topk`.

Pipeline of one batch (everything after decoding runs on the segmenter's device)::

    read + decode (thread pool, prefetching)       -> uint8 (H, W, 3) RGB, per image
    upload (pinned host buffer, one copy per size) -> uint8 on the device
    resize to meta.input_size (bilinear, align_corners=False, no antialias)
      or pad bottom/right to a multiple of meta.size_divisor (pad value = the mean colour)
    normalise (x - mean) / std, channels_last on CUDA, fp16/bf16 autocast if asked
    model -> logits (N, C, h, w)
    logits -> each image's own size (bilinear) -> argmax   (``resize="logits"``, default)
      or argmax -> each image's own size (nearest)          (``resize="labels"``)
    labels uint8 (C <= 255) or uint16, to the host (or kept on the device, ``as_torch``)

On CUDA the next batch is launched before the labels of the previous one are copied back,
so that decoding (worker threads), the host<->device copies and the model overlap.

Geometry of the logits resize. Output pixel ``y`` of an image of height ``H`` is mapped to
the model input by the inverse of the input resize (pixel centres, ``align_corners=False``:
``u = (y + 0.5) * Hin / H - 0.5``; ``u = y`` for padded inputs) and then to the logit grid
of height ``h``. Models differ there: TensorFlow-style models (the ADE20K DeepLabV3+, input
513, logits 129) put logit ``i`` on input pixel ``i * (Hin - 1) / (h - 1)``
("corners"); PyTorch-style models (HRNet, input 512, logits 128) on the centre of a cell
of ``Hin / h`` pixels ("centres"). The sidecar may say which (an ``align_corners`` entry);
otherwise a grid with ``(Hin - 1) % (h - 1) == 0`` and ``Hin % h != 0`` is read as
"corners" and anything else as "centres". The result is sampled bilinearly at exactly those
positions (two separable gathers), which costs the same as one ``F.interpolate`` and
avoids resizing 151-channel logits twice. With the ADE20K model this reproduces the source
ONNX graph followed by a bilinear resize of its 513x513 logits on 100 % of the pixels of
the Corel images tested (95.8-99.6 % if the "centres" convention were used instead).

Argmax after or before the resize (``resize="logits"`` or ``"labels"``), measured with the
ADE20K model on 8 Corel-1K images (384x256, 2-core CPU, ``bench/bench_segment.py`` group
``postprocess``): the two agree on 97.2-97.4 % of the pixels, the disagreements lying on
class boundaries; the SBS codes differ by 0-8 bits of 755 at ``levels=0`` and 2-21 bits of
12080 at ``levels=2``. The exact "logits" result is computed by resampling only the pixels
whose four logit-grid neighbours disagree on their argmax (the others provably keep that
label), which costs 80-170 ms per image on the CPU instead of 0.6-1.5 s for resampling
every pixel, against 13-25 ms for "labels" and 0.4-1.8 s for the model itself (the range is
the load of the shared machine). "logits" is therefore the default on every device; on CUDA
every pixel is resampled by default (the sparse path needs a device-to-host synchronisation
to count the boundary pixels); ``Segmenter.logits_impl`` selects either path, and the CUDA
rows of the same benchmark group compare them.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcbir_fast.imageio import ImageReadError, describe_source, read_image, tensor_to_hwc

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from semcbir_fast.layout import SBSLayout
    from semcbir_fast.models.sidecar import SegmenterMeta

__all__ = [
    "IndexResult",
    "SegmentBatch",
    "SegmentationResult",
    "Segmenter",
    "available_segmenters",
    "index_images",
    "load_segmenter",
    "register_segmenter",
]

# --------------------------------------------------------------------------------------
# Registry of named models
# --------------------------------------------------------------------------------------


def _ade20k_mnv2() -> Path:
    from semcbir_fast.models.ade20k import ensure_ade20k_torchscript

    return Path(ensure_ade20k_torchscript())


_REGISTRY: dict[str, Callable[[], Path]] = {"ade20k-mnv2": _ade20k_mnv2}


def register_segmenter(name: str, factory: Callable[[], str | os.PathLike[str]], *,
                       overwrite: bool = False) -> None:
    """Register a model name for :func:`load_segmenter`.

    Parameters
    ----------
    name : str
        The name users pass as ``model``.
    factory : callable
        Called without arguments at load time; returns the path of a TorchScript file whose
        sidecar (``.json``) lies beside it (it may convert or fetch a local file first).
    overwrite : bool, default False
        Replace an existing entry instead of raising ``ValueError``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"segmenter {name!r} is already registered; pass overwrite=True")
    _REGISTRY[name] = lambda: Path(factory())


def available_segmenters() -> list[str]:
    """Names accepted by :func:`load_segmenter` besides file paths."""
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _resolve_device(device: Any) -> torch.device:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}); pass device='cpu' or install a CUDA build of torch"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {dev}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


_DTYPE_NAMES = {"float32": None, "fp32": None, "float16": "float16", "fp16": "float16",
                "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype | None:
    import torch

    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPE_NAMES:
            raise ValueError(
                f"dtype must be None, torch.float16 or torch.bfloat16, got {dtype!r}"
            )
        name = _DTYPE_NAMES[dtype.lower()]
        dtype = None if name is None else getattr(torch, name)
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"dtype must be None (float32), torch.float16 or torch.bfloat16 (autocast), got {dtype}"
        )
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError(
            "dtype=torch.float16 is not supported on the CPU (no fast fp16 kernels); "
            "use dtype=torch.bfloat16 (CPU autocast) or None (float32), or a CUDA device"
        )
    return dtype


def _resolve_model(model: str | os.PathLike[str]) -> Path:
    if isinstance(model, str) and model in _REGISTRY:
        return _REGISTRY[model]()
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a registered name or a path, got {type(model).__name__}")
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {os.fspath(model)!r} is neither a registered segmenter "
            f"({', '.join(available_segmenters())}) nor an existing TorchScript file"
        )
    return path


def load_segmenter(model: str | os.PathLike[str] = "ade20k-mnv2", *, device: Any = None,
                   dtype: Any = None, check: bool = True,
                   cudnn_benchmark: bool | None = None, optimize: bool = False) -> Segmenter:
    """Load a TorchScript segmentation model and its sidecar onto a device.

    Parameters
    ----------
    model : str or os.PathLike, default "ade20k-mnv2"
        A registered name (:func:`available_segmenters`; ``"ade20k-mnv2"`` converts the
        shared ONNX model to a cached TorchScript file at first use) or the path of a
        TorchScript file with its JSON sidecar beside it (``model.pt`` + ``model.json``,
        see :mod:`semcbir_fast.models.sidecar`).
    device : str or torch.device, optional
        Default: ``"cuda"`` when ``torch.cuda.is_available()``, else ``"cpu"``.
    dtype : None, torch.float16 or torch.bfloat16, optional
        Compute type of the model: None runs float32; fp16 / bf16 run under
        ``torch.autocast`` (inputs, label maps and the resize stay exact). fp16 is refused
        on the CPU (``ValueError``); bf16 uses CPU autocast there.
    check : bool, default True
        Run the model once on a zero input (``meta.input_size``, or 64x64 rounded up to
        ``meta.size_divisor``) and check the output shape; on CUDA this is also the warm-up.
    cudnn_benchmark : bool, optional
        Value for the process-wide ``torch.backends.cudnn.benchmark``. None (default) sets it
        to True on CUDA when the model has a fixed ``input_size`` (every batch then has the
        same shape, and cuDNN's autotuned kernels pay off) and leaves it alone otherwise.
    optimize : bool, default False
        Freeze the TorchScript module and run ``torch.jit.optimize_for_inference`` on it
        (constant folding, conv fusions). Changes results only by float rounding; measured
        about 7 % faster for the default model on one CPU thread (see
        ``bench/bench_segment.py`` for CUDA).

    Returns
    -------
    Segmenter

    Raises
    ------
    FileNotFoundError
        No such file and no such registered name, or the sidecar is missing.
    ValueError
        Not a TorchScript file; a bad device or dtype; the model's output is not
        ``(N, num_classes, h, w)`` logits (with ``check=True``).
    """
    import torch

    from semcbir_fast.models.sidecar import read_sidecar

    dev = _resolve_device(device)
    amp = _resolve_dtype(dtype, dev)
    path = _resolve_model(model)
    meta = read_sidecar(path)  # FileNotFoundError with the fix when missing
    try:
        with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript as deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated",
                                    category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location=dev)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"{path} is not a loadable TorchScript file ({str(exc).splitlines()[0]}); save "
            "models with semcbir_fast.models.export.export_torchscript or torch.jit.save"
        ) from None
    module.eval()
    if dev.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
        if cudnn_benchmark is None:
            cudnn_benchmark = meta.input_size is not None
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    # With autotuned kernels and a fixed input size, a short (last) batch would be a new
    # shape and autotune again (seconds): pad it to the batch size instead.
    pad = dev.type == "cuda" and bool(cudnn_benchmark) and meta.input_size is not None
    if optimize:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.freeze(module)
            if dev.type == "cpu":
                # optimize_for_inference rewrites for CPU backends; on CUDA its graph made cuDNN
                # fail under fp16 autocast ("FIND was unable to find an engine"), so CUDA only
                # freezes (measured on an H100).
                module = torch.jit.optimize_for_inference(module)
    seg = Segmenter(module, meta, device=dev, dtype=amp, path=path)
    seg.pad_batches = pad
    if check:
        seg._self_check()
    return seg


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class SegmentationResult(Sequence):
    """Label maps of a list of images, one entry per input, in input order.

    Failed inputs (``on_error="skip"``) are never dropped silently: their entry in
    ``labels`` is ``None`` and ``failed`` says which and why. The object behaves as the
    list ``labels`` (``len``, indexing, iteration).

    Attributes
    ----------
    labels : list of numpy.ndarray, torch.Tensor or None
        ``(H, W)`` label map of each image in its own size; uint8 when the model has at
        most 255 classes, else uint16 (``torch.uint16`` tensors with ``as_torch=True``).
    failed : list of (int, str, str)
        ``(index, source, reason)`` of each input that could not be read.
    sources : list of str
        Printable name of each input (the path for files).
    """

    labels: list[Any]
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: Any) -> Any:
        return self.labels[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.labels)

    @property
    def ok(self) -> list[int]:
        """Indices of the inputs that were segmented."""
        return [i for i, lab in enumerate(self.labels) if lab is not None]


@dataclass
class IndexResult:
    """SBS codes of the images that could be read, plus what could not.

    Attributes
    ----------
    codes : numpy.ndarray
        ``(len(paths), layout.stride)`` uint8, C-contiguous; row ``i`` is ``paths[i]``.
    layout : SBSLayout
        Bit layout of the codes (classes, levels, pyramid, nbits, nbytes, stride).
    paths : list of str
        The inputs kept, in input order (printable names for in-memory inputs).
    failed : list of (str, str)
        ``(path, reason)`` of every input that could not be read, in input order.
    labels : list of numpy.ndarray, optional
        Label maps of the kept inputs (``return_labels=True``), else None.
    class_names : list of str
        The segmenter's class names (index = class id in the codes).
    timings : dict, optional
        Seconds per stage when a ``timings`` dict was passed (see :func:`index_images`).
    """

    codes: np.ndarray
    layout: SBSLayout
    paths: list[str]
    failed: list[tuple[str, str]]
    labels: list[np.ndarray] | None = None
    class_names: list[str] = field(default_factory=list)
    timings: dict[str, float] | None = None

    def __len__(self) -> int:
        return len(self.paths)


# --------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------


class _Timings:
    """Accumulate seconds per stage into a user dict; synchronise CUDA at stage ends."""

    def __init__(self, out: dict[str, float] | None, device: torch.device) -> None:
        self.out = out
        self.cuda = device.type == "cuda"
        self.lock = threading.Lock()

    @property
    def on(self) -> bool:
        return self.out is not None

    def sync(self) -> None:
        if self.out is not None and self.cuda:
            import torch

            torch.cuda.synchronize()

    def add(self, key: str, seconds: float) -> None:
        if self.out is not None:
            with self.lock:
                self.out[key] = self.out.get(key, 0.0) + seconds

    def stage(self, key: str) -> _Stage:
        return _Stage(self, key)


class _Stage:
    def __init__(self, t: _Timings, key: str) -> None:
        self.t, self.key = t, key

    def __enter__(self) -> None:
        if self.t.on:
            self.t.sync()
            self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.t.on:
            self.t.sync()
            self.t.add(self.key, time.perf_counter() - self.t0)


def _is_tensor(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and type(x).__name__ in ("Tensor", "Parameter")


def _to_device(a: Any, device: torch.device) -> Any:
    """NumPy array or tensor -> tensor on ``device`` without waiting for queued device work
    (host data goes through pinned memory with an asynchronous copy on CUDA)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _split_inputs(images: Any) -> tuple[list[Any], bool]:
    """(list of single-image sources, whether the input was one image)."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [images], True
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images], True
        if images.ndim == 4:
            return list(images), False
        raise ValueError(
            f"images as an array must be (H, W, 3) or (N, H, W, 3) uint8 RGB, got shape {images.shape}"
        )
    if _is_tensor(images):
        if images.dim() == 3:
            return [images], True
        if images.dim() == 4:
            return list(images.unbind(0)), False
        raise ValueError(
            "images as a tensor must be (H, W, 3), (3, H, W), (N, H, W, 3) or (N, 3, H, W) "
            f"uint8, got shape {tuple(images.shape)}"
        )
    if isinstance(images, Iterable):
        items = list(images)
        for i, x in enumerate(items):
            if not (isinstance(x, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray))
                    or _is_tensor(x)):
                raise TypeError(
                    f"images[{i}] must be a path, bytes, a uint8 array or tensor, got "
                    f"{type(x).__name__}"
                )
        return items, False
    raise TypeError(
        "images must be a path, bytes, an image array/tensor or a list of them, got "
        f"{type(images).__name__}"
    )


def _decode(src: Any, timings: _Timings) -> Any:
    """One source -> uint8 (H, W, 3): NumPy on the host, or a tensor on its device."""
    t0 = time.perf_counter()
    try:
        if _is_tensor(src):
            try:
                return tensor_to_hwc(src)
            except ValueError as exc:
                raise ImageReadError(describe_source(src), str(exc)) from None
        try:
            return read_image(src)
        except ImageReadError:
            raise
        except ValueError as exc:  # bad in-memory array
            raise ImageReadError(describe_source(src), str(exc)) from None
    finally:
        timings.add("decode_cpu", time.perf_counter() - t0)


def _axis_positions(out: int, model_in: int, logit: int, resized: bool,
                    corners: bool) -> np.ndarray:
    """Position on the logit grid (float64) of every output pixel along one axis."""
    y = np.arange(out, dtype=np.float64)
    u = (y + 0.5) * model_in / out - 0.5 if resized else y
    if corners:
        v = u * (logit - 1) / (model_in - 1) if model_in > 1 else np.zeros_like(u)
    else:
        v = (u + 0.5) * logit / model_in - 0.5
    return np.clip(v, 0.0, logit - 1)


def _is_corners(model_in: int, logit: int) -> bool:
    return (model_in > 1 and logit > 1 and (model_in - 1) % (logit - 1) == 0
            and model_in % logit != 0)


@dataclass
class _Launched:
    """One batch in flight: device labels, pending host copies, the event that ends them."""

    indices: list[int]
    failed: list[tuple[int, str, str]]
    dev_labels: list[Any]
    host: list[Any] | None = None  # [(host tensor (k, H, W), positions)] per size group
    extra: Any = None  # result of device_fn: a device tensor, or its pending host copy
    event: Any = None


@dataclass
class SegmentBatch:
    """One batch streamed by :meth:`Segmenter.iter_batches`.

    Attributes
    ----------
    indices : list of int
        Input positions of the images segmented in this batch.
    labels : list
        Their label maps (NumPy, or device tensors with ``as_torch=True``).
    failed : list of (int, str, str)
        ``(index, source, reason)`` of the inputs of this batch that could not be read.
    extra : numpy.ndarray, optional
        The result of ``device_fn`` (copied to the host), or None.
    """

    indices: list[int]
    labels: list[Any]
    failed: list[tuple[int, str, str]]
    extra: Any = None


@dataclass
class _Bilinear:
    """Separable bilinear sampling: rows ``y0/y1`` with weight ``fy``, columns likewise."""

    y0: Any
    y1: Any
    x0: Any
    x1: Any
    fy: Any
    fx: Any


#: bytes of float intermediates one post-processing step may allocate
_CHUNK_BYTES = 256 << 20


def _argmax_bilinear_dense(logits: Any, g: _Bilinear, out_dtype: Any) -> Any:
    """argmax over classes of the bilinearly resampled logits, computed for every pixel."""
    import torch

    k, c = int(logits.shape[0]), int(logits.shape[1])
    H, W = g.y0.numel(), g.x0.numel()
    out = torch.empty((k, H, W), dtype=out_dtype, device=logits.device)
    budget = _CHUNK_BYTES * (4 if logits.device.type == "cuda" else 1)
    step = max(1, min(k, budget // max(1, c * H * W * 4 * 2)))
    fx = g.fx.view(1, 1, 1, W)
    fy = g.fy.view(1, 1, H, 1)
    for s in range(0, k, step):
        lg = logits[s: s + step].float()
        cols = torch.lerp(lg.index_select(3, g.x0), lg.index_select(3, g.x1), fx)
        full = torch.lerp(cols.index_select(2, g.y0), cols.index_select(2, g.y1), fy)
        out[s: s + step] = full.max(dim=1).indices.to(out_dtype)
    return out


def _argmax_bilinear_sparse(logits: Any, g: _Bilinear, out_dtype: Any) -> Any:
    """Same result as :func:`_argmax_bilinear_dense`, resampling only boundary pixels.

    A resampled logit vector is a convex combination of its (up to) four neighbours on the
    logit grid. Where the four share their first-maximum class ``c``, ``c`` is also the
    first maximum of the combination (it is >= every other class in each term, and > every
    class before it), so only pixels whose neighbours disagree -- those near a label
    boundary, typically a few percent -- need the full ``C``-channel interpolation.
    """
    import torch

    c = int(logits.shape[1])
    lab = logits.max(dim=1).indices  # (k, h, w)
    rows0 = lab.index_select(1, g.y0)
    rows1 = lab.index_select(1, g.y1)
    a = rows0.index_select(2, g.x0)
    mask = a != rows0.index_select(2, g.x1)
    mask |= a != rows1.index_select(2, g.x0)
    mask |= a != rows1.index_select(2, g.x1)
    out = a.to(torch.int32)  # index_put_ has no uint16 kernel: convert at the end
    del rows0, rows1
    idx = mask.nonzero()  # (P, 3): image, row, column (synchronises on CUDA)
    if idx.shape[0] == 0:
        return out.to(out_dtype)
    lgc = logits.permute(0, 2, 3, 1).float().contiguous()  # (k, h, w, C)
    step = max(1, _CHUNK_BYTES // (c * 4 * 6))
    for s in range(0, idx.shape[0], step):
        b, yy, xx = idx[s: s + step].unbind(1)
        ya, yb, xa, xb = g.y0[yy], g.y1[yy], g.x0[xx], g.x1[xx]
        fx = g.fx[xx].unsqueeze(1)
        top = torch.lerp(lgc[b, ya, xa], lgc[b, ya, xb], fx)
        bot = torch.lerp(lgc[b, yb, xa], lgc[b, yb, xb], fx)
        val = torch.lerp(top, bot, g.fy[yy].unsqueeze(1))
        out[b, yy, xx] = val.max(dim=1).indices.to(torch.int32)
    return out.to(out_dtype)


# --------------------------------------------------------------------------------------
# Segmenter
# --------------------------------------------------------------------------------------


class Segmenter:
    """A TorchScript segmentation model on a device, with its pre- and post-processing.

    Create with :func:`load_segmenter`. Attributes: ``meta`` (the sidecar),
    ``num_classes``, ``class_names``, ``device``, ``dtype`` (autocast type or None),
    ``label_dtype`` (``numpy.uint8`` or ``numpy.uint16``), ``path``.
    """

    def __init__(self, module: Any, meta: SegmenterMeta, *, device: torch.device,
                 dtype: torch.dtype | None = None, path: Path | None = None) -> None:
        import torch

        self.module = module
        self.meta = meta
        self.device = device
        self.dtype = dtype
        self.path = path
        self.label_dtype = np.uint8 if meta.num_classes <= 255 else np.uint16
        self._torch_label_dtype = torch.uint8 if meta.num_classes <= 255 else torch.uint16
        self._mean = torch.tensor(meta.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(meta.std, dtype=torch.float64)).to(
            torch.float32).to(device).view(1, 3, 1, 1)
        self._align = getattr(meta, "align_corners", None)
        #: how resize="logits" is computed: "sparse" (resample only pixels near a label
        #: boundary), "dense" (every pixel), "auto" (dense on CUDA, sparse on the CPU).
        #: Both give the argmax of the bilinearly resampled logits.
        self.logits_impl = "auto"
        self._geo_cache: dict[Any, Any] = {}
        self._checked = False
        #: pad short batches to the batch size (set by load_segmenter: CUDA, cuDNN
        #: autotuning and a fixed input size); results do not change, only the shapes seen
        #: by the model do.
        self.pad_batches = False

    # ---- properties -------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.meta.num_classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    def __repr__(self) -> str:
        return (f"Segmenter(name={self.meta.name!r}, num_classes={self.num_classes}, "
                f"device={self.device}, dtype={self.dtype}, input_size={self.meta.input_size})")

    # ---- model execution ----------------------------------------------------------------
    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _forward(self, x: Any) -> Any:
        import torch

        with self._autocast():
            out = self.module(x)
        if not isinstance(out, torch.Tensor):
            raise ValueError(  # noqa: TRY004 - a broken model file, not a caller's type error
                f"model {self.path or self.meta.name} returned {type(out).__name__}, expected "
                "a logits tensor (N, num_classes, h, w); wrap the model so forward returns it"
            )
        if out.dim() != 4 or out.shape[0] != x.shape[0] or out.shape[1] != self.num_classes:
            raise ValueError(
                f"model {self.path or self.meta.name} returned shape {tuple(out.shape)} for an "
                f"input of shape {tuple(x.shape)}, expected logits ({x.shape[0]}, "
                f"{self.num_classes}, h, w) with num_classes from the sidecar; fix the sidecar's "
                "num_classes or the model's output"
            )
        if not out.is_floating_point():
            raise ValueError(f"model returned dtype {out.dtype}, expected floating-point logits")
        return out

    def _self_check(self) -> None:
        import torch

        if self.meta.input_size is not None:
            h, w = self.meta.input_size
        else:
            d = int(self.meta.size_divisor)
            h = w = max(d, (64 + d - 1) // d * d)
        x = torch.zeros((1, 3, h, w), dtype=torch.float32, device=self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            self._forward(x)
        self._checked = True

    # ---- pre-processing -----------------------------------------------------------------
    def _upload(self, imgs: list[Any]) -> list[tuple[Any, list[int]]]:
        """uint8 HWC images -> ``[(uint8 (k, H, W, 3) device tensor, positions)]``, one entry
        per image size, in first-seen order.

        Host images of one size are stacked into one (pinned, on CUDA) buffer and copied with
        one asynchronous transfer; nothing here waits for the device.
        """
        import torch

        groups: dict[tuple[int, int], list[int]] = {}
        for p, im in enumerate(imgs):
            groups.setdefault((int(im.shape[0]), int(im.shape[1])), []).append(p)
        cuda = self.device.type == "cuda"
        out = []
        for (h, w), pos in groups.items():
            if all(isinstance(imgs[p], np.ndarray) for p in pos):
                buf = torch.empty((len(pos), h, w, 3), dtype=torch.uint8, pin_memory=cuda)
                np.stack([imgs[p] for p in pos], out=buf.numpy())
                t = buf.to(self.device, non_blocking=True) if cuda else buf
            else:
                t = torch.stack([_to_device(imgs[p], self.device) for p in pos])
            out.append((t, pos))
        return out

    def _prepare(self, groups: list[tuple[Any, list[int]]]) -> tuple[Any, tuple[int, int], bool]:
        """Device uint8 groups -> normalised float batch ``(n, 3, Hin, Win)``, images in group
        order. Returns the batch, the model input size and whether images were resized."""
        import torch
        import torch.nn.functional as F

        cuda = self.device.type == "cuda"
        fmt = torch.channels_last if cuda else torch.contiguous_format
        if self.meta.input_size is not None:
            hin, win = self.meta.input_size
            parts = []
            for t, _ in groups:
                f = t.permute(0, 3, 1, 2).float()
                if (f.shape[2], f.shape[3]) != (hin, win):
                    f = F.interpolate(f, size=(hin, win), mode="bilinear",
                                      align_corners=False, antialias=False)
                parts.append(f)
            x = (parts[0] if len(parts) == 1 else torch.cat(parts)).contiguous(memory_format=fmt)
            x.sub_(self._mean).mul_(self._inv_std)
            return x, (hin, win), True
        d = int(self.meta.size_divisor)
        hmax = max(int(t.shape[1]) for t, _ in groups)
        wmax = max(int(t.shape[2]) for t, _ in groups)
        hin, win = (hmax + d - 1) // d * d, (wmax + d - 1) // d * d
        n = sum(len(pos) for _, pos in groups)
        x = torch.zeros((n, 3, hin, win), dtype=torch.float32, device=self.device
                        ).contiguous(memory_format=fmt)
        off = 0
        for t, pos in groups:
            k, h, w = len(pos), int(t.shape[1]), int(t.shape[2])
            x[off: off + k, :, :h, :w] = (t.permute(0, 3, 1, 2).float() - self._mean) * self._inv_std
            off += k
        return x, (hin, win), False

    # ---- post-processing ----------------------------------------------------------------
    def _geometry(self, size: tuple[int, int], model_in: tuple[int, int],
                  logit: tuple[int, int], resized: bool, mode: str) -> Any:
        """Sampling positions on the logit grid for one image size (cached on the device)."""
        key = (size, model_in, logit, resized, mode)
        geo = self._geo_cache.get(key)
        if geo is not None:
            return geo
        (H, W), (h, w) = size, logit
        corners_y = self._align if self._align is not None else _is_corners(model_in[0], h)
        corners_x = self._align if self._align is not None else _is_corners(model_in[1], w)
        py = _axis_positions(H, model_in[0], h, resized, bool(corners_y))
        px = _axis_positions(W, model_in[1], w, resized, bool(corners_x))
        dev = self.device
        if mode == "labels":
            geo = (_to_device(np.rint(py).astype(np.int64), dev),
                   _to_device(np.rint(px).astype(np.int64), dev))
        else:
            y0 = np.floor(py).astype(np.int64)
            x0 = np.floor(px).astype(np.int64)
            fy, fx = py - y0, px - x0
            # a neighbour with weight 0 does not contribute: point it at the other one, so
            # that the pixel counts as interior in the sparse path
            y1 = np.where(fy > 0, np.minimum(y0 + 1, h - 1), y0)
            x1 = np.where(fx > 0, np.minimum(x0 + 1, w - 1), x0)
            geo = _Bilinear(*(_to_device(a, dev) for a in (y0, y1, x0, x1)),
                            _to_device(fy.astype(np.float32), dev),
                            _to_device(fx.astype(np.float32), dev))
        if len(self._geo_cache) > 256:
            self._geo_cache.clear()
        self._geo_cache[key] = geo
        return geo

    def _labels_for_size(self, logits: Any, size: tuple[int, int], model_in: tuple[int, int],
                         resized: bool, mode: str) -> Any:
        """logits (k, C, h, w) of k images of one size -> labels (k, H, W) on the device."""
        ldt = self._torch_label_dtype
        geo = self._geometry(size, model_in, (int(logits.shape[2]), int(logits.shape[3])),
                             resized, mode)
        if mode == "labels":
            iy, ix = geo
            lab = logits.max(dim=1).indices  # (k, h, w), first maximum on ties
            return lab.index_select(1, iy).index_select(2, ix).to(ldt)
        impl = self.logits_impl
        if impl == "auto":
            impl = "dense" if logits.device.type == "cuda" else "sparse"
        if impl == "dense":
            return _argmax_bilinear_dense(logits, geo, ldt)
        return _argmax_bilinear_sparse(logits, geo, ldt)

    # ---- batch driver -------------------------------------------------------------------
    def _launch(self, imgs: list[Any], *, resize: str, as_torch: bool,
                device_fn: Callable[[list[Any]], Any] | None,
                timings: _Timings, pad_to: int | None = None) -> tuple[list[Any], Any, Any, Any]:
        """Queue one batch on the device.

        Returns (device labels per image, pending host copies of the labels or None, result
        of ``device_fn`` (pending host copy) or None, CUDA event or None). On CUDA nothing
        here waits for the device, except the sparse post-processing path (not the CUDA
        default) and instrumented runs (``timings``).
        """
        import torch

        n = len(imgs)
        cuda = self.device.type == "cuda"
        with torch.no_grad():
            with timings.stage("upload"):
                groups = self._upload(imgs)
            with timings.stage("segment"):
                x, model_in, resized = self._prepare(groups)
                m = int(x.shape[0])
                if pad_to is not None and m < pad_to:
                    fmt = (torch.channels_last if x.dim() == 4
                           and x.is_contiguous(memory_format=torch.channels_last)
                           else torch.contiguous_format)
                    zeros = x.new_zeros((pad_to - m, *x.shape[1:])).contiguous(
                        memory_format=fmt)
                    x = torch.cat([x, zeros])
                logits = self._forward(x)[:m]
                del x
                labels: list[Any] = [None] * n
                lab_groups = []
                off = 0
                for t, pos in groups:
                    k = len(pos)
                    lab = self._labels_for_size(logits[off: off + k],
                                                (int(t.shape[1]), int(t.shape[2])),
                                                model_in, resized, resize)
                    off += k
                    lab_groups.append((lab, pos))
                    for j, p in enumerate(pos):
                        labels[p] = lab[j]
                del logits
            extra = None
            if device_fn is not None:
                with timings.stage("encode"):
                    extra = device_fn(labels)
                    if cuda:
                        buf = torch.empty(extra.shape, dtype=extra.dtype, pin_memory=True)
                        extra = buf.copy_(extra, non_blocking=True)
            host = None
            if not as_torch:
                with timings.stage("download"):
                    host = []
                    for lab, pos in lab_groups:
                        if cuda:
                            buf = torch.empty(lab.shape, dtype=lab.dtype, pin_memory=True)
                            buf.copy_(lab, non_blocking=True)
                        else:
                            buf = lab
                        host.append((buf, pos))
            event = None
            if cuda and (host is not None or extra is not None):
                event = torch.cuda.Event()
                event.record()
        return labels, host, extra, event

    def _finish(self, launched: _Launched) -> SegmentBatch:
        if launched.event is not None:
            launched.event.synchronize()
        extra = None
        if launched.extra is not None:
            extra = np.array(launched.extra.numpy())  # own copy, not the pinned buffer
        if launched.host is None:
            labels = launched.dev_labels
        else:
            labels = [None] * len(launched.dev_labels)
            for buf, pos in launched.host:
                arr = buf.numpy()
                for j, p in enumerate(pos):
                    # copy out of the pinned batch buffer: users never hold pinned memory
                    labels[p] = np.array(arr[j]) if launched.event is not None else arr[j]
        return SegmentBatch(launched.indices, labels, launched.failed, extra)

    def iter_batches(self, images: Iterable[Any], *, batch_size: int = 16,
                     num_workers: int | None = None, on_error: str = "skip",
                     as_torch: bool = False, resize: str = "logits", progress: bool = False,
                     timings: dict[str, float] | None = None,
                     device_fn: Callable[[list[Any]], Any] | None = None,
                     ) -> Iterator[SegmentBatch]:
        """Stream label maps batch by batch (the engine of :meth:`segment`).

        Yields one :class:`SegmentBatch` per batch, in input order. Memory stays bounded by
        a few batches, whatever the input length. On CUDA, batch ``i + 1`` is queued on the
        device before batch ``i`` is handed out, so the device never waits for the caller.

        Parameters
        ----------
        images, batch_size, num_workers, on_error, as_torch, resize, progress, timings
            As in :meth:`segment`.
        device_fn : callable, optional
            Called inside the batch with the list of device label maps; must return a tensor
            on the device (for example the batch's SBS codes). It is copied to the host
            asynchronously and handed out as ``SegmentBatch.extra`` (NumPy). Its time counts
            as "encode" in ``timings``.
        """
        from tqdm import tqdm

        sources, _ = _split_inputs(images)
        bs = _check_positive("batch_size", batch_size)
        pad_to = bs if self.pad_batches else None
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if resize not in ("logits", "labels"):
            raise ValueError(f"resize must be 'logits' or 'labels', got {resize!r}")
        if num_workers is None:
            num_workers = min(8, os.cpu_count() or 1)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        tm = _Timings(timings, self.device)
        n = len(sources)
        pool = ThreadPoolExecutor(num_workers, thread_name_prefix="semcbir-decode") \
            if num_workers > 0 and n > 0 else None
        window = bs * 3  # decode up to two batches ahead of the one being assembled
        futures: dict[int, Future[Any]] = {}
        submitted = 0

        def submit_upto(limit: int) -> None:
            nonlocal submitted
            if pool is None:
                return
            while submitted < min(limit, n):
                futures[submitted] = pool.submit(_decode, sources[submitted], tm)
                submitted += 1

        bar = tqdm(total=n, unit="img", desc=f"segment ({self.device.type})",
                   disable=not progress or n == 0, leave=False)
        pending: _Launched | None = None
        try:
            submit_upto(window)
            for start in range(0, n, bs):
                stop = min(start + bs, n)
                imgs, idx, failed = [], [], []
                t0 = time.perf_counter()
                for i in range(start, stop):
                    try:
                        img = futures.pop(i).result() if pool is not None else _decode(sources[i], tm)
                    except ImageReadError as exc:
                        if on_error == "raise":
                            raise
                        failed.append((i, exc.source, exc.reason))
                        continue
                    imgs.append(img)
                    idx.append(i)
                tm.add("decode_wait", time.perf_counter() - t0)
                submit_upto(stop + window)
                if imgs:
                    launched = _Launched(idx, failed, *self._launch(
                        imgs, resize=resize, as_torch=as_torch, device_fn=device_fn, timings=tm,
                        pad_to=pad_to))
                else:
                    launched = _Launched([], failed, [])
                if pending is not None:
                    yield self._finish(pending)
                    bar.update(len(pending.indices) + len(pending.failed))
                pending = launched
            if pending is not None:
                yield self._finish(pending)
                bar.update(len(pending.indices) + len(pending.failed))
                pending = None
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def segment(self, images: Any, *, batch_size: int = 16, progress: bool = True,
                on_error: str = "skip", num_workers: int | None = None,
                as_torch: bool = False, resize: str = "logits",
                timings: dict[str, float] | None = None) -> Any:
        """Segment images into label maps, each in its image's own size.

        Parameters
        ----------
        images : path, bytes, array, tensor, or a list of them
            One image or many: file paths (``str`` / ``os.PathLike``), bytes of encoded
            files, ``(H, W, 3)`` uint8 RGB arrays (or one ``(N, H, W, 3)`` array), uint8
            tensors ``(H, W, 3)`` / ``(3, H, W)`` (or ``(N, ...)``), on any device. Sizes may
            differ.
        batch_size : int, default 16
            Images per model call. On CUDA with a fixed-size model, a shorter last batch is
            padded with zeros to this size, so that cuDNN does not autotune again for its
            shape (measured on an H100: 1000 Corel-1K images at batch 64 in 8.5 s instead of
            13.8-14.7 s). Larger batches run faster once tuned but take longer to tune: for
            one CLI run over 1000 images batch 16 (16.5 s) beat 64 (20.2 s).
        progress : bool, default True
            Show a tqdm progress bar (on stderr) while segmenting more than one batch.
        on_error : {"skip", "raise"}, default "skip"
            What to do with an input that cannot be read or decoded: ``"skip"`` records it
            (``None`` label map, an entry in ``result.failed``, one summary warning);
            ``"raise"`` raises :class:`~semcbir_fast.imageio.ImageReadError` at the first.
        num_workers : int, optional
            Threads that read and decode files ahead of the model (default
            ``min(8, os.cpu_count())``; 0 decodes on the calling thread).
        as_torch : bool, default False
            Return label maps as tensors on the segmenter's device (no device-to-host copy;
            feed them to :func:`semcbir_fast.sbs_torch.encode_sbs_torch`).
        resize : {"logits", "labels"}, default "logits"
            ``"logits"``: resize the logits to the image size (bilinear) and take the argmax
            there (smooth boundaries, the reference quality). ``"labels"``: argmax at the
            model's resolution, then nearest-neighbour resize of the labels (faster on the
            CPU, with blocky boundaries; see the measurements in the project docs).
        timings : dict, optional
            If given, seconds per stage are added to it ("decode_wait", "decode_cpu",
            "upload", "segment", "download"); CUDA is synchronised at each stage boundary,
            which makes the shares exact but removes some overlap.

        Returns
        -------
        numpy.ndarray or torch.Tensor, or SegmentationResult
            For one image, its label map (``(H, W)``, uint8 if the model has at most 255
            classes, else uint16); errors raise whatever ``on_error``. For a list, a
            :class:`SegmentationResult` with one entry per input (``None`` for failures).
        """
        sources, single = _split_inputs(images)
        if single:
            on_error = "raise"
        labels: list[Any] = [None] * len(sources)
        failed: list[tuple[int, str, str]] = []
        for batch in self.iter_batches(
                sources, batch_size=batch_size, num_workers=num_workers if not single else 0,
                on_error=on_error, as_torch=as_torch, resize=resize,
                progress=progress and len(sources) > batch_size, timings=timings):
            for i, lab in zip(batch.indices, batch.labels):
                labels[i] = lab
            failed.extend(batch.failed)
        if single:
            return labels[0]
        _warn_failed([(src, reason) for _, src, reason in failed], len(sources))
        return SegmentationResult(labels, failed, [describe_source(s) for s in sources])

    __call__ = segment


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _warn_failed(failed: list[tuple[str, str]], total: int) -> None:
    if not failed:
        return
    head = "; ".join(f"{src} ({reason})" for src, reason in failed[:5])
    more = f"; ... and {len(failed) - 5} more" if len(failed) > 5 else ""
    warnings.warn(
        f"{len(failed)} of {total} images could not be read and were skipped: {head}{more}. "
        "The result's .failed lists them all; pass on_error='raise' to stop at the first.",
        RuntimeWarning, stacklevel=3,
    )


# --------------------------------------------------------------------------------------
# Indexing
# --------------------------------------------------------------------------------------


def _cpu_encoder() -> Callable[..., np.ndarray] | None:
    try:
        from semcbir_fast import encode_sbs  # type: ignore[attr-defined]
    except ImportError:
        return None
    return encode_sbs


def _choose_encoder(encoder: str, device: torch.device) -> str:
    if encoder not in ("auto", "torch", "cpu"):
        raise ValueError(f"encoder must be 'auto', 'torch' or 'cpu', got {encoder!r}")
    if encoder == "cpu" and _cpu_encoder() is None:
        raise RuntimeError(
            "encoder='cpu' needs semcbir_fast.encode_sbs (the compiled core), which is not "
            "importable; rebuild the package or pass encoder='torch'"
        )
    if encoder != "auto":
        return encoder
    # Measured with bench/bench_segment.py (group encode-levels*, 64 maps of 384x256, 151
    # classes): on the CPU the C++ encoder takes 0.05-0.08 ms per map, torch ops 3-4 ms
    # (2-core VM), so "cpu" wins there by 50x. On CUDA the torch encoder runs inside the batch
    # (no label maps cross to the host, the host stays free to decode); see the CUDA rows of
    # the same benchmark and of index-corel1k (encoder=torch vs cpu) for the comparison.
    if device.type == "cuda" or _cpu_encoder() is None:
        return "torch"
    return "cpu"


def index_images(paths: Iterable[Any], *, segmenter: Segmenter, levels: int,
                 num_classes: int | None = None, pyramid: bool = False,
                 ignore_index: int | None = None, batch_size: int = 16,
                 return_labels: bool = False, encoder: str = "auto", progress: bool = True,
                 on_error: str = "skip", num_workers: int | None = None,
                 resize: str = "logits", timings: dict[str, float] | None = None,
                 ) -> IndexResult:
    """Segment images and encode them to Semantic Binary Signatures, streaming.

    Parameters
    ----------
    paths : iterable
        Image files (or any input :meth:`Segmenter.segment` accepts), in database order.
    segmenter : Segmenter
        From :func:`load_segmenter`.
    levels : int
        SBS grid: ``2**levels x 2**levels`` blocks.
    num_classes : int, optional
        ``M`` of the code; default ``segmenter.num_classes``. Labels ``>= M`` are void.
    pyramid : bool, default False
        Concatenate the codes of grids ``0..levels`` (SPEC extension).
    ignore_index : int, optional
        A class to treat as void (e.g. 0 for a model whose class 0 means "other").
    batch_size : int, default 16
        Images per model call (and per encoder call).
    return_labels : bool, default False
        Also return the host label maps of the kept images (memory: ``H*W`` bytes each).
    encoder : {"auto", "torch", "cpu"}, default "auto"
        ``"torch"``: :func:`semcbir_fast.sbs_torch.encode_sbs_torch` on the segmenter's
        device (only the codes cross to the host). ``"cpu"``: label maps to the host, then
        the C++ :func:`semcbir_fast.encode_sbs`. ``"auto"``: ``"torch"`` on CUDA, ``"cpu"``
        on the CPU (the faster one on each, measured by ``bench/bench_segment.py``).
        Both give identical bytes.
    progress : bool, default True
        tqdm progress bar.
    on_error : {"skip", "raise"}, default "skip"
        Unreadable files: skip them (listed in ``result.failed``, one warning) or raise
        :class:`~semcbir_fast.imageio.ImageReadError`.
    num_workers : int, optional
        Decoding threads (see :meth:`Segmenter.segment`).
    resize : {"logits", "labels"}, default "logits"
        See :meth:`Segmenter.segment`.
    timings : dict, optional
        Filled with seconds per stage: "decode_wait" (the main thread waiting for decoded
        images), "decode_cpu" (decoding time summed over worker threads), "upload",
        "segment", "download", "encode", and "total" (wall time), with CUDA synchronised at
        stage boundaries. Shares of the end-to-end time are ``timings[k] / timings["total"]``.

    Returns
    -------
    IndexResult
    """
    from semcbir_fast.layout import sbs_layout
    from semcbir_fast.sbs_torch import encode_sbs_torch

    t_start = time.perf_counter()
    if not isinstance(segmenter, Segmenter):
        raise TypeError(
            f"segmenter must be a Segmenter (from load_segmenter), got {type(segmenter).__name__}"
        )
    m = segmenter.num_classes if num_classes is None else num_classes
    layout = sbs_layout(m, levels, pyramid=pyramid)
    which = _choose_encoder(encoder, segmenter.device)
    cpu_encode = _cpu_encoder() if which == "cpu" else None
    sources, _ = _split_inputs(paths if not isinstance(paths, (str, os.PathLike)) else [paths])
    tm = _Timings(timings, segmenter.device)

    code_rows: list[np.ndarray] = []
    kept_idx: list[int] = []
    kept_labels: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    device_fn = None
    if which == "torch":
        def device_fn(labs: list[Any]) -> Any:
            # queued inside the batch, right after its model call; only the codes come back
            return encode_sbs_torch(labs, num_classes=m, levels=levels,
                                    ignore_index=ignore_index, pyramid=pyramid,
                                    return_tensor=True)
    for batch in segmenter.iter_batches(
            sources, batch_size=batch_size, num_workers=num_workers, on_error=on_error,
            as_torch=not return_labels, resize=resize, progress=progress, timings=timings,
            device_fn=device_fn):
        failed.extend((src, reason) for _, src, reason in batch.failed)
        if not batch.indices:
            continue
        if which == "torch":
            codes = batch.extra
        else:
            assert cpu_encode is not None
            with tm.stage("encode"):
                codes = cpu_encode(batch.labels, num_classes=m, levels=levels,
                                   ignore_index=ignore_index, pyramid=pyramid)
        code_rows.append(np.asarray(codes, dtype=np.uint8).reshape(len(batch.indices),
                                                                  layout.stride))
        kept_idx.extend(batch.indices)
        if return_labels:
            kept_labels.extend(batch.labels)
    codes_all = (np.ascontiguousarray(np.concatenate(code_rows)) if code_rows
                 else np.zeros((0, layout.stride), dtype=np.uint8))
    _warn_failed(failed, len(sources))
    if timings is not None:
        timings["total"] = timings.get("total", 0.0) + time.perf_counter() - t_start
        timings["images"] = timings.get("images", 0.0) + len(kept_idx)
    return IndexResult(
        codes=codes_all,
        layout=layout,
        paths=[describe_source(sources[i]) for i in kept_idx],
        failed=failed,
        labels=kept_labels if return_labels else None,
        class_names=segmenter.class_names,
        timings=timings,
    )
