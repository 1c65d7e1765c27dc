"""Sparse SBS search: conversion, checks and search equal the dense scan (hamming_topk) and the
NumPy reference exactly, ties included, for every backend, SIMD level, thread count and method."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import semcbir_fast as sf
from conftest import use_backend
from reference import ref_decode, ref_encode_sbs, ref_topk
from semcbir_fast.sparse_sbs import (
    SparseSBSCodes,
    SparseSBSSearcher,
    choose_engine,
    from_sparse_sbs,
    sparse_hamming_topk,
    to_sparse_sbs,
)

INT32_MAX = np.iinfo(np.int32).max
METHODS = ("auto", "inverted", "scan")


def random_codes(rng, layout, n, p_cell, max_level=4):
    """n canonical SBS codes: each cell present with probability p_cell, level uniform."""
    cells = layout.num_classes * layout.blocks
    pres = rng.random((n, cells)) < p_cell
    level = np.where(pres, rng.integers(1, max_level + 1, (n, cells)), 0)
    bits = np.zeros((n, layout.stride * 8), np.uint8)
    first = 0
    for off, nb in zip(layout.level_offsets, layout.level_blocks):
        c = layout.num_classes * nb
        bits[:, off:off + c] = pres[:, first:first + c]
        nib = (np.arange(4)[None, None, :] < level[:, first:first + c, None]).astype(np.uint8)
        bits[:, off + c:off + 5 * c] = nib.reshape(n, 4 * c)
        first += c
    return np.packbits(bits, axis=1)


def assert_same(got, want):
    assert got[0].dtype == np.int32 and got[1].dtype == np.int64
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


LAYOUTS = [(5, 0, False), (7, 1, False), (151, 2, False), (3, 2, True), (20, 3, False),
           (1100, 2, False)]  # the last: 17,600 cells -> uint32 entries


@pytest.mark.parametrize("m,levels,pyramid", LAYOUTS)
def test_roundtrip_and_reference(m, levels, pyramid):
    rng = np.random.default_rng(m + levels)
    lay = sf.sbs_layout(m, levels, pyramid)
    maps = [rng.integers(-1, m + 1, (rng.integers(1, 30), rng.integers(1, 30)))
            for _ in range(40)]
    codes = sf.encode_sbs(maps, num_classes=m, levels=levels, pyramid=pyramid)
    sp = to_sparse_sbs(codes, lay)
    assert sp.entries.dtype == (np.uint32 if m * lay.blocks > 16384 else np.uint16)
    np.testing.assert_array_equal(sp.to_dense(), codes)
    np.testing.assert_array_equal(sp.popcounts, np.unpackbits(codes, axis=1).sum(1))
    # entries against the NumPy reference decoder
    for i in (0, 7, 39):
        pres, lev = ref_decode(codes[i], m, levels, pyramid)
        cells = np.flatnonzero(np.asarray(pres).reshape(-1))
        row = sp.entries[sp.offsets[i]:sp.offsets[i + 1]].astype(np.int64)
        np.testing.assert_array_equal(row >> 2, cells)
        np.testing.assert_array_equal((row & 3) + 1, np.asarray(lev).reshape(-1)[cells])
    _ = ref_encode_sbs  # the encoder itself is checked against it in test_sbs.py


@pytest.mark.parametrize("p_cell", [0.0, 0.001, 0.01, 0.05, 0.2, 0.5, 0.71])
def test_every_density_equals_dense(backend_isa, p_cell):
    rng = np.random.default_rng(int(p_cell * 1000))
    lay = sf.sbs_layout(40, 2)
    db = random_codes(rng, lay, 700, p_cell)
    q = np.concatenate([random_codes(rng, lay, 5, p_cell), db[:3]])
    density = np.unpackbits(db, axis=1).mean() if db.size else 0
    assert density <= 0.55
    s = SparseSBSSearcher(to_sparse_sbs(db, lay))
    for k in (1, 9, 700, 705):
        want = sf.hamming_topk(q, db, k)
        for method in METHODS:
            for threads in (1, 2):
                assert_same(s.search(q, k, threads=threads, method=method), want)
    assert_same(s.search(q, 9), ref_topk(q, db, 9))


def test_codes_over_65535_bits(backend_isa):
    """Codes of more than 65,535 bits: 32-bit lane accumulators in the scan, with sums above
    2**16 (a code of every cell at level 4 against itself: 13,440 x 5 = 67,200)."""
    rng = np.random.default_rng(8)
    lay = sf.sbs_layout(210, 3)
    assert lay.nbits > 65535 and 210 * lay.blocks <= 1 << 14  # uint16 entries
    full = np.zeros((1, lay.stride), np.uint8)
    full[0] = np.packbits(np.arange(8 * lay.stride) < lay.nbits)
    db = np.concatenate([random_codes(rng, lay, 40, 0.02), full, full,
                         random_codes(rng, lay, 20, 0.6)])
    s = SparseSBSSearcher(to_sparse_sbs(db, lay))
    for q in (full, np.concatenate([full, db[:2], random_codes(rng, lay, 40, 0.3)])):
        want = sf.hamming_topk(q, db, 5)
        assert want[0][0, 0] == 0
        for method in METHODS:
            assert_same(s.search(q, 5, method=method), want)


def test_many_rows_blocks_and_groups(backend_isa):
    """More than one block of 8192 rows, more than 64 queries (several scan groups)."""
    rng = np.random.default_rng(5)
    lay = sf.sbs_layout(30, 1)
    db = random_codes(rng, lay, 20000, 0.05)
    db[100:120] = db[5]  # duplicates: ties by the smaller row
    q = np.concatenate([db[[5, 17, 19999]], random_codes(rng, lay, 70, 0.05)])
    s = SparseSBSSearcher(to_sparse_sbs(db, lay))
    want = sf.hamming_topk(q, db, 25)
    for method in METHODS:
        for threads in (1, 2, 3):
            assert_same(s.search(q, 25, threads=threads, method=method), want)
    d, ids = s.search(db[5], 22)
    assert d[0, 0] == 0 and ids[0, :21].tolist() == [5, *range(100, 120)]


def test_hot_and_cold_cells(backend_isa):
    """Cells held by many rows are searched as 2-bit code columns plus the postings of their
    least frequent level, the others through postings: a database with both kinds, two blocks
    of rows with a last block whose size is not a multiple of 4, queries holding more hot
    cells than one uint8 pass sums (51), a query with no hot cell, stray query bits, and every
    hot_fraction from all cells hot to none."""
    rng = np.random.default_rng(11)
    lay = sf.sbs_layout(60, 1)  # 240 cells
    n = 8192 + 1001
    cells = 60 * lay.blocks
    p = np.where(np.arange(cells) % 3 == 0, 0.6, 0.02)  # 80 hot cells, 160 cold
    pres = rng.random((n, cells)) < p
    level = np.where(pres, rng.integers(1, 5, (n, cells)), 0)
    level[:, 3] = np.where(pres[:, 3], 4, 0)  # a hot cell at one level only
    level[:, 6] = np.where(pres[:, 6], 1 + (rng.random(n) < 0.1), 0)  # two levels
    pres[9000:9010], level[9000:9010] = pres[3], level[3]  # ties across blocks
    bits = np.zeros((n, lay.stride * 8), np.uint8)
    bits[:, :cells] = pres
    bits[:, cells:5 * cells] = (np.arange(4)[None, None, :] < level[:, :, None]).reshape(n, -1)
    db = np.packbits(bits, axis=1)
    cold_only = np.zeros((1, lay.stride * 8), np.uint8)
    cold_only[0, [1, 2, cells + 4, cells + 5]] = 1
    stray = np.packbits(bits[[7]], axis=1)
    stray[0, -1] ^= 0xFF  # bits past the proportion strings: counted through |q| only
    q = np.concatenate([db[[0, 3, n - 1]], random_codes(rng, lay, 3, 0.5),
                        np.packbits(cold_only, axis=1), stray])
    sp = to_sparse_sbs(db, lay)
    wants = {k: sf.hamming_topk(q, db, k) for k in (1, 12, n + 3)}
    for hf in (0.0, 0.125, 0.5, 1.0):
        s = SparseSBSSearcher(sp, hot_fraction=hf)
        for k, want in wants.items():
            for method in METHODS:
                for threads in (1, 2):
                    assert_same(s.search(q, k, threads=threads, method=method), want)
    assert_same(SparseSBSSearcher(sp).search(q, 12), ref_topk(q, db, 12))
    if sf.backend() == "cpp":  # bytes: postings, hot columns, per-block and per-cell tables
        per_level = np.stack([(level == v).sum(0) for v in (1, 2, 3, 4)], 1)  # (cells, 4)
        df = per_level.sum(1)
        hot = df - per_level.min(1) > n / 8
        posted = df[~hot].sum() + per_level.min(1)[hot].sum()
        want = (2 * posted + hot.sum() * (2048 + 251) + 4 * 2 * (cells + 1) + (8 + 4 + 4) * cells
                + 2 * 8 * 3)
        s = SparseSBSSearcher(sp)
        assert s.hot_cells == hot.sum() == 80
        assert s.inverted_bytes == want < 2 * int(pres.sum())
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="hot_fraction"):
            SparseSBSSearcher(sp, hot_fraction=bad)


def test_empty_codes_and_void_maps(backend_isa):
    lay = sf.sbs_layout(6, 1)
    void = sf.encode_sbs(np.full((3, 8, 8), 99), num_classes=6, levels=1)  # all void
    assert not void.any()
    rng = np.random.default_rng(1)
    db = np.concatenate([void, random_codes(rng, lay, 10, 0.3), void])
    sp = to_sparse_sbs(db, lay)
    assert sp.offsets[1] == 0 and sp.popcounts[0] == 0
    s = SparseSBSSearcher(sp)
    for method in METHODS:
        assert_same(s.search(np.concatenate([void[:1], db[5:6]]), 20, method=method),
                    sf.hamming_topk(np.concatenate([void[:1], db[5:6]]), db, 20))
    # an empty database: every slot missing
    e = SparseSBSSearcher(SparseSBSCodes.empty(lay))
    d, i = e.search(void[0], 3)
    assert (d == INT32_MAX).all() and (i == -1).all()
    assert to_sparse_sbs(np.zeros((0, lay.stride), np.uint8), lay).nnz == 0
    # no queries
    d, i = s.search(np.zeros((0, lay.stride), np.uint8), 4)
    assert d.shape == (0, 4) and i.shape == (0, 4)


def test_arbitrary_query_bits(backend_isa):
    """Queries are searched exactly whatever their bits (stray proportion and padding bits)."""
    rng = np.random.default_rng(9)
    lay = sf.sbs_layout(13, 1)  # 325 bits, stride 48: padding bits exist
    db = random_codes(rng, lay, 300, 0.2)
    q = rng.integers(0, 256, (9, lay.stride), dtype=np.uint8)
    s = SparseSBSSearcher(to_sparse_sbs(db, lay))
    for method in METHODS:
        assert_same(s.search(q, 11, method=method), sf.hamming_topk(q, db, 11))


def test_real_codes():
    """Codes of real label maps: MSRC v1 ground truth (or Corel-1K cached maps under build/)."""
    maps = None
    cache = Path(__file__).resolve().parents[1] / "build" / "sparse" / "corel1k_labels.npz"
    if cache.exists():
        z = np.load(cache)
        flat, o, maps = z["flat"], 0, []  # (each z[...] reads the file again)
        for h, w in z["shapes"]:
            maps.append(flat[o:o + h * w].reshape(h, w))
            o += h * w
        m = int(z["num_classes"])
    else:
        from conftest import load_msrc_labels

        try:
            _, maps = load_msrc_labels()
        except FileNotFoundError as exc:
            pytest.skip(str(exc))
        m = 24
    for levels in (2, 3):
        lay = sf.sbs_layout(m, levels)
        codes = sf.encode_sbs(maps, num_classes=m, levels=levels)
        sp = to_sparse_sbs(codes, lay)
        # bytes per image: entries of the present cells (one per cell, 2 or 4 bytes) plus the
        # int64 offset and the int32 popcount of each row
        cells = sum(int(np.count_nonzero(ref_decode(c, m, levels)[0])) for c in codes)
        width = sp.entries.dtype.itemsize
        assert sp.bytes_per_image() == pytest.approx((cells * width + len(codes) * 12
                                                      + 8) / len(codes))
        if m > 100:  # the 151-class Corel-1K maps: well under 1/8 of the dense code
            assert sp.bytes_per_image() * 8 <= lay.stride
        s = SparseSBSSearcher(sp)
        q = codes[::50]
        want = sf.hamming_topk(q, codes, 10)
        for method in METHODS:
            assert_same(s.search(q, 10, method=method), want)


def test_backends_identical():
    rng = np.random.default_rng(3)
    lay = sf.sbs_layout(25, 2)
    db = random_codes(rng, lay, 500, 0.03)
    q = random_codes(rng, lay, 6, 0.03)
    outs, sparse = [], []
    for spec in ("cpp-scalar", "cpp-avx2", "cpp-avx512", "numba"):
        try:
            with use_backend(spec):
                sp = to_sparse_sbs(db, lay)
                sparse.append((sp.offsets, sp.entries, sp.popcounts))
                outs.append(sparse_hamming_topk(q, sp, 17))
        except pytest.skip.Exception:
            continue
    assert len(outs) >= 2
    for o, s in zip(outs[1:], sparse[1:]):
        assert_same(o, outs[0])
        for a, b in zip(s, sparse[0]):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype


def test_non_canonical_codes_refused(backend_isa):
    lay = sf.sbs_layout(4, 0)  # 20 bits: presence 0..3, proportion 4..19
    good = random_codes(np.random.default_rng(0), lay, 3, 0.5)
    for bit in (4, 19, 23):  # a proportion bit without presence; a padding bit
        bad = good.copy()
        bad[1] = 0
        bad[1, bit // 8] |= 0x80 >> (bit % 8)
        with pytest.raises(ValueError, match="row 1 is not a canonical SBS code"):
            to_sparse_sbs(bad, lay)
    bad = good.copy()
    bad[2] = 0
    bad[2, 0] = 0x80  # presence of cell 0 without any proportion bit
    with pytest.raises(ValueError, match="row 2 is not a canonical"):
        to_sparse_sbs(bad, lay)
    bits = np.zeros(lay.stride * 8, np.uint8)
    bits[0] = 1
    bits[4 + 1] = 1  # level code 0100: not a thermometer code
    with pytest.raises(ValueError, match="row 0 is not a canonical"):
        to_sparse_sbs(np.packbits(bits)[None], lay)


def test_bad_input(backend_isa):
    lay = sf.sbs_layout(5, 1)
    db = random_codes(np.random.default_rng(0), lay, 20, 0.2)
    sp = to_sparse_sbs(db, lay)
    with pytest.raises(ValueError, match="bytes per row"):
        to_sparse_sbs(db[:, :-8], lay)
    with pytest.raises(ValueError, match="uint8"):
        to_sparse_sbs(db.astype(np.int16), lay)
    with pytest.raises(TypeError, match="SBSLayout"):
        to_sparse_sbs(db, "layout")
    s = SparseSBSSearcher(sp)
    with pytest.raises(ValueError, match="bytes per code"):
        s.search(db[:, :8], 3)
    with pytest.raises(ValueError, match="k must be"):
        s.search(db, 0)
    with pytest.raises(ValueError, match="method"):
        s.search(db, 2, method="fast")
    bad_off = sp.offsets.copy()
    bad_off[3] = bad_off[4] + 1
    cases = [
        (SparseSBSCodes(lay, bad_off, sp.entries, sp.popcounts), "decrease"),
        (SparseSBSCodes(lay, sp.offsets, sp.entries, sp.popcounts + 1), "popcount"),
        (SparseSBSCodes(lay, sp.offsets, sp.entries[::-1].copy(), sp.popcounts), "cell"),
        (SparseSBSCodes(lay, sp.offsets, sp.entries | np.uint16(0xFFF0), sp.popcounts), "cell"),
        (SparseSBSCodes(lay, sp.offsets[:-1], sp.entries, sp.popcounts), "popcounts"),
        (SparseSBSCodes(lay, sp.offsets, sp.entries.astype(np.uint32), sp.popcounts), "uint16"),
        (SparseSBSCodes(lay, sp.offsets + 1, sp.entries, sp.popcounts), "offsets"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            SparseSBSSearcher(bad)
        with pytest.raises(ValueError, match=match):
            from_sparse_sbs(bad)
        with pytest.raises(ValueError, match=match):
            bad.check()


def test_take_concat_and_density():
    rng = np.random.default_rng(2)
    lay = sf.sbs_layout(9, 1)
    db = random_codes(rng, lay, 50, 0.1)
    sp = to_sparse_sbs(db, lay)
    rows = np.array([7, 3, 3, 49, 0])
    np.testing.assert_array_equal(sp.take(rows).to_dense(), db[rows])
    both = SparseSBSCodes.concat([sp.take(rows), sp])
    np.testing.assert_array_equal(both.to_dense(), np.concatenate([db[rows], db]))
    assert abs(sp.density() - np.unpackbits(db, axis=1)[:, :lay.nbits].mean()) < 1e-12
    assert choose_engine(0.01) == "sparse" and choose_engine(0.4) == "dense"
    assert choose_engine(0.01, canonical=False) == "dense"


@pytest.mark.skipif(os.environ.get("SEMCBIR_SKIP_HYPOTHESIS") == "1", reason="opt-out")
def test_hypothesis_random_layouts():
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @hyp.settings(max_examples=25, deadline=None)
    @hyp.given(m=st.integers(1, 40), levels=st.integers(0, 2), pyramid=st.booleans(),
               n=st.integers(0, 60), p=st.floats(0, 0.8), k=st.integers(1, 70),
               seed=st.integers(0, 2**32 - 1))
    def run(m, levels, pyramid, n, p, k, seed):
        rng = np.random.default_rng(seed)
        lay = sf.sbs_layout(m, levels, pyramid)
        db = random_codes(rng, lay, n, p)
        q = random_codes(rng, lay, 3, p)
        s = SparseSBSSearcher(to_sparse_sbs(db, lay))
        want = sf.hamming_topk(q, db, k)
        for method in METHODS:
            assert_same(s.search(q, k, method=method), want)

    run()
