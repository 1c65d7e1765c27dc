"""Runtimes that execute a segmentation model: TorchScript, LiteRT (TFLite) or onnxruntime.

Every runtime is wrapped as a callable with the TorchScript contract of
:mod:`semcbir_fast.models.sidecar`: float32 ``(N, 3, H, W)`` normalised RGB in, float
logits ``(N, C, h, w)`` out (a torch tensor, possibly a channels-last view). Everything
around the model (decoding, resize, normalisation, the logits -> label-map geometry,
batching, progress) is the :class:`~semcbir_fast.segment.Segmenter`'s and is shared, so a
model gives label maps of the same size and with the same argmax / resize semantics in
every runtime.

=============  ===============  ==========================  ============================
runtime        model file       package                     devices
=============  ===============  ==========================  ============================
``torch``      ``.pt`` (other)  torch                       CPU, CUDA; ``dtype`` autocast
``litert``     ``.tflite``      ``ai-edge-litert``          CPU (XNNPACK, int8 weights)
``onnxruntime`` ``.onnx``       ``onnxruntime``             CPU
=============  ===============  ==========================  ============================

The TFLite and ONNX models run one image per call (the shipped files have batch 1), with
``threads`` intra-op threads. Pick one with ``load_segmenter(..., runtime=...)`` or the
environment variable :data:`RUNTIME_ENV` (``SEMCBIR_RUNTIME``); ``"auto"`` (the default)
is explained in :mod:`.registry`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["AUTO_CPU_ORDER", "RUNTIMES", "RUNTIME_ENV", "runtime_available", "runtime_of_file"]

RUNTIMES = ("torch", "litert", "onnxruntime")
#: what ``runtime="auto"`` tries on the CPU, best first (measured on the default model,
#: ``docs/segmentation_speed.md``, model alone on 2 quiet cores: LiteRT 84-89 ms per
#: image, the torch float port 194-232 ms, onnxruntime 391-405 ms)
AUTO_CPU_ORDER = ("litert", "torch", "onnxruntime")
#: environment variable read when ``runtime`` is None
RUNTIME_ENV = "SEMCBIR_RUNTIME"

# runtime -> (module to import, pip name)
_PACKAGES = {"torch": ("torch", "torch"), "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
             "onnxruntime": ("onnxruntime", "onnxruntime")}
_SUFFIXES = {".tflite": "litert", ".onnx": "onnxruntime"}


def _check_runtime(runtime: str | None) -> str:
    """None -> ``$SEMCBIR_RUNTIME`` or ``"auto"``; checks the name."""
    source = "runtime"
    if runtime is None:
        runtime = os.environ.get(RUNTIME_ENV, "").strip() or "auto"
        source = RUNTIME_ENV
    if runtime != "auto" and runtime not in RUNTIMES:
        raise ValueError(f"{source} must be 'auto' or one of {', '.join(RUNTIMES)}, "
                         f"got {runtime!r}")
    return runtime


def runtime_of_file(path: str | os.PathLike[str]) -> str:
    """The runtime that runs a model file: ``.tflite`` -> litert, ``.onnx`` -> onnxruntime,
    anything else -> torch (TorchScript)."""
    return _SUFFIXES.get(Path(path).suffix.lower(), "torch")


def runtime_available(runtime: str) -> bool:
    """Whether the package of ``runtime`` is installed (found, not imported)."""
    mod = _PACKAGES[runtime][0]
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _import(runtime: str) -> Any:
    mod, pip = _PACKAGES[runtime]
    try:
        return importlib.import_module(mod)
    except ImportError as exc:
        raise ImportError(
            f"runtime={runtime!r} needs the {pip!r} package ({exc}); install it with "
            f"pip install {pip} (or pip install 'semcbir_fast[segment]'), or pass "
            "runtime='torch'"
        ) from None


def _default_threads() -> int:
    import torch

    return max(1, int(torch.get_num_threads()))


#: what LiteRT prints on stderr for every interpreter (from C++), dropped by LiteRTModel
_LITERT_NOISE = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def _drop_native_lines(noise: tuple[bytes, ...]) -> Iterator[None]:
    """Capture what native code writes to file descriptor 2 inside the block and write it
    back without the lines in ``noise`` (LiteRT logs one INFO line per interpreter)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): leave it alone
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            keep = [ln for ln in tmp.read().splitlines(keepends=True)
                    if ln.rstrip(b"\r\n") not in noise]
            if keep:
                os.write(2, b"".join(keep))


def _to_nchw(t: torch.Tensor, num_classes: int, nhwc_first: bool) -> torch.Tensor:
    """Logits in either layout -> an NCHW view (no copy)."""
    if t.dim() != 4:
        return t  # the segmenter's shape check names the problem
    nhwc, nchw = int(t.shape[3]) == num_classes, int(t.shape[1]) == num_classes
    if nhwc and (nhwc_first or not nchw):
        return t.permute(0, 3, 1, 2)
    return t


class LiteRTModel:
    """A TFLite segmentation model run by LiteRT (``ai-edge-litert``), one image per invoke.

    Takes and returns what a TorchScript model of the sidecar contract does; the
    interpreter's input is NHWC float32, its output NHWC (or NCHW) logits. With a model of
    a fixed input shape the inputs must have that size (the sidecar's ``input_size``);
    otherwise the interpreter is resized to each new input shape. Not thread-safe (one
    interpreter): use one segmenter per thread.
    """

    runtime = "litert"

    def __init__(self, path: str | os.PathLike[str], *, num_classes: int,
                 threads: int | None = None) -> None:
        mod = _import("litert")
        self.path = Path(path)
        self.num_classes = int(num_classes)
        self.threads = _default_threads() if threads is None else int(threads)
        try:
            with _drop_native_lines(_LITERT_NOISE):
                self._it = mod.Interpreter(model_path=str(self.path), num_threads=self.threads)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path} is not a loadable TFLite model "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                             ) from None
        ins, outs = self._it.get_input_details(), self._it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output tensor, got "
                             f"{len(ins)} and {len(outs)}")
        self._in, self._out = ins[0]["index"], outs[0]["index"]
        if ins[0]["dtype"] != np.float32:
            raise ValueError(f"{self.path}: input dtype {np.dtype(ins[0]['dtype'])}, expected "
                             "float32 (normalised RGB, NHWC)")
        self._shape = tuple(int(v) for v in ins[0]["shape"])
        sig = ins[0].get("shape_signature")
        self.fixed = sig is None or all(int(v) > 0 for v in sig)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) of a fixed-shape model, else None."""
        if not self.fixed or len(self._shape) != 4:
            return None
        return self._shape[1], self._shape[2]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        outs = []
        for i in range(int(x.shape[0])):
            a = x[i: i + 1].permute(0, 2, 3, 1).contiguous().numpy()  # no copy if channels_last
            if a.shape != self._shape:
                if self.fixed:
                    raise ValueError(f"{self.path.name} takes inputs of shape {list(self._shape)} "
                                     f"(NHWC), got {list(a.shape)}; fix the sidecar's input_size")
                self._it.resize_tensor_input(self._in, list(a.shape))
                self._it.allocate_tensors()
                self._shape = a.shape
            self._it.set_tensor(self._in, a)
            self._it.invoke()
            outs.append(torch.from_numpy(self._it.get_tensor(self._out)))  # a copy
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        return _to_nchw(y, self.num_classes, nhwc_first=True)


class OnnxModel:
    """An ONNX segmentation model run by onnxruntime (CPU), one image per call.

    The graph's input may be NCHW or NHWC (read off its declared shape: a last dimension of
    3 means NHWC), its output NCHW or NHWC logits. Thread spinning is off, so that idle
    worker threads leave the cores to the decoding threads.
    """

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, num_classes: int,
                 threads: int | None = None) -> None:
        ort = _import("onnxruntime")
        self.path = Path(path)
        self.num_classes = int(num_classes)
        self.threads = _default_threads() if threads is None else int(threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        state = ort.capi.onnxruntime_pybind11_state  # onnxruntime's own exception types
        errors = tuple(getattr(state, n) for n in ("Fail", "InvalidArgument", "InvalidGraph",
                                                   "InvalidProtobuf", "NoSuchFile",
                                                   "NotImplemented", "RuntimeException")
                       if isinstance(getattr(state, n, None), type))
        try:
            self._sess = ort.InferenceSession(str(self.path), so,
                                              providers=["CPUExecutionProvider"])
        except (RuntimeError, ValueError, *errors) as exc:
            raise ValueError(f"{self.path} is not a loadable ONNX model "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                             ) from None
        ins = self._sess.get_inputs()
        if len(ins) != 1 or len(self._sess.get_outputs()) != 1:
            raise ValueError(f"{self.path}: expected one input and one output")
        self._name = ins[0].name
        shape = list(ins[0].shape)
        self.nhwc = len(shape) == 4 and shape[3] == 3 and shape[1] != 3
        dims = shape[1:3] if self.nhwc else shape[2:4]
        self._size = (tuple(int(d) for d in dims)
                      if len(shape) == 4 and all(isinstance(d, int) for d in dims) else None)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) of a fixed-shape model, else None."""
        return self._size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        outs = []
        for i in range(int(x.shape[0])):
            xi = x[i: i + 1]
            a = (xi.permute(0, 2, 3, 1) if self.nhwc else xi).contiguous().numpy()
            outs.append(torch.from_numpy(self._sess.run(None, {self._name: a})[0]))
        y = outs[0] if len(outs) == 1 else torch.cat(outs)
        return _to_nchw(y, self.num_classes, nhwc_first=False)


def _load_runtime_model(path: Path, runtime: str, *, num_classes: int,
                        input_size: tuple[int, int] | None, threads: int | None) -> Any:
    """A LiteRT / onnxruntime model for ``path``, checked against the sidecar's input size."""
    cls = LiteRTModel if runtime == "litert" else OnnxModel
    model = cls(path, num_classes=num_classes, threads=threads)
    fixed = model.input_size
    if fixed is not None and input_size is not None and tuple(fixed) != tuple(input_size):
        raise ValueError(f"{path.name} takes {fixed[0]}x{fixed[1]} inputs but its sidecar says "
                         f"input_size {list(input_size)}; fix the sidecar")
    if fixed is not None and input_size is None:
        raise ValueError(f"{path.name} has a fixed input size {fixed[0]}x{fixed[1]}; its "
                         "sidecar must say input_size (images are resized to it)")
    return model
