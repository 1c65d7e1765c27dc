"""Sharded exact search without Ray: every signature kind, random codes, k up to N + 5,
against one index holding every image; the merge's tie rule; manifests naming missing,
corrupted or replaced shards are refused.

(The Ray build and the Ray actor backend are in test_distributed.py.)
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from semcbir_fast.distributed import (
    ManifestError,
    ShardedIndex,
    is_mergeable,
    merge_topk,
    read_manifest,
    shard_index,
)
from semcbir_fast.index import DenseBatch
from semcbir_fast.signatures import Inputs, create_signature

M = 7  # classes
N = 53  # images: shards of 14 -> 14 + 14 + 14 + 11


def _maps(rng: np.random.Generator, n: int, size: int = 16) -> list[np.ndarray]:
    # few classes, blocky: many equal codes and equal distances (ties)
    return [np.kron(rng.integers(0, 3, (4, 4)), np.ones((size // 4, size // 4))).astype(np.uint8)
            for _ in range(n)]


def _features(rng: np.random.Generator, n: int, dim: int = 16) -> list[object]:
    from semcbir_fast.features import Features

    out = []
    for _ in range(n):
        m = int(rng.integers(3, 12))
        out.append(Features(rng.uniform(0, 16, (m, 2)),
                            rng.normal(size=(m, dim)).astype(np.float32), (16, 16), "kaze"))
    return out


def _dense(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    # small integers: exact float distances and plenty of ties
    return rng.integers(-2, 3, (n, dim)).astype(np.float32)


def _encoded(kind: str, rng: np.random.Generator, n: int, **kw: object):
    """(signature, encoded database, encoded queries) of a kind, from random inputs."""
    if kind in ("sbs",):
        sig = create_signature("sbs", num_classes=M, levels=1, **kw)
        return sig, sig.encode(Inputs(_maps(rng, n))), sig.encode(Inputs(_maps(rng, 9)))
    if kind in ("sbovp", "hybrid"):
        sig = create_signature(kind, num_classes=M, **kw)
        feats, maps = _features(rng, n), _maps(rng, n)
        if kind == "sbovp":
            from semcbir_fast.sbovp import Vocabulary

            sig.vocabulary = Vocabulary.fit(feats, 6, seed=0)
        qf, qm = _features(rng, 9), _maps(rng, 9)
        return sig, sig.encode(Inputs(maps, feats)), sig.encode(Inputs(qm, qf))
    if kind in ("cnn", "neural-codes"):
        sig = create_signature(kind, num_classes=M, **kw)
        return sig, DenseBatch(_dense(rng, n)), DenseBatch(_dense(rng, 9))
    if kind == "regions":
        sig = create_signature("regions", num_classes=M, pca_dim=0, **kw)

        def batch(m: int) -> DenseBatch:
            ex = {}
            if sig.params.rerank_top:
                g = _dense(rng, m)
                r = rng.normal(size=(m, sig.params.regions, 8)).astype(np.float32)
                ex = {"global": g, "regions": r, "valid": rng.random((m, sig.params.regions)) > 0.3}
            return DenseBatch(_dense(rng, m), ex)

        return sig, batch(n), batch(9)
    if kind == "fused":
        sig = create_signature("fused", num_classes=M, components=("cnn", "sbs"), **kw)
        sbs = sig.components[1]

        def batch(m: int) -> DenseBatch:
            return DenseBatch(np.zeros((m, 0), np.float32),
                              {"c0": _dense(rng, m),
                               "c1": sbs.encode(Inputs(_maps(rng, m)))})

        return sig, batch(n), batch(9)
    raise AssertionError(kind)


CASES = [
    ("sbs", {}),
    ("sbovp", {}),
    ("sbovp", {"epsilon": 0.5}),
    ("hybrid", {}),
    ("hybrid", {"epsilon": 0.3}),
    ("cnn", {}),
    ("neural-codes", {}),
    ("regions", {}),
    ("regions", {"rerank_top": 5}),
    ("fused", {}),
    ("fused", {"rerank": "none"}),
]


def _case_id(case: tuple[str, dict]) -> str:
    kind, kw = case
    return kind + "".join(f"-{k}={v}" for k, v in kw.items())


def _build(kind: str, kw: dict, tmp_path, seed: int = 0):
    rng = np.random.default_rng(seed)
    try:
        sig, db, q = _encoded(kind, rng, N, **kw)
    except ValueError as exc:  # a parameter this kind does not have in this version
        pytest.skip(f"{kind} {kw}: {exc}")
    full = sig.new_index()
    full.add(db, keys=[f"/img/{i}.jpg" for i in range(N)])
    shard_index(full, tmp_path / "sh", shard_size=14)
    return full, q


def _assert_same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_sharded_search_equals_one_index(case, tmp_path):
    kind, kw = case
    full, q = _build(kind, kw, tmp_path)
    with ShardedIndex(tmp_path / "sh", workers=3) as sharded:
        assert len(sharded) == N and sharded.num_shards == 4
        assert sharded.keys() == full.keys()
        for k in (1, 2, 7, N - 1, N, N + 5):
            want = full.search(q, k, return_penalised=True)
            got = sharded.search(q, k, return_penalised=True)
            _assert_same(got, want)
        _, ids = sharded.search(q, N + 5)
        assert (ids[:, N:] == -1).all()
        assert sharded.keys_of(ids[0]) == full.keys_of(ids[0])


def test_mergeable_kinds():
    assert is_mergeable(create_signature("sbs", num_classes=M))
    assert is_mergeable(create_signature("hybrid", num_classes=M))
    assert is_mergeable(create_signature("cnn", num_classes=M))
    # ranked against the whole database: gathered, never merged from per-shard lists
    assert not is_mergeable(create_signature("fused", num_classes=M))
    assert not is_mergeable(create_signature("regions", num_classes=M, rerank_top=5))


def test_sbs_ties_across_shards_go_to_the_smaller_id(tmp_path):
    sig = create_signature("sbs", num_classes=M, levels=0)
    maps = [np.full((4, 4), i % 2, np.uint8) for i in range(20)]  # two codes, ten copies each
    full = sig.new_index()
    full.add(sig.encode(Inputs(maps)))
    shard_index(full, tmp_path / "sh", shard_size=3)
    with ShardedIndex(tmp_path / "sh") as sharded:
        d, i = sharded.search(sig.encode(Inputs(maps[:1])), 12)
        assert i[0, :10].tolist() == list(range(0, 20, 2))
        assert (d[0, :10] == 0).all()
        _assert_same((d, i), full.search(sig.encode(Inputs(maps[:1])), 12))


def test_merge_topk_rule():
    d1 = np.array([[1.0, 2.0, np.inf]], np.float32)
    i1 = np.array([[4, 0, -1]])
    p1 = np.array([[True, False, False]])
    d2 = np.array([[1.0, 1.0, 3.0]], np.float32)
    i2 = np.array([[7, 5, 6]])
    p2 = np.zeros((1, 3), bool)
    d, i, p = merge_topk([(d1, i1, p1), (d2, i2, p2)], 8)
    # unpenalised by (distance, id), then the penalised, then padding
    assert i.tolist() == [[5, 7, 0, 6, 4, -1, -1, -1]]
    assert p.tolist() == [[False] * 4 + [True] + [False] * 3]
    assert np.isinf(d[0, 5:]).all()
    di, ii, _ = merge_topk([(np.array([[3, 2**31 - 1]], np.int32), np.array([[2, -1]]),
                             np.zeros((1, 2), bool))], 3)
    assert ii.tolist() == [[2, -1, -1]] and di.tolist() == [[3, 2**31 - 1, 2**31 - 1]]
    with pytest.raises(ValueError, match="at least one"):
        merge_topk([], 3)


def test_empty_shard_and_threads(tmp_path):
    _, q = _build("sbs", {}, tmp_path)
    with ShardedIndex(tmp_path / "sh", workers=1) as a, ShardedIndex(tmp_path / "sh") as b:
        _assert_same(a.search(q, 9, threads=1), b.search(q, 9, threads=4))


# ----------------------------------------------------------------------------- bad manifests
@pytest.fixture
def sharded(tmp_path):
    _build("sbs", {}, tmp_path)
    return tmp_path / "sh"


def test_missing_shard_is_refused(sharded):
    (sharded / "shard-00002.idx").unlink()
    with pytest.raises(ManifestError, match=r"shard shard-00002.idx is missing"):
        ShardedIndex(sharded)


def test_corrupted_shard_is_refused(sharded):
    f = sharded / "shard-00001.idx"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # the trailer (size, digest) is intact: the checksum tells
    f.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match=r"shard shard-00001.idx is corrupted.*checksum"):
        ShardedIndex(sharded)


def test_truncated_shard_is_refused(sharded):
    f = sharded / "shard-00000.idx"
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(ManifestError, match=r"shard shard-00000.idx is corrupted"):
        ShardedIndex(sharded)


def test_replaced_shard_is_refused(sharded):
    shutil.copy(sharded / "shard-00000.idx", sharded / "shard-00001.idx")
    with pytest.raises(ManifestError, match=r"shard-00001.idx is not the file this manifest "
                       "names"):
        ShardedIndex(sharded)


def test_bad_manifests_are_refused(sharded, tmp_path):
    m = sharded / "manifest.json"
    doc = json.loads(m.read_text())
    with pytest.raises(FileNotFoundError, match="no sharded-index manifest"):
        read_manifest(tmp_path / "nowhere")
    m.write_text("{not json")
    with pytest.raises(ManifestError, match="not a JSON manifest"):
        ShardedIndex(sharded)
    bad = dict(doc, shards=[dict(doc["shards"][0], file="../escape.idx")] + doc["shards"][1:])
    m.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="not a file inside"):
        ShardedIndex(sharded)
    bad = dict(doc, shards=[dict(doc["shards"][0], id_start=1)] + doc["shards"][1:])
    m.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="expected to start at 0"):
        ShardedIndex(sharded)
    bad = dict(doc, shards=[dict(doc["shards"][0], count=3, id_stop=3)] +
               [dict(s, id_start=s["id_start"] - 11, id_stop=s["id_stop"] - 11)
                for s in doc["shards"][1:]], count=doc["count"] - 11)
    m.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="holds 14 images, the manifest says 3"):
        ShardedIndex(sharded)
    m.write_text(json.dumps(dict(doc, format="other")))
    with pytest.raises(ManifestError, match="not a sharded-index manifest"):
        ShardedIndex(sharded)
    m.write_text(json.dumps(doc))
    ShardedIndex(sharded).close()


def test_shard_index_refuses_own_ids(tmp_path):
    sig = create_signature("sbs", num_classes=M, levels=0)
    idx = sig.new_index()
    idx.add(sig.encode(Inputs(_maps(np.random.default_rng(0), 3))), ids=[5, 9, 11])
    with pytest.raises(ValueError, match="ids are not 0 .. len - 1"):
        shard_index(idx, tmp_path / "x", shard_size=2)
