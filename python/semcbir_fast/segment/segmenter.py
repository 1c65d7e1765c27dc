"""The segmenter: a TorchScript model on a device with its pre- and post-processing.

:func:`load_segmenter` loads a model (a registered name or a ``.pt`` file with its JSON
sidecar); :meth:`Segmenter.segment` turns images into label maps, each in its image's own
size; :meth:`Segmenter.iter_batches` is the streaming engine under it (and under
:func:`~semcbir_fast.segment.images.segment_images` and
:func:`~semcbir_fast.segment.images.index_images`). The stages of one batch are listed in
:mod:`semcbir_fast.segment`; the geometry of the logits resize in
:mod:`semcbir_fast.segment.geometry`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcbir_fast.imageio import ImageReadError, describe_source

from .decode import _decode, _split_inputs, _upload
from .device import _resolve_device, _resolve_dtype
from .geometry import _argmax_bilinear_dense, _argmax_bilinear_sparse, _sampling_grid
from .registry import DEFAULT_SEGMENTER, _resolve
from .runtimes import _load_runtime_model
from .timings import _Timings

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from semcbir_fast.models.sidecar import SegmenterMeta

__all__ = ["SegmentBatch", "SegmentationResult", "Segmenter", "load_segmenter"]


def load_segmenter(model: str | os.PathLike[str] | Sequence[Any] = DEFAULT_SEGMENTER, *,
                   device: Any = None,
                   dtype: Any = None, check: bool = True,
                   cudnn_benchmark: bool | None = None, optimize: bool = False,
                   runtime: str | None = None, threads: int | None = None) -> Segmenter:
    """Load a segmentation model and its sidecar onto a device, in a runtime.

    Parameters
    ----------
    model : str, os.PathLike or list, default ``DEFAULT_SEGMENTER`` (``"ade20k+voc"``)
        The default is the composite of the ADE20K and Pascal VOC models (158 classes;
        ``docs/composite.md``: better SBS / SBoVP / hybrid MAP on Corel-1K and MSRC v1);
        ``"ade20k-mnv2"`` is the ADE20K model alone (151 classes, 1.3-1.6x faster).
        A registered name (:func:`available_segmenters`; ``"ade20k-mnv2"`` converts the
        shared model files at first use into cached files, one per runtime) or the path of
        a model file with its JSON sidecar beside it (``model.pt`` + ``model.json``, see
        :mod:`semcbir_fast.models.sidecar`): TorchScript (``.pt``, any other suffix),
        TFLite (``.tflite``) or ONNX (``.onnx``).
        Or a composite (:mod:`semcbir_fast.segment.composite`): a registered composite
        name (``"ade20k+voc"``), ``"a+b"`` of names / files, a list of them, or a
        ``.composite`` file; it returns a ``CompositeSegmenter`` (a ``Segmenter``).
    device : str or torch.device, optional
        Default: ``"cuda"`` when ``torch.cuda.is_available()``, else ``"cpu"``. The LiteRT
        and onnxruntime runtimes run on the CPU only.
    dtype : None, torch.float16 or torch.bfloat16, optional
        Compute type of the model (torch runtime only): None runs float32; fp16 / bf16 run
        under ``torch.autocast`` (inputs, label maps and the resize stay exact). fp16 is
        refused on the CPU (``ValueError``); bf16 uses CPU autocast there (with the default
        model only 94.5 % of the float labels on Corel-1K: ``docs/segmentation_speed.md``).
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
        ``bench/bench_segment.py`` for CUDA). Torch runtime only.
    runtime : {"auto", "torch", "litert", "onnxruntime"}, optional
        What executes the model. Default None: the environment variable
        ``SEMCBIR_RUNTIME``, else ``"auto"``. For a file, its kind decides (``"auto"`` or
        that kind). For a registered name, ``"auto"`` picks ``"torch"`` on CUDA or when
        ``dtype`` / ``optimize`` is given, and on the CPU the first installed of LiteRT,
        torch (:mod:`semcbir_fast.segment.registry`): for ``"ade20k-mnv2"`` the int8
        TFLite file in LiteRT, 1.8-5x faster than the float port with 99 % of its pixels and
        the same retrieval MAP on Corel-1K and MSRC v1 (``docs/segmentation_speed.md``).
        ``Segmenter.runtime`` says which one runs.
    threads : int, optional
        Intra-op threads of the LiteRT / onnxruntime runtimes (default
        ``torch.get_num_threads()``). Not used by the torch runtime, whose threads are
        process-wide (``torch.set_num_threads``).

    Returns
    -------
    Segmenter

    Raises
    ------
    FileNotFoundError
        No such file and no such registered name, or the sidecar is missing.
    ValueError
        Not a loadable model file; a bad device, dtype or runtime (or one that does not go
        with the model file, the device or dtype); the model's output is not
        ``(N, num_classes, h, w)`` logits (with ``check=True``).
    ImportError
        The package of an explicitly asked runtime is not installed (the message names it).
    """
    import torch

    from semcbir_fast.models.sidecar import read_sidecar

    dev = _resolve_device(device)
    amp = _resolve_dtype(dtype, dev)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    path, rt = _resolve(model, runtime=runtime, device=dev, dtype=amp, optimize=optimize)
    if path.suffix == ".composite":  # several models, one merged label map (.composite)
        from .composite import load_composite

        return load_composite(path, device=dev, dtype=amp, check=check,
                              cudnn_benchmark=cudnn_benchmark, optimize=optimize,
                              threads=threads)
    meta = read_sidecar(path)  # FileNotFoundError with the fix when missing
    if rt != "torch":
        if dev.type != "cpu":
            raise ValueError(f"runtime {rt!r} runs on the CPU only, got device={dev}; pass "
                             "device='cpu', or runtime='torch' for CUDA")
        if amp is not None or optimize:
            what = f"dtype={amp}" if amp is not None else "optimize=True"
            raise ValueError(f"{what} applies to the torch runtime only, and this model runs "
                             f"in {rt!r} ({path.name}); drop it, or pass runtime='torch'")
        module = _load_runtime_model(path, rt, num_classes=meta.num_classes,
                                     input_size=meta.input_size, threads=threads)
        seg = Segmenter(module, meta, device=dev, path=path, runtime=rt)
        if check:
            seg._self_check()
        return seg
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
class _Launched:
    """One batch in flight: device labels, pending host copies, the event that ends them."""

    indices: list[int]
    failed: list[tuple[int, str, str]]
    dev_labels: list[Any]
    host: list[Any] | None = None  # [(host tensor (k, H, W), positions)] per size group
    extra: Any = None  # result of device_fn: a device tensor, or its pending host copy
    event: Any = None


# --------------------------------------------------------------------------------------
# Segmenter
# --------------------------------------------------------------------------------------


class Segmenter:
    """A segmentation model on a device, with its pre- and post-processing.

    Create with :func:`load_segmenter`. Attributes: ``meta`` (the sidecar),
    ``num_classes``, ``class_names``, ``device``, ``dtype`` (autocast type or None),
    ``label_dtype`` (``numpy.uint8`` or ``numpy.uint16``), ``path``, ``runtime``
    (``"torch"``, ``"litert"`` or ``"onnxruntime"``: what runs ``module``) and
    ``micro_batch``.
    """

    def __init__(self, module: Any, meta: SegmenterMeta, *, device: torch.device,
                 dtype: torch.dtype | None = None, path: Path | None = None,
                 runtime: str = "torch") -> None:
        import torch

        self.module = module
        self.meta = meta
        self.device = device
        self.dtype = dtype
        self.path = path
        self.runtime = runtime
        #: on the CPU, images per model call inside a batch (None: the whole batch). The
        #: batch still groups decoding, post-processing and encoding; the model sees
        #: ``micro_batch`` images at a time, and the progress bar moves after each call.
        #: One image per call is the fastest on the CPU (torch float port, 2 cores: 16
        #: images in one call cost about 3x more per image than 16 calls of one; LiteRT and
        #: onnxruntime models have batch 1), see docs/segmentation_speed.md.
        self.micro_batch: int | None = 1 if device.type == "cpu" else None
        self._tick: Callable[[int], None] | None = None  # see _forward
        # non-torch runtimes read NHWC: build the input channels-last so that no copy is made
        self._input_format = (torch.channels_last if device.type == "cuda" or runtime != "torch"
                              else torch.contiguous_format)
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
                f"device={self.device}, runtime={self.runtime!r}, dtype={self.dtype}, "
                f"input_size={self.meta.input_size})")

    # ---- model execution ----------------------------------------------------------------
    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _forward(self, x: Any) -> Any:
        """Logits of the batch ``x``, ``micro_batch`` images per model call; ``self._tick(k)``
        (set by :meth:`iter_batches` while it runs, for the progress bar) after each call of
        ``k`` images."""
        import torch

        tick = self._tick
        n = int(x.shape[0])
        step = self.micro_batch or n
        if step >= n:
            out = self._call_model(x)
            if tick is not None:
                tick(n)
            return out
        outs = []
        for s in range(0, n, step):
            outs.append(self._call_model(x[s: s + step]))
            if tick is not None:
                tick(min(step, n - s))
        return torch.cat(outs)

    def _call_model(self, x: Any) -> Any:
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
        x = torch.zeros((1, 3, h, w), dtype=torch.float32, device=self.device
                        ).contiguous(memory_format=self._input_format)
        with torch.no_grad():
            self._forward(x)
        self._checked = True

    # ---- pre-processing -----------------------------------------------------------------
    def _upload(self, imgs: list[Any]) -> list[tuple[Any, list[int]]]:
        """uint8 HWC images -> one device batch per image size (see :func:`.decode._upload`)."""
        return _upload(imgs, self.device)

    def _prepare(self, groups: list[tuple[Any, list[int]]]) -> tuple[Any, tuple[int, int], bool]:
        """Device uint8 groups -> normalised float batch ``(n, 3, Hin, Win)``, images in group
        order. Returns the batch, the model input size and whether images were resized."""
        import torch
        import torch.nn.functional as F

        fmt = self._input_format
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
        geo = _sampling_grid(size, model_in, logit, resized, mode, self._align, self.device)
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
        images, batch_size, num_workers, on_error, as_torch, resize, timings
            As in :meth:`segment`.
        progress : bool or tqdm bar
            As in :meth:`segment`; or an open ``tqdm`` bar of the caller (a whole job), which
            is advanced by one per image and left open.
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

        rt = "" if self.runtime == "torch" else f"{self.runtime}, "
        own_bar = not hasattr(progress, "update")  # else: the caller's bar, advanced here
        bar = tqdm(total=n, unit="img", desc=f"segment ({rt}{self.device.type})",
                   disable=not progress or n == 0, leave=False) if own_bar else progress
        # On the CPU the model runs synchronously, micro_batch images per call: the bar
        # moves after each call (its rate and ETA are per image from the first one). On
        # CUDA the batch is queued asynchronously: the bar moves when a batch is handed out.
        per_call = self.device.type == "cpu" and not getattr(bar, "disable", False)
        self._tick = bar.update if per_call else None
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
                    bar.update(len(pending.failed) + (0 if per_call else len(pending.indices)))
                pending = launched
            if pending is not None:
                yield self._finish(pending)
                bar.update(len(pending.failed) + (0 if per_call else len(pending.indices)))
                pending = None
        finally:
            self._tick = None
            if own_bar:
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


def _warn_failed(failed: list[tuple[str, str]], total: int, *, stacklevel: int = 3) -> None:
    """One RuntimeWarning for the inputs skipped; ``stacklevel`` 3 names the caller of the
    function that calls this one."""
    if not failed:
        return
    head = "; ".join(f"{src} ({reason})" for src, reason in failed[:5])
    more = f"; ... and {len(failed) - 5} more" if len(failed) > 5 else ""
    warnings.warn(
        f"{len(failed)} of {total} images could not be read and were skipped: {head}{more}. "
        "The result's .failed lists them all; pass on_error='raise' to stop at the first.",
        RuntimeWarning, stacklevel=stacklevel,
    )

