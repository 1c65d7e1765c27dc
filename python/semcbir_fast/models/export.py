"""Export a segmentation model as TorchScript together with its JSON sidecar.

This module is the one place that does "script + save + sidecar": every model the
library ships (HRNet, ...) goes through :func:`export_torchscript`, so that the file
contract of :mod:`semcbir_fast.models.sidecar` is produced in exactly one way.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from semcbir_fast._atomic import atomic_path
from semcbir_fast.models.sidecar import SegmenterMeta, write_sidecar

__all__ = ["export_torchscript"]

#: Probe size used by the output check when the sidecar fixes no input size.
_PROBE_SIZE = 64


def _probe_size(meta: SegmenterMeta) -> tuple[int, int]:
    if meta.input_size is not None:
        return meta.input_size
    d = int(meta.size_divisor)
    side = max(d, ((_PROBE_SIZE + d - 1) // d) * d)
    return side, side


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    meta: SegmenterMeta,
    *,
    check: bool = True,
) -> Path:
    """Script ``model`` with :func:`torch.jit.script`, save it and write its sidecar.

    Parameters
    ----------
    model : torch.nn.Module
        A segmentation model following the contract of
        :mod:`semcbir_fast.models.sidecar`: ``forward(x)`` takes float32 ``(N, 3, H, W)``
        normalised RGB and returns logits ``(N, num_classes, h, w)``. It is scripted in
        eval mode (batch-norm statistics frozen); its own train/eval mode is restored
        afterwards.
    path : str or os.PathLike
        Destination of the TorchScript file, conventionally ``name.pt``; the sidecar
        goes beside it as ``name.json``. Parent folders are created.
    meta : SegmenterMeta
        Class names, normalisation and input size written to the sidecar.
    check : bool, default True
        Run the scripted model once on a small zero input (``meta.input_size``, or
        64x64 rounded up to ``meta.size_divisor``) and check that it returns a 4-D
        tensor with ``meta.num_classes`` channels, so that a wrong sidecar never
        reaches disk.

    Returns
    -------
    pathlib.Path
        The path of the saved TorchScript file.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` or ``meta`` not a ``SegmenterMeta``.
    ValueError
        If ``check`` finds an output that does not match ``meta``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(meta, SegmenterMeta):
        raise TypeError(f"meta must be a SegmenterMeta, got {type(meta).__name__}")
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # TorchScript is this library's interchange format (see sidecar.py); newer
            # torch releases flag torch.jit.script as deprecated on every submodule.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated",
                                    category=DeprecationWarning)
            scripted = torch.jit.script(model)
    finally:
        model.train(was_training)
    scripted.eval()

    if check:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        h, w = _probe_size(meta)
        with torch.inference_mode():
            out = scripted(torch.zeros(1, 3, h, w, device=device))
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[1] != meta.num_classes:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"model output for a (1, 3, {h}, {w}) input must be logits "
                f"(1, num_classes={meta.num_classes}, h, w), got {got}: fix meta.num_classes "
                "or the model's head"
            )

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    write_sidecar(path, meta)
    return path
