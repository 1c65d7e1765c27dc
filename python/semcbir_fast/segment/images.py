"""The pipeline over image files: paths -> label maps (-> SBS codes), streaming.

- :func:`segment_images` returns the label maps of the images that could be read, with
  their paths and the failures (what SBoVP and the hybrid signature need);
- :func:`index_images` also encodes each batch to Semantic Binary Signatures, on the
  segmenter's device or with the C++ encoder.

Both run one loop (:class:`_ImageStream` over :meth:`Segmenter.iter_batches`): the same
inputs, batches, failures, warning and timings; ``index_images(...,
return_labels=True).labels`` are the label maps that :func:`segment_images` returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from semcbir_fast.imageio import describe_source

from .decode import _split_inputs
from .segmenter import SegmentBatch, Segmenter, _warn_failed
from .timings import _Timings

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from semcbir_fast.layout import SBSLayout

__all__ = ["IndexResult", "LabelMaps", "index_images", "segment_images"]


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass
class LabelMaps:
    """Label maps of the images that could be read, plus what could not.

    Unlike :class:`~semcbir_fast.segment.SegmentationResult` (one entry per input, None for
    failures), only the images that worked are kept, with their paths, as in
    :class:`IndexResult`.

    Attributes
    ----------
    paths : list of str
        The inputs kept, in input order (printable names for in-memory inputs).
    labels : list of numpy.ndarray
        ``(H, W)`` label map of ``paths[i]`` in its image's own size; uint8 when the model
        has at most 255 classes, else uint16.
    failed : list of (str, str)
        ``(path, reason)`` of every input that could not be read, in input order.
    class_names : list of str
        The segmenter's class names (index = label value).
    timings : dict, optional
        Seconds per stage when a ``timings`` dict was passed (see :func:`segment_images`).
    """

    paths: list[str]
    labels: list[np.ndarray]
    failed: list[tuple[str, str]]
    class_names: list[str] = field(default_factory=list)
    timings: dict[str, float] | None = None

    def __len__(self) -> int:
        return len(self.paths)


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
# The shared loop
# --------------------------------------------------------------------------------------


class _ImageStream:
    """One pass of a segmenter over the inputs: the batches that kept images, the inputs
    kept and the failures, then one warning and the totals in ``timings``.

    Construct it first (it starts the wall clock and checks the segmenter), iterate
    :meth:`batches` once, then call :meth:`finish` from the public function.
    """

    def __init__(self, paths: Iterable[Any], segmenter: Segmenter,
                 timings: dict[str, float] | None) -> None:
        self.t_start = time.perf_counter()
        if not isinstance(segmenter, Segmenter):
            raise TypeError(
                "segmenter must be a Segmenter (from load_segmenter), got "
                f"{type(segmenter).__name__}"
            )
        self.segmenter = segmenter
        self.paths = paths
        self.timings = timings
        self.sources: list[Any] = []
        self.kept: list[int] = []
        self.failed: list[tuple[str, str]] = []

    def batches(self, *, batch_size: int, num_workers: int | None, on_error: str,
                resize: str, progress: bool, as_torch: bool,
                device_fn: Callable[[list[Any]], Any] | None = None,
                ) -> Iterator[SegmentBatch]:
        """The batches of :meth:`Segmenter.iter_batches` that segmented at least one image."""
        paths = self.paths
        self.sources, _ = _split_inputs(
            paths if not isinstance(paths, (str, os.PathLike)) else [paths])
        for batch in self.segmenter.iter_batches(
                self.sources, batch_size=batch_size, num_workers=num_workers,
                on_error=on_error, as_torch=as_torch, resize=resize, progress=progress,
                timings=self.timings, device_fn=device_fn):
            self.failed.extend((src, reason) for _, src, reason in batch.failed)
            if not batch.indices:
                continue
            self.kept.extend(batch.indices)
            yield batch

    def finish(self) -> list[str]:
        """Warn once about the failures, add "total" and "images" to ``timings``; returns
        the printable names of the inputs kept."""
        # stacklevel 4: warnings.warn <- _warn_failed <- finish <- the public function <- caller
        _warn_failed(self.failed, len(self.sources), stacklevel=4)
        if self.timings is not None:
            self.timings["total"] = (self.timings.get("total", 0.0)
                                     + time.perf_counter() - self.t_start)
            self.timings["images"] = self.timings.get("images", 0.0) + len(self.kept)
        return [describe_source(self.sources[i]) for i in self.kept]


# --------------------------------------------------------------------------------------
# Label maps
# --------------------------------------------------------------------------------------


def segment_images(paths: Iterable[Any], *, segmenter: Segmenter, batch_size: int = 16,
                   progress: bool = True, on_error: str = "skip",
                   num_workers: int | None = None, resize: str = "logits",
                   timings: dict[str, float] | None = None) -> LabelMaps:
    """Segment images into host label maps, streaming, without encoding any signature.

    Parameters
    ----------
    paths : iterable
        Image files (or any input :meth:`Segmenter.segment` accepts), in database order.
    segmenter : Segmenter
        From :func:`load_segmenter`.
    batch_size : int, default 16
        Images per model call.
    progress, on_error, num_workers, resize
        As in :func:`index_images`: a tqdm bar; ``"skip"`` (unreadable files listed in
        ``result.failed``, one warning) or ``"raise"``; decoding threads; ``"logits"`` or
        ``"labels"``.
    timings : dict, optional
        Filled with seconds per stage as in :func:`index_images` (without "encode").

    Returns
    -------
    LabelMaps
        The same label maps as ``index_images(..., return_labels=True).labels``.
    """
    stream = _ImageStream(paths, segmenter, timings)
    labels: list[np.ndarray] = []
    for batch in stream.batches(batch_size=batch_size, num_workers=num_workers,
                                on_error=on_error, resize=resize, progress=progress,
                                as_torch=False):
        labels.extend(batch.labels)
    kept = stream.finish()
    return LabelMaps(paths=kept, labels=labels, failed=stream.failed,
                     class_names=segmenter.class_names, timings=timings)


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

    stream = _ImageStream(paths, segmenter, timings)
    m = segmenter.num_classes if num_classes is None else num_classes
    layout = sbs_layout(m, levels, pyramid=pyramid)
    which = _choose_encoder(encoder, segmenter.device)
    cpu_encode = _cpu_encoder() if which == "cpu" else None
    tm = _Timings(timings, segmenter.device)

    code_rows: list[np.ndarray] = []
    kept_labels: list[np.ndarray] = []
    device_fn = None
    if which == "torch":
        def device_fn(labs: list[Any]) -> Any:
            # queued inside the batch, right after its model call; only the codes come back
            return encode_sbs_torch(labs, num_classes=m, levels=levels,
                                    ignore_index=ignore_index, pyramid=pyramid,
                                    return_tensor=True)
    for batch in stream.batches(batch_size=batch_size, num_workers=num_workers,
                                on_error=on_error, resize=resize, progress=progress,
                                as_torch=not return_labels, device_fn=device_fn):
        if which == "torch":
            codes = batch.extra
        else:
            assert cpu_encode is not None
            with tm.stage("encode"):
                codes = cpu_encode(batch.labels, num_classes=m, levels=levels,
                                   ignore_index=ignore_index, pyramid=pyramid)
        code_rows.append(np.asarray(codes, dtype=np.uint8).reshape(len(batch.indices),
                                                                  layout.stride))
        if return_labels:
            kept_labels.extend(batch.labels)
    codes_all = (np.ascontiguousarray(np.concatenate(code_rows)) if code_rows
                 else np.zeros((0, layout.stride), dtype=np.uint8))
    kept = stream.finish()
    return IndexResult(
        codes=codes_all,
        layout=layout,
        paths=kept,
        failed=stream.failed,
        labels=kept_labels if return_labels else None,
        class_names=segmenter.class_names,
        timings=timings,
    )
