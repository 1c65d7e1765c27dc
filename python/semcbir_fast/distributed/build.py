"""Distributed index building on Ray: images -> shards (normal index files) + a manifest.

>>> from semcbir_fast.distributed import SegmenterSpec, build_sharded    # doctest: +SKIP
>>> sig = create_signature("sbs", num_classes=151, levels=2)              # doctest: +SKIP
>>> rep = build_sharded(["s3://bucket/photos"], sig, "/shared/photos.shards",
...                     segmenter=SegmenterSpec("ade20k-mnv2"), shard_size=50_000)  # doctest: +SKIP

How it runs
-----------
1. The driver lists the images (:func:`~semcbir_fast.distributed.sources.discover_images`),
   splits them, in order, into shards of ``shard_size`` images and gives each shard a
   *plan digest* (its keys, the signature's kind and settings, the model). A signature with
   learned state that is not fitted yet (SBoVP's vocabulary, a PCA) is fitted once, on the
   driver, on ``fit_paths`` or on ``fit_sample`` evenly spaced images (all of them when
   there are fewer: then the state is the one ``build_index`` fits), and shipped fitted to
   every worker: every shard encodes with the same state.
2. Shards whose file already exists, loads (checksum), carries the same plan digest and the
   same signature header are complete and skipped: a rerun after a crash, a killed worker
   or Ctrl-C builds only the rest.
3. The others go through a Ray Data pipeline: ``from_items`` (one row per shard) ->
   ``map_batches`` over an actor pool (``workers`` actors, ``num_gpus`` / ``num_cpus``
   each). An actor loads the segmenter once and, per shard, does exactly what
   :func:`~semcbir_fast.pipeline.build_index` does per chunk (``load_inputs``: decode,
   segment, local features; ``signature.encode``; ``index.add``), then saves the shard with
   the index's own atomic save (temporary file, fsync, rename). A killed actor leaves no
   shard file or a complete one, never a partial one.
4. When every shard is complete the driver writes the manifest, last and atomically.

Byte-identical to a single-process build: the images are numbered in the same order, the
same functions encode them, and every failure (unreadable or unfetchable file) is recorded
in the shard and in the manifest's ``failed`` list.

Where shards live: ``output`` must be a folder every worker and the driver see at the same
path (a local disk for a one-machine cluster; NFS, Lustre, a FUSE-mounted bucket on a real
cluster). Shards are memory-mapped by the search, so they need a POSIX file system.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..segment.registry import DEFAULT_SEGMENTER
from .manifest import (
    Manifest,
    ShardEntry,
    shard_digest,
    write_manifest,
)
from .sources import discover_images, fetch, is_uri

__all__ = ["BuildReport", "SegmenterSpec", "build_sharded", "plan_shards", "shard_index",
           "shard_name", "write_shard"]

_PLAN_VERSION = 1


@dataclass(frozen=True)
class SegmenterSpec:
    """How a worker loads its segmenter (:func:`semcbir_fast.segment.load_segmenter`'s
    arguments): picklable, loaded once per actor, on the actor's GPU when it has one.

    ``torch_threads``: torch's intra-op threads in the actor (``torch.set_num_threads``).
    Ray starts a worker with ``OMP_NUM_THREADS`` = its CPUs, and the label maps of the
    CPU path change in a few hundred pixels per image with torch's thread count (measured
    on ade20k-mnv2, docs/distributed.md): give the thread count of the run to match
    (``torch.get_num_threads()`` there) for label maps identical to it; None keeps Ray's.
    """

    model: str = DEFAULT_SEGMENTER
    device: str | None = None
    dtype: str | None = None
    runtime: str | None = None
    threads: int | None = None
    torch_threads: int | None = None

    def __call__(self) -> Any:
        from ..segment import load_segmenter

        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(int(self.torch_threads))
        return load_segmenter(self.model, device=self.device, dtype=self.dtype,
                              runtime=self.runtime, threads=self.threads)

    @property
    def identity(self) -> str:
        """What decides the label maps (part of each shard's plan digest)."""
        return self.model


def shard_name(j: int) -> str:
    """File name of shard ``j`` inside the output folder."""
    return f"shard-{j:05d}.idx"


def _settings(sig: Any) -> dict[str, Any]:
    """What decides a signature's encoding apart from learned state (plan digest)."""
    return {"signature": sig.name, "params": sig.params_dict(), "num_classes": sig.num_classes,
            "ignore_index": sig.ignore_index}


def _digest(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def plan_shards(keys: Sequence[str], shard_size: int, sig: Any, model: str | None
                ) -> list[tuple[list[str], str]]:
    """``[(keys of shard j, plan digest of shard j)]``: consecutive runs of ``shard_size``
    keys; the digest covers the keys, the signature's settings and the model."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    base = {"v": _PLAN_VERSION, **_settings(sig), "model": model}
    out = []
    for j, s in enumerate(range(0, len(keys), shard_size)):
        part = list(keys[s:s + shard_size])
        out.append((part, _digest({**base, "shard": j, "keys": part})))
    return out


@dataclass
class _Job:
    """What every worker needs (pickled once into the actors' constructor)."""

    signature: Any
    segmenter: Any  # SegmenterSpec, a picklable callable returning a Segmenter, or None
    output: str
    batch_size: int = 16
    chunk_size: int = 256
    threads: int = 1
    use_cache: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)


def _model_id(segmenter: Any) -> str | None:
    if segmenter is None:
        return None
    ident = getattr(segmenter, "identity", None)
    if isinstance(ident, str):
        return ident
    meta = getattr(segmenter, "meta", None)
    return getattr(meta, "name", None) or repr(segmenter)


def _summary(j: int, path: Path, count: int, inputs: int, failed: list[tuple[str, str]],
             seconds: float, built: bool) -> dict[str, Any]:
    size, digest = shard_digest(path)
    return {"shard": j, "file": path.name, "count": count, "inputs": inputs, "nbytes": size,
            "digest": digest, "failed": json.dumps([list(f) for f in failed]),
            "seconds": seconds, "built": built}


def write_shard(job: _Job, j: int, keys: Sequence[str], plan: str, segmenter: Any = None
                ) -> dict[str, Any]:
    """Build and save shard ``j`` (what each actor runs; usable without Ray): the same steps
    as :func:`~semcbir_fast.pipeline.build_index` per chunk, then one atomic save. Returns
    the shard's summary row (count, size, digest, failures as JSON, seconds)."""
    from ..pipeline import decode_pass, load_inputs

    t0 = time.perf_counter()
    sig = job.signature
    sig.require_fitted()
    keys = list(keys)
    meta = dict(job.metadata)
    index = sig.new_index(metadata=meta)
    failed: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="semcbir-fetch-") as scratch:
        step = max(1, int(job.chunk_size))
        for s in range(0, len(keys), step):
            local, key_of, lost = fetch(keys[s:s + step], scratch)
            failed += lost
            if not local:
                continue
            with decode_pass(sig.requires):  # one decode per file, as build_index does
                inputs, bad = load_inputs(local, sig, segmenter=segmenter,
                                          batch_size=job.batch_size, progress=False,
                                          threads=job.threads, use_cache=job.use_cache)
                failed += [(key_of.get(p, p), why) for p, why in bad]
                ok = list(inputs.paths or [])
                if ok:
                    index.add(sig.encode(inputs, threads=job.threads),
                              keys=[key_of.get(p, p) for p in ok])
            for p in local:  # a fetched copy is not needed once encoded
                if is_uri(key_of[p]):
                    Path(p).unlink(missing_ok=True)
    index.metadata["shard"] = {"index": j, "plan": plan, "inputs": len(keys),
                               "failed": [list(f) for f in failed]}
    path = Path(job.output) / shard_name(j)
    index.save(path)
    return _summary(j, path, len(index), len(keys), failed, time.perf_counter() - t0, True)


class _ShardWriter:
    """Ray Data callable class: one per actor; segmenter loaded once; one shard per row."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.segmenter = None
        if job.segmenter is not None and "labels" in getattr(job.signature, "requires", ()):
            self.segmenter = job.segmenter()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows: list[dict[str, Any]] = []
        for j, keys, plan in zip(batch["shard"], batch["keys"], batch["plan"]):
            rows.append(write_shard(self.job, int(j), [str(k) for k in keys], str(plan),
                                    self.segmenter))
        return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


def _existing(path: Path, j: int, plan: str, header: Any, verify: bool) -> dict[str, Any] | None:
    """The summary of shard ``j`` when its file is complete for ``plan`` (same signature
    header), else None (missing, corrupted, of another plan: it is rebuilt)."""
    from ..index import IndexFormatError, load_index
    from .manifest import _plain

    if not path.is_file():
        return None
    try:
        idx = load_index(path, mmap=True, verify=verify)
    except (IndexFormatError, OSError):
        return None
    info = idx.metadata.get("shard") if isinstance(idx.metadata, dict) else None
    if not isinstance(info, dict) or info.get("plan") != plan or info.get("index") != j:
        return None
    if _plain(idx.signature.to_header()) != _plain(header):
        return None
    failed = [tuple(f) for f in info.get("failed") or []]
    return _summary(j, path, len(idx), int(info.get("inputs", 0)), failed, 0.0, False)


def _adopt_state(sig: Any, output: Path, plans: list[tuple[list[str], str]]) -> Any:
    """A fitted signature from a complete shard of an earlier run of the same plan (so that a
    rerun encodes with the state the first run fitted), or None."""
    from ..index import IndexFormatError, load_index

    for j, (_, plan) in enumerate(plans):
        path = output / shard_name(j)
        if not path.is_file():
            continue
        try:
            idx = load_index(path, mmap=True)
        except (IndexFormatError, OSError):
            continue
        info = idx.metadata.get("shard") if isinstance(idx.metadata, dict) else None
        if isinstance(info, dict) and info.get("plan") == plan \
                and _settings(idx.signature) == _settings(sig) and idx.signature.fitted:
            return idx.signature
    return None


def _fit(sig: Any, keys: list[str], segmenter: Any, fit_paths: Sequence[str] | None,
         fit_sample: int, batch_size: int, threads: int, use_cache: bool,
         log: Callable[[str], None] | None) -> None:
    """Fit the signature's learned state on the driver (see the module docstring)."""
    from ..pipeline import image_key, load_inputs
    from ..signatures import Inputs

    if fit_paths is not None:
        fit = [image_key(p) for p in fit_paths]
        feats = None
        if sig.feature_method:
            from ..eval.cache import features_cached

            feats = features_cached(fit, sig.feature_method, threads=threads, progress=False,
                                    use_cache=use_cache)
        train = Inputs([], feats, fit)  # what build_index fits on with fit_paths
    else:
        n = min(len(keys), max(1, int(fit_sample)))
        rows = np.unique(np.linspace(0, len(keys) - 1, n).round().astype(np.int64))
        sample = [keys[r] for r in rows.tolist()]
        if any(is_uri(k) for k in sample):
            raise ValueError("fitting the signature's state on remote images is not "
                             "supported: give fit_paths (local files) or a fitted signature")
        seg = segmenter() if (segmenter is not None and "labels" in sig.requires
                              and not hasattr(segmenter, "segment")) else segmenter
        train, _ = load_inputs(sample, sig, segmenter=seg, batch_size=batch_size,
                               progress=False, threads=threads, use_cache=use_cache)
    if log:
        log(f"fitting the {sig.name} state on {len(train)} images on the driver ...")
    sig.fit(train, threads=threads)


@dataclass
class BuildReport:
    """What :func:`build_sharded` did."""

    manifest: Manifest
    built: list[int]
    skipped: list[int]
    failed: list[tuple[str, str]]
    seconds: float
    images_built: int

    @property
    def path(self) -> Path:
        return self.manifest.path

    @property
    def images_per_second(self) -> float:
        """Images of the shards built in this run per second of wall time."""
        return self.images_built / self.seconds if self.seconds > 0 else 0.0


def _ray_ready(address: str | None, log: Callable[[str], None] | None) -> bool:
    """Connect to (or start) a Ray cluster; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if log:
        log(f"connecting to the Ray cluster {address}" if address else
            "starting a local Ray cluster")
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return True


def build_sharded(
    inputs: Sequence[str],
    signature: Any,
    output: str | os.PathLike[str],
    *,
    segmenter: Any = None,
    shard_size: int = 4096,
    workers: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    batch_size: int = 16,
    chunk_size: int = 256,
    use_cache: bool = True,
    fit_paths: Sequence[str] | None = None,
    fit_sample: int = 10_000,
    metadata: dict[str, Any] | None = None,
    address: str | None = None,
    verify: bool = True,
    progress: bool = True,
    discover: bool = True,
    log: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build a sharded index of the images ``inputs`` on a Ray cluster (see the module
    docstring) and return what was done; the manifest is ``<output>/manifest.json``.

    Parameters
    ----------
    inputs
        Folders, image files or URIs (``discover=True``: listed recursively), or the image
        keys themselves in their final order (``discover=False``).
    signature
        A :class:`~semcbir_fast.signatures.Signature`; fitted on the driver if needed.
    output
        The sharded index's folder (created; must be visible to every worker).
    segmenter
        A :class:`SegmenterSpec` or a picklable callable returning a segmenter (loaded once
        per actor); needed when the signature requires label maps.
    shard_size
        Images per shard (the unit of work, of resumption and of search parallelism).
    workers
        Actors in the pool (default: one per GPU when the cluster has GPUs, else one per
        ``num_cpus`` CPUs; at most one per shard to build).
    num_gpus, num_cpus
        Resources per actor (``num_gpus`` default: 1 when the cluster has GPUs, else 0).
    batch_size, chunk_size
        Images per model call; images per load / encode step inside a shard.
    fit_paths, fit_sample
        Training images of unfitted learned state (default: ``fit_sample`` evenly spaced
        indexed images).
    address
        Ray cluster address (``"auto"``, ``"ray://host:10001"``); None with no running
        cluster starts a local one.
    verify
        Check the full checksum of existing shards before skipping them.
    """
    import ray

    t0 = time.perf_counter()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output must be a folder for the shards and the manifest, got the "
                         f"file {out}")
    out.mkdir(parents=True, exist_ok=True)
    keys = discover_images(inputs) if discover else [os.fspath(k) for k in inputs]
    if not keys:
        raise ValueError(f"no images found under {' '.join(map(str, inputs))}")
    if "labels" in signature.requires and segmenter is None:
        raise ValueError(f"signature {signature.name} needs label maps: pass segmenter="
                         "SegmenterSpec(...)")
    plans = plan_shards(keys, shard_size, signature, _model_id(segmenter))
    sig = signature
    if not sig.fitted:
        sig = _adopt_state(sig, out, plans) or sig
    if not sig.fitted:
        _fit(sig, keys, segmenter, fit_paths, fit_sample, batch_size, 0, use_cache, log)
    header = sig.to_header()
    done: dict[int, dict[str, Any]] = {}
    for j, (_, plan) in enumerate(plans):
        row = _existing(out / shard_name(j), j, plan, header, verify)
        if row is not None:
            done[j] = row
    todo = [j for j in range(len(plans)) if j not in done]
    if log:
        log(f"{len(keys)} images in {len(plans)} shards of up to {shard_size}: "
            f"{len(done)} complete, {len(todo)} to build")
    index_format = _format_of(sig)
    images_built = 0
    if todo:
        started = _ray_ready(address, log)
        try:
            images_built = _run_pipeline(
                _Job(sig, segmenter, str(out.resolve()), batch_size, chunk_size,
                     max(1, int(num_cpus)), use_cache, dict(metadata or {})),
                [(j, plans[j][0], plans[j][1]) for j in todo], done, workers=workers,
                num_gpus=num_gpus, num_cpus=num_cpus, progress=progress)
        finally:
            if started:
                ray.shutdown()
    entries: list[ShardEntry] = []
    failed: list[tuple[str, str]] = []
    failed_doc: list[dict[str, Any]] = []
    start = 0
    for j in range(len(plans)):
        row = done[j]
        size, digest = shard_digest(out / row["file"])  # the driver sees what workers wrote
        entries.append(ShardEntry(row["file"], int(row["count"]), int(row["inputs"]), start,
                                  start + int(row["count"]), size, digest))
        start += int(row["count"])
        for key, reason in json.loads(row["failed"]):
            failed.append((key, reason))
            failed_doc.append({"key": key, "reason": reason, "shard": j})
    m = Manifest(out.resolve(), index_format, header, entries, failed_doc,
                 json.loads(json.dumps(metadata or {})), len(keys),
                 time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_manifest(m)
    return BuildReport(m, todo, sorted(set(done) - set(todo)), failed,
                       time.perf_counter() - t0, images_built)


def _format_of(sig: Any) -> str:
    """The container format tag of the signature's index (from its class's registration)."""
    from ..index import FORMATS

    cls = type(sig.new_index())
    for tag, c in FORMATS.items():
        if c is cls:
            return tag
    raise ValueError(f"signature {sig.name}: its index class {cls.__name__} is not in "
                     "semcbir_fast.index.FORMATS")


def _run_pipeline(job: _Job, work: list[tuple[int, list[str], str]],
                  done: dict[int, dict[str, Any]], *, workers: int | None,
                  num_gpus: float | None, num_cpus: float, progress: bool) -> int:
    """Run the Ray Data pipeline over the shards of ``work``; their summaries go into
    ``done`` as they finish (a failure keeps the finished ones). Returns images built."""
    import ray
    import ray.data

    res = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1 if res.get("GPU", 0) >= 1 else 0
    if workers is None:
        workers = (int(res.get("GPU", 0) // num_gpus) if num_gpus
                   else int(res.get("CPU", 1) // max(num_cpus, 1e-9)))
    workers = max(1, min(int(workers), len(work)))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"shard": j, "keys": keys, "plan": plan} for j, keys, plan in work]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(_ShardWriter, fn_constructor_kwargs={"job": job}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=workers),
                        num_cpus=num_cpus, num_gpus=num_gpus or None)
    total = sum(len(keys) for _, keys, _ in work)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="img", desc=f"building {len(work)} shards on "
                   f"{workers} workers", dynamic_ncols=True)
    built = 0
    try:
        for row in ds.iter_rows():
            j = int(row["shard"])
            done[j] = {k: (v.item() if isinstance(v, np.generic) else v)
                       for k, v in row.items()}
            built += int(row["inputs"])
            if bar is not None:
                bar.update(int(row["inputs"]))
    except Exception as exc:  # a task that failed for good (its retries spent)
        missing = sorted({j for j, _, _ in work} - set(done))
        raise RuntimeError(
            f"the distributed build stopped ({type(exc).__name__}: {str(exc)[:300]}); "
            f"{len(work) - len(missing)} of {len(work)} shards were written and are kept; "
            f"run it again to build the other {len(missing)}") from exc
    finally:
        if bar is not None:
            bar.close()
    return built



def shard_index(index: Any, output: str | os.PathLike[str], *, shard_size: int) -> Manifest:
    """Split an existing index (any kind) into a sharded index of ``shard_size`` images per
    shard in the folder ``output`` (no Ray needed): re-sharding, or moving a collection
    built on one machine to a sharded search. Its ids must be ``0 .. len - 1`` (every index
    built by ``build_index``; an SBS index with its own ids or removals cannot be)."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    n = len(index)
    if not np.array_equal(index.ids(), np.arange(n, dtype=np.int64)):
        raise ValueError("the index's ids are not 0 .. len - 1 (an SBS index with its own "
                         "ids or removed entries); a sharded index numbers its images in "
                         "order: rebuild it, or compact() and re-add with default ids")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    sig = index.signature
    keys = index.keys() if index.has_keys else None
    meta = {k: v for k, v in index.metadata.items() if k != "shard"}
    entries = []
    for j, s in enumerate(range(0, max(n, 1), shard_size)):
        e = min(n, s + shard_size)
        part = sig.new_index(metadata=dict(meta))
        if e > s:
            part.add(index.reconstruct_batch(np.arange(s, e, dtype=np.int64)),
                     keys=None if keys is None else keys[s:e])
        part.metadata["shard"] = {"index": j, "plan": None, "inputs": e - s, "failed": []}
        path = out / shard_name(j)
        part.save(path)
        size, digest = shard_digest(path)
        entries.append(ShardEntry(path.name, e - s, e - s, s, e, size, digest))
    m = Manifest(out.resolve(), _format_of(sig), sig.to_header(), entries, [],
                 json.loads(json.dumps(meta)), n, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_manifest(m)
    return m
