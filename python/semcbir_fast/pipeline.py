"""The one pipeline: image files -> label maps (and features) -> signatures -> index ->
results. The CLI, the evaluation and a service call these functions; a notebook can too.

>>> from semcbir_fast import build_index, Retriever, create_signature   # doctest: +SKIP
>>> from semcbir_fast.segment import load_segmenter                     # doctest: +SKIP
>>> seg = load_segmenter()                  # DEFAULT_SEGMENTER, "ade20k+voc" # doctest: +SKIP
>>> sig = create_signature("sbs", num_classes=seg.num_classes, levels=2) # doctest: +SKIP
>>> built = build_index(paths, sig, segmenter=seg)                       # doctest: +SKIP
>>> hits = Retriever(built.index, seg).query(["q.jpg"], k=10)            # doctest: +SKIP

Each signature says what it needs per image (``signature.requires``): label maps come from
the segmenter, local features from OpenCV, both through the per-image caches shared by every
command (:func:`semcbir_fast.eval.cache.segment_paths`,
:func:`semcbir_fast.eval.cache.features_cached`). A signature with
learned state (SBoVP's vocabulary) that is not fitted yet is fitted on ``fit_paths`` (or on
the indexed images themselves).

Each pass (a chunk of :func:`build_index`, a batch of :meth:`Retriever.encode`) runs inside
one :func:`semcbir_fast.imageio.decode_scope`: the readability probe, the segmenter, the
backbone passes and the region crops of a signature share one decode of each file (within
the memo's bound, ``SEMCBIR_DECODE_MEMO_MB``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .imageio import decode_scope
from .signatures import Inputs, Signature

__all__ = ["BuildResult", "QueryResult", "Reroot", "Retriever", "build_index", "decode_pass",
           "image_key", "image_root", "load_inputs"]


def decode_pass(requires: Sequence[str]) -> contextlib.AbstractContextManager[Any]:
    """The scope of one pass over image files for a signature that needs ``requires``: a
    :func:`~semcbir_fast.imageio.decode_scope` (each file decoded once for every reader, within
    the bound ``SEMCBIR_DECODE_MEMO_MB``) when the pass reads a file more than once -- the
    signature reads the image files itself (after the readability probe or the segmenter),
    or label maps and local features are both computed -- else a no-op context (label maps
    alone: the segmenter is the only reader and nothing is worth keeping)."""
    need = set(requires)
    if "images" in need or {"labels", "features"} <= need:
        return decode_scope()
    return contextlib.nullcontext()


def image_key(path: str | os.PathLike[str]) -> str:
    """The key an image is stored under: its absolute path (symlinks not resolved)."""
    return os.path.abspath(os.fspath(path))


def image_root(keys: Sequence[str]) -> str:
    """The folder every key lies under (their common path; a single key's folder)."""
    keys = [k for k in keys if k]
    if not keys:
        raise ValueError("no keys")
    root = os.path.commonpath(keys)
    return os.path.dirname(root) if len(set(keys)) == 1 else root


class Reroot:
    """Maps the keys of an index whose images moved: ``old/<rel>`` -> ``new/<rel>`` (keys
    outside ``old`` are kept). ``old`` defaults to the index's recorded ``image_root`` (set
    by ``semcbir index``), else the common folder of its keys."""

    def __init__(self, index: Any, new_root: str | os.PathLike[str]) -> None:
        recorded = index.metadata.get("image_root") if hasattr(index, "metadata") else None
        if isinstance(recorded, str) and os.path.isabs(recorded):
            self.old = os.path.normpath(recorded)
        else:
            self.old = image_root(index.keys())
        self.new = os.path.abspath(os.fspath(new_root))

    def __call__(self, key: str | None) -> str | None:
        if key is None:
            return None
        if key == self.old:
            return self.new
        prefix = self.old.rstrip(os.sep) + os.sep
        return os.path.join(self.new, key[len(prefix):]) if key.startswith(prefix) else key


def _features(paths: Sequence[str], method: str, *, threads: int, progress: bool,
              use_cache: bool, log: Callable[[str], None] | None) -> list[Any]:
    from .eval.cache import features_cached

    return features_cached(list(paths), method, threads=threads,
                           progress=progress and len(paths) > 1, use_cache=use_cache, log=log)


def _readable(paths: Sequence[str], threads: int) -> tuple[list[str], list[tuple[str, str]]]:
    """``(readable paths, [(path, reason)])``: each file decoded once (signatures that
    require ``"images"`` and no label maps read the files themselves; inside a
    :func:`~semcbir_fast.imageio.decode_scope` the signature reuses these decodes)."""
    from concurrent.futures import ThreadPoolExecutor

    from .imageio import ImageReadError, read_image

    def probe(p: str) -> str | None:
        try:
            read_image(p)
        except ImageReadError as exc:
            return str(exc)
        return None

    workers = max(1, min(threads or (os.cpu_count() or 1), len(paths) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        why = list(pool.map(probe, paths))
    return ([p for p, w in zip(paths, why) if w is None],
            [(p, w) for p, w in zip(paths, why) if w is not None])


def load_inputs(
    paths: Sequence[str],
    signature: Signature,
    *,
    segmenter: Any = None,
    batch_size: int = 16,
    progress: Any = True,
    threads: int = 0,
    use_cache: bool = True,
    log: Callable[[str], None] | None = None,
    stats: dict[str, int] | None = None,
    requires: Sequence[str] | None = None,
) -> tuple[Inputs, list[tuple[str, str]]]:
    """What ``signature`` needs of the images ``paths``: ``(inputs of the readable ones,
    [(path, reason) of the unreadable ones])``. ``progress``: a bool, or an open tqdm bar
    that segmentation advances per image. ``stats["cached"]`` (when given) is increased by
    the number of label maps that came from the cache. ``requires``: what to compute
    (default ``signature.requires``; :attr:`~semcbir_fast.signatures.Signature.fit_requires`
    for a training set). Call it and the signature's ``fit`` / ``encode`` inside one
    :func:`decode_pass` (as :func:`build_index` and :class:`Retriever` do) so that every
    reader of a file shares one decode."""
    need = tuple(signature.requires if requires is None else requires)
    labels: list[np.ndarray] = []
    ok = list(paths)
    failed: list[tuple[str, str]] = []
    if "labels" in need:
        if segmenter is None:
            raise ValueError(f"signature {signature.name} needs label maps: pass a segmenter")
        from .eval.cache import segment_paths

        ok, labels, failed, hits = segment_paths(paths, segmenter, use_cache=use_cache,
                                                 batch_size=batch_size, progress=progress,
                                                 log=log)
        if stats is not None:
            stats["cached"] = stats.get("cached", 0) + hits
    elif "images" in need:
        # the signature reads the files itself (inputs.paths): drop the unreadable ones here,
        # as segmentation does for the others
        ok, failed = _readable(ok, threads)
    feats = None
    if "features" in need and ok:
        feats = _features(ok, signature.feature_method, threads=threads,
                          progress=progress is True, use_cache=use_cache, log=log)
    elif "features" in need:
        feats = []
    return Inputs(labels, feats, ok), failed


@dataclass
class BuildResult:
    """What :func:`build_index` did: the index, the keys added and the files skipped."""

    index: Any
    added: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped_known: int = 0
    #: label maps of how many added images came from the per-image cache
    cached: int = 0


def build_index(
    paths: Sequence[str | os.PathLike[str]],
    signature: Signature | None = None,
    *,
    segmenter: Any = None,
    append_to: Any = None,
    fit_paths: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    threads: int = 0,
    use_cache: bool = True,
    chunk_size: int = 256,
    checkpoint: Callable[[Any], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> BuildResult:
    """Segment (and describe) the images ``paths``, encode them with ``signature`` and add
    them to a new index, or to ``append_to`` (then its signature is used and images whose
    key is already in it are skipped). Keys are absolute paths (:func:`image_key`).

    ``fit_paths``: images to fit the signature's learned state on when it is not fitted
    (default: the indexed images; then all of them are described first). Images are
    processed in chunks of ``chunk_size``; after each chunk ``checkpoint(index)`` is called
    (the CLI saves the index there, so that an interrupted run loses at most one chunk and
    a rerun with ``append_to`` continues). Unreadable images are skipped and returned in
    ``failed``. The index is not saved here.
    """
    keys = list(dict.fromkeys(image_key(p) for p in paths))
    if append_to is not None:
        sig = append_to.signature
        have = set(append_to.keys()) if append_to.has_keys and len(append_to) else set()
        todo = [k for k in keys if k not in have]
    else:
        if signature is None:
            raise ValueError("build_index needs a signature (or append_to=an index)")
        sig, todo = signature, keys
    out = BuildResult(append_to, skipped_known=len(keys) - len(todo))
    if not todo:
        return out
    step = len(todo) if not sig.fitted else max(1, int(chunk_size))
    bar: Any = None
    if progress and len(todo) > 1 and "labels" in sig.requires:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc=f"index ({sig.name})", smoothing=0.1)
    try:
        out = _build_chunks(todo, step, sig, out, segmenter=segmenter, fit_paths=fit_paths,
                            metadata=metadata, batch_size=batch_size,
                            progress=bar if bar is not None else progress, threads=threads,
                            use_cache=use_cache, checkpoint=checkpoint, log=log)
    finally:
        if bar is not None:
            bar.close()
    return out


def _build_chunks(todo: list[str], step: int, sig: Signature, out: BuildResult, *,
                  segmenter: Any, fit_paths: Sequence[str] | None,
                  metadata: dict[str, Any] | None, batch_size: int, progress: Any,
                  threads: int, use_cache: bool, checkpoint: Callable[[Any], None] | None,
                  log: Callable[[str], None] | None) -> BuildResult:
    """The loop of :func:`build_index` (``progress``: a bool or one bar for the job)."""
    need = (*sig.requires, *(() if sig.fitted else sig.fit_requires))
    for s in range(0, len(todo), step):
        with decode_pass(need):  # one decode per file for all the work on the chunk
            done = _build_chunk(todo[s:s + step], sig, out, segmenter=segmenter,
                                fit_paths=fit_paths, metadata=metadata,
                                batch_size=batch_size, progress=progress, threads=threads,
                                use_cache=use_cache, log=log)
        if done and checkpoint is not None and s + step < len(todo):
            checkpoint(out.index)
    return out


def _build_chunk(chunk: list[str], sig: Signature, out: BuildResult, *, segmenter: Any,
                 fit_paths: Sequence[str] | None, metadata: dict[str, Any] | None,
                 batch_size: int, progress: Any, threads: int, use_cache: bool,
                 log: Callable[[str], None] | None) -> bool:
    """Describe, (fit,) encode and add one chunk to ``out``; False when none was readable."""
    stats: dict[str, int] = {}
    inputs, failed = load_inputs(chunk, sig, segmenter=segmenter, batch_size=batch_size,
                                 progress=progress, threads=threads, use_cache=use_cache,
                                 log=log, stats=stats)
    out.failed += failed
    out.cached += stats.get("cached", 0)
    if not len(inputs.paths or []):
        return False
    if not sig.fitted:
        train = inputs
        if fit_paths is not None:
            # whatever the signature needs of its training images (label maps, local
            # features, the readable files), as for the indexed ones
            fit = list(dict.fromkeys(image_key(p) for p in fit_paths))
            train, fit_failed = load_inputs(
                fit, sig, segmenter=segmenter, batch_size=batch_size,
                progress=progress is True, threads=threads, use_cache=use_cache, log=log,
                requires=sig.fit_requires)
            if fit_failed and log:
                log(f"{len(fit_failed)} of the {len(fit)} training images could not be "
                    "read and are left out of the fit")
        if log:
            log(f"fitting the {sig.name} state on {len(train)} images ...")
        sig.fit(train, threads=threads)
    if out.index is None:
        out.index = sig.new_index(metadata=metadata)
    out.index.add(sig.encode(inputs, threads=threads), keys=list(inputs.paths or []))
    out.added += list(inputs.paths or [])
    return True


@dataclass
class QueryResult:
    """Results of :meth:`Retriever.query`: ``(nq, k)`` distances, ids and penalised flags
    (the histogram filter; all False for unfiltered signatures), the keys of the hits, where
    each query's signature came from (``"index"`` or ``"segmented"``) and the label maps of
    the segmented queries (by key)."""

    distances: np.ndarray
    ids: np.ndarray
    penalised: np.ndarray
    keys: list[list[str | None]]
    source: list[str]
    label_maps: dict[str, np.ndarray] = field(default_factory=dict)


class Retriever:
    """Queries an index by example images, encoding them like the database.

    A query image whose key (absolute path) is in the index is looked up, not segmented
    again (unless ``resegment``); the others are segmented with ``segmenter`` (a Segmenter,
    or a callable returning one, called only when needed). ``root``: the folder the indexed
    images are in now, when they moved since indexing (:class:`Reroot`; hit keys and the
    lookup of query images use the new paths).
    """

    def __init__(self, index: Any, segmenter: Any = None, *, batch_size: int = 16,
                 threads: int = 0, use_cache: bool = True,
                 root: str | os.PathLike[str] | None = None) -> None:
        self.index = index
        #: key -> where the image is now (:class:`Reroot` when ``root`` is given)
        self.locate: Callable[[str | None], str | None] = (
            Reroot(index, root) if root is not None and index.has_keys and len(index)
            else (lambda key: key))
        self._segmenter = segmenter
        self.batch_size = batch_size
        self.threads = threads
        self.use_cache = use_cache

    @property
    def segmenter(self) -> Any:
        if callable(self._segmenter) and not hasattr(self._segmenter, "segment"):
            self._segmenter = self._segmenter()
        return self._segmenter

    def encode(self, images: Sequence[str], *, keep_labels: bool = False
               ) -> tuple[Any, dict[str, np.ndarray]]:
        """Signatures of image files with the index's signature (``ValueError`` for an
        unreadable one) and, with ``keep_labels``, their label maps by key."""
        sig = self.index.signature
        keys = [image_key(p) for p in images]
        seg = self.segmenter if "labels" in sig.requires else None  # loaded only if needed
        with decode_pass(sig.requires):  # one decode per query file for all its readers
            inputs, failed = load_inputs(keys, sig, segmenter=seg,
                                         batch_size=self.batch_size, progress=False,
                                         threads=self.threads, use_cache=self.use_cache)
            if failed:
                src, reason = failed[0]
                raise ValueError(f"cannot read query image {src}: {reason}")
            labels = dict(zip(inputs.paths or [], inputs.label_maps)) if keep_labels else {}
            return sig.encode(inputs, threads=self.threads), labels

    def query(self, images: Sequence[str | os.PathLike[str]], k: int = 10, *,
              resegment: bool = False, keep_labels: bool = False) -> QueryResult:
        """The ``k`` best indexed images of each query image."""
        index = self.index
        keys = [image_key(p) for p in images]
        known: dict[str, int] = {}
        if index.has_keys and not resegment and not keep_labels:
            wanted = set(keys)
            for i, key in zip(index.ids().tolist(), index.keys()):
                key = self.locate(key)
                if key in wanted:
                    known[key] = i
        todo = list(dict.fromkeys(key for key in keys if key not in known))
        nq = len(keys)
        parts: list[tuple[list[int], Any]] = []
        labels: dict[str, np.ndarray] = {}
        if known:
            rows = [j for j, key in enumerate(keys) if key in known]
            parts.append((rows, index.reconstruct_batch([known[keys[j]] for j in rows])))
        if todo:
            enc, labels = self.encode(todo, keep_labels=keep_labels)
            pos = {key: i for i, key in enumerate(todo)}
            rows = [j for j, key in enumerate(keys) if key not in known]
            parts.append((rows, enc[np.array([pos[keys[j]] for j in rows])]))
        dist = ids = pen = None
        for rows, batch in parts:
            d, i, p = index.search(batch, k, threads=self.threads, return_penalised=True)
            if dist is None:
                dist = np.empty((nq, d.shape[1]), d.dtype)
                ids = np.empty((nq, d.shape[1]), np.int64)
                pen = np.zeros((nq, d.shape[1]), bool)
            dist[rows], ids[rows], pen[rows] = d, i, p
        assert dist is not None and ids is not None and pen is not None
        hit_keys = [[self.locate(key) for key in index.keys_of(r)] if index.has_keys
                    else [None] * ids.shape[1] for r in ids]
        source = ["index" if key in known else "segmented" for key in keys]
        return QueryResult(dist, ids, pen, hit_keys, source, labels)
