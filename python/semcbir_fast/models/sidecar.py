"""The JSON sidecar that travels with a TorchScript segmentation model.

A TorchScript file ``model.pt`` is described by ``model.json`` beside it::

    {
      "format": "semcbir-segmenter", "version": 1,
      "name": "ade20k-mnv2",
      "num_classes": 151,
      "class_names": ["others", "wall", ...],      # len == num_classes
      "input_size": [513, 513],                    # (H, W) fed to the model, or null
      "size_divisor": 1,                           # with input_size null: pad H, W up to this
      "mean": [127.5, 127.5, 127.5],               # x = (rgb_0_255 - mean) / std, RGB order
      "std": [127.5, 127.5, 127.5]
    }

Model contract: ``forward(x)`` takes float32 ``(N, 3, H, W)`` normalised RGB and returns
logits ``(N, num_classes, h, w)`` (any ``h, w``; the segmenter resizes to the image).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_path

__all__ = ["SegmenterMeta", "read_sidecar", "sidecar_path", "write_sidecar"]

FORMAT = "semcbir-segmenter"
VERSION = 1


@dataclass(frozen=True)
class SegmenterMeta:
    """Description of a segmentation model (see module docstring)."""

    name: str
    num_classes: int
    class_names: list[str]
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    input_size: tuple[int, int] | None = None
    size_divisor: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names must have num_classes={self.num_classes} entries, "
                f"got {len(self.class_names)}"
            )
        for key in ("mean", "std"):
            val = getattr(self, key)
            if len(val) != 3:
                raise ValueError(f"{key} must have 3 values (R, G, B), got {val!r}")
        if any(float(s) == 0.0 for s in self.std):
            raise ValueError(f"std must be non-zero, got {self.std!r}")
        if self.input_size is not None:
            if len(self.input_size) != 2 or min(int(v) for v in self.input_size) <= 0:
                raise ValueError(f"input_size must be (H, W) > 0 or None, got {self.input_size!r}")
            object.__setattr__(self, "input_size", (int(self.input_size[0]), int(self.input_size[1])))
        if int(self.size_divisor) <= 0:
            raise ValueError(f"size_divisor must be >= 1, got {self.size_divisor!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size is not None else None
        return {"format": FORMAT, "version": VERSION, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any], *, source: str = "sidecar") -> SegmenterMeta:
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: not a {FORMAT} sidecar (format={d.get('format')!r})")
        if d.get("version") != VERSION:
            raise ValueError(f"{source}: unsupported sidecar version {d.get('version')!r}, "
                             f"this library reads version {VERSION}")
        keys = {"name", "num_classes", "class_names", "mean", "std", "input_size", "size_divisor"}
        missing = {"name", "num_classes", "class_names"} - d.keys()
        if missing:
            raise ValueError(f"{source}: missing keys {sorted(missing)}")
        return cls(**{k: v for k, v in d.items() if k in keys})


def sidecar_path(model_path: str | Path) -> Path:
    """``model.pt`` -> ``model.json``."""
    return Path(model_path).with_suffix(".json")


def write_sidecar(model_path: str | Path, meta: SegmenterMeta) -> Path:
    """Write the sidecar of ``model_path`` (atomically) and return its path."""
    path = sidecar_path(model_path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta.to_json(), indent=1))
    return path


def read_sidecar(model_path: str | Path) -> SegmenterMeta:
    """Read and validate the sidecar of ``model_path``."""
    path = sidecar_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no sidecar {path} beside TorchScript model {model_path}: write one with "
            "semcbir_fast.models.sidecar.write_sidecar (classes, input size, normalisation)"
        )
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt sidecar JSON ({exc})") from None
    return SegmenterMeta.from_json(d, source=str(path))
