"""Exact search over a sharded index: :class:`ShardedIndex` fans a query batch out to its
shards (in threads, or in Ray actors that memory-map them) and merges the per-shard top-k.

Why the merge is exact
----------------------
Every index of the library orders its results by one total order: ``(penalised, distance,
id)`` (``penalised`` is paper 001's histogram filter, always False for the other kinds; SBS
and dense results are ``(distance, id)``), with the padding of ``k > count`` (id -1) last.
Shard ``j`` holds the global ids ``[id_start, id_stop)`` as local ids ``0 .. count - 1``
in the same order, so adding ``id_start`` keeps its order. The global top-k under a total
order lies inside the union of the shards' top-k lists; sorting that union by the same key
(:func:`merge_topk`) and keeping ``k`` gives exactly what one index holding every image
returns: the same ids, the same distances (each distance depends only on the query and the
item), the same ties. Merging is associative, so a Ray actor first merges its own shards.

One refinement keeps this exact for float distances: an index may rank by a value finer
than the float32 distance it reports (the sparse L2 search orders by its internal squared
distance, then reports ``sqrt`` in float32), so two items of *different* shards may report
the same distance while one index would order them by the finer value, not by id. Where
such a cross-shard tie reaches into a query's first ``k``, the candidates of the queries
concerned (the union of their shards' lists, which holds their exact top-k) are
re-searched with the kind's own index, built from those rows in id order
(:meth:`ShardedIndex.search`): the same per-pair values and the same tie rule as one index
holding every image. Integer distances (``signature.integer_distances``: Hamming) are the
ranking value itself and never need it.

Kinds whose ranking of an item depends on the rest of the database (the ``fused``
signature: distance statistics and k-reciprocal re-ranking over the whole database;
``regions`` with re-ranking of a global head) cannot be merged from per-shard lists. For
them the shards are gathered, in the order of the manifest, into one in-memory index on
the caller's process on the first search (exact, but not sharded: the whole collection in
one process's memory; see docs/distributed.md). :attr:`ShardedIndex.mergeable` says which
case applies.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import Manifest, load_shard, manifest_path, read_manifest

__all__ = ["BACKENDS", "ShardedIndex", "is_mergeable", "merge_topk"]

#: Where the shards are searched.
BACKENDS = ("threads", "ray")


def is_mergeable(signature: Any) -> bool:
    """Whether per-shard top-k lists of ``signature`` merge into the exact global top-k
    (each item ranked by its own distance to the query, independently of the others).

    A signature says so itself with a ``shardable`` attribute. Without one: signatures
    ranked by their index class (SBS, sparse local signatures) and dense signatures that
    keep the plain vector top-k of :class:`~semcbir_fast.signatures.DenseSignature` are
    mergeable; one that overrides ``search_index`` may look at the whole database and is
    taken as not mergeable.
    """
    flag = getattr(signature, "shardable", None)
    if flag is not None:
        return bool(flag)
    own = getattr(type(signature), "search_index", None)
    if own is None:
        return True
    from ..signatures.cnn import DenseSignature

    return own is DenseSignature.search_index


def _pad_value(dtype: np.dtype) -> Any:
    return np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else np.inf


def _sorted_union(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lists side by side, each row sorted by ``(padding, penalised, distance, id)``."""
    if not parts:
        raise ValueError("merge_topk needs at least one list")
    d = np.concatenate([np.asarray(p[0]) for p in parts], axis=1)
    i = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts], axis=1)
    p = np.concatenate([np.asarray(p[2], dtype=bool) for p in parts], axis=1)
    pad = i < 0
    # np.lexsort: the last key is the primary one
    order = np.lexsort((np.where(pad, np.iinfo(np.int64).max, i), d, p & ~pad, pad), axis=1)
    return (np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1),
            np.take_along_axis(p, order, 1))


def cross_shard_ties(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int,
                     starts: np.ndarray) -> np.ndarray:
    """Boolean ``(nq,)``: queries whose merged lists hold equal ``(penalised, distance)``
    of items of different shards (``starts``: the shards' first global ids, ascending) in a
    run of equal values that begins inside the first ``k``."""
    d, i, p = _sorted_union(parts)
    nq, n = i.shape
    if n < 2:
        return np.zeros(nq, dtype=bool)
    real = i >= 0
    shard = np.searchsorted(starts, np.where(real, i, 0), side="right")
    same = (d[:, 1:] == d[:, :-1]) & (p[:, 1:] == p[:, :-1]) & real[:, 1:] & real[:, :-1]
    # first position of the run of equal values each position belongs to
    begins = np.concatenate([np.ones((nq, 1), bool), ~same], axis=1)
    first = np.maximum.accumulate(np.where(begins, np.arange(n), 0), axis=1)
    cross = same & (shard[:, 1:] != shard[:, :-1]) & (first[:, 1:] < k)
    return cross.any(axis=1)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge top-k lists ``[(distances, ids, penalised)]`` (each ``(nq, k_j)``, ids global,
    -1 for padding) into the first ``k`` by ``(padding, penalised, distance, id)``: the
    library's tie rule. Returns ``(distances, ids, penalised)`` ``(nq, k)`` (padding: id -1,
    the distance dtype's maximum or +inf)."""
    d, i, p = _sorted_union(parts)
    nq, have = i.shape
    od, oi, op = d[:, :k], i[:, :k], p[:, :k] & (i[:, :k] >= 0)
    od, oi, op = od.copy(), oi.copy(), op.copy()
    if have < k:
        fill = _pad_value(d.dtype)
        od = np.concatenate([od, np.full((nq, k - have), fill, d.dtype)], axis=1)
        oi = np.concatenate([oi, np.full((nq, k - have), -1, np.int64)], axis=1)
        op = np.concatenate([op, np.zeros((nq, k - have), bool)], axis=1)
    od[oi < 0] = _pad_value(d.dtype)
    return np.ascontiguousarray(od), np.ascontiguousarray(oi), np.ascontiguousarray(op)


class ShardGroup:
    """Some shards of a manifest, loaded (memory-mapped) and checked against it; the body of
    a search actor, and of each thread of the ``threads`` backend."""

    def __init__(self, manifest: str | os.PathLike[str], shards: Sequence[int], *,
                 mmap: bool = True, verify: bool = True) -> None:
        m = read_manifest(manifest, check_files=False)
        self.entries = [m.shards[j] for j in shards]
        self.indexes = [load_shard(m, m.shards[j], mmap=mmap, verify=verify) for j in shards]

    def count(self) -> int:
        return sum(e.count for e in self.entries)

    def search(self, queries: Any, k: int, threads: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The merged top-k of this group's shards, in global ids."""
        parts = []
        for e, idx in zip(self.entries, self.indexes):
            d, i, p = idx.search(queries, k, threads=threads, return_penalised=True)
            parts.append((d, np.where(i >= 0, i + e.id_start, -1), p))
        return merge_topk(parts, k)

    def keys_of(self, ids: np.ndarray) -> dict[int, str | None]:
        """Keys of the global ids that fall in this group."""
        out: dict[int, str | None] = {}
        for e, idx in zip(self.entries, self.indexes):
            mine = [int(g) for g in ids if e.id_start <= g < e.id_stop]
            if mine and idx.has_keys:
                for g, key in zip(mine, idx.keys_of(np.array(mine) - e.id_start)):
                    out[g] = key
        return out

    def keys(self) -> list[str]:
        return [key for idx in self.indexes for key in idx.keys()]  # noqa: SIM118 - index keys, not a dict

    def rows(self, ids: np.ndarray) -> list[tuple[int, Any]]:
        """``[(shard's first id, stored rows of the sorted global ids in it)]``."""
        out = []
        for e, idx in zip(self.entries, self.indexes):
            mine = ids[(ids >= e.id_start) & (ids < e.id_stop)]
            if mine.size:
                out.append((e.id_start, idx.reconstruct_batch(mine - e.id_start)))
        return out

    def batches(self) -> list[tuple[Any, list[str] | None]]:
        """Every row of every shard (``reconstruct_batch``) with its keys, shard by shard."""
        return [(idx.reconstruct_batch(idx.ids()), idx.keys() if idx.has_keys else None)
                for e, idx in zip(self.entries, self.indexes) if e.count]


def _balanced(m: Manifest, groups: int) -> list[list[int]]:
    """Shards split into ``groups`` lists of about equal image counts (largest first)."""
    order = sorted(range(len(m.shards)), key=lambda j: -m.shards[j].count)
    out: list[list[int]] = [[] for _ in range(groups)]
    load = [0] * groups
    for j in order:
        g = int(np.argmin(load))
        out[g].append(j)
        load[g] += m.shards[j].count
    return [sorted(g) for g in out if g]


class ShardedIndex:
    """A sharded index opened from its manifest (folder or ``manifest.json``).

    Parameters
    ----------
    path
        The sharded index's folder or its manifest.
    backend : {"threads", "ray"}
        ``"threads"``: the shards are memory-mapped in this process and searched in a thread
        pool (no Ray needed). ``"ray"``: ``workers`` Ray actors each memory-map a balanced
        share of the shards (the folder must be visible to every node at the same path).
    workers
        Threads or actors (default: one per shard, at most the CPUs of this machine /
        of the cluster).
    num_cpus
        CPUs reserved per actor (``"ray"``); each actor's searches use that many threads.
    mmap, verify
        As for :func:`~semcbir_fast.index.load_index` (``verify`` checks every shard's
        checksum once, when it is opened).

    Every shard is checked against the manifest when it is opened (missing, replaced,
    corrupted, of another signature or count: :class:`~semcbir_fast.distributed.ManifestError`).
    Results are those of one index holding every image (see the module docstring).
    """

    def __init__(self, path: str | os.PathLike[str], *, backend: str = "threads",
                 workers: int | None = None, num_cpus: float = 1, mmap: bool = True,
                 verify: bool = True) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.manifest = read_manifest(path)  # every shard file present and the one named
        self.path = manifest_path(path)
        self.backend = backend
        self.metadata: dict[str, Any] = dict(self.manifest.metadata)
        m = self.manifest
        if not m.shards:
            raise ValueError(f"{self.path}: the manifest names no shards")
        first = next((j for j, s in enumerate(m.shards) if s.count), 0)
        probe = load_shard(m, m.shards[first], mmap=True, verify=False)
        self._signature = probe.signature
        self._has_keys = bool(probe.has_keys)
        self.mergeable = is_mergeable(self._signature)
        self._gathered: Any = None
        self._actors: list[Any] = []
        self._groups: list[ShardGroup] = []
        self._pool: ThreadPoolExecutor | None = None
        n = len(m.shards)
        if backend == "threads":
            w = max(1, min(workers or (os.cpu_count() or 1), n))
            self._groups = [ShardGroup(self.path, [j], mmap=mmap, verify=verify)
                            for j in range(n)]
            self._pool = ThreadPoolExecutor(max_workers=w, thread_name_prefix="semcbir-shard")
            self.workers = w
        else:
            import ray

            if not ray.is_initialized():
                raise RuntimeError("backend='ray' needs a connected Ray cluster: call "
                                   "ray.init(address=...) first")
            cpus = int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-9))
            w = max(1, min(workers or cpus, n))
            actor = ray.remote(num_cpus=num_cpus)(ShardGroup)
            self._threads = max(1, int(num_cpus))
            self._actors = [actor.remote(str(self.path), g, mmap=mmap, verify=verify)
                            for g in _balanced(m, w)]
            ray.get([a.count.remote() for a in self._actors])  # load errors surface here
            self.workers = len(self._actors)

    # ------------------------------------------------------------------ the Index interface
    @property
    def signature(self) -> Any:
        """The signature that encodes queries like the database (from the first shard)."""
        return self._signature

    @property
    def has_keys(self) -> bool:
        return self._has_keys

    @property
    def num_shards(self) -> int:
        return len(self.manifest.shards)

    def __len__(self) -> int:
        return self.manifest.count

    def __repr__(self) -> str:
        return (f"ShardedIndex({len(self)} images in {self.num_shards} shards, "
                f"{self.backend} x {self.workers}: {self.describe()})")

    def ids(self) -> np.ndarray:
        """All global ids (``0 .. count - 1``)."""
        return np.arange(len(self), dtype=np.int64)

    def keys(self) -> list[str]:
        """Every key in id order (gathered from the shards)."""
        if not self._has_keys:
            raise ValueError("this index has no keys")
        if self._groups:
            return [k for g in self._groups for k in g.keys()]  # noqa: SIM118
        import ray

        return [k for part in ray.get([a.keys.remote() for a in self._actors]) for k in part]

    def keys_of(self, ids: Any) -> list[str | None]:
        """Keys of global ids (a row of results); None for the -1 padding."""
        if not self._has_keys:
            raise ValueError("this index has no keys")
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        found: dict[int, str | None] = {}
        if self._groups:
            for g in self._groups:
                found.update(g.keys_of(arr))
        else:
            import ray

            for part in ray.get([a.keys_of.remote(arr) for a in self._actors]):
                found.update(part)
        return [found.get(int(i)) for i in arr.tolist()]

    def describe(self) -> str:
        return self._signature.describe()

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {"count": len(self), "shards": self.num_shards, "backend": self.backend,
                "workers": self.workers, "mergeable": self.mergeable,
                "index_format": m.index_format, "failed": len(m.failed),
                "metadata": dict(self.metadata)}

    # ------------------------------------------------------------------ search
    def search(self, queries: Any, k: int, *, threads: int = 0,
               return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """The ``k`` best images per query over every shard: ``(distances, ids[,
        penalised])``, exactly as one index holding every image answers (same ids,
        distances, ties, padding for ``k > len(self)``).

        ``queries``: encoded with :attr:`signature` (what the shards' ``search`` takes).
        ``threads``: total threads of a ``"threads"`` search (0 = all cores), split between
        the shards searched at once; results never depend on it.
        """
        from .._convert import check_k

        k = check_k(k, 1)
        if not self.mergeable:
            d, i, p = self._gather().search(queries, k, threads=threads,
                                            return_penalised=True)
        elif self._groups:
            t = max(1, (threads or os.cpu_count() or 1) // self.workers)
            assert self._pool is not None
            parts = list(self._pool.map(lambda g: g.search(queries, k, t), self._groups))
            d, i, p = self._merge(parts, queries, k, threads)
        else:
            import ray

            q = ray.put(queries)
            parts = ray.get([a.search.remote(q, k, self._threads) for a in self._actors])
            d, i, p = self._merge(parts, queries, k, threads)
        return (d, i, p) if return_penalised else (d, i)

    def _merge(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], queries: Any,
               k: int, threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`merge_topk`, with the queries that hold cross-shard float ties re-searched
        in an index of their candidates (see the module docstring)."""
        d, i, p = merge_topk(parts, k)
        if getattr(self._signature, "integer_distances", False) or len(parts) < 2:
            return d, i, p
        starts = np.array([s.id_start for s in self.manifest.shards], dtype=np.int64)
        redo = cross_shard_ties(parts, k, starts)
        if not redo.any():
            return d, i, p
        cand = np.unique(np.concatenate([np.asarray(x[1])[redo].reshape(-1) for x in parts]))
        cand = cand[cand >= 0]
        if self._groups:
            found = [r for g in self._groups for r in g.rows(cand)]
        else:
            import ray

            found = [r for part in ray.get([a.rows.remote(cand) for a in self._actors])
                     for r in part]
        mini = self._signature.new_index()
        for _, batch in sorted(found, key=lambda r: r[0]):  # shard order = id order
            mini.add(batch)
        md, mi, mp = mini.search(queries, k, threads=threads, return_penalised=True)
        d[redo] = md[redo]
        p[redo] = mp[redo]
        i[redo] = np.where(mi[redo] >= 0, cand[np.maximum(mi[redo], 0)], -1)
        return d, i, p

    def _gather(self) -> Any:
        """One in-memory index of every shard, in manifest order (non-mergeable kinds)."""
        if self._gathered is None:
            index = self._signature.new_index(metadata=dict(self.metadata))
            if self._groups:
                parts = [b for g in self._groups for b in g.batches()]
            else:
                import ray

                parts = [b for part in ray.get([a.batches.remote() for a in self._actors])
                         for b in part]
                # actors hold balanced groups: put the shards back in id order
            parts = self._in_order(parts)
            for batch, keys in parts:
                index.add(batch, keys=keys)
            self._gathered = index
        return self._gathered

    def _in_order(self, parts: list[tuple[Any, list[str] | None]]
                  ) -> list[tuple[Any, list[str] | None]]:
        if self._groups:
            return parts
        order = [j for g in _balanced(self.manifest, len(self._actors)) for j in g
                 if self.manifest.shards[j].count]
        pos = {j: n for n, j in enumerate(order)}
        nonempty = [j for j, s in enumerate(self.manifest.shards) if s.count]
        return [parts[pos[j]] for j in nonempty]

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the actors / threads (the shards' memory maps close with them)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._actors:
            import ray

            for a in self._actors:
                ray.kill(a)
            self._actors = []
        self._groups = []

    def __enter__(self) -> ShardedIndex:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sharded(path: str | os.PathLike[str], **kw: Any) -> ShardedIndex:
    """:class:`ShardedIndex` of ``path`` (a folder or manifest)."""
    return ShardedIndex(Path(path), **kw)
