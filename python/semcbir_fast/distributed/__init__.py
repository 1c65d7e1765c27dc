"""Beyond one machine: distributed index building and sharded exact search on Ray.

=============================  ==============================================================
:func:`build_sharded`          images (folders, files, fsspec / pyarrow URIs) -> shards
                               (normal index files) + a manifest written last, atomically;
                               a Ray Data pipeline over an actor pool; failures recorded;
                               resumable (complete shards are skipped)
:class:`SegmenterSpec`         how each actor loads its segmenter (once, on its GPU)
:class:`ShardedIndex`          exact search over the shards (threads or Ray actors), the
                               merged top-k identical to one index holding every image
:func:`shard_index`            an existing index split into shards (no Ray)
:func:`read_manifest`          the manifest, every shard checked (:class:`ManifestError`)
:func:`merge_topk`             the exact merge of top-k lists by the library's tie rule
=============================  ==============================================================

Ray is an optional extra (``pip install 'semcbir_fast[ray]'``): it is imported only by the
calls that need it (a build, ``ShardedIndex(backend="ray")``); manifests, the merge and the
``"threads"`` backend work without it. See ``docs/distributed.md``.
"""

from __future__ import annotations

from .build import (
    BuildReport,
    SegmenterSpec,
    build_sharded,
    plan_shards,
    shard_index,
    shard_name,
    write_shard,
)
from .manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    ShardEntry,
    load_shard,
    read_manifest,
    write_manifest,
)
from .search import BACKENDS, ShardedIndex, is_mergeable, merge_topk
from .sources import discover_images, is_uri

__all__ = [
    "BACKENDS",
    "MANIFEST_NAME",
    "BuildReport",
    "Manifest",
    "ManifestError",
    "SegmenterSpec",
    "ShardEntry",
    "ShardedIndex",
    "build_sharded",
    "discover_images",
    "is_mergeable",
    "is_uri",
    "load_shard",
    "merge_topk",
    "plan_shards",
    "read_manifest",
    "shard_index",
    "shard_name",
    "write_manifest",
    "write_shard",
]
