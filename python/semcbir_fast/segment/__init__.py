"""Semantic segmentation front end: images -> label maps -> SBS codes.

Entry points:

- :func:`load_segmenter` loads a segmentation model (a registered name such as
  ``"ade20k-mnv2"`` or the default, :data:`DEFAULT_SEGMENTER` = ``"ade20k+voc"``, or a
  TorchScript / TFLite / ONNX file with its JSON sidecar) onto a
  device, in a runtime (torch; LiteRT or onnxruntime on the CPU; ``runtime="auto"`` picks
  the int8 LiteRT model for ``"ade20k-mnv2"`` on the CPU, the float torch port on CUDA);
- :meth:`Segmenter.segment` turns images (paths, bytes, arrays, tensors) into one label map
  per image, in the image's own size;
- :func:`segment_images` streams image files through the segmenter and returns the label
  maps of those that could be read (with their paths and the failures);
- :func:`index_images` does the same and encodes them to SBS codes, ready for
  :func:`semcbir_fast.hamming_topk`.

Pipeline of one batch (everything after decoding runs on the segmenter's device)::

    read + decode (thread pool, prefetching)       -> uint8 (H, W, 3) RGB, per image
    upload (pinned host buffer, one copy per size) -> uint8 on the device
    resize to meta.input_size (bilinear, align_corners=False, no antialias)
      or pad bottom/right to a multiple of meta.size_divisor (pad value = the mean colour)
    normalise (x - mean) / std, channels_last on CUDA, fp16/bf16 autocast if asked
    model -> logits (N, C, h, w)   (torch, LiteRT or onnxruntime; on the CPU one image per
                                    call, the progress bar moving after each)
    logits -> each image's own size (bilinear) -> argmax   (``resize="logits"``, default)
      or argmax -> each image's own size (nearest)          (``resize="labels"``)
    labels uint8 (C <= 255) or uint16, to the host (or kept on the device, ``as_torch``)

On CUDA the next batch is launched before the labels of the previous one are copied back,
so that decoding (worker threads), the host<->device copies and the model overlap.

Modules, one concept each (torch and OpenCV are imported only when first needed):

- :mod:`.registry`: named models, one model file per runtime (:func:`register_segmenter`,
  :func:`available_segmenters`, :func:`segmenter_runtimes`) and the ``"auto"`` choice;
- :mod:`.runtimes`: the LiteRT and onnxruntime wrappers (the TorchScript call contract);
- :mod:`.device`: device and autocast-type resolution, host -> device copies;
- :mod:`.decode`: splitting the input into images, decoding, upload per image size;
- :mod:`.geometry`: logit-grid positions and the argmax of the bilinearly resampled logits
  (its docstring has the geometry and the measurements behind the defaults);
- :mod:`.timings`: seconds per stage;
- :mod:`.segmenter`: :class:`Segmenter`, its results, :func:`load_segmenter`;
- :mod:`.composite`: :class:`CompositeSegmenter`, several models merged into one label
  space (``"ade20k+voc"``; the merge rule and the class-mapping file format);
- :mod:`.images`: :func:`segment_images` and :func:`index_images` over many files.
"""

from __future__ import annotations

from .composite import CompositeMember, CompositeSegmenter, read_class_mapping

# "name as name": private names re-exported for other modules (eval.cache: _resolve_model)
from .device import _resolve_device as _resolve_device
from .device import _resolve_dtype as _resolve_dtype
from .images import IndexResult, LabelMaps, index_images, segment_images
from .registry import (
    DEFAULT_SEGMENTER,
    available_segmenters,
    register_composite,
    register_segmenter,
    segmenter_runtimes,
)
from .registry import _resolve_model as _resolve_model
from .runtimes import RUNTIMES, runtime_available
from .segmenter import SegmentationResult, SegmentBatch, Segmenter, load_segmenter

__all__ = [
    "DEFAULT_SEGMENTER",
    "RUNTIMES",
    "CompositeMember",
    "CompositeSegmenter",
    "IndexResult",
    "LabelMaps",
    "SegmentBatch",
    "SegmentationResult",
    "Segmenter",
    "available_segmenters",
    "index_images",
    "load_segmenter",
    "read_class_mapping",
    "register_composite",
    "register_segmenter",
    "runtime_available",
    "segment_images",
    "segmenter_runtimes",
]
