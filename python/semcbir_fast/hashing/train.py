"""Training of paper 002's network (:mod:`semcbir_fast.models.hashnet`), and the trained
model as an encoder of image files.

Two phases, as the paper (section IV-B):

1. **segmentation** (only with the branch on): the PSP branch and its segmentation head
   against the masks, negative log-likelihood of the per-pixel softmax (cross-entropy;
   void pixels ignored), the scores upsampled (bilinear) to ``seg_size`` x ``seg_size``;
   batch 32;
2. **hash learning**: the two fully connected layers, the sigmoid hash layer and the class
   softmax against the image classes (cross-entropy), the PSP branch frozen (or trained on
   with them: ``tune_psp``); batch 96.

Both: SGD with momentum 0.9, learning rate 1e-3 dropped to 1e-4 after two thirds of the
epochs (the paper: after 20 of 30), centre crop to 224 x 224.

CPU feasibility: the backbone is frozen by default (``finetune=0``) and runs once per image
(:func:`~.data.backbone_maps`, cached on disk); the phases train on those maps, so an epoch
costs only the branch and the head. ``finetune=1`` / ``2`` also trains the backbone's last
stage(s) and head convolution, fed from the cached stage-5 map.

Reproducibility: every epoch draws its batch order and dropout masks from a generator
seeded by ``(seed, phase, epoch)``, so a run resumed from any checkpoint ends with the same
weights as an uninterrupted one (on the same device and thread count). Checkpoints are
written atomically after every epoch (:func:`torch.save` to a temporary file renamed over
the target) and hold the weights, the optimiser state, the phase and epoch, the loss
history, the configurations and the class tables; :func:`load_hash_model` reads them with
``torch.load(weights_only=True)`` (no code is run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .codes import code_stride, pack_bits, threshold_bits
from .data import IGNORE, SegClasses, backbone_maps, prepare_masks

__all__ = ["CHECKPOINT_FORMAT", "HashModel", "TrainConfig", "TrainResult", "load_hash_model",
           "train_hashnet"]

CHECKPOINT_FORMAT = "semcbir-hashnet-checkpoint"
CHECKPOINT_VERSION = 1
_PHASES = ("seg", "hash", "done")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (paper defaults; see the module docstring).

    Attributes
    ----------
    seg_epochs, hash_epochs : int
        Epochs of each phase (paper 30, 30).
    seg_batch, hash_batch : int
        Batch sizes (paper 32, 96).
    lr : float
        Initial learning rate (paper 1e-3).
    lr_drop : float
        Factor applied after ``drop_at`` of a phase's epochs (paper 0.1 after 20 of 30).
    drop_at : float
        Fraction of the epochs after which the rate drops.
    momentum : float
        SGD momentum (paper 0.9).
    weight_decay : float
        L2 penalty (the paper gives none: 0).
    seg_size : int
        Side of the masks the segmentation loss compares with (the paper: the image size;
        56 keeps the CPU cost low, 224 is the paper's).
    tune_psp : bool
        Train the PSP branch during hash learning too, or (default) freeze it after phase
        1: the branch keeps what it learned from the masks, its pooled class maps are
        computed once, and hash learning costs what the baseline's does.
    seed : int
        Seeds the initial weights, the batch orders and the dropout.
    """

    seg_epochs: int = 30
    hash_epochs: int = 30
    seg_batch: int = 32
    hash_batch: int = 96
    lr: float = 1e-3
    lr_drop: float = 0.1
    drop_at: float = 2.0 / 3.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    seg_size: int = 56
    tune_psp: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("seg_epochs", "hash_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("seg_batch", "hash_batch", "seg_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < float(self.lr_drop) <= 1:
            raise ValueError(f"lr_drop must be in (0, 1], got {self.lr_drop!r}")
        if not 0 <= float(self.drop_at) <= 1:
            raise ValueError(f"drop_at must be in [0, 1], got {self.drop_at!r}")
        if not 0 <= float(self.momentum) < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    def lr_at(self, epoch: int, epochs: int) -> float:
        """Learning rate of ``epoch`` (0-based) in a phase of ``epochs``."""
        drop = round(self.drop_at * epochs)
        return float(self.lr) * (float(self.lr_drop) if epoch >= drop else 1.0)


@dataclass
class TrainResult:
    """What :func:`train_hashnet` returns: the trained model, the loss per epoch
    (``{"phase", "epoch", "loss", "lr", "seconds", "images_per_s"}``) and the checkpoint
    written (None without one)."""

    model: HashModel
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_from: tuple[str, int] | None = None


def _digest(paths: Sequence[str], labels: np.ndarray, targets: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(os.path.abspath(p).encode() + b"\0")
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    if targets is not None:
        h.update(np.ascontiguousarray(targets).tobytes())
    return h.hexdigest()


def _epoch_seed(seed: int, phase: str, epoch: int) -> int:
    return (int(seed) * 1_000_003 + _PHASES.index(phase) * 10_007 + int(epoch)) % (2**63)


def _check_labels(labels: Any, n: int) -> tuple[np.ndarray, list[int]]:
    if labels is None:
        raise ValueError("hash learning needs a class label per image (labels=None); use "
                         "ITQ or PCA-sign (semcbir_fast.hashing) for unlabelled images")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"labels must be 1-D with one class per image: {n} images, labels of "
                         f"shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers (class ids), got dtype {y.dtype}")
    classes = sorted(int(c) for c in np.unique(y))
    if len(classes) < 2:
        raise ValueError(f"hash learning needs images of at least 2 classes, got only class "
                         f"{classes}")
    return y.astype(np.int64), classes


def _save(path: Path, state: dict[str, Any]) -> None:
    import torch

    from .._atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, str(tmp))


def _read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such hash model checkpoint: {p}")
    try:
        ck = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle / zip errors of a bad file
        raise ValueError(f"{p} is not a hash model checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p} is not a hash model checkpoint (semcbir train-hash writes them)")
    if ck.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{p}: checkpoint version {ck.get('version')!r}, this library reads "
                         f"{CHECKPOINT_VERSION}")
    return ck


def train_hashnet(
    paths: Sequence[str | os.PathLike[str]],
    labels: Any,
    masks: Sequence[np.ndarray] | None = None,
    *,
    use_segmentation: bool = True,
    bits: int = 48,
    fc: tuple[int, int] = (4096, 4096),
    train: TrainConfig | None = None,
    seg_classes: str = "compact",
    num_mask_values: int | None = None,
    mask_ignore_index: int | None = None,
    mask_class_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: Any = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    use_cache: bool | None = None,
    stop_after: tuple[str, int] | None = None,
    **net_options: Any,
) -> TrainResult:
    """Train paper 002's network (``use_segmentation=True``) or its no-segmentation
    baseline on labelled images.

    Parameters
    ----------
    paths : sequence of path
        Training images.
    labels : array-like of int
        Class of each image (at least two classes).
    masks : sequence of 2-D integer arrays, optional
        Segmentation mask of each image (ground truth, or a segmenter's label maps as
        pseudo-masks); required with the segmentation branch, ignored without it.
    bits, fc, **net_options
        :class:`~semcbir_fast.models.hashnet.HashNetConfig` fields (``psp_input``,
        ``bins``, ``seg_channels``, ``seg_grid``, ``dropout``, ``finetune``, ...).
    train : TrainConfig
        Epochs, batches, learning rate, seed (default: the paper's).
    seg_classes : {"compact", "keep"}
        Mask classes: those present in the training masks (renumbered) or all
        ``num_mask_values`` of them.
    num_mask_values, mask_ignore_index, mask_class_names
        The masks' label space: values ``>= num_mask_values`` and ``mask_ignore_index`` are
        void; names for the checkpoint.
    class_names : sequence of str, optional
        Name of each class id (for the checkpoint).
    checkpoint : path, optional
        Written atomically after every epoch and at the end.
    resume : bool
        Continue from ``checkpoint`` when it exists (its settings and data must match).
    device : None, "cpu", "cuda", ...
        Training device (None: CUDA when available).
    progress : bool
        tqdm bars (backbone pass, each epoch).
    log : callable, optional
        One-line status messages.
    use_cache : bool, optional
        Disk cache of the backbone maps (default: for 32 images or more).
    stop_after : (phase, epoch), optional
        Stop once that epoch (0-based) of that phase is done (tests of resumption).

    Raises
    ------
    ValueError
        No or one-class labels, masks missing or not matching the images, bad settings, a
        checkpoint of other settings or data.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from ..models.hashnet import HashNet, HashNetConfig, make_tail
    from ..segment.device import _resolve_device

    files = [os.path.abspath(os.fspath(p)) for p in paths]
    if not files:
        raise ValueError("no training images given")
    y, classes = _check_labels(labels, len(files))
    tc = train or TrainConfig()
    if use_segmentation and masks is None:
        raise ValueError("the segmentation branch needs a mask per image (masks=None); pass "
                         "ground-truth or segmenter label maps, or use_segmentation=False for "
                         "the baseline")
    if use_segmentation and len(masks) != len(files):  # type: ignore[arg-type]
        raise ValueError(f"masks must have one map per image: {len(files)} images, "
                         f"{len(masks)} masks")  # type: ignore[arg-type]
    seg: SegClasses | None = None
    if use_segmentation:
        seg = SegClasses.from_masks(masks, mode=seg_classes,  # type: ignore[arg-type]
                                    num_values=num_mask_values,
                                    ignore_index=mask_ignore_index, names=mask_class_names)
    # the image classes become 0..C-1 in sorted order
    cls_index = {c: i for i, c in enumerate(classes)}
    y_t = np.array([cls_index[int(c)] for c in y], dtype=np.int64)
    cfg = HashNetConfig(num_classes=len(classes),
                        num_seg_classes=seg.num_classes if seg else 0, bits=bits, fc=tuple(fc),
                        use_segmentation=use_segmentation, **net_options)
    dev = _resolve_device(device)
    say = log or (lambda _m: None)

    say(f"backbone maps of {len(files)} images ({cfg.backbone}, {cfg.image_size} px) ...")
    maps = backbone_maps(files, backbone=cfg.backbone, image_size=cfg.image_size,
                         device=dev, progress=progress, use_cache=use_cache)
    targets = None
    if seg is not None:
        targets = prepare_masks(masks, maps["hw"], seg, tc.seg_size)  # type: ignore[arg-type]
        if not (targets != IGNORE).any():
            raise ValueError("every mask pixel is void: nothing to learn the segmentation from")
    digest = _digest(files, y_t, targets)

    torch.manual_seed(tc.seed)
    net = HashNet(cfg).to(dev)
    tail = make_tail(cfg.backbone).to(dev) if cfg.finetune else None
    if tail is not None:  # stage 6 stays frozen with finetune=1
        for p in tail.parameters():
            p.requires_grad_(False)
        trainable = [tail.head] + ([tail.stages[1]] if cfg.finetune >= 1 else []) + \
            ([tail.stages[0]] if cfg.finetune >= 2 else [])
        for m in trainable:
            for p in m.parameters():
                p.requires_grad_(True)

    s3 = torch.from_numpy(maps["stage3"])
    s5 = torch.from_numpy(maps["stage5"])
    glob = torch.from_numpy(maps["glob"].astype(np.float32))
    yt = torch.from_numpy(y_t)
    tt = None if targets is None else torch.from_numpy(targets)
    n = len(files)

    phases: list[tuple[str, int, int]] = []
    if use_segmentation and tc.seg_epochs:
        phases.append(("seg", tc.seg_epochs, tc.seg_batch))
    phases.append(("hash", tc.hash_epochs, tc.hash_batch))

    def params_of(phase: str) -> list[Any]:
        if phase == "seg":
            assert net.psp is not None
            return list(net.psp.parameters())
        ps = list(net.fc.parameters()) + list(net.hash.parameters()) + \
            list(net.classifier.parameters())
        if net.psp is not None and tc.tune_psp:
            ps += list(net.psp.parameters())
        if tail is not None:
            ps += [p for p in tail.parameters() if p.requires_grad]
        return ps

    def new_opt(phase: str) -> Any:
        return torch.optim.SGD(params_of(phase), lr=tc.lr, momentum=tc.momentum,
                               weight_decay=tc.weight_decay)

    history: list[dict[str, Any]] = []
    start_phase, start_epoch = phases[0][0], 0
    opt_state = None
    ck_path = Path(checkpoint) if checkpoint is not None else None
    resumed = None
    meta = {"class_ids": classes, "class_names": [str(class_names[c]) if class_names is not None
                                                  and c < len(class_names) else str(c)
                                                  for c in classes],
            "seg_values": list(seg.values) if seg else [],
            "seg_names": list(seg.names) if seg else []}
    if ck_path is not None and resume and ck_path.is_file():
        ck = _read_checkpoint(ck_path)
        if ck["config"] != cfg.to_dict() or ck["train"] != dataclasses.asdict(tc):
            raise ValueError(f"{ck_path} was written with other settings; pass the same "
                             "options to resume, or another --checkpoint to start afresh")
        if ck["data"] != digest:
            raise ValueError(f"{ck_path} was trained on other images / labels / masks; "
                             "resume with the same data")
        net.load_state_dict(ck["net"])
        if tail is not None:
            tail.load_state_dict(ck["tail"])
        history = list(ck["history"])
        start_phase, start_epoch = ck["phase"], int(ck["epoch"])
        opt_state = ck["optimizer"]
        resumed = (start_phase, start_epoch)
        say(f"resuming {ck_path} at {start_phase} epoch {start_epoch + 1}")

    def state(phase: str, epoch: int, opt: Any) -> dict[str, Any]:
        from .. import __version__

        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": cfg.to_dict(), "train": dataclasses.asdict(tc),
                "net": net.state_dict(),
                "tail": None if tail is None else tail.state_dict(),
                "optimizer": None if opt is None else opt.state_dict(),
                "phase": phase, "epoch": int(epoch), "history": history, "data": digest,
                "images": n, "library_version": __version__, **meta}

    def batch(rows: Any) -> tuple[Any, Any, Any]:
        a, b = s3[rows].to(dev).float(), s5[rows].to(dev).float()
        g = tail(b) if tail is not None else glob[rows].to(dev)
        return a, b, g

    done = start_phase == "done"
    stopped = False
    for pi, (phase, epochs, bs) in enumerate(phases):
        if done or stopped:
            break
        order = [p[0] for p in phases]
        if start_phase in order and order.index(start_phase) > pi:
            continue  # finished before the checkpoint
        first = start_epoch if phase == start_phase else 0
        opt = new_opt(phase)
        if opt_state is not None and phase == start_phase:
            opt.load_state_dict(opt_state)
        pooled_all = None
        if phase == "hash" and net.psp is not None and not tc.tune_psp:
            pooled_all = _frozen_pooled(net, s3, s5, dev)
        for epoch in range(first, epochs):
            lr = tc.lr_at(epoch, epochs)
            for g in opt.param_groups:
                g["lr"] = lr
            es = _epoch_seed(tc.seed, phase, epoch)
            torch.manual_seed(es)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(es))
            net.train()
            if phase == "hash" and not tc.tune_psp and net.psp is not None:
                net.psp.eval()
            if tail is not None:
                tail.eval()  # backbone batch norms keep their ImageNet statistics
            t0 = time.perf_counter()
            tot, cnt = 0.0, 0
            bar = tqdm(total=n, unit="img", desc=f"{phase} {epoch + 1}/{epochs}",
                       disable=not progress, leave=False)
            for s in range(0, n, bs):
                rows = perm[s:s + bs]
                if phase == "seg" and rows.numel() < 2 and n >= 2:
                    rows = perm[max(0, s - 1):s + bs]  # batch norm needs 2 samples
                a, b, g = batch(rows)
                if phase == "seg":
                    out = net.segment(a, b)
                    out = F.interpolate(out, size=(tc.seg_size, tc.seg_size), mode="bilinear",
                                        align_corners=False)
                    tgt = tt[rows].to(dev)  # type: ignore[index]
                    valid = int((tgt != IGNORE).sum())
                    if valid == 0:
                        bar.update(int(rows.numel()))
                        continue
                    loss = F.cross_entropy(out, tgt, ignore_index=IGNORE)
                else:
                    if rows.numel() < 2 and net.psp is not None and tc.tune_psp and n >= 2:
                        rows = perm[max(0, s - 1):s + bs]
                        a, b, g = batch(rows)
                    if pooled_all is not None:
                        _, logits = net.head(g, pooled_all[rows].to(dev))
                    else:
                        _, logits, _ = net(a, b, g)
                    loss = F.cross_entropy(logits, yt[rows].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                k = int(rows.numel())
                tot += float(loss.detach()) * k
                cnt += k
                bar.update(k)
                bar.set_postfix(loss=f"{tot / max(cnt, 1):.4f}")
            bar.close()
            dt = time.perf_counter() - t0
            rec = {"phase": phase, "epoch": epoch, "loss": tot / max(cnt, 1), "lr": lr,
                   "seconds": round(dt, 3), "images_per_s": round(cnt / max(dt, 1e-9), 1)}
            history.append(rec)
            say(f"{phase} epoch {epoch + 1}/{epochs}: loss {rec['loss']:.4f} (lr {lr:g}, "
                f"{rec['images_per_s']:.0f} img/s)")
            nxt_phase, nxt_epoch = phase, epoch + 1
            if nxt_epoch >= epochs:
                nxt_phase = phases[pi + 1][0] if pi + 1 < len(phases) else "done"
                nxt_epoch = 0
            if ck_path is not None:
                _save(ck_path, state(nxt_phase, nxt_epoch,
                                     opt if nxt_phase == phase else None))
            if stop_after is not None and (phase, epoch) == tuple(stop_after):
                stopped = True
                break
    net.eval()
    if tail is not None:
        tail.eval()
    final = state("done" if not stopped else "stopped", 0, None)
    model = HashModel(cfg, net.cpu(), None if tail is None else tail.cpu(), final)
    return TrainResult(model, history, ck_path, resumed)


def _frozen_pooled(net: Any, s3: Any, s5: Any, dev: Any, chunk: int = 128) -> Any:
    """The pooled class maps of every image by the (frozen, eval-mode) branch."""
    import torch

    was = net.psp.training
    net.psp.eval()
    out = []
    with torch.no_grad():
        for s in range(0, s3.shape[0], chunk):
            p, _ = net.pooled_segmentation(s3[s:s + chunk].to(dev).float(),
                                           s5[s:s + chunk].to(dev).float())
            out.append(p)
    net.psp.train(was)
    return torch.cat(out)


class HashModel:
    """A trained network as an encoder: image files -> packed codes.

    Made by :func:`train_hashnet` or :func:`load_hash_model`. ``config`` is its
    :class:`~semcbir_fast.models.hashnet.HashNetConfig`; ``checkpoint`` the state dict it
    came from (class names: ``checkpoint["class_names"]``).
    """

    def __init__(self, config: Any, net: Any, tail: Any, checkpoint: dict[str, Any]) -> None:
        self.config = config
        self.net = net.eval()
        self.tail = None if tail is None else tail.eval()
        self.checkpoint = checkpoint

    @property
    def bits(self) -> int:
        return int(self.config.bits)

    @property
    def stride(self) -> int:
        """Bytes per stored code (``bits / 8`` rounded up to a multiple of 8)."""
        return code_stride(self.bits)

    def __repr__(self) -> str:
        c = self.config
        return (f"HashModel({'PSP + ' if c.use_segmentation else ''}hash head, {c.bits} bits, "
                f"{c.num_classes} classes, {c.backbone})")

    def outputs_from_maps(self, maps: dict[str, np.ndarray], *, batch_size: int = 256
                          ) -> np.ndarray:
        """Sigmoid outputs ``r`` float32 ``(n, bits)`` of backbone maps
        (:func:`~.data.backbone_maps`)."""
        import torch

        n = maps["glob"].shape[0]
        out = []
        with torch.inference_mode():
            for s in range(0, n, batch_size):
                a = torch.from_numpy(maps["stage3"][s:s + batch_size]).float()
                b = torch.from_numpy(maps["stage5"][s:s + batch_size]).float()
                g = (self.tail(b) if self.tail is not None
                     else torch.from_numpy(maps["glob"][s:s + batch_size]).float())
                r, _, _ = self.net(a, b, g)
                out.append(r.numpy())
        return np.concatenate(out) if out else np.zeros((0, self.bits), np.float32)

    def outputs(self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False,
                use_cache: bool | None = None) -> np.ndarray:
        """Sigmoid outputs ``r`` of image files ``(n, bits)``."""
        maps = backbone_maps(paths, backbone=self.config.backbone,
                             image_size=self.config.image_size, progress=progress,
                             use_cache=use_cache, device="cpu")
        return self.outputs_from_maps(maps)

    def encode(self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False,
               use_cache: bool | None = None) -> np.ndarray:
        """Packed codes uint8 ``(n, stride)`` of image files: ``sgn(r - 0.5)`` as bits (1 =
        +1), MSB first, zero padded."""
        return pack_bits(threshold_bits(self.outputs(paths, progress=progress,
                                                     use_cache=use_cache)),
                         stride=self.stride)

    def full_model(self) -> Any:
        """Backbone + network as one module (:class:`~semcbir_fast.models.hashnet.HashNetModel`)."""
        import copy

        from ..models.hashnet import HashNetModel

        return HashNetModel(copy.deepcopy(self.net),
                            None if self.tail is None else copy.deepcopy(self.tail)).eval()

    def export_torchscript(self, path: str | os.PathLike[str]) -> Any:
        """Write the whole network as TorchScript (atomically); returns the ScriptModule.
        Its ``forward`` takes a normalised ``(B, 3, S, S)`` batch (:meth:`preprocess`) and
        returns ``r``; ``codes`` the 0 / 1 bits."""
        from ..models.hashnet import export_torchscript

        return export_torchscript(self.full_model(), path)

    def preprocess(self, paths: Sequence[str | os.PathLike[str]]) -> Any:
        """The normalised input batch of image files (float32 ``(n, 3, S, S)``)."""
        import torch

        from ..imageio import read_image
        from .data import image_preprocess

        pre = image_preprocess(self.config.backbone, self.config.image_size)
        x = np.stack([pre.apply(read_image(os.fspath(p))) for p in paths])
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        std = torch.tensor(pre.std).view(1, 3, 1, 1)
        return (t - mean) / std

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model (a checkpoint with the final weights, atomically)."""
        ck = dict(self.checkpoint)
        ck["net"] = self.net.state_dict()
        ck["tail"] = None if self.tail is None else self.tail.state_dict()
        ck["optimizer"] = None
        ck["phase"], ck["epoch"] = "done", 0
        _save(Path(path), ck)
        return Path(path)


def load_hash_model(path: str | os.PathLike[str]) -> HashModel:
    """A :class:`HashModel` from a checkpoint of :func:`train_hashnet` / ``semcbir
    train-hash`` (read with ``weights_only=True``: loading runs no code).

    Raises ``FileNotFoundError`` or ``ValueError`` (not a checkpoint, other version)."""
    from ..models.hashnet import HashNet, HashNetConfig, make_tail

    ck = _read_checkpoint(path)
    try:
        cfg = HashNetConfig.from_dict(ck["config"])
        net = HashNet(cfg)
        net.load_state_dict(ck["net"])
        tail = None
        if cfg.finetune:
            tail = make_tail(cfg.backbone)
            tail.load_state_dict(ck["tail"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: corrupted hash model checkpoint ({exc})") from None
    if ck.get("phase") not in ("done", "stopped", "seg", "hash"):
        raise ValueError(f"{path}: corrupted hash model checkpoint (phase {ck.get('phase')!r})")
    return HashModel(cfg, net, tail, ck)
