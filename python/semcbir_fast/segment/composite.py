"""Composite segmenters: several models on one decoded batch, one merged label map.

``load_segmenter("ade20k+voc")``, ``load_segmenter("ade20k-mnv2+my.pt")``,
``load_segmenter(["ade20k-mnv2", CompositeMember("my.pt", mapping="my.classmap.tsv")])``
or ``load_segmenter("mine.composite")`` return a :class:`CompositeSegmenter`: a
:class:`~semcbir_fast.segment.Segmenter` (everything that takes a segmenter takes it) whose
model call runs every member model on the same decoded, resized batch and whose label maps
are merged into one label space. ``docs/composite.md`` has the measurements.

Merge rule
----------
Members are ordered: the first is the *base* (a "stuff and things" model such as ADE20K),
the others are *overlays* (object models such as Pascal VOC).

1. Label space. It starts as the base's classes, in the base's order (so that a base label
   keeps its value). Each overlay class is mapped by its class mapping to a class *name*:
   a name already in the label space merges with it ("person" of VOC is ADE20K's
   "person"), a new name is appended (VOC "cow" after ADE20K's 150 classes), and ``None``
   (``-`` in a mapping file) marks a class that never paints (VOC "background").
2. Pixels. Every member's logits are resized to the image and arg-maxed as a single model's
   would be (:mod:`.geometry`); overlay ``m``'s label is taken with ``margin_m`` added to
   its non-painting classes' logits. The merged label is the base's, then, for each
   overlay in order, the overlay's wherever its label paints: later members win. With
   ``margin = 0`` (the default) an overlay paints exactly where its own argmax is one of
   its painting classes; a positive margin asks for that many more logits of confidence.

The merged class count ``M`` fixes the SBS layout (``5 * M * 4**levels`` bits); the
merged names are the segmenter's ``class_names`` and travel in the index header.

Class-mapping files
-------------------
UTF-8 text, one class per line, ``#`` starts a comment::

    # <member class><TAB><merged class>      (the model's classes by name, or #<index>)
    background	-
    aeroplane	airplane
    cow	cow

The left side names a class of the member (its sidecar's ``class_names``), or ``#<i>`` for
class ``i`` (needed when a name occurs twice); every class must be listed exactly once.
The right side is a class name (merged by name with the label space built so far, else
appended), ``#<j>`` for class ``j`` of the label space so far, or ``-`` (never paints).
A member without an explicit mapping uses, in this order: the mapping registered with its
name (``"voc-mnv2"`` has one onto ADE20K's names), a file ``<model>.classmap.tsv`` beside
its model file, else its own class names with a class called "background" not painting.

Composite files
---------------
A ``.composite`` file (JSON) names its members; paths are relative to the file::

    {"format": "semcbir-composite", "version": 1, "name": "mine",
     "members": [{"model": "ade20k-mnv2"},
                 {"model": "my.pt", "mapping": "my.classmap.tsv", "margin": 0.0}]}

``load_segmenter`` resolves it (each member by its runtime, as for a single model) into a
resolved file in the cache folder (``<cache>/composite/``) with a sidecar of the merged
label space; label-map caches key on that file and on every member's model file
(:func:`semcbir_fast.eval.cache.model_key`).

Constraints: members must take the same input size (``input_size``, or the same
``size_divisor`` when free); their normalisations may differ: the shared batch is the
resized RGB (the composite's sidecar says mean 0, std 1) and each member normalises it as
it would alone. Logit grids may differ (VOC's 33x33, ADE20K's 129x129): each member's labels
are computed on its own grid with its own geometry, so a member's labels inside the
composite are exactly its labels alone (``tests/test_composite.py`` checks this).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .segmenter import Segmenter

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from semcbir_fast.models.sidecar import SegmenterMeta

__all__ = [
    "COMPOSITE_SUFFIX",
    "CompositeMember",
    "CompositeSegmenter",
    "merge_label_space",
    "read_class_mapping",
]

FORMAT = "semcbir-composite"
VERSION = 1
COMPOSITE_SUFFIX = ".composite"
#: version of the merge computation, written into resolved files (so label caches key on it)
MERGE_RULE = 2
MAPPING_SUFFIX = ".classmap.tsv"

MappingLike = Mapping[str, "str | None"] | str | os.PathLike[str] | None


@dataclass(frozen=True)
class CompositeMember:
    """One model of a composite.

    Attributes
    ----------
    model : str or os.PathLike
        A registered (single-model) name or a model file with its sidecar.
    mapping : mapping, path or None
        Its class mapping: a dict ``{member class: merged class or None}`` (keys by name or
        ``"#i"``), or the path of a class-mapping file; None: the default (module docstring).
    margin : float
        Logits added to this member's non-painting classes before its argmax (overlays
        only; 0 = its own argmax decides).
    runtime : str, optional
        Runtime of this member (default: the composite's ``runtime`` argument).
    """

    model: str | os.PathLike[str]
    mapping: MappingLike = None
    margin: float = 0.0
    runtime: str | None = None


# --------------------------------------------------------------------------------------
# Class mappings and the merged label space
# --------------------------------------------------------------------------------------


def read_class_mapping(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """Read a class-mapping file (format in the module docstring).

    Returns ``{member class: merged class or None}``. Raises ``FileNotFoundError`` or
    ``ValueError`` (a malformed line, a class listed twice), naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no class-mapping file {path}")
    out: dict[str, str | None] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or (line.startswith("#") and not re.match(r"#\d+\t", line)):
            continue  # blank, or a comment (a line "#<index><TAB>..." maps class <index>)
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{path}:{lineno}: expected '<member class><TAB><merged class "
                             f"or ->', got {raw!r}")
        if parts[0] in out:
            raise ValueError(f"{path}:{lineno}: class {parts[0]!r} is listed twice")
        out[parts[0]] = None if parts[1] == "-" else parts[1]
    if not out:
        raise ValueError(f"{path}: no class mappings found")
    return out


def _index_ref(s: str) -> int | None:
    return int(s[1:]) if len(s) > 1 and s[0] == "#" and s[1:].isdigit() else None


def _member_targets(names: Sequence[str], mapping: Mapping[str, str | None],
                    who: str) -> list[str | None]:
    """The mapping's target of each of the member's classes (checked: every class once)."""
    targets: list[Any] = [...] * len(names)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    unknown = []
    for key, target in mapping.items():
        i = _index_ref(str(key))
        if i is None:
            if key not in counts:
                unknown.append(key)
                continue
            if counts[key] > 1:
                first = [j for j, n in enumerate(names) if n == key]
                raise ValueError(f"{who}: class name {key!r} occurs {counts[key]} times in "
                                 f"the model (classes {first}); map them as '#<index>'")
            i = list(names).index(key)
        elif i >= len(names):
            raise ValueError(f"{who}: class #{i} does not exist (the model has "
                             f"{len(names)} classes, #0..#{len(names) - 1})")
        if targets[i] is not ...:
            raise ValueError(f"{who}: class {names[i]!r} (#{i}) is mapped twice")
        if target is not None and (not isinstance(target, str) or not target.strip()):
            raise ValueError(f"{who}: the target of {key!r} must be a class name, '#<index>' "
                             f"or None / '-', got {target!r}")
        targets[i] = None if target in (None, "-") else str(target).strip()
    if unknown:
        raise ValueError(f"{who}: unknown classes {unknown[:8]} (the model's classes are "
                         f"{list(names)[:30]}{' ...' if len(names) > 30 else ''}); is this "
                         "the mapping file of another model?")
    missing = [f"{names[i]!r} (#{i})" for i, t in enumerate(targets) if t is ...]
    if missing:
        raise ValueError(f"{who}: {len(missing)} of the model's {len(names)} classes are not "
                         f"mapped: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
                         "; list every class (use '-' for those that never paint)")
    return targets


def merge_label_space(class_names: Sequence[Sequence[str]],
                      mappings: Sequence[Mapping[str, str | None] | None]
                      ) -> tuple[list[str], list[np.ndarray]]:
    """The merged label space of a composite and each member's lookup table into it.

    Parameters
    ----------
    class_names : sequence of sequences of str
        Each member's class names, the base first.
    mappings : sequence of (mapping or None)
        Each member's class mapping (already read; see :func:`read_class_mapping`); None
        for the base means identity. Overlays need one (defaults are applied by the caller).

    Returns
    -------
    names, luts
        The merged class names and, per member, an int64 array of its class count: the
        merged class of each member class, ``-1`` for a class that never paints.

    Raises
    ------
    ValueError
        A mapping that does not fit its model (unknown, missing or duplicated classes), a
        base class mapped to nothing, an ambiguous or out-of-range target.
    """
    if len(class_names) < 2 or len(class_names) != len(mappings):
        raise ValueError(f"a composite needs at least two members with one mapping each, got "
                         f"{len(class_names)} models and {len(mappings)} mappings")
    names: list[str] = []
    luts: list[np.ndarray] = []
    for m, (cn, mapping) in enumerate(zip(class_names, mappings)):
        who = f"member {m} ({len(cn)} classes)"
        if m == 0 and mapping is None:
            names = list(cn)
            luts.append(np.arange(len(cn), dtype=np.int64))
            continue
        if mapping is None:
            raise ValueError(f"{who}: an overlay needs a class mapping")
        targets = _member_targets(cn, mapping, who)
        lut = np.full(len(cn), -1, dtype=np.int64)
        for i, t in enumerate(targets):
            if t is None:
                if m == 0:
                    raise ValueError(f"{who}: class {cn[i]!r} of the base model is mapped to "
                                     "nothing; every base class needs a merged class")
                continue
            j = _index_ref(t)
            if j is not None:
                if j >= len(names):
                    raise ValueError(f"{who}: target #{j} of {cn[i]!r} is out of range (the "
                                     f"label space has {len(names)} classes so far)")
                lut[i] = j
                continue
            hits = [k for k, n in enumerate(names) if n == t]
            if len(hits) > 1:
                raise ValueError(f"{who}: target {t!r} of {cn[i]!r} is ambiguous (classes "
                                 f"{hits} of the label space); write '#<index>'")
            if not hits:
                names.append(t)
                hits = [len(names) - 1]
            lut[i] = hits[0]
        luts.append(lut)
    return names, luts


def _default_mapping(names: Sequence[str], who: str) -> dict[str, str | None]:
    """Own names, with a class called "background" (any case) not painting."""
    bg = [i for i, n in enumerate(names) if n.strip().lower() == "background"]
    if not bg:
        raise ValueError(f"{who} has no class mapping and no class called 'background': give "
                         f"it one (a '{MAPPING_SUFFIX}' file beside the model, or "
                         "CompositeMember(mapping=...)) that marks its non-painting classes "
                         "with '-'")
    return {f"#{i}": (None if i in bg else n) for i, n in enumerate(names)}


# --------------------------------------------------------------------------------------
# Recognising and resolving composites
# --------------------------------------------------------------------------------------


def is_composite(model: Any) -> bool:
    """Whether ``model`` names a composite: a list of models, a registered composite name,
    a ``.composite`` file, or ``"a+b"`` of registered names / existing files."""
    from .registry import _COMPOSITES, _REGISTRY

    if isinstance(model, (list, tuple)):
        return True
    if not isinstance(model, (str, os.PathLike)):
        return False
    s = os.fspath(model)
    if s in _COMPOSITES:
        return True
    if s in _REGISTRY:
        return False
    p = Path(s).expanduser()
    if p.is_file():
        return p.suffix == COMPOSITE_SUFFIX
    parts = s.split("+")
    return len(parts) > 1 and all(
        q in _REGISTRY or Path(q).expanduser().is_file() for q in parts)


def _as_member(m: Any) -> CompositeMember:
    if isinstance(m, CompositeMember):
        return m
    if isinstance(m, (str, os.PathLike)):
        return CompositeMember(m)
    if isinstance(m, Mapping):
        unknown = set(m) - {"model", "mapping", "margin", "runtime", "name"}
        if "model" not in m or unknown:
            raise ValueError(f"a composite member must have 'model' (and optionally "
                             f"'mapping', 'margin', 'runtime'), got keys {sorted(m)}")
        return CompositeMember(m["model"], m.get("mapping"), float(m.get("margin", 0.0)),
                               m.get("runtime"))
    raise TypeError(f"a composite member must be a model name, a path, a dict or a "
                    f"CompositeMember, got {type(m).__name__}")


def _read_spec(path: Path) -> tuple[str, list[CompositeMember]]:
    """Name and members of a ``.composite`` file (paths made absolute)."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable composite file ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={d.get('format') if isinstance(d, dict) else None!r})")
    if d.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported composite version {d.get('version')!r}, this "
                         f"library reads version {VERSION}")
    members = d.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise ValueError(f"{path}: 'members' must list at least two models")
    from .registry import _REGISTRY

    out = []
    for m in members:
        cm = _as_member(m)
        model = os.fspath(cm.model)
        if model not in _REGISTRY and not Path(model).is_absolute():
            model = str((path.parent / model).resolve())
        mapping = cm.mapping
        if isinstance(mapping, (str, os.PathLike)) and not Path(mapping).is_absolute():
            mapping = str((path.parent / mapping).resolve())
        out.append(CompositeMember(model, mapping, cm.margin, cm.runtime))
    return str(d.get("name") or path.stem), out


def _members_of(model: Any) -> tuple[str, list[CompositeMember]]:
    from .registry import _COMPOSITES

    if isinstance(model, (list, tuple)):
        members = [_as_member(m) for m in model]
        name = "+".join(Path(os.fspath(m.model)).stem if Path(os.fspath(m.model)).is_file()
                        else os.fspath(m.model) for m in members)
        return name, members
    s = os.fspath(model)
    if s in _COMPOSITES:
        return s, [_as_member(m) for m in _COMPOSITES[s]]
    p = Path(s).expanduser()
    if p.is_file():
        return _read_spec(p)
    return s, [CompositeMember(q) for q in s.split("+")]


def _mapping_for(member: CompositeMember, path: Path, names: Sequence[str], m: int,
                 ) -> dict[str, str | None] | None:
    """The class mapping of member ``m`` (None for a base without one)."""
    from .registry import _CLASS_MAPPINGS

    mp = member.mapping
    if isinstance(mp, (str, os.PathLike)):
        return read_class_mapping(mp)
    if isinstance(mp, Mapping):
        return {str(k): v for k, v in mp.items()}
    if mp is not None:
        raise TypeError(f"mapping must be a dict, a path or None, got {type(mp).__name__}")
    if m == 0:
        return None
    key = os.fspath(member.model)
    if key in _CLASS_MAPPINGS:
        return dict(_CLASS_MAPPINGS[key]())
    beside = path.with_suffix(MAPPING_SUFFIX)
    if beside.is_file():
        return read_class_mapping(beside)
    return _default_mapping(names, f"composite member {key!r}")


def _resolve_composite(model: Any, *, runtime: str | None = None, device: Any = None,
                       dtype: Any = None, optimize: bool = False) -> tuple[Path, str]:
    """``(resolved composite file, runtime)``: each member resolved like a single model, the
    result written (if changed) to ``<cache>/composite/`` with the merged sidecar."""
    from semcbir_fast._atomic import atomic_path
    from semcbir_fast._paths import cache_dir
    from semcbir_fast.models.sidecar import SegmenterMeta, read_sidecar, write_sidecar

    from .registry import _resolve

    name, members = _members_of(model)
    if len(members) < 2:
        raise ValueError(f"composite {name!r} needs at least two models, got {len(members)}")
    rows, metas, mappings = [], [], []
    for m, cm in enumerate(members):
        if is_composite(cm.model):
            raise ValueError(f"composite {name!r}: member {os.fspath(cm.model)!r} is itself a "
                             "composite; list its models instead")
        try:
            path, rt = _resolve(cm.model, runtime=cm.runtime or runtime, device=device,
                                dtype=dtype, optimize=optimize)
        except FileNotFoundError as exc:
            if m == 0:
                raise
            base = os.fspath(members[0].model)
            raise FileNotFoundError(
                f"composite {name!r} cannot load its member {os.fspath(cm.model)!r}: {exc} "
                f"Without that model, pass model={base!r} to segment with the base model "
                "alone (fewer classes: an index built with one model is searched with that model)"
            ) from None
        meta = read_sidecar(path)
        mapping = _mapping_for(cm, path, meta.class_names, m)
        if m > 0 and (not isinstance(cm.margin, (int, float)) or not np.isfinite(cm.margin)):
            raise ValueError(f"composite {name!r}: margin of member {m} must be a finite "
                             f"number, got {cm.margin!r}")
        rows.append({"name": os.fspath(cm.model), "model": str(path.resolve()),
                     "runtime": rt, "mapping": mapping, "margin": float(cm.margin)})
        metas.append(meta)
        mappings.append(mapping)
    _check_compatible(name, [r["name"] for r in rows], metas)
    names, _ = merge_label_space([mt.class_names for mt in metas], mappings)
    spec = {"format": FORMAT, "version": VERSION, "name": name, "members": rows,
            "rule": MERGE_RULE}
    text = json.dumps(spec, indent=1, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60]
    folder = cache_dir() / "composite"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{safe}-{digest}{COMPOSITE_SUFFIX}"
    base = metas[0]
    meta = SegmenterMeta(name=name, num_classes=len(names), class_names=names,
                         mean=[0.0] * 3, std=[1.0] * 3, input_size=base.input_size,
                         size_divisor=base.size_divisor)
    if not (out.is_file() and out.read_text(encoding="utf-8") == text):
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    try:
        stale = read_sidecar(out) != meta
    except (OSError, ValueError, TypeError):
        stale = True
    if stale:
        write_sidecar(out, meta)
    rts = [r["runtime"] for r in rows]
    return out, rts[0] if len(set(rts)) == 1 else "+".join(rts)


def _check_compatible(name: str, labels: Sequence[str], metas: Sequence[SegmenterMeta]) -> None:
    base = metas[0]
    for lab, mt in zip(labels[1:], metas[1:]):
        if mt.input_size != base.input_size or (
                mt.input_size is None and mt.size_divisor != base.size_divisor):
            def size(x: SegmenterMeta) -> str:
                return (f"{x.input_size[0]}x{x.input_size[1]}" if x.input_size
                        else f"any size padded to a multiple of {x.size_divisor}")
            raise ValueError(
                f"composite {name!r}: the models take different input sizes ({labels[0]}: "
                f"{size(base)}, {lab}: {size(mt)}); members of a composite share one "
                "resized batch, so their sidecars' input_size must agree")


# --------------------------------------------------------------------------------------
# The segmenter
# --------------------------------------------------------------------------------------


class _CompositeModule:
    """Runs every member on one batch (each normalising it as it would alone); returns
    their logits concatenated along the channels on a canvas of the largest grid (a smaller
    grid in its top-left corner, see ``grid_sizes``)."""

    def __init__(self, modules: list[Any], affines: list[Any], model_in: tuple[int, int] | None
                 ) -> None:
        self.modules = modules
        self.affines = affines  # (mean, 1 / std) per member, (1, 3, 1, 1) on the device
        self.model_in = model_in
        #: (h, w) of each member's logits in the last call (all calls of a batch share it)
        self.grid_sizes: list[tuple[int, int]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        outs = []
        for mod, aff in zip(self.modules, self.affines):
            outs.append(mod((x - aff[0]) * aff[1]))  # keeps x's memory format
        for o in outs:
            if not isinstance(o, torch.Tensor) or o.dim() != 4:
                raise ValueError("a composite member returned "
                                 f"{type(o).__name__ if not isinstance(o, torch.Tensor) else list(o.shape)}"
                                 ", expected logits (N, C, h, w)")
        h = max(int(o.shape[2]) for o in outs)
        w = max(int(o.shape[3]) for o in outs)
        # A coarser grid goes into the top-left corner of a (h, w) canvas, unresampled:
        # each member's labels are then computed on its own grid, exactly as alone.
        self.grid_sizes = [(int(o.shape[2]), int(o.shape[3])) for o in outs]
        res = []
        for o in outs:
            o = o.float()
            if (int(o.shape[2]), int(o.shape[3])) != (h, w):
                canvas = o.new_zeros((int(o.shape[0]), int(o.shape[1]), h, w))
                canvas[:, :, : o.shape[2], : o.shape[3]] = o
                o = canvas
            res.append(o)
        return torch.cat(res, dim=1)


class CompositeSegmenter(Segmenter):
    """A :class:`~semcbir_fast.segment.Segmenter` over several models (module docstring).

    Extra attributes: ``members`` (the member segmenters, base first: their ``meta``,
    ``path``, ``runtime``), ``luts`` (per member, the merged class of each of its classes,
    -1 = never paints) and ``margins``. ``meta`` is the merged label space; ``path`` the
    resolved ``.composite`` file; ``runtime`` the members' runtime (``"a+b"`` if they differ).
    """

    def __init__(self, members: list[Segmenter], meta: SegmenterMeta, luts: list[np.ndarray],
                 margins: list[float], *, path: Path | None = None) -> None:
        import torch

        base = members[0]
        # The shared batch is resized RGB in [0, 255] (the composite's meta has mean 0, std
        # 1); each member normalises it with the very operations its own Segmenter uses, so
        # that a member's labels inside the composite equal its labels alone, bit for bit.
        affines = [(s._mean, s._inv_std) for s in members]
        module = _CompositeModule([s.module for s in members], affines, meta.input_size)
        rts = [s.runtime for s in members]
        super().__init__(module, meta, device=base.device, dtype=base.dtype, path=path,
                         runtime=rts[0] if len(set(rts)) == 1 else "+".join(rts))
        self.members = members
        self.luts = luts
        self.margins = [0.0] + [float(v) for v in margins[1:]]
        self.pad_batches = base.pad_batches
        if any(s.runtime != "torch" for s in members):
            self._input_format = torch.channels_last
        self._slices: list[tuple[int, int]] = []
        off = 0
        for s in members:
            self._slices.append((off, s.num_classes))
            off += s.num_classes
        self._channels = off
        self._dev_luts = [torch.from_numpy(lut).to(base.device) for lut in luts]
        self._nonpaint = [torch.from_numpy(np.flatnonzero(lut < 0)).to(base.device)
                          for lut in luts]

    def __repr__(self) -> str:
        names = ", ".join(f"{s.meta.name} ({s.runtime})" for s in self.members)
        return (f"CompositeSegmenter(name={self.meta.name!r}, members=[{names}], "
                f"num_classes={self.num_classes}, device={self.device})")

    def _call_model(self, x: Any) -> Any:
        with self._autocast():
            out = self.module(x)
        if out.shape[0] != x.shape[0] or out.shape[1] != self._channels:
            raise ValueError(f"composite {self.meta.name}: members returned {tuple(out.shape)} "
                             f"for {tuple(x.shape)}, expected ({x.shape[0]}, {self._channels}, "
                             "h, w); check the members' sidecars' num_classes")
        return out

    def _member_labels(self, logits: Any, size: tuple[int, int], model_in: tuple[int, int],
                       resized: bool, mode: str) -> Any:
        """One member's labels (int64), computed as a single model's would be."""
        import torch

        from .geometry import _argmax_bilinear_dense, _argmax_bilinear_sparse

        geo = self._geometry(size, model_in, (int(logits.shape[2]), int(logits.shape[3])),
                             resized, mode)
        if mode == "labels":
            iy, ix = geo
            return logits.max(dim=1).indices.index_select(1, iy).index_select(2, ix)
        impl = self.logits_impl
        if impl == "auto":
            impl = "dense" if logits.device.type == "cuda" else "sparse"
        fn = _argmax_bilinear_dense if impl == "dense" else _argmax_bilinear_sparse
        return fn(logits, geo, torch.int64)

    def _labels_for_size(self, logits: Any, size: tuple[int, int], model_in: tuple[int, int],
                         resized: bool, mode: str) -> Any:
        import torch

        out = None
        for m, (off, c) in enumerate(self._slices):
            gh, gw = self.module.grid_sizes[m]
            lg = logits[:, off: off + c, :gh, :gw]
            if m > 0 and self.margins[m] != 0.0 and self._nonpaint[m].numel():
                lg = lg.clone()
                lg[:, self._nonpaint[m]] += self.margins[m]
            mapped = self._dev_luts[m][self._member_labels(lg, size, model_in, resized, mode)]
            out = mapped if out is None else torch.where(mapped >= 0, mapped, out)
        assert out is not None
        return out.to(self._torch_label_dtype)


def load_composite(path: str | os.PathLike[str], *, device: Any, dtype: Any = None,
                   check: bool = True, cudnn_benchmark: bool | None = None,
                   optimize: bool = False, threads: int | None = None) -> CompositeSegmenter:
    """Load a resolved ``.composite`` file (from :func:`_resolve_composite`; called by
    :func:`~semcbir_fast.segment.load_segmenter`)."""
    from .segmenter import load_segmenter

    path = Path(path)
    name, members = _read_spec(path)
    segs: list[Segmenter] = []
    mappings = []
    for m, cm in enumerate(members):
        if not Path(os.fspath(cm.model)).is_file():
            raise ValueError(f"{path}: member {os.fspath(cm.model)!r} is not a model file; "
                             "load composites by name or through load_segmenter")
        seg = load_segmenter(cm.model, device=device, dtype=dtype, check=False,
                             cudnn_benchmark=cudnn_benchmark, optimize=optimize,
                             runtime=cm.runtime, threads=threads)
        segs.append(seg)
        mappings.append(_mapping_for(cm, Path(os.fspath(cm.model)), seg.class_names, m))
    _check_compatible(name, [os.fspath(cm.model) for cm in members], [s.meta for s in segs])
    names, luts = merge_label_space([s.class_names for s in segs], mappings)
    from semcbir_fast.models.sidecar import SegmenterMeta

    base = segs[0].meta
    meta = SegmenterMeta(name=name, num_classes=len(names), class_names=names,
                         mean=[0.0] * 3, std=[1.0] * 3, input_size=base.input_size,
                         size_divisor=base.size_divisor)
    seg = CompositeSegmenter(segs, meta, luts, [cm.margin for cm in members], path=path)
    if check:
        seg._self_check()
    return seg


def members_key_parts(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``[{"model": file, "runtime": ...}]`` of the members of a composite file whose models
    are files, for label-cache keys (:func:`semcbir_fast.eval.cache.model_key`); members
    named by a registered name are listed by that name."""
    _, members = _read_spec(Path(path))
    from semcbir_fast.segment.runtimes import runtime_of_file

    out = []
    for cm in members:
        model = os.fspath(cm.model)
        is_file = Path(model).is_file()
        out.append({"model": model, "file": is_file,
                    "runtime": cm.runtime or (runtime_of_file(model) if is_file else None)})
    return out
