"""Registry of named segmentation models: a name -> one model-file factory per runtime.

:func:`load_segmenter` accepts a registered name wherever it accepts a path. Each factory
runs at load time, so that a built-in entry (``"ade20k-mnv2"``) converts its model only
when someone asks for it, and only for the runtime chosen. The built-in entry has three:

- ``"torch"``: the PyTorch float port as TorchScript (CPU or CUDA);
- ``"litert"``: the shipped int8-weight TFLite file cut at the logits (CPU, ai-edge-litert);
- ``"onnxruntime"``: the shipped ONNX graph cut at the logits (CPU, onnxruntime).

``runtime="auto"`` (:func:`_resolve`) picks, for a registered name: ``"torch"`` on CUDA or
when a torch-only option is asked for (``dtype``, ``optimize``); otherwise the first of
:data:`~semcbir_fast.segment.runtimes.AUTO_CPU_ORDER` that the entry has, whose package is
installed and whose factory succeeds. For the built-in model that is LiteRT, whose label
maps agree with the float model on 99 % of the pixels at the same retrieval MAP
(``docs/segmentation_speed.md``). A file path always runs in the runtime of its kind.

Besides single models the registry names *composites* (:mod:`.composite`): several models
run on one batch, their label maps merged into one label space. ``"ade20k+voc"`` is the
ADE20K model with the Pascal VOC object model (``"voc-mnv2"``) painted over it; any
``"a+b"`` of registered names or model files, a list of them, or a ``.composite`` file is
one too (:func:`register_composite` names new ones). The registry also holds the class
mapping a model uses when it is a composite's overlay (``"voc-mnv2"``: onto ADE20K's
class names, :data:`semcbir_fast.models.voc.VOC_TO_ADE20K`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .runtimes import AUTO_CPU_ORDER, RUNTIMES, _check_runtime, runtime_available, runtime_of_file

__all__ = ["DEFAULT_SEGMENTER", "available_segmenters", "register_composite",
           "register_segmenter", "segmenter_runtimes"]

log = logging.getLogger(__name__)

#: The model that :func:`load_segmenter`, the pipeline, the evaluation and the CLI use when
#: none is named: the ADE20K model with the Pascal VOC objects painted over it (158 merged
#: classes). It beats ``"ade20k-mnv2"`` alone on Corel-1K and MSRC v1 for SBS at 4, 16 and
#: 64 blocks, SBoVP and hybrid (``docs/composite.md``); ``"ade20k-mnv2"`` is the single,
#: 1.3-1.6x faster model (151 classes) and the fallback when the VOC file is missing.
DEFAULT_SEGMENTER = "ade20k+voc"


def _ade20k_mnv2() -> Path:
    from semcbir_fast.models.ade20k import ensure_ade20k_torchscript

    return Path(ensure_ade20k_torchscript())


def _ade20k_mnv2_litert() -> Path:
    from semcbir_fast.models.ade20k import ensure_ade20k_litert

    return Path(ensure_ade20k_litert())


def _ade20k_mnv2_onnx() -> Path:
    from semcbir_fast.models.ade20k import ensure_ade20k_onnx

    return Path(ensure_ade20k_onnx())


def _voc_mnv2() -> Path:
    from semcbir_fast.models.voc import ensure_voc_torchscript

    return Path(ensure_voc_torchscript())


def _voc_mnv2_litert() -> Path:
    from semcbir_fast.models.voc import ensure_voc_litert

    return Path(ensure_voc_litert())


def _voc_to_ade20k() -> dict[str, str | None]:
    from semcbir_fast.models.voc import VOC_TO_ADE20K

    return dict(VOC_TO_ADE20K)


_REGISTRY: dict[str, dict[str, Callable[[], Path]]] = {
    "ade20k-mnv2": {"torch": _ade20k_mnv2, "litert": _ade20k_mnv2_litert,
                    "onnxruntime": _ade20k_mnv2_onnx},
    "voc-mnv2": {"torch": _voc_mnv2, "litert": _voc_mnv2_litert},
}

#: composite name -> its members (model names / files, or dicts with "model", "mapping",
#: "margin", "runtime"; see :class:`.composite.CompositeMember`), the base first
_COMPOSITES: dict[str, tuple[Any, ...]] = {
    "ade20k+voc": ("ade20k-mnv2", "voc-mnv2"),
}

#: registered model name -> the class mapping it uses as a composite overlay by default
_CLASS_MAPPINGS: dict[str, Callable[[], dict[str, str | None]]] = {
    "voc-mnv2": _voc_to_ade20k,
}


def register_segmenter(name: str, factory: Callable[[], str | os.PathLike[str]], *,
                       runtime: str = "torch", overwrite: bool = False) -> None:
    """Register a model name for :func:`load_segmenter`.

    Parameters
    ----------
    name : str
        The name users pass as ``model``.
    factory : callable
        Called without arguments at load time; returns the path of a model file for
        ``runtime`` (TorchScript ``.pt``, TFLite ``.tflite`` or ONNX ``.onnx``) whose
        sidecar (``.json``) lies beside it (it may convert or fetch a local file first).
    runtime : {"torch", "litert", "onnxruntime"}, default "torch"
        The runtime this factory's file is for. One name may have one factory per runtime:
        registering another runtime of an existing name adds it to that entry.
    overwrite : bool, default False
        Replace the whole entry (every runtime of ``name``) by this factory. Without it,
        registering a runtime the name already has raises ``ValueError``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    entry = _REGISTRY.get(name)
    if entry is not None and runtime in entry and not overwrite:
        raise ValueError(f"segmenter {name!r} is already registered for runtime {runtime!r}; "
                         "pass overwrite=True")
    if name in _COMPOSITES:
        raise ValueError(f"{name!r} is a registered composite; pick another name")
    if entry is None or overwrite:
        entry = _REGISTRY[name] = {}
    entry[runtime] = lambda: Path(factory())


def register_composite(name: str, members: Any, *, overwrite: bool = False) -> None:
    """Register a name for a composite segmenter (:mod:`semcbir_fast.segment.composite`).

    Parameters
    ----------
    name : str
        The name users pass as ``model`` (it is recorded in indexes like any model name).
    members : sequence
        At least two models, the base first: registered single-model names or model files,
        or :class:`~semcbir_fast.segment.composite.CompositeMember` / dicts with a class
        ``mapping`` and a ``margin``. Checked when the composite is loaded.
    overwrite : bool, default False
        Replace an existing composite of that name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"{name!r} is a registered single model; pick another name")
    if name in _COMPOSITES and not overwrite:
        raise ValueError(f"composite {name!r} is already registered; pass overwrite=True")
    if isinstance(members, (str, os.PathLike)) or len(members) < 2:
        raise ValueError(f"members must list at least two models, got {members!r}")
    _COMPOSITES[name] = tuple(members)


def available_segmenters() -> list[str]:
    """Names accepted by :func:`load_segmenter` besides file paths (single models and
    composites)."""
    return sorted({*_REGISTRY, *_COMPOSITES})


def segmenter_runtimes(name: str) -> list[str]:
    """The runtimes registered for ``name`` (in :data:`RUNTIMES` order), installed or not;
    for a composite of registered names, those that all its members have."""
    if name in _COMPOSITES:
        names = [m if isinstance(m, str) else getattr(m, "model", None) or m.get("model")
                 for m in _COMPOSITES[name]]
        return [r for r in RUNTIMES
                if all(n not in _REGISTRY or r in _REGISTRY[n] for n in names)]
    if name not in _REGISTRY:
        raise ValueError(f"no registered segmenter {name!r} ({', '.join(available_segmenters())})")
    return [r for r in RUNTIMES if r in _REGISTRY[name]]


def _as_file(model: str | os.PathLike[str]) -> Path:
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a registered name or a path, got {type(model).__name__}")
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {os.fspath(model)!r} is neither a registered segmenter "
            f"({', '.join(available_segmenters())}) nor an existing model file "
            "(TorchScript .pt, TFLite .tflite or ONNX .onnx)"
        )
    return path


def _resolve(model: Any, *, runtime: str | None = None, device: Any = None,
             dtype: Any = None, optimize: bool = False) -> tuple[Path, str]:
    """``(model file, runtime)`` for a registered name or a file (see the module docstring).

    ``device=None`` means what :func:`load_segmenter` makes of it (CUDA when available).
    """
    rt = _check_runtime(runtime)
    from .composite import _resolve_composite, is_composite

    if is_composite(model):
        return _resolve_composite(model, runtime=rt, device=device, dtype=dtype,
                                  optimize=optimize)
    if not (isinstance(model, str) and model in _REGISTRY):
        path = _as_file(model)
        kind = runtime_of_file(path)
        if rt not in ("auto", kind):
            raise ValueError(
                f"runtime={rt!r} cannot run {path.name} (a {kind} model file); pass "
                f"runtime='auto' or {kind!r}, or a model file for {rt}"
            )
        return path, kind
    entry = _REGISTRY[model]
    if rt != "auto":
        if rt not in entry:
            raise ValueError(f"segmenter {model!r} has no {rt!r} model (it has: "
                             f"{', '.join(segmenter_runtimes(model))})")
        return entry[rt](), rt
    from .device import _resolve_device

    torch_only = _resolve_device(device).type != "cpu" or dtype is not None or optimize
    order = ["torch"] if torch_only else [r for r in AUTO_CPU_ORDER if r in entry]
    if not order or order[0] not in entry:
        raise ValueError(f"segmenter {model!r} has no torch model, which this device / dtype "
                         f"needs (it has: {', '.join(segmenter_runtimes(model))})")
    for i, name in enumerate(order):
        last = i == len(order) - 1
        if not last and not runtime_available(name):
            continue
        try:
            return entry[name](), name
        except (FileNotFoundError, ImportError) as exc:
            if last:
                raise
            log.info("segmenter %s: runtime %s unavailable (%s); trying %s", model, name,
                     exc, order[i + 1])
    raise AssertionError("unreachable")  # pragma: no cover


def _resolve_model(model: Any, *, runtime: str | None = None,
                   device: Any = None, dtype: Any = None, optimize: bool = False) -> Path:
    """A registered name (its factory for the chosen runtime runs) or an existing file ->
    the model file that :func:`load_segmenter` with the same arguments loads.

    Label-map caches key on this file (and its sidecar), so maps of different runtimes
    never mix.
    """
    return _resolve(model, runtime=runtime, device=device, dtype=dtype, optimize=optimize)[0]
