"""SBSIndex: search semantics, tombstones, persistence, corrupt files, threads."""

from __future__ import annotations

import json
import os
import struct
import threading

import numpy as np
import pytest
import semcbir_fast as sf
from semcbir_fast.index import MAGIC, IndexFormatError, SBSIndex

INT32_MAX = np.iinfo(np.int32).max


def _codes(n: int, layout: sf.SBSLayout, seed: int = 0) -> np.ndarray:
    """Real SBS codes of random label maps with few classes (many tied distances)."""
    rng = np.random.default_rng(seed)
    maps = rng.integers(0, layout.num_classes, (n, 8, 8), dtype=np.uint8)
    # blocks of constant class, so that codes differ a lot and also repeat
    maps[: n // 2, :4] = rng.integers(0, layout.num_classes, (n // 2, 1, 1))
    return sf.encode_sbs(maps, num_classes=layout.num_classes, levels=layout.levels)


def _brute(queries: np.ndarray, codes: np.ndarray, ids: np.ndarray, k: int):
    """Reference: all distances, sorted by (distance, id), first k, padded."""
    d = sf.hamming_distances(queries, codes).astype(np.int64)
    out_d = np.full((len(queries), k), INT32_MAX, dtype=np.int64)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    for r in range(len(queries)):
        order = np.lexsort((ids, d[r]))[:k]
        out_d[r, : order.size] = d[r, order]
        out_i[r, : order.size] = ids[order]
    return out_d, out_i


@pytest.fixture
def layout():
    return sf.sbs_layout(5, 1)


@pytest.fixture
def filled(layout):
    codes = _codes(40, layout)
    idx = SBSIndex(layout, metadata={"model": "test", "levels": 1})
    idx.add(codes, keys=[f"img/{i}.jpg" for i in range(40)])
    return idx, codes


# ----------------------------------------------------------------------------- basics
def test_default_ids_match_hamming_topk(filled):
    idx, codes = filled
    assert len(idx) == 40
    d, i = idx.search(codes[:7], k=12)
    rd, ri = sf.hamming_topk(codes[:7], codes, 12)
    np.testing.assert_array_equal(d, rd)
    np.testing.assert_array_equal(i, ri)
    assert d.dtype == np.int32 and i.dtype == np.int64


def test_caller_ids_any_order_ties_by_smaller_id(layout):
    codes = _codes(30, layout, seed=1)
    ids = np.random.default_rng(2).permutation(np.arange(1000, 1030)) * 7
    idx = SBSIndex(layout)
    idx.add(codes[:10], ids=ids[:10])
    idx.add(codes[10:], ids=ids[10:])  # not after the first batch: merged in id order
    d, i = idx.search(codes, k=30)
    rd, ri = _brute(codes, codes, ids, 30)
    np.testing.assert_array_equal(d, rd)
    np.testing.assert_array_equal(i, ri)
    assert np.all(np.diff(idx.ids()) > 0)


def test_k_larger_than_index_pads(filled):
    idx, codes = filled
    d, i = idx.search(codes[0], k=45)
    assert d.shape == (1, 45)
    assert np.all(i[0, 40:] == -1) and np.all(d[0, 40:] == INT32_MAX)
    empty = SBSIndex(idx.layout)
    d, i = empty.search(codes[:2], k=3)
    assert np.all(i == -1) and np.all(d == INT32_MAX)


def test_reconstruct_keys_contains(filled):
    idx, codes = filled
    np.testing.assert_array_equal(idx.reconstruct(7), codes[7])
    np.testing.assert_array_equal(idx.reconstruct_batch([3, 1]), codes[[3, 1]])
    assert idx.key(7) == "img/7.jpg"
    assert idx.keys_of([2, -1]) == ["img/2.jpg", None]
    assert 7 in idx and 99 not in idx and "x" not in idx
    with pytest.raises(KeyError, match="99"):
        idx.reconstruct(99)
    with pytest.raises(KeyError):
        idx.key(99)
    assert "SBSIndex(40 codes" in repr(idx)


def test_range_search_matches_brute_force(filled):
    idx, codes = filled
    idx.remove([3, 5])
    for radius in (0, 4, 15, 1000):
        lims, d, i = idx.range_search(codes[:6], radius)
        assert lims.shape == (7,) and lims[0] == 0 and lims[-1] == d.size == i.size
        live = np.setdiff1d(np.arange(40), [3, 5])
        full = sf.hamming_distances(codes[:6], codes[live])
        for q in range(6):
            sel = full[q] <= radius
            order = np.lexsort((live[sel], full[q][sel]))
            np.testing.assert_array_equal(i[lims[q] : lims[q + 1]], live[sel][order])
            np.testing.assert_array_equal(d[lims[q] : lims[q + 1]], full[q][sel][order])


def test_remove_tombstones_compact_and_readd(filled):
    idx, codes = filled
    assert idx.remove([0, 5, 6]) == 3
    assert len(idx) == 37 and idx.ntotal == 40 and idx.n_removed == 3
    live = np.setdiff1d(np.arange(40), [0, 5, 6])
    d, i = idx.search(codes[:5], k=40)
    rd, ri = _brute(codes[:5], codes[live], live, 40)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)
    assert 5 not in idx
    with pytest.raises(KeyError, match="not in the index"):
        idx.remove([5])
    assert idx.remove([5, 123], missing_ok=True) == 0
    idx.compact()
    assert idx.ntotal == 37 and idx.n_removed == 0
    _, i2 = idx.search(codes[:5], k=40)
    np.testing.assert_array_equal(i2, ri)
    idx.remove([7])
    idx.add(codes[5], ids=[5], keys=["again.jpg"])  # removed id may come back
    assert idx.key(5) == "again.jpg" and 7 not in idx
    assert idx.keys()[:3] == ["img/1.jpg", "img/2.jpg", "img/3.jpg"]


def test_next_id_continues_after_max(layout):
    codes = _codes(6, layout)
    idx = SBSIndex(layout)
    np.testing.assert_array_equal(idx.add(codes[:2], ids=[10, 4]), [10, 4])
    np.testing.assert_array_equal(idx.add(codes[2:4]), [11, 12])


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda c: c.astype(np.int16), "uint8"),
        (lambda c: c[:, :-8], r"shape \(n, 16\)"),
        (lambda c: c.reshape(2, -1, 16), r"shape \(n, 16\)"),
    ],
)
def test_add_rejects_bad_codes(layout, bad, match):
    codes = _codes(4, layout)
    with pytest.raises(ValueError, match=match):
        SBSIndex(layout).add(bad(codes))


def test_add_rejects_bad_ids_and_keys(filled, layout):
    idx, codes = filled
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(codes[:2], ids=[1, 100], keys=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        idx.add(codes[:2], ids=[100, 100], keys=["a", "b"])
    with pytest.raises(ValueError, match="one entry per code"):
        idx.add(codes[:2], ids=[100], keys=["a", "b"])
    with pytest.raises(ValueError, match="has keys"):
        idx.add(codes[:2])
    with pytest.raises(ValueError, match="one entry per code"):
        idx.add(codes[:2], keys=["a"])
    with pytest.raises(ValueError, match="integers"):
        idx.add(codes[:1], ids=[1.5], keys=["a"])
    with pytest.raises(ValueError, match="single string"):
        idx.add(codes[:1], keys="a")
    with pytest.raises(TypeError, match="SBSLayout"):
        SBSIndex("5 classes")  # type: ignore[arg-type]
    nokeys = SBSIndex(layout)
    nokeys.add(codes[:2])
    with pytest.raises(ValueError, match="no keys"):
        nokeys.add(codes[2:3], keys=["x"])
    with pytest.raises(ValueError, match="no keys"):
        nokeys.keys()


def test_search_rejects_bad_arguments(filled):
    idx, codes = filled
    with pytest.raises(ValueError, match="k must be >= 1"):
        idx.search(codes[:1], 0)
    with pytest.raises(ValueError, match="k must be an int"):
        idx.search(codes[:1], 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="radius must be >= 0"):
        idx.range_search(codes[:1], -1)
    with pytest.raises(ValueError, match="shape"):
        idx.search(np.zeros((1, 8), np.uint8), 1)


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_roundtrip(filled, tmp_path, mmap):
    idx, codes = filled
    idx.remove([2])
    idx.metadata["class_names"] = ["a", "b", "c", "d", "é"]
    p = idx.save(tmp_path / "x.sbsi")
    back = SBSIndex.load(p, mmap=mmap)
    assert len(back) == 39 and back.n_removed == 0 and back.is_mmap == mmap
    assert back.layout == idx.layout
    assert back.metadata["class_names"][-1] == "é" and back.metadata["model"] == "test"
    assert back.keys() == idx.keys()
    np.testing.assert_array_equal(back.ids(), idx.ids())
    for a, b in zip(idx.search(codes, 10), back.search(codes, 10)):
        np.testing.assert_array_equal(a, b)
    if mmap:
        assert back._codes.ctypes.data % 64 == 0  # SIMD-aligned straight from the page cache
        assert not back._codes.flags.writeable
    back.add(codes[2], ids=[2], keys=["new"])  # copies the mapped codes first
    assert len(back) == 40 and not back.is_mmap
    assert len(SBSIndex.load(p)) == 39  # file untouched


def test_save_load_unicode_keys_and_empty(tmp_path, layout):
    codes = _codes(3, layout)
    idx = SBSIndex(layout)
    keys = ["ü/ñ.jpg", "", "日本/画像.png"]
    idx.add(codes, keys=keys)
    assert SBSIndex.load(idx.save(tmp_path / "u.sbsi")).keys() == keys
    empty = SBSIndex(layout)
    e = SBSIndex.load(empty.save(tmp_path / "e.sbsi"))
    assert len(e) == 0 and not e.has_keys
    nokeys = SBSIndex(sf.sbs_layout(3, 0, pyramid=False))
    nokeys.add(np.zeros((2, nokeys.layout.stride), np.uint8))
    nk = SBSIndex.load(nokeys.save(tmp_path / "nk.sbsi"))
    assert len(nk) == 2 and not nk.has_keys
    np.testing.assert_array_equal(nk.add(np.zeros((1, nk.layout.stride), np.uint8)), [2])


def test_save_is_atomic(filled, tmp_path, monkeypatch):
    idx, _ = filled
    path = tmp_path / "a.sbsi"
    idx.save(path)
    before = path.read_bytes()
    idx.remove([1])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        idx.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old index is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sbsi"]  # no temp file left


def test_save_rejects_bad_targets(filled, tmp_path):
    idx, _ = filled
    with pytest.raises(IsADirectoryError):
        idx.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        idx.save(tmp_path / "missing" / "x.sbsi")
    idx.metadata["bad"] = object()
    with pytest.raises(ValueError, match="JSON"):
        idx.save(tmp_path / "x.sbsi")


# ----------------------------------------------------------------------------- corrupt files
def _small_file(tmp_path) -> tuple[bytes, dict]:
    layout = sf.sbs_layout(3, 1)
    idx = SBSIndex(layout, metadata={"model": "m"})
    idx.add(_codes(5, layout), keys=["a.jpg", "bb.jpg", "c.jpg", "d.jpg", "e.jpg"])
    data = idx.save(tmp_path / "s.sbsi").read_bytes()
    hlen = struct.unpack_from("<I", data, 12)[0]
    header = json.loads(data[32 : 32 + hlen])
    return data, header


def _load_bytes(tmp_path, data: bytes, **kw):
    p = tmp_path / "bad.sbsi"
    p.write_bytes(data)
    return SBSIndex.load(p, **kw)


def test_truncated_at_every_section_boundary_and_inside(tmp_path):
    data, header = _small_file(tmp_path)
    hlen = len(json.dumps(header, separators=(",", ":"), sort_keys=True))
    dstart = (32 + hlen + 63) // 64 * 64
    cuts = {
        0,
        1,
        7,
        8,
        16,
        31,
        32,
        32 + hlen // 2,
        32 + hlen,
        dstart,
        len(data) - 24,
        len(data) - 8,
        len(data) - 1,
    }
    for sec in header["sections"].values():
        start, end = dstart + sec["offset"], dstart + sec["offset"] + sec["nbytes"]
        cuts |= {start, start + 1, (start + end) // 2, end - 1, end}
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        for mmap in (True, False):
            with pytest.raises(IndexFormatError, match="cannot load index"):
                _load_bytes(tmp_path, data[:cut], mmap=mmap)
        # Without the checksum the structural checks still catch every truncation.
        with pytest.raises(IndexFormatError):
            _load_bytes(tmp_path, data[:cut], verify=False)


def test_every_flipped_byte_is_detected(tmp_path):
    data, _ = _small_file(tmp_path)
    assert len(data) < 2000
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(IndexFormatError):
            _load_bytes(tmp_path, bytes(bad), mmap=False)


def test_flipped_code_byte_reports_checksum(tmp_path):
    data, header = _small_file(tmp_path)
    hlen = struct.unpack_from("<I", data, 12)[0]
    pos = (32 + hlen + 63) // 64 * 64 + header["sections"]["codes"]["offset"]
    bad = bytearray(data)
    bad[pos] ^= 1
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        _load_bytes(tmp_path, bytes(bad))


def test_wrong_version_foreign_and_trailing_data(tmp_path):
    data, _ = _small_file(tmp_path)
    newer = bytearray(data)
    struct.pack_into("<I", newer, 8, 2)
    with pytest.raises(IndexFormatError, match="version 2.*upgrade semcbir_fast"):
        _load_bytes(tmp_path, bytes(newer))
    with pytest.raises(IndexFormatError, match="not a semcbir index"):
        _load_bytes(tmp_path, b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(IndexFormatError, match="not a semcbir index"):
        _load_bytes(tmp_path, b"hello world, this is text\n" * 4)
    with pytest.raises(IndexFormatError, match="truncated"):
        _load_bytes(tmp_path, b"")
    with pytest.raises(IndexFormatError, match="truncated"):
        _load_bytes(tmp_path, MAGIC[:5])
    with pytest.raises(IndexFormatError, match="trailing data"):
        _load_bytes(tmp_path, data + b"\0")
    assert isinstance(IndexFormatError("x", "y"), ValueError)
    with pytest.raises(FileNotFoundError, match="semcbir index"):
        SBSIndex.load(tmp_path / "nope.sbsi")


# ----------------------------------------------------------------------------- threads
def test_concurrent_searches_equal_sequential():
    layout = sf.sbs_layout(20, 2)
    codes = _codes(3000, layout, seed=5)
    idx = SBSIndex(layout)
    idx.add(codes)
    queries = [codes[i * 50 : (i + 1) * 50] for i in range(8)]
    expected = [idx.search(q, 25) for q in queries]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            results[t] = [idx.search(q, 25, threads=1) for q in queries]
        except Exception as exc:  # noqa: BLE001 - any failure of a worker thread is reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for t in range(4):
        for (ed, ei), (gd, gi) in zip(expected, results[t]):
            np.testing.assert_array_equal(gd, ed)
            np.testing.assert_array_equal(gi, ei)


def test_searches_during_mutations_stay_consistent():
    layout = sf.sbs_layout(5, 1)
    codes = _codes(600, layout, seed=9)
    idx = SBSIndex(layout)
    idx.add(codes[:200])
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                d, i = idx.search(codes[:4], 10)
                assert np.all(np.diff(d, axis=1) >= 0)
                ok = i >= 0
                # every returned id was added at some point and its distance is exact
                np.testing.assert_array_equal(
                    d[ok], sf.hamming_distances(codes[:4], codes)[np.nonzero(ok)[0], i[ok]]
                )
        except Exception as exc:  # noqa: BLE001 - any failure of a worker thread is reported below
            errors.append(exc)

    th = [threading.Thread(target=reader) for _ in range(2)]
    for t in th:
        t.start()
    for s in range(200, 600, 50):
        idx.add(codes[s : s + 50])
        idx.remove(np.arange(s - 200, s - 180))
        if s % 100 == 0:
            idx.compact()
    stop.set()
    for t in th:
        t.join()
    assert not errors
    assert len(idx) == 600 - 8 * 20
