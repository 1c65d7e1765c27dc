"""Late fusion of several signatures (``"fused"``), with query expansion and k-reciprocal
re-ranking as search options.

A fused signature holds one component signature per registry name in ``components``
(default ``("regions", "sbs")``: paper 004's region descriptors from the label maps and the
library's default semantic signature, chosen by the component rule run under adaptive
weights, ``docs/deep.md``), each with its own default settings except the backbone pass:
``backbone`` (default EfficientNet-Lite1, chosen on a disjoint split) and ``flip``
(test-time flipping, off) are handed to every component that runs a backbone. Each image
is encoded by every component; the index keeps every component's encoding (as side data of
one :class:`~semcbir_fast.index.DenseIndex`). A query is ranked as follows:

1. every component's distances to the whole database (its own metric: L2 of CNN
   descriptors, Hamming of SBS codes, sparse L2 of SBoVP phrases with paper 001's filter as
   a penalty, ...);
2. each normalised (``normalization``): ``"z"`` (default) ``(d - mu_s) / sigma_s`` with the
   mean and standard deviation of component ``s``'s distances over database pairs,
   ``"minmax"`` alike with their range, both estimated from the database itself (up to
   1024 of its rows against all of it), so that the fused distance stays symmetric;
   ``"rank"``: each row's ranks (a Borda count);
3. summed with ``weights`` (default: 1 each, plain CombSUM), each scaled, when
   ``fusion_weights="adaptive"`` (the default), by the mean of the two images'
   query-adaptive weights (:func:`semcbir_fast.search.curve_weights`, Zheng et al. 2015:
   per image and component, the inverse area under its normalised sorted-similarity curve
   over the database, an image's weights summing to the number of components; the
   database's own are computed once, block by block, and kept until the next ``add``), so
   that a component that ranks an image's neighbours sharply counts more for it and the
   fused distance stays symmetric;
4. optionally (``qe``) the dense components' queries are expanded with the ``qe_n`` first
   results (average QE or alpha-QE with ``qe_alpha``, :mod:`semcbir_fast.search.expansion`)
   and steps 1-3 run again;
5. ``rerank="k-reciprocal"`` (default): k-reciprocal re-ranking (Zhong et al. 2017) of the
   fused distances against the database, with the paper's ``k1 = 20``, ``k2 = 6``,
   ``lambda = 0.3`` (:class:`semcbir_fast.search.KReciprocal`; its graph of the database is
   built on the first search and kept until the next ``add``).

What steps 2, 3 and 5 derive from the database (the statistics, the database's adaptive
weights, the graph) is built by ``DenseIndex.prepare`` (``semcbir index`` calls it) and
saved with the index (:meth:`FusedSignature.derived_sections`), so that a loaded index
searches without the ``O(N^2)`` rebuild.

The defaults are fixed, not fitted to any data set: equal weights (the plain rule), z-scores
(the usual late-fusion normalisation), the re-ranking paper's own parameters, and no QE
(k-reciprocal re-ranking already expands each query over its ``k2`` nearest neighbours;
alpha-QE on top counts that twice); the components, the backbone, flipping and the
adaptive weights were each chosen by a rule fixed before measuring, on a disjoint split.
``docs/deep.md`` gives the reasons and ``docs/results_deep.md`` what each choice measures.
An index written before ``fusion_weights`` existed reads as ``"fixed"`` (how it was built).

Costs: a search computes full distance rows (``O(N)`` memory per query, exact fusion);
building the re-ranking graph computes the database's distances to itself once in blocks
(``O(N^2)`` time, ``O(N k1)`` memory): for collections up to ~10^5 images. From 20,000
images on, that first build shows a progress bar when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Inputs, Signature, option
from .cnn import (
    FUSED_BACKBONE,
    DenseSignature,
    _check_backbone,
    _check_flip,
    backbone_option,
    flip_option,
)
from .registry import get_signature, register_signature

__all__ = ["FusedParams", "FusedSignature"]

RERANKS = ("none", "k-reciprocal")
#: The default components (the component rule under adaptive weights, docs/deep.md).
DEFAULT_COMPONENTS = ("regions", "sbs")
FUSION_WEIGHTS = ("fixed", "adaptive")
QES = ("none", "average", "alpha")
_STAT_ROWS = 1024
_BLOCK = 1 << 22  # floats of one (queries x database) block per component
#: From this database size on (about 10 s of graph building and up), the first re-ranked
#: search shows a progress bar on a terminal's stderr.
_GRAPH_PROGRESS_ROWS = 20_000


def _components_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    v = getattr(args, "components", None)
    return tuple(v) if v else DEFAULT_COMPONENTS


def _weights_from_args(args: argparse.Namespace) -> tuple[float, ...] | None:
    v = getattr(args, "weights", None)
    return tuple(float(x) for x in v) if v else None


@dataclass(frozen=True)
class FusedParams:
    """fused settings: components, fusion rule, query expansion, re-ranking."""

    components: tuple[str, ...] = option(
        DEFAULT_COMPONENTS, from_args=_components_from_args, flags=[
            ("--components", {"nargs": "+", "default": None, "metavar": "NAME",
                              "help": "fused: signatures to fuse, each with its defaults "
                                      f"(default: {' '.join(DEFAULT_COMPONENTS)})"})])
    backbone: str = backbone_option(FUSED_BACKBONE)
    flip: bool = flip_option()
    weights: tuple[float, ...] | None = option(
        None, from_args=_weights_from_args, flags=[
            ("--weights", {"nargs": "+", "type": float, "default": None, "metavar": "W",
                           "help": "fused: one weight per component (default 1 each)"})])
    normalization: str = option("z", flag="--fusion-norm", choices=["z", "rank", "minmax"],
                                help="fused: per-component distance normalisation (z)")
    fusion_weights: str = option("adaptive", choices=list(FUSION_WEIGHTS),
                                 help="fused: adaptive (the default: each pair's --weights "
                                 "scaled by the query-adaptive weights of its two images, "
                                 "Zheng et al. 2015) or fixed (--weights alone)")
    qe: str = option("none", choices=list(QES),
                     help="fused: query expansion of the dense components (none, average, "
                     "alpha; default none)")
    qe_n: int = option(10, type=int, metavar="N", help="fused: results used by --qe (10)")
    qe_alpha: float = option(3.0, type=float, help="fused: alpha of --qe alpha (3)")
    rerank: str = option("k-reciprocal", choices=list(RERANKS),
                         help="fused: re-ranking (k-reciprocal, the default, or none)")
    k1: int = option(20, type=int, help="fused: k-reciprocal k1 (20)")
    k2: int = option(6, type=int, help="fused: k-reciprocal k2 (6)")
    lam: float = option(0.3, flag="--lambda", type=float,
                        help="fused: k-reciprocal lambda, weight of the original distance (0.3)")

    def __post_init__(self) -> None:
        comps = tuple(self.components) if not isinstance(self.components, str) \
            else (self.components,)
        object.__setattr__(self, "components", comps)
        if not comps or not all(isinstance(c, str) and c for c in comps):
            raise ValueError(f"components must name at least one signature, got {comps!r}")
        if "fused" in comps:
            raise ValueError("components cannot hold 'fused' itself")
        if len(set(comps)) != len(comps):
            raise ValueError(f"components must not repeat a signature, got {comps}")
        _check_backbone(self.backbone)
        _check_flip(self.flip)
        if self.weights is not None:
            w = tuple(float(x) for x in self.weights)
            object.__setattr__(self, "weights", w)
            if len(w) != len(comps) or not all(np.isfinite(x) and x >= 0 for x in w) \
                    or not any(w):
                raise ValueError(f"weights must give one finite value >= 0 per component "
                                 f"({len(comps)}), not all 0; got {w}")
        if self.normalization not in ("z", "rank", "minmax"):
            raise ValueError(f"normalization must be z, rank or minmax, got "
                             f"{self.normalization!r}")
        if self.fusion_weights not in FUSION_WEIGHTS:
            raise ValueError(f"fusion_weights must be one of {FUSION_WEIGHTS}, got "
                             f"{self.fusion_weights!r}")
        if self.qe not in QES:
            raise ValueError(f"qe must be one of {QES}, got {self.qe!r}")
        if self.rerank not in RERANKS:
            raise ValueError(f"rerank must be one of {RERANKS}, got {self.rerank!r}")
        for name in ("qe_n", "k1", "k2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not (isinstance(self.qe_alpha, (int, float)) and np.isfinite(self.qe_alpha)
                and self.qe_alpha >= 0):
            raise ValueError(f"qe_alpha must be a finite number >= 0, got {self.qe_alpha!r}")
        if not (isinstance(self.lam, (int, float)) and 0 <= self.lam <= 1):
            raise ValueError(f"lam must be in [0, 1], got {self.lam!r}")


#: The settings of the backbone pass that fused hands to every component that has them.
SHARED = ("backbone", "flip")


def _shared(cls: type) -> tuple[str, ...]:
    """The :data:`SHARED` fields of a signature class's Params (a deep signature has them,
    ``sbs`` none)."""
    fields = getattr(cls.Params, "__dataclass_fields__", {})
    return tuple(f for f in SHARED if f in fields)


def _kind(sig: Signature) -> str:
    from ._local import LocalSignature
    from .sbs import SBSSignature

    if isinstance(sig, DenseSignature):
        return "dense"
    if isinstance(sig, SBSSignature):
        return "sbs"
    if isinstance(sig, LocalSignature):
        return "local"
    raise ValueError(f"signature {sig.name} cannot be fused (dense, sbs and sparse "
                     "local-feature signatures can)")


@register_signature
class FusedSignature(DenseSignature):
    """Late fusion of several signatures' distances (regions + sbs by default), then
    k-reciprocal re-ranking; optional query expansion."""

    name = "fused"
    title = "Fused"
    Params = FusedParams
    distance = "fused distance"
    axis = "Fusion"
    requires = ("images", "labels")

    def __init__(self, params: Any = None, *, num_classes: int,
                 ignore_index: int | None = None,
                 component_signatures: list[Signature] | None = None,
                 **overrides: Any) -> None:
        super().__init__(params, num_classes=num_classes, ignore_index=ignore_index,
                         **overrides)
        comps = component_signatures
        p = self.params
        if comps is None:
            classes = [get_signature(n) for n in p.components]
            comps = [c(num_classes=num_classes, ignore_index=ignore_index,
                       **{f: getattr(p, f) for f in _shared(c)}) for c in classes]
        if [c.name for c in comps] != list(p.components):
            raise ValueError("component_signatures must match params.components")
        for f in SHARED:
            want = getattr(p, f)
            wrong = [c.name for c in comps
                     if f in _shared(type(c)) and getattr(c.params, f) != want]
            if wrong:
                raise ValueError(f"component_signatures {wrong} do not use the fused {f} "
                                 f"{want!r}: build them with {f}={want!r} or give fused "
                                 "theirs")
        self.components = list(comps)
        self.kinds = [_kind(c) for c in self.components]
        self._columns: list[int] = [-1] * len(self.components)
        #: what this object's components need (the class attribute is what every fusion of
        #: the default kinds needs; local features are added here when a component uses them)
        self.requires = self._requires()

    # ------------------------------------------------------------------ what it needs
    def _requires(self) -> tuple[str, ...]:
        out: list[str] = []
        for c in self.components:
            out += [r for r in c.requires if r not in out]
        return tuple(out)

    @property
    def feature_method(self) -> str | None:
        methods = [c.feature_method for c in self.components if c.feature_method]
        if len(set(methods)) > 1:
            raise ValueError(f"fused components use different local features {methods}")
        return methods[0] if methods else None

    def check_available(self) -> None:
        for c in self.components:
            c.check_available()

    @property
    def fitted(self) -> bool:
        return all(c.fitted for c in self.components)

    @property
    def fit_requires(self) -> tuple[str, ...]:
        out: list[str] = []
        for c in self.components:
            if not c.fitted:
                out += [r for r in c.fit_requires if r not in out]
        return tuple(out)

    def fit(self, inputs: Inputs, *, threads: int = 0,
            cache: dict[Any, Any] | None = None) -> FusedSignature:
        for c in self.components:
            if not c.fitted:
                c.fit(inputs, threads=threads, cache=cache)
        return self

    def require_fitted(self) -> None:
        for c in self.components:
            c.require_fitted()

    @property
    def weights(self) -> list[float]:
        return list(self.params.weights or [1.0] * len(self.components))

    # ------------------------------------------------------------------ encoding
    def encode(self, inputs: Inputs, *, threads: int = 0) -> Any:
        from ..index import DenseBatch, Ragged

        self.require_fitted()
        n = len(inputs)
        extras: dict[str, Any] = {}
        for i, (c, kind) in enumerate(zip(self.components, self.kinds)):
            enc = c.encode(inputs, threads=threads)
            if kind == "dense":
                extras[f"c{i}"] = enc.vectors
                for name, a in enc.extras.items():
                    extras[f"c{i}.{name}"] = a
            elif kind == "sbs":
                extras[f"c{i}"] = np.asarray(enc, dtype=np.uint8).reshape(n, -1)
            else:
                ip, ix, dt, h, cols = c.batch_arrays(enc, None, "signatures", self._columns[i])
                self._columns[i] = int(cols)
                extras[f"c{i}"] = Ragged(ip, {"indices": ix.astype(np.int64),
                                              "data": dt.astype(np.float32)})
                extras[f"c{i}.hist"] = np.asarray(h, dtype=np.float32)
        return DenseBatch(np.zeros((n, 0), np.float32), extras)

    def _part(self, batch: Any, i: int) -> Any:
        """Component ``i``'s encoding out of a fused batch."""
        from ..index import DenseBatch

        kind = self.kinds[i]
        if kind == "dense":
            pre = f"c{i}."
            return DenseBatch(batch.extras[f"c{i}"],
                              {k[len(pre):]: v for k, v in batch.extras.items()
                               if k.startswith(pre)})
        if kind == "sbs":
            return np.asarray(batch.extras[f"c{i}"])
        rag = batch.extras[f"c{i}"]
        return self.components[i].batch_from_rows(
            rag.indptr, rag.values["indices"], rag.values["data"],
            np.asarray(batch.extras[f"c{i}.hist"]), self._columns[i])

    # ------------------------------------------------------------------ ranking
    def _raw_rows(self, index: Any, i: int, queries: Any, threads: int) -> np.ndarray:
        """Component ``i``'s float64 distances ``(nq, N)`` of (its part of) ``queries``."""
        from ..search import penalised_keys

        kind, comp = self.kinds[i], self.components[i]
        n = len(index)
        if kind == "dense":
            db = index.derived(("part", i), lambda: self._part(index.batch, i))
            return comp.distance_rows(db, queries, threads=threads).astype(np.float64)
        if kind == "sbs":
            from ..hamming import hamming_distances

            db = index.derived(("part", i), lambda: self._part(index.batch, i))
            return hamming_distances(queries, db, threads=threads).astype(np.float64)
        sub = index.derived(("sparse", i), lambda: self._sparse_index(index, i))
        d, ids, pen = sub.search(queries, n, threads=threads, return_penalised=True)
        keys = penalised_keys(d, pen)
        out = np.empty((keys.shape[0], n))
        np.put_along_axis(out, ids, keys, 1)
        return out

    def _sparse_index(self, index: Any, i: int) -> Any:
        comp = self.components[i]
        sub = comp.new_index()
        sub.add(self._part(index.batch, i))
        return sub

    def _stats(self, index: Any, threads: int) -> list[tuple[float, float]]:
        """Per component ``(location, scale)`` of its database distances (z: mean / std;
        minmax: min / range), from up to 1024 evenly spaced database rows."""
        def build() -> list[tuple[float, float]]:
            n = len(index)
            rows = np.unique(np.linspace(0, n - 1, min(n, _STAT_ROWS)).round().astype(np.int64))
            sample = index.batch[rows]
            out = []
            for i in range(len(self.components)):
                r = self._raw_rows(index, i, self._query_part(sample, i), threads)
                if self.params.normalization == "minmax":
                    lo, hi = float(r.min()), float(r.max())
                    out.append((lo, hi - lo if hi > lo else 1.0))
                else:
                    sd = float(r.std())
                    out.append((float(r.mean()), sd if sd > 0 else 1.0))
            return out

        return index.derived(self._derived_keys()["stats"], build)

    def _query_part(self, batch: Any, i: int) -> Any:
        return self._part(batch, i)

    def fused_rows(self, index: Any, queries: Any, *, threads: int = 0,
                   parts: dict[int, Any] | None = None) -> np.ndarray:
        """Fused float64 distances ``(nq, N)`` of encoded queries (step 1-3), >= 0 for the
        z and minmax normalisations (shifted by their lower bound)."""
        from ..search import curve_weights, normalize_distances

        w = self.weights
        norm = self.params.normalization
        stats = None if norm == "rank" else self._stats(index, threads)
        active = self._active()
        raw = [self._raw_rows(index, i, parts[i] if parts and i in parts
                              else self._query_part(queries, i), threads) for i in active]
        if self.params.fusion_weights == "adaptive":
            # a pair's weight: the mean of its two images' adaptive weights (symmetric)
            aq, ax = curve_weights(raw), self._db_weights(index, threads)
        out = None
        for j, (i, r) in enumerate(zip(active, raw)):
            if norm == "rank":
                z = normalize_distances(r, "rank")
            else:
                # (r - loc) / scale, shifted by its lower bound -loc / scale (raw distances
                # are >= 0): r / scale. The shift is a constant per component, so it changes
                # no ranking, and it keeps the fused distance >= 0 for the re-ranking.
                z = r / stats[i][1]
            if self.params.fusion_weights == "adaptive":
                z = z * ((aq[:, j, None] + ax[None, :, j]) * 0.5)
            out = w[i] * z if out is None else out + w[i] * z
        assert out is not None
        return np.maximum(out, 0.0)

    def _active(self) -> list[int]:
        """The components with a non-zero weight (the others are not computed)."""
        return [i for i, wi in enumerate(self.weights) if wi]

    def _db_weights(self, index: Any, threads: int) -> np.ndarray:
        """Adaptive weights ``(N, S_active)`` of the database images (their rows against the
        database, block by block), kept until the next ``add``."""
        from ..search import curve_weights

        active = self._active()

        def build() -> np.ndarray:
            n = len(index)
            out = np.empty((n, len(active)))
            step = max(1, _BLOCK // max(n, 1))
            for s in range(0, n, step):
                b = index.batch[np.arange(s, min(n, s + step))]
                out[s:s + len(b)] = curve_weights(
                    [self._raw_rows(index, i, self._query_part(b, i), threads)
                     for i in active])
            return out

        return index.derived(self._derived_keys()["weights"], build)

    def _expanded(self, index: Any, queries: Any, first: np.ndarray) -> dict[int, Any]:
        from ..index import DenseBatch
        from ..search import alpha_qe

        alpha = 0.0 if self.params.qe == "average" else float(self.params.qe_alpha)
        out = {}
        for i, kind in enumerate(self.kinds):
            if kind != "dense":
                continue
            q = self._query_part(queries, i)
            db = index.derived(("part", i), lambda i=i: self._part(index.batch, i))
            out[i] = DenseBatch(alpha_qe(q.vectors, db.vectors, first, alpha=alpha), q.extras)
        return out

    def _reranker(self, index: Any, threads: int) -> Any:
        from ..search import KReciprocal

        p = self.params

        def build() -> Any:
            db = index.batch
            return KReciprocal(lambda s, e: self.fused_rows(index, db[np.arange(s, e)],
                                                            threads=threads),
                               len(index), k1=p.k1, k2=p.k2, lam=p.lam,
                               progress=len(index) >= _GRAPH_PROGRESS_ROWS
                               and sys.stderr.isatty())

        return index.derived(self._derived_keys()["graph"], build)

    # ------------------------------------------------------------------ derived state
    def _derived_keys(self) -> dict[str, tuple[Any, ...]]:
        """The keys (in the index's derived structures) of what this signature's searches
        build from the database: ``stats`` (z / minmax), ``weights`` (adaptive) and
        ``graph`` (k-reciprocal), for the settings in use."""
        p = self.params
        keys: dict[str, tuple[Any, ...]] = {}
        if p.normalization != "rank":
            keys["stats"] = ("stats", p.normalization)
        if p.fusion_weights == "adaptive":
            keys["weights"] = ("adaptive-weights", tuple(self._active()))
        if p.rerank == "k-reciprocal":
            keys["graph"] = ("k-reciprocal", p.k1, p.k2, p.lam, p.normalization,
                             tuple(self.weights), p.fusion_weights)
        return keys

    def prepare_index(self, index: Any, *, threads: int = 0) -> None:
        keys = self._derived_keys()
        if "stats" in keys:
            self._stats(index, threads)
        if "weights" in keys:
            self._db_weights(index, threads)
        if "graph" in keys:
            self._reranker(index, threads)

    def derived_sections(self, built: Callable[[Any], Any]) -> list[tuple[str, np.ndarray]]:
        out: list[tuple[str, np.ndarray]] = []
        have = {name: built(key) for name, key in self._derived_keys().items()}
        if have.get("stats") is not None:
            out.append(("stats", np.asarray(have["stats"], np.float64).reshape(-1, 2)))
        if have.get("weights") is not None:
            out.append(("weights", np.asarray(have["weights"], np.float64)))
        if have.get("graph") is not None:
            out += [(f"graph.{k}", v) for k, v in have["graph"].to_arrays().items()]
        return out

    def restore_derived(self, index: Any, arrays: dict[str, np.ndarray]) -> None:
        from ..search import KReciprocal

        keys, n = self._derived_keys(), len(index)
        graph = {k[len("graph."):]: v for k, v in arrays.items() if k.startswith("graph.")}
        names = {k for k in arrays if not k.startswith("graph.")} | ({"graph"} if graph else set())
        if names - set(keys):
            raise ValueError(f"{sorted(names - set(keys))} do not belong to these settings")
        if "stats" in arrays:
            st = np.asarray(arrays["stats"])
            if st.shape != (len(self.components), 2) or st.dtype.kind != "f" \
                    or not np.isfinite(st).all() or st[:, 1].min() <= 0:
                raise ValueError(f"stats must be ({len(self.components)}, 2) finite values "
                                 "with scales > 0")
            index.derived(keys["stats"], lambda: [(float(a), float(b)) for a, b in st])
        if "weights" in arrays:
            w = np.asarray(arrays["weights"])
            if w.shape != (n, len(self._active())) or w.dtype.kind != "f" \
                    or not np.isfinite(w).all() or w.min() < 0:
                raise ValueError(f"weights must be ({n}, {len(self._active())}) finite values "
                                 ">= 0")
            index.derived(keys["weights"], lambda: w.astype(np.float64, copy=False))
        if graph:
            p = self.params
            rr = KReciprocal.from_arrays(graph, n, k1=p.k1, k2=p.k2, lam=p.lam)
            index.derived(keys["graph"], lambda: rr)

    def search_index(self, index: Any, queries: Any, k: int, *, threads: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from ..search import topk_from_distances
        from ..search.float_topk import _pad

        n = len(index)
        nq = len(queries)
        step = max(1, _BLOCK // max(n, 1))
        dd = np.empty((nq, min(k, n)), np.float32)
        ii = np.empty((nq, min(k, n)), np.int64)
        rr = self._reranker(index, threads) if self.params.rerank == "k-reciprocal" else None
        for s in range(0, nq, step):
            qb = queries[np.arange(s, min(nq, s + step))]
            f = self.fused_rows(index, qb, threads=threads)
            if self.params.qe != "none" and any(kd == "dense" for kd in self.kinds):
                _, first = topk_from_distances(f, min(self.params.qe_n, n))
                f = self.fused_rows(index, qb, threads=threads,
                                    parts=self._expanded(index, qb, first))
            if rr is not None:
                f = rr.rerank(f)
            d, i = topk_from_distances(f.astype(np.float32), min(k, n))
            dd[s:s + len(qb)], ii[s:s + len(qb)] = d, i
        d, i = _pad(dd, ii, k)
        return d, i, np.zeros(d.shape, dtype=bool)

    def distance_rows(self, database: Any, queries: Any, *, threads: int = 0) -> np.ndarray:
        raise ValueError("a fused signature cannot be a component of another fusion")

    # ------------------------------------------------------------------ description
    def label(self) -> str:
        p = self.params
        s = "+".join(p.components)
        if p.flip:
            s += " flip"
        if p.fusion_weights != "fixed":
            s += f" {p.fusion_weights}"
        if p.qe != "none":
            s += f" qe-{p.qe}"
        if p.rerank != "none":
            s += " krr"
        return s

    def describe(self) -> str:
        p = self.params
        w = ", ".join(f"{c.name} x{wi:g}" for c, wi in zip(self.components, self.weights))
        qe = ("" if p.qe == "none" else f", {p.qe} QE (n={p.qe_n}"
              + (f", alpha={p.qe_alpha:g})" if p.qe == "alpha" else ")"))
        rr = (f", k-reciprocal re-ranking (k1={p.k1}, k2={p.k2}, lambda={p.lam:g})"
              if p.rerank != "none" else "")
        bb = (f"; {p.backbone}" + (", flipped" if p.flip else "")
              if any(_shared(type(c)) for c in self.components) else "")
        aw = (", query-adaptive weights" if p.fusion_weights == "adaptive" else "")
        return f"fused ({w}{bb}; {p.normalization}-normalised distances{aw}{qe}{rr})"

    def extra_label(self, name: str) -> str | None:
        """Which component a side-data entry of the index belongs to (``semcbir info``)."""
        head, _, rest = name.partition(".")
        if head[:1] == "c" and head[1:].isdigit() and int(head[1:]) < len(self.components):
            return self.components[int(head[1:])].name + (f" {rest}" if rest else "")
        return None

    def result_info(self, encoded: Any) -> dict[str, Any]:
        return {"components": list(self.params.components)}

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        """Paper 000 / 001's best published rows on the data set (what the fusion is
        measured against)."""
        from ..eval.paper import HYBRID_MAP, TABLE3_SBS_MAP, TABLE5_SBOVP_MAP, TABLE6_MAP

        rows: dict[str, float] = {}
        best = (TABLE6_MAP.get(dataset) or {}).get("Ours(best)")
        if best is not None:
            rows["paper 000 Table 6, Ours(best)"] = best
        for k, v in (TABLE5_SBOVP_MAP.get(dataset) or {}).items():
            rows[f"paper 000 Table 5, SBoVP {k}"] = v
        for k, v in (TABLE3_SBS_MAP.get(dataset) or {}).items():
            rows[f"paper 000 Table 3, SBS {k} (best blocks)"] = max(v)
        hy = HYBRID_MAP.get(dataset) or {}
        if hy:
            best = max(hy, key=hy.get)
            rows[f"paper 001, hybrid {best}"] = hy[best]
        return {"source": "papers 000 / 001 (HRNet-W48 segmentation)", "rows": rows} if rows \
            else {}

    # ------------------------------------------------------------------ header
    def to_header(self) -> dict[str, Any]:
        h = super().to_header()
        h["params"]["components"] = list(self.params.components)
        if self.params.weights is not None:
            h["params"]["weights"] = list(self.params.weights)
        h["components"] = [c.to_header() for c in self.components]
        h["columns"] = list(self._columns)
        return h

    def state_sections(self) -> list[tuple[str, np.ndarray]]:
        out = []
        for i, c in enumerate(self.components):
            out += [(f"c{i}.{name}", arr) for name, arr in c.state_sections()]
        return out

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> FusedSignature:
        arrays = arrays or {}
        comps = []
        for i, ch in enumerate(header["components"]):
            pre = f"c{i}."
            sub = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
            comps.append(get_signature(ch["signature"]).from_header(ch, sub))
        p = dict(header.get("params") or {})
        if "fusion_weights" not in p:  # written before the field existed: fixed weights
            p["fusion_weights"] = "fixed"
        for f in SHARED:
            if f not in p:
                # an index written before fused had this field: its deep components' value
                p[f] = next((getattr(c.params, f) for c in comps if f in _shared(type(c))),
                            FusedParams.__dataclass_fields__[f].default)
        fields = set(FusedParams.__dataclass_fields__)
        params = FusedParams(**{k: v for k, v in p.items() if k in fields})
        sig = cls(params, num_classes=header["num_classes"],
                  ignore_index=header.get("ignore_index"), component_signatures=comps)
        sig._columns = [int(c) for c in header.get("columns", sig._columns)]
        return sig
