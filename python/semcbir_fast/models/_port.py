"""What the native ports of the shipped segmentation models share (:mod:`.ade20k`,
:mod:`.voc`): the class-name files, finding the shared source file, the cached conversions
(a file, its sidecar and a stamp), and reading / writing TFLite flatbuffers.

Each port passes its own names, sizes and "what this file should be" wording; nothing here
knows a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semcbir_fast._atomic import atomic_path
from semcbir_fast._paths import cache_dir as _default_cache_dir
from semcbir_fast._paths import models_root
from semcbir_fast.models.sidecar import SegmenterMeta, read_sidecar, write_sidecar

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- files
def read_labels(path: str | os.PathLike[str], *, count: int, filename: str,
                beside: str) -> list[str]:
    """The class names of an ``index<TAB>name`` file (indices 0..count-1 in order).

    ``filename`` / ``beside`` word the error of a missing file ("put <filename> ... beside
    the <beside>"). Raises ``FileNotFoundError`` (missing) or ``ValueError`` (malformed,
    wrong count).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no class-name file {path}: put {filename} (from the "
                                f"project's shared models folder) beside the {beside}")
    names: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
        if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip():
            raise ValueError(f"{path}:{lineno}: expected 'index<TAB>name', got {line!r}")
        if int(parts[0]) != len(names):
            raise ValueError(f"{path}:{lineno}: expected index {len(names)}, got {parts[0]}")
        names.append(parts[1].strip())
    if len(names) != count:
        raise ValueError(f"{path}: expected {count} class names, got {len(names)}")
    return names


def find_source(source: str | os.PathLike[str] | None, *, filename: str, kind: str,
                what: str, published: str) -> Path:
    """``source`` if it is a file, else (None) ``models_root() / filename``;
    ``FileNotFoundError`` saying where to put it otherwise. ``kind``: "ONNX" / "TFLite";
    ``what``: the model in words ("the Pascal VOC segmentation model"); ``published``: a
    sentence on where it comes from."""
    if source is not None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"source: no {kind} file at {path}. Pass the path of {filename}, or "
                f"leave source=None to use SEMCBIR_MODELS / ../shared/models. {published}")
        return path
    path = models_root() / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {filename} is not at {path}. Put it in the folder named by the "
            "SEMCBIR_MODELS environment variable, or in ../shared/models beside the "
            f"repository, or pass source=<path>. {published}")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def stamp_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".stamp.json")


def save_torchscript(module: Any, path: str) -> None:
    """``torch.jit.save(torch.jit.script(module), path)`` without torch's deprecation
    warning: torch >= 2.10 flags torch.jit as deprecated; TorchScript is still this
    library's model format (see :mod:`semcbir_fast.models.sidecar`), so keep users' logs
    clean."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated",
                                category=DeprecationWarning)
        torch.jit.save(torch.jit.script(module), path)


def ensure_converted(src: Path, filename: str, cache_dir: str | os.PathLike[str] | None,
                     convert: Callable[[str], Any], *, name: str, num_classes: int,
                     sidecar: Callable[[Path], SegmenterMeta], labels_filename: str,
                     converter_version: int) -> Path:
    """``<cache_dir>/filename`` converted from ``src`` by ``convert(tmp_path)``, with the
    sidecar ``sidecar(labels_file)`` and a stamp (converter version, SHA-256 and size of
    the source and of the output); re-used while the stamp matches ``src``, the sidecar
    names model ``name`` with ``num_classes`` and the file is intact. Class names come from
    ``labels_filename`` beside ``src`` (fallback: in ``models_root()``). Each file is
    written to a temporary name and renamed into place."""
    labels = src.parent / labels_filename
    if not labels.is_file():
        labels = models_root() / labels_filename
    out_dir = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / filename
    stamp = {"converter_version": converter_version, "source_sha256": sha256(src),
             "source_size": src.stat().st_size}
    if _cache_is_valid(out, stamp, name, num_classes):
        return out
    log.info("converting %s to %s", src, out)
    meta = sidecar(labels)  # reads the class names: fails before anything is written
    atomic_write_bytes(out, convert)
    write_sidecar(out, meta)
    stamp.update(model_sha256=sha256(out), model_size=out.stat().st_size, source=str(src))
    atomic_write_bytes(stamp_path(out),
                       lambda tmp: Path(tmp).write_text(json.dumps(stamp, indent=1)))
    return out


def _cache_is_valid(out: Path, stamp: dict[str, Any], name: str, num_classes: int) -> bool:
    sp = stamp_path(out)
    if not (out.is_file() and sp.is_file()):
        return False
    try:
        old = json.loads(sp.read_text())
        meta = read_sidecar(out)
    except (OSError, ValueError, TypeError):
        return False
    if not isinstance(old, dict) or any(old.get(k) != v for k, v in stamp.items()):
        return False
    if meta.name != name or meta.num_classes != num_classes:
        return False
    return out.stat().st_size == old.get("model_size") and sha256(out) == old.get("model_sha256")


# ----------------------------------------------------------------------------- TFLite
def tflite_schema(purpose: str) -> Any:
    """``ai_edge_litert.schema_py_generated`` (the TFLite flatbuffer schema), or an
    ``ImportError`` saying what needs it (``purpose``: "reading x.tflite")."""
    try:
        import flatbuffers  # noqa: F401  (packing needs it too)
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs ai-edge-litert >= 2.0 with its flatbuffer schema ({exc}); "
            "pip install -U ai-edge-litert"
        ) from None
    return schema


def read_tflite(schema: Any, buf: bytes, bad: Callable[[str], ValueError]) -> Any:
    """The ``ModelT`` of a TFLite flatbuffer with one subgraph; ``bad(what)`` builds the
    ``ValueError`` for a file that is not one ("not the ... graph this loader reads")."""
    try:
        if not schema.Model.ModelBufferHasIdentifier(buf, 0):
            raise bad("no TFL3 flatbuffer identifier")
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
    except (IndexError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, ValueError) and "not the DeepLabV3" in str(exc):
            raise
        raise bad(f"unreadable flatbuffer: {exc}") from None
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise bad(f"{len(model.subgraphs or [])} subgraphs, expected 1")
    return model


def builtin_code(model: Any, op: Any) -> int:
    """The builtin operator code of ``op`` (new and deprecated fields both read)."""
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def tensor_names(subgraph: Any) -> list[str]:
    return [t.name.decode() if isinstance(t.name, bytes) else str(t.name)
            for t in subgraph.tensors]


def only_producer(subgraph: Any, idx: int, name: str, bad: Callable[[str], ValueError]) -> int:
    """The index of the one operator that writes tensor ``idx`` (``bad`` otherwise)."""
    producers = [j for j, op in enumerate(subgraph.operators) if idx in list(op.outputs)]
    if len(producers) != 1:
        raise bad(f"{name} has {len(producers)} producers")
    return producers[0]


def pack_tflite(model: Any, size_hint: int) -> bytes:
    """The flatbuffer bytes of a (modified) ``ModelT``."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
