"""Run a retrieval evaluation of any signature on a labelled data set.

:func:`evaluate` takes the images' inputs (label maps from a model or the ground truth,
"oracle" segmentation; local features where the signature needs them) and one or several
:class:`~semcbir_fast.signatures.Signature` objects (settings: SBS levels, SBoVP vocabulary
sizes, ...). For each it fits the learned state if any (on the evaluated images unless
``fit_inputs`` names another set), encodes every image, puts the database into the
signature's own index and ranks the whole database for every query with that index's
search (ties by the smaller database id; filtered signatures by ``(penalised, distance,
id)``), then scores the rankings (:mod:`semcbir_fast.eval.metrics`):

- ``map``: MAP over the full ranking (paper 000 Table 3);
- ``map_ties_avg``: the same with tied distances scored by their expected value over all
  orderings (independent of the id order; reported beside it);
- ``p_at_r``: precision of the first R results, R = relevant items of the query (paper
  000's Corel protocol, "first 100 neighbours among 1000");
- ``p_at_k``: precision of the first k (k = 20: paper 000 Table 7 / paper 001 Table 5);
- per-category AP and the 11-point interpolated precision-recall curve.

Modes (paper 000 Table 1): ``"query-in-db"`` -- every image is a query and stays in the
database (its own first result, normally); ``"disjoint"`` -- the first
``queries_per_category`` images of each category are the queries, the rest the database.
``exclude_query=True`` (query-in-db only) removes each query from its own ranking and
from its relevant count; a query left with nothing relevant to find (the only image of its
category) is then left out of every score, not counted with AP 0
(``settings["queries_without_relevant"]`` says how many).

:func:`evaluate_sbs` and :func:`evaluate_signature` are the former entry points, kept as
thin wrappers: they build the signature objects from keyword settings (the defaults are
the signatures' ``"default"`` presets).
"""

from __future__ import annotations

import dataclasses
import itertools
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cache import features_cached
from .datasets import Dataset, split_disjoint
from .metrics import (
    average_precision,
    per_category_ap,
    precision_at_k,
    precision_at_r,
    precision_recall_curve,
)

__all__ = [
    "MODES",
    "EvalResult",
    "LevelResult",
    "SignatureResult",
    "evaluate",
    "evaluate_sbs",
    "evaluate_signature",
    "features_cached",
    "library_versions",
]

MODES = ("query-in-db", "disjoint")


@dataclass
class _Scores:
    """Retrieval scores shared by every signature's result."""

    map: float
    map_ties_avg: float
    p_at_r: float
    p_at_k: dict[int, float]
    per_category_ap: dict[str, float]
    pr_recall: list[float]
    pr_precision: list[float]
    encode_ms_per_image: float
    search_ms_per_query: float
    ap: np.ndarray = field(repr=False)
    top_ids: np.ndarray = field(repr=False)  # (nq, top) database positions
    top_distances: np.ndarray = field(repr=False)

    def _scores_dict(self) -> dict[str, Any]:
        return {
            "map": self.map,
            "map_ties_avg": self.map_ties_avg,
            "p_at_r": self.p_at_r,
            "p_at_k": {str(k): v for k, v in self.p_at_k.items()},
            "per_category_ap": self.per_category_ap,
            "pr_curve": {"recall": self.pr_recall, "precision": self.pr_precision},
            "encode_ms_per_image": self.encode_ms_per_image,
            "search_ms_per_query": self.search_ms_per_query,
        }



@dataclass
class SignatureResult(_Scores):
    """Scores of one signature setting (one column of :meth:`EvalResult.table`).

    ``params`` holds the setting (and sizes such as ``nbits`` or ``nnz_per_image``); its
    entries read as attributes too (``result.levels``, ``result.blocks``)."""

    signature: str = ""
    label: str = ""
    column: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Short column label: ``"16 blocks"``, ``"kaze L=16 n=2"``."""
        return self.label

    def __getattr__(self, name: str) -> Any:
        for d in (self.__dict__.get("params") or {}, self.__dict__.get("info") or {}):
            if name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"signature": self.signature, "label": self.label, **self.params, **self.info,
                "params": self.params, "info": self.info, **self._scores_dict()}


#: Former name of an SBS setting's result.
LevelResult = SignatureResult


@dataclass
class EvalResult:
    """Everything an evaluation measured, with its settings; see :meth:`to_dict`."""

    settings: dict[str, Any]
    results: list[SignatureResult]
    dataset: Dataset = field(repr=False)
    query_idx: np.ndarray = field(repr=False)
    db_idx: np.ndarray = field(repr=False)
    label_maps: list[np.ndarray] | None = field(default=None, repr=False)
    versions: dict[str, str] = field(default_factory=dict)
    signatures: list[Any] = field(default_factory=list, repr=False)

    @property
    def signature(self) -> str:
        """Registry name of the evaluated signature."""
        from ..signatures import DEFAULT_SIGNATURE

        return str(self.settings.get("signature", DEFAULT_SIGNATURE))

    @property
    def signature_class(self) -> Any:
        """The evaluated signature's class (from the registry)."""
        from ..signatures import get_signature

        return get_signature(self.signature)

    def published(self) -> dict[str, Any]:
        """What the papers publish for this signature and data set (see :mod:`.paper`)."""
        from .paper import TABLE7_TOP20

        out = dict(self.signature_class.published(self.settings.get("dataset", "")))
        if self.settings.get("dataset") == "corel1k":
            out["table7_top20"] = TABLE7_TOP20
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, versions, per-setting numbers and the paper's numbers."""
        return {
            "settings": self.settings,
            "versions": self.versions,
            "results": [r.to_dict() for r in self.results],
            "paper": self.published(),
        }

    def run_line(self) -> str:
        """One line on what was evaluated: data set, images, categories, mode, labels."""
        s = self.settings
        left = left_out_text(s.get("queries_without_relevant", 0))
        return (f"{s['dataset_label']}: {s['images']} images, {s['categories']} categories, "
                f"mode {s['mode']}{' (query excluded)' if s['exclude_query'] else ''}, "
                f"{left + ', ' if left else ''}segmentation: {s['segmentation']}")

    def best(self) -> SignatureResult:
        """The setting with the highest MAP (the first on ties)."""
        return max(self.results, key=lambda r: r.map)

    def published_rows(self) -> list[tuple[str, list[float | None]]]:
        """Published rows with one value per evaluated setting (e.g. paper 000 Table 3 per
        number of blocks), for the table and the report."""
        sigs = self.signatures
        rows = []
        for label, vals in (self.published().get("rows") or {}).items():
            per = [s.published_value(vals) for s in sigs]
            if any(v is not None for v in per):
                rows.append((label, per))
        return rows

    def table(self) -> str:
        """Plain-text table, one column per setting (paper 000 Table 3's layout for SBS):
        MAP, MAP with ties averaged, P@R, P@k, the published rows, encode / search time."""
        s = self.settings
        name = f"{s.get('dataset_label', s.get('dataset'))} ({s.get('segmentation', '?')})"
        f4 = (lambda v: "-" if v is None else f"{v:.4f}")
        rows: list[tuple[str, list[str]]] = [
            (f"MAP {name}", [f4(r.map) for r in self.results]),
            ("MAP, ties averaged", [f4(r.map_ties_avg) for r in self.results]),
            ("P@R (R = category size)", [f4(r.p_at_r) for r in self.results]),
        ]
        for k in self.results[0].p_at_k if self.results else {}:
            rows.append((f"P@{k}", [f4(r.p_at_k[k]) for r in self.results]))
        rows += [(label, [f4(v) for v in vals]) for label, vals in self.published_rows()]
        rows.append(
            ("ms/image (signature)", [f"{r.encode_ms_per_image:.2f}" for r in self.results])
        )
        rows.append(("ms/query (search)", [f"{r.search_ms_per_query:.3f}" for r in self.results]))
        cols = [r.column or r.label for r in self.results]
        axis = getattr(self.signature_class, "axis", "Setting")
        width = max(len(axis), *(len(lab) for lab, _ in rows))
        cw = max(8, *(len(c) for c in cols)) if cols else 8
        lines = [f"{axis:<{width}} | " + " | ".join(f"{c:>{cw}}" for c in cols)]
        lines.append("-" * len(lines[0]))
        for label, vals in rows:
            lines.append(f"{label:<{width}} | " + " | ".join(f"{v:>{cw}}" for v in vals))
        return "\n".join(lines)


def left_out_text(n: int) -> str:
    """What the scores left out: ``n`` queries with nothing relevant to find ("" for 0)."""
    if not n:
        return ""
    return f"{n} quer{'y' if n == 1 else 'ies'} left out (the only image of a category)"


def library_versions() -> dict[str, str]:
    """Versions of the library, its backend and the main dependencies."""
    import semcbir_fast as sf

    out = {
        "semcbir_fast": sf.__version__,
        "backend": sf.backend(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    out["isa"] = sf.active_isa()  # "numba" with the numba backend
    import sys

    for mod in ("torch", "cv2"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


@dataclass
class _Split:
    """Queries and database of one evaluation, with the relevant counts per query."""

    q_idx: np.ndarray
    db_idx: np.ndarray
    qcat: np.ndarray
    dbcat: np.ndarray
    n_rel: np.ndarray
    counts: dict[int, int]
    names: dict[int, str]
    exclude_query: bool
    unscored: int = 0  # queries left out: no relevant image in the database

    @property
    def ndb(self) -> int:
        return int(self.db_idx.shape[0])

    @property
    def ranking_len(self) -> int:
        return self.ndb - 1 if self.exclude_query else self.ndb

    @classmethod
    def make(
        cls, dataset: Dataset, mode: str, exclude_query: bool, queries_per_category: int
    ) -> _Split:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if exclude_query and mode != "query-in-db":
            raise ValueError(
                "exclude_query only applies to mode='query-in-db' (disjoint queries "
                "are never in the database)"
            )
        cats = dataset.categories
        n = len(dataset)
        if mode == "query-in-db":
            q_idx = np.arange(n)
            db_idx = np.arange(n)
        else:
            q_idx, db_idx = split_disjoint(cats, queries_per_category)
        ndb = db_idx.shape[0]
        if (ndb - 1 if exclude_query else ndb) < 1:
            raise ValueError(f"the database has {ndb} images: nothing to rank")
        qcat = cats[q_idx]
        dbcat = cats[db_idx]
        counts = {int(c): int(np.sum(dbcat == c)) for c in np.unique(dbcat)}
        n_rel = np.array([counts.get(int(c), 0) for c in qcat], dtype=np.float64)
        if exclude_query:
            n_rel -= 1
        names = {c: dataset.category_name(c) for c in np.unique(cats).tolist()}
        # a query with no relevant image to find (the only image of its category, itself
        # left out) has no AP: it is left out of the scores rather than counted as 0
        scored = n_rel > 0
        if not scored.any():
            raise ValueError("no query has another image of its category in the database: "
                             "nothing to score (every category has a single image?)")
        unscored = int(q_idx.shape[0] - np.count_nonzero(scored))
        return cls(q_idx[scored], db_idx, qcat[scored], dbcat, n_rel[scored], counts, names,
                   bool(exclude_query), unscored)

    def cutoffs(self, ks: Sequence[int]) -> list[int]:
        return sorted({int(k) for k in ks if 0 < int(k) <= self.ranking_len})

    def top(self, top: int) -> int:
        return max(1, min(int(top), self.ranking_len))


def _score(
    ranker: Any, split: _Split, ks: Sequence[int], top: int, dist_dtype: Any, chunk: int
) -> dict[str, Any]:
    """Score full rankings. ``ranker(s, e)`` ranks queries ``s:e`` against the whole database:
    ``(distances, rows, tie_keys)``, ``(e - s, ndb)`` each, rows = database positions in rank
    order, ``tie_keys`` non-decreasing along each row (equal keys = tied results)."""
    q_idx, db_idx, ndb = split.q_idx, split.db_idx, split.ndb
    nq = q_idx.shape[0]
    ap = np.zeros(nq)
    ap_t = np.zeros(nq)
    p_r = np.zeros(nq)
    p_k = {k: np.zeros(nq) for k in ks}
    pr = np.zeros(11)
    top_ids = np.zeros((nq, top), dtype=np.int64)
    top_d = np.zeros((nq, top), dtype=dist_dtype)
    t_search = 0.0
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        t0 = time.perf_counter()
        dist, rows, key = ranker(s, e)
        t_search += time.perf_counter() - t0
        if split.exclude_query:
            keep = db_idx[rows] != q_idx[s:e, None]
            rows = rows[keep].reshape(e - s, ndb - 1)
            dist = dist[keep].reshape(e - s, ndb - 1)
            key = key[keep].reshape(e - s, ndb - 1)
        ranked = split.dbcat[rows]
        qs = split.qcat[s:e]
        nr = split.n_rel[s:e]
        ap[s:e] = average_precision(ranked, qs, n_relevant=nr)
        ap_t[s:e] = average_precision(ranked, qs, n_relevant=nr, distances=key)
        p_r[s:e] = precision_at_r(ranked, qs, nr)
        for k in ks:
            p_k[k][s:e] = precision_at_k(ranked, qs, k)
        _, prc = precision_recall_curve(ranked, qs, n_relevant=nr)
        pr += prc * (e - s)
        top_ids[s:e] = db_idx[rows[:, :top]]
        top_d[s:e] = dist[:, :top]
    return {
        "map": float(ap.mean()),
        "map_ties_avg": float(ap_t.mean()),
        "p_at_r": float(p_r.mean()),
        "p_at_k": {k: float(v.mean()) for k, v in p_k.items()},
        "per_category_ap": {
            str(k): v for k, v in per_category_ap(ap, split.qcat, split.names).items()
        },
        "pr_recall": np.linspace(0, 1, 11).tolist(),
        "pr_precision": (pr / nq).tolist(),
        "search_ms_per_query": 1e3 * t_search / nq,
        "ap": ap,
        "top_ids": top_ids,
        "top_distances": top_d,
    }


def _tie_keys(dist: np.ndarray, penalised: np.ndarray | None) -> np.ndarray:
    """Non-decreasing float64 keys of filtered rankings: penalised results after the rest."""
    d = dist.astype(np.float64)
    if penalised is None or not penalised.any():
        return d
    fin = np.where(np.isfinite(d), d, 0.0)
    off = fin.max(axis=1, keepdims=True) + 1.0
    return np.where(penalised, d + off, d)



def _settings_of(signatures: Sequence[Any]) -> dict[str, Any]:
    """The parameters of the evaluated settings: swept fields as lists, the rest as one
    value (a list where the settings differ)."""
    out: dict[str, Any] = {}
    dicts = [s.params_dict() for s in signatures]
    sweep = {f.name for f in dataclasses.fields(signatures[0].Params)
             if (f.metadata.get("cli") or {}).get("sweep")}
    for key in dicts[0]:
        vals = list(dict.fromkeys(d.get(key) for d in dicts))
        out[key] = vals if key in sweep or len(vals) > 1 else vals[0]
    return out


def evaluate(
    dataset: Dataset,
    signatures: Any,
    inputs: Any = None,
    *,
    label_maps: Sequence[np.ndarray] | None = None,
    features: Sequence[Any] | None = None,
    fit_inputs: Any = None,
    mode: str = "query-in-db",
    exclude_query: bool = False,
    queries_per_category: int = 10,
    ks: Sequence[int] = (10, 20),
    top: int = 20,
    threads: int = 0,
    progress: bool = False,
    settings: dict[str, Any] | None = None,
    keep_label_maps: bool = False,
) -> EvalResult:
    """Score one or several settings of one signature kind on ``dataset``.

    Parameters
    ----------
    dataset : Dataset
        Images and categories (:mod:`semcbir_fast.eval.datasets`).
    signatures : Signature or sequence of Signature
        The settings to score, all of one kind (one :class:`SignatureResult` each).
    inputs : Inputs, optional
        Per-image inputs in dataset order; or give ``label_maps`` (and ``features``).
        Features a signature requires but that are missing are extracted (and cached) here.
    fit_inputs : Inputs, optional
        Training set of the learned state (SBoVP's vocabulary). Default: the evaluated
        images themselves (paper 000 fits on another data set, Pascal VOC).
    mode : {"query-in-db", "disjoint"}
    exclude_query : bool, default False
        Query-in-db only: leave each query out of its own ranking (a query that is the only
        image of its category is then left out of the scores).
    queries_per_category : int, default 10
        Disjoint mode: queries taken from each category.
    ks : sequence of int, default (10, 20)
        Cut-offs for P@k.
    top : int, default 20
        Results kept per query for galleries (``SignatureResult.top_ids``).
    threads : int, default 0
        Threads for encoding and search (0 = all cores).
    progress : bool
        Progress bar of a feature extraction done here.
    settings : dict, optional
        Extra entries for ``EvalResult.settings`` (model, device, ...).
    keep_label_maps : bool, default False
        Keep the label maps on the result (for overlays in a gallery).
    """
    from ..signatures import Inputs, Signature

    sigs = [signatures] if isinstance(signatures, Signature) else list(signatures)
    if not sigs or not all(isinstance(x, Signature) for x in sigs):
        raise ValueError("signatures must be one or more Signature objects")
    if len({type(x) for x in sigs}) > 1:
        raise ValueError("evaluate() scores settings of one signature kind at a time")
    kind = type(sigs[0])
    if inputs is None:
        inputs = Inputs(list(label_maps) if label_maps is not None else [],
                        None if features is None else list(features))
    if inputs.paths is None and "images" in getattr(sigs[0], "requires", ()):
        # signatures that read the image files themselves (cnn, regions, fused, ...)
        inputs = dataclasses.replace(inputs, paths=[str(p) for p in dataset.images])
    size = len(dataset)
    needs_labels = "labels" in getattr(sigs[0], "requires", ("labels",))
    if (needs_labels or inputs.label_maps) and len(inputs.label_maps) != size:
        # a signature that reads only the image files (cnn, neural-codes) needs no maps
        raise ValueError(f"label_maps must have one map per image: {size} images, "
                         f"{len(inputs.label_maps)} maps")
    split = _Split.make(dataset, mode, exclude_query, queries_per_category)
    q_idx, db_idx, ndb = split.q_idx, split.db_idx, split.ndb
    nq = q_idx.shape[0]
    ks = split.cutoffs(ks)
    top = split.top(top)
    st: dict[str, Any] = {
        "dataset": dataset.name,
        "root": str(dataset.root),
        "images": size,
        "categories": len(split.counts),
        "queries": int(nq),
        "queries_without_relevant": split.unscored,
        "database": int(ndb),
        "mode": mode,
        "exclude_query": bool(exclude_query),
        "queries_per_category": int(queries_per_category) if mode == "disjoint" else None,
        "signature": kind.name,
        "num_classes": int(sigs[0].num_classes),
        "ignore_index": sigs[0].ignore_index,
        "ks": ks,
    }
    from ..pipeline import decode_pass

    # one decode of each image file for every reader below (local features, the
    # backbone passes, region crops) and, under the CLI, the segmentation before it
    with decode_pass((*kind.requires, *getattr(sigs[0], "requires", ()))):
        if "features" in kind.requires:
            t0 = time.perf_counter()
            if inputs.features is None:
                inputs = dataclasses.replace(inputs, features=features_cached(
                    [str(p) for p in dataset.images], sigs[0].feature_method, threads=threads,
                    progress=progress, use_cache=False))
            st["features_seconds"] = round(time.perf_counter() - t0, 2)
            if len(inputs.features) != size:
                raise ValueError(f"features must have one entry per image: {size} images, "
                                 f"{len(inputs.features)} feature sets")
            kp = np.array([len(f) for f in inputs.features])
            st["method"] = sigs[0].feature_method
            st["keypoints_per_image"] = {"mean": float(kp.mean()) if size else 0.0,
                                         "min": int(kp.min()) if size else 0,
                                         "max": int(kp.max()) if size else 0}
        st.update(_settings_of(sigs))
        if hasattr(sigs[0], "filter_epsilon"):
            eps = sigs[0].filter_epsilon
            st["filter"] = "off" if eps is None else f"eps {eps:g}"
        st["ties"] = ("by (penalised, distance, smaller database id); map_ties_avg averages over "
                      "orders of equal distances")
        fit_cache: dict[Any, Any] = {}
        t_fit = 0.0
        if not all(x.fitted for x in sigs):
            train = inputs if fit_inputs is None else fit_inputs
            t0 = time.perf_counter()
            for x in sigs:
                if not x.fitted:
                    x.fit(train, threads=threads, cache=fit_cache)
            t_fit = time.perf_counter() - t0
            st["vocabulary"] = "evaluated set" if fit_inputs is None else "given set"
            st["fit_seconds"] = round(t_fit, 2)
            if train.features is not None:
                st["fit_train_images"] = len(train.features)
                st["fit_train_descriptors"] = int(sum(len(f) for f in train.features))
        results: list[SignatureResult] = []
        dist_dtype = np.int32 if kind.integer_distances else np.float32
        chunk = max(1, (1 << 21) // max(ndb, 1))
        for sig in sigs:
            t0 = time.perf_counter()
            enc = sig.encode(inputs, threads=threads)
            t_enc = time.perf_counter() - t0
            index = sig.new_index()
            index.add(enc[db_idx])
            queries = enc[q_idx]

            def ranker(s: int, e: int, index: Any = index, queries: Any = queries) -> Any:
                d, r, p = index.search(queries[np.arange(s, e)], ndb, threads=threads,
                                       return_penalised=True)
                return d, r, _tie_keys(d, p)

            sc = _score(ranker, split, ks, top, dist_dtype, chunk)
            results.append(SignatureResult(
                signature=kind.name, label=sig.label(), column=sig.column(),
                params=sig.params_dict(), info=sig.result_info(enc),
                encode_ms_per_image=1e3 * t_enc / max(size, 1), **sc))
    st.update(settings or {})
    return EvalResult(
        settings=st,
        results=results,
        dataset=dataset,
        query_idx=q_idx,
        db_idx=db_idx,
        label_maps=list(inputs.label_maps) if keep_label_maps and inputs.label_maps else None,
        versions=library_versions(),
        signatures=sigs,
    )


def evaluate_sbs(
    dataset: Dataset,
    label_maps: Sequence[np.ndarray],
    *,
    num_classes: int,
    levels: Sequence[int] = (0, 1, 2, 3),
    ignore_index: int | None = None,
    pyramid: bool = False,
    **kw: Any,
) -> EvalResult:
    """SBS at each level (``4**n`` blocks): :func:`evaluate` with one
    :class:`~semcbir_fast.signatures.SBSSignature` per level."""
    from ..signatures import SBSSignature

    levels = [int(v) for v in levels]
    if not levels:
        raise ValueError("levels must name at least one level, e.g. [0, 1, 2, 3]")
    sigs = [SBSSignature(num_classes=num_classes, ignore_index=ignore_index, levels=lv,
                         pyramid=pyramid) for lv in levels]
    return evaluate(dataset, sigs, label_maps=label_maps, **kw)


def evaluate_signature(
    dataset: Dataset,
    label_maps: Sequence[np.ndarray],
    *,
    signature: str,
    num_classes: int,
    features: Sequence[Any] | None = None,
    vocab_features: Sequence[Any] | None = None,
    ignore_index: int | None = None,
    **kw: Any,
) -> EvalResult:
    """A local-feature signature (``"sbovp"``, ``"hybrid"``) from keyword settings: the
    fields of its ``Params`` (``n_words`` and ``n`` may be lists: every combination is one
    setting; default: the ``"default"`` preset) plus ``seed`` for the vocabulary, then
    :func:`evaluate`. ``vocab_features``: the vocabulary's training set."""
    from ..signatures import Inputs, get_signature, list_signatures
    from ..signatures._local import LocalSignature

    local = [n for n in list_signatures() if issubclass(get_signature(n), LocalSignature)]
    cls = get_signature(signature)
    if not issubclass(cls, LocalSignature):
        raise ValueError(  # noqa: TRY004 - bad input is a ValueError here, as everywhere
            f"signature must be {' or '.join(map(repr, local))} (a local-feature "
            f"signature; evaluate() or evaluate_sbs for the others), got {signature!r}")
    names = {f.name for f in dataclasses.fields(cls.Params)}
    params = {k: kw.pop(k) for k in list(kw) if k in names}
    for k in [k for k in kw if k in ("n_words", "n", "semantic_words", "normalize",
                                     "histogram_weight", "seed")]:
        kw.pop(k)  # settings of another local signature: ignored, as before
    if features is not None:
        methods = {f.method for f in features}
        if len(methods) == 1:
            params["method"] = methods.pop()
    sweep = {k: [int(v) for v in np.atleast_1d(params[k]).tolist()] for k in params
             if k in ("n_words", "n")}
    if any(not v for v in sweep.values()):
        raise ValueError("n_words and n must name at least one value")
    fixed = {k: v for k, v in params.items() if k not in sweep}
    base = cls(num_classes=num_classes, ignore_index=ignore_index, **fixed)
    combos = [dict(zip(sweep, c)) for c in itertools.product(*sweep.values())] or [{}]
    sigs = [cls(dataclasses.replace(base.params, **c), num_classes=num_classes,
                ignore_index=ignore_index) for c in combos]
    fit_inputs = None if vocab_features is None else Inputs([], list(vocab_features))
    return evaluate(dataset, sigs, label_maps=label_maps, features=features,
                    fit_inputs=fit_inputs, **kw)
