"""Helpers several test files (and bench_service) share; the NumPy oracles are in reference.py.

``make_tiny_model``: a tiny TorchScript segmenter, per pixel the argmax of (R, G, B, 0.3) on
a half-resolution output (red, green, blue or dark). Its labels are known by construction,
so tests can check whole pipelines (segment -> encode -> index -> search) on synthetic
colour images without the real models.
"""

from __future__ import annotations

from pathlib import Path

NAME = "tiny-rgb"
CLASS_NAMES = ["red", "green", "blue", "dark"]


def make_tiny_model(path: Path) -> Path:
    """Write the model and its sidecar to ``path`` (folders made as needed); return it."""
    import torch
    from semcbir_fast.models.export import export_torchscript
    from semcbir_fast.models.sidecar import SegmenterMeta
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            with torch.no_grad():
                w = torch.zeros(4, 3, 1, 1)
                w[0, 0] = w[1, 1] = w[2, 2] = 1.0
                self.conv.weight.copy_(w)
                self.conv.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.3]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)[:, :, ::2, ::2]

    meta = SegmenterMeta(name=NAME, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES,
                         mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(export_torchscript(Tiny(), path, meta))


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
