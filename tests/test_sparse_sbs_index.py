"""The SBS index's engines: "sparse" and "dense" give the same results through add / remove /
compact / out-of-order ids / save / load, "auto" follows the measured density, corrupt sparse
files are refused, ``semcbir info`` reports the engine, and the torch search (search.gpu)
equals the dense scan on CPU tensors (CUDA tests skip without a GPU)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import semcbir_fast as sf
from semcbir_fast.index import SBSIndex
from semcbir_fast.index.container import IndexFormatError
from semcbir_fast.sparse_sbs import to_sparse_sbs
from test_sparse_sbs import random_codes

INT32_MAX = np.iinfo(np.int32).max


@pytest.fixture
def lay():
    return sf.sbs_layout(151, 2)


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def pair(lay, **kw):
    return SBSIndex(lay, engine="dense", **kw), SBSIndex(lay, engine="sparse", **kw)


def test_engines_agree_through_mutations(lay, tmp_path):
    rng = np.random.default_rng(0)
    codes = random_codes(rng, lay, 900, 0.02)
    q = np.concatenate([codes[:4], random_codes(rng, lay, 4, 0.02)])
    dense, sparse = pair(lay)
    auto = SBSIndex(lay)
    ids = rng.permutation(5000)[:900]
    for idx in (dense, sparse, auto):
        idx.add(codes[:300], ids=np.sort(ids[:300]), keys=[f"{i}" for i in range(300)])
        idx.add(codes[300:], ids=ids[300:], keys=[f"x{i}" for i in range(600)])  # out of order
    assert dense.engine == "dense" and sparse.engine == "sparse" and auto.engine == "sparse"
    for k in (1, 10, 950):
        want = dense.search(q, k)
        assert_same(sparse.search(q, k), want)
        assert_same(auto.search(q, k), want)
    rm = ids[::7]
    for idx in (dense, sparse):
        idx.remove(rm)
    assert_same(sparse.search(q, 30), dense.search(q, 30))
    lims_d = dense.range_search(q, 40)
    lims_s = sparse.range_search(q, 40)
    for a, b in zip(lims_d, lims_s):
        np.testing.assert_array_equal(a, b)
    some = dense.ids()[:5]
    np.testing.assert_array_equal(sparse.reconstruct_batch(some), dense.reconstruct_batch(some))
    np.testing.assert_array_equal(sparse.reconstruct(int(some[2])), dense.reconstruct(int(some[2])))
    for idx in (dense, sparse):
        idx.compact()
    assert_same(sparse.search(q, 30), dense.search(q, 30))
    assert sparse.keys() == dense.keys()
    # persistence: the sparse file is smaller and loads back as sparse (mmap or not)
    pd, ps = dense.save(tmp_path / "d.sbsi"), sparse.save(tmp_path / "s.sbsi")
    assert ps.stat().st_size * 5 < pd.stat().st_size
    for mmap in (True, False):
        back = SBSIndex.load(ps, mmap=mmap)
        assert back.engine == "sparse" and back.engine_choice == "sparse"
        assert_same(back.search(q, 25), dense.search(q, 25))
        back.add(codes[:3], keys=["a", "b", "c"])  # appends onto read-only mapped buffers
        d, i = back.search(codes[:1], 2)  # codes[0] is in the index twice now
        assert d[0].tolist() == [0, 0] and back.ids()[-3] in i[0]
    as_dense = SBSIndex.load(ps, engine="dense")
    assert as_dense.engine == "dense"
    assert_same(as_dense.search(q, 25), dense.search(q, 25))
    assert SBSIndex.load(pd, engine="sparse").engine == "sparse"


@pytest.mark.parametrize("seed", range(4))
def test_random_mutation_sequences(seed, tmp_path):
    """Random add (in order, out of order, with duplicates of codes) / remove / compact /
    save+load / set_engine sequences: the sparse and auto indexes answer as the dense one
    after every step, and the sparse storage grows in place on in-order adds."""
    rng = np.random.default_rng(100 + seed)
    lay = sf.sbs_layout(int(rng.choice([5, 151])), int(rng.integers(0, 3)))
    dense, sparse = pair(lay)
    auto = SBSIndex(lay)
    everyone = (dense, sparse, auto)
    next_id = 0
    for step in range(25):
        op = rng.choice(["add", "add", "add_out_of_order", "remove", "compact", "reload",
                         "switch"])
        if op.startswith("add"):
            m = int(rng.integers(1, 60))
            codes = random_codes(rng, lay, m, float(rng.choice([0.0, 0.01, 0.03])))
            if op == "add":
                ids = np.arange(next_id, next_id + m) + 10_000
                next_id += m
            else:
                ids = rng.choice(10_000, m, replace=False)
                ids = ids[~np.isin(ids, dense.ids())]
                codes = codes[: ids.shape[0]]
            if not ids.shape[0]:
                continue
            before = sparse._sp_ent if sparse.engine == "sparse" else None
            for idx in everyone:
                idx.add(codes, ids=ids)
            if op == "add" and before is not None and before.flags.writeable \
                    and sparse._sp_ent.shape[0] == before.shape[0]:
                assert sparse._sp_ent is before  # appended into the capacity buffer
        elif op == "remove" and len(dense):
            rm = rng.choice(dense.ids(), int(rng.integers(1, max(2, len(dense) // 3))),
                            replace=False)
            for idx in everyone:
                idx.remove(rm)
        elif op == "compact":
            for idx in everyone:
                idx.compact()
        elif op == "reload":
            sparse = SBSIndex.load(sparse.save(tmp_path / f"s{step}.sbsi"),
                                   mmap=bool(rng.integers(0, 2)))
            auto = SBSIndex.load(auto.save(tmp_path / f"a{step}.sbsi"))
            everyone = (dense, sparse, auto)
        else:
            auto.set_engine(str(rng.choice(["auto", "dense", "sparse"])))
        assert sparse.engine == "sparse"
        np.testing.assert_array_equal(sparse.ids(), dense.ids())
        np.testing.assert_array_equal(auto.ids(), dense.ids())
        if len(dense):
            q = np.concatenate([dense.reconstruct_batch(dense.ids()[:2]),
                                random_codes(rng, lay, 2, 0.02)])
            for k in (1, 7, len(dense) + 3):
                want = dense.search(q, k)
                assert_same(sparse.search(q, k), want)
                assert_same(auto.search(q, k), want)
            np.testing.assert_array_equal(sparse.reconstruct_batch(dense.ids()),
                                          dense.reconstruct_batch(dense.ids()))


def test_appends_keep_the_search_structure(lay):
    """Rows appended after a search get a second, small search structure (the first one is
    kept while the buffers hold); results equal the dense scan after every step, ties between
    the two parts included (duplicates of early rows appended late), and passing
    TAIL_FRACTION, a removal plus compact, or a buffer growth rebuilds it as one."""
    rng = np.random.default_rng(4)
    base = random_codes(rng, lay, 400, 0.02)
    dense, sparse = pair(lay)
    for ix in (dense, sparse):
        ix.add(base)
    q = np.concatenate([base[[0, 5]], random_codes(rng, lay, 3, 0.02)])
    assert_same(sparse.search(q, 9), dense.search(q, 9))
    for ix in (dense, sparse):  # the first append grows the buffers: a rebuild
        ix.add(base[:3])
    assert_same(sparse.search(q, 9), dense.search(q, 9))
    main, m = sparse._searcher[3], sparse._searcher[1]
    assert m == 403 and sparse._searcher[4] is None
    seen_tail = False
    for step in range(6):
        more = np.concatenate([base[[0, 5, 5]], random_codes(rng, lay, 6, 0.02)])
        for ix in (dense, sparse):
            ix.add(more)
        for k in (1, 9, 40, len(dense) + 2):
            assert_same(sparse.search(q, k), dense.search(q, k))
        c = sparse._searcher
        if c[3] is main:
            seen_tail = True
            assert c[4] is not None and c[4][0] == len(sparse) and c[1] == m
    assert seen_tail
    big = random_codes(rng, lay, 200, 0.02)  # past TAIL_FRACTION: one structure again
    for ix in (dense, sparse):
        ix.add(big)
    assert_same(sparse.search(q, 30), dense.search(q, 30))
    assert sparse._searcher[4] is None and sparse._searcher[1] == len(sparse)
    ids = sparse.ids()[::7]
    for ix in (dense, sparse):
        ix.remove(ids)
        ix.add(base[:20])
    assert_same(sparse.search(q, 25), dense.search(q, 25))
    for ix in (dense, sparse):
        ix.compact()
        ix.add(base[:10])
    assert_same(sparse.search(q, 25), dense.search(q, 25))


def test_auto_follows_density(lay):
    rng = np.random.default_rng(1)
    sparse_codes = random_codes(rng, lay, 50, 0.01)
    dense_codes = random_codes(rng, lay, 50, 0.5)
    a = SBSIndex(lay)
    a.add(sparse_codes)
    assert a.engine == "sparse" and a.bytes_per_image() * 8 < lay.stride
    a.add(dense_codes)  # density ~0.18 > 2 x 0.05: back to dense
    assert a.engine == "dense" and a.bytes_per_image() == lay.stride
    assert_same(a.search(sparse_codes[:3], 7), sf.hamming_topk(sparse_codes[:3],
                                                                np.concatenate([sparse_codes,
                                                                                dense_codes]), 7))
    b = SBSIndex(lay)
    b.add(dense_codes)
    assert b.engine == "dense"
    # a non-canonical code: auto stays / turns dense, engine="sparse" refuses it
    odd = sparse_codes[:1].copy()
    odd[0, -9] |= 1  # a proportion bit without its presence bit
    c = SBSIndex(lay)
    c.add(sparse_codes)
    c.add(odd)
    assert c.engine == "dense"
    np.testing.assert_array_equal(c.reconstruct(50), odd[0])
    s = SBSIndex(lay, engine="sparse")
    with pytest.raises(ValueError, match="engine='sparse'.*not a canonical SBS code"):
        s.add(odd)
    assert len(s) == 0
    with pytest.raises(ValueError, match="engine must be one of"):
        SBSIndex(lay, engine="fast")
    with pytest.raises(ValueError, match="device must be"):
        SBSIndex(lay, device="gpu")


def test_empty_and_reset(lay, tmp_path):
    s = SBSIndex(lay, engine="sparse")
    d, i = s.search(np.zeros(lay.stride, np.uint8), 3)
    assert (d == INT32_MAX).all() and (i == -1).all()
    void = sf.encode_sbs(np.full((2, 9, 9), 255, np.uint8), num_classes=151, levels=2)
    s.add(void)
    assert s.search(void[0], 3)[0][0].tolist() == [0, 0, INT32_MAX]
    s.reset()
    assert len(s) == 0 and s.engine == "sparse"
    s.add(void)
    p = s.save(tmp_path / "v.sbsi")
    back = SBSIndex.load(p)
    assert back.search(void[0], 2)[1][0].tolist() == s.ids().tolist() == [2, 3]  # next_id kept


def _rewrite_header(path, change):
    """Rewrite a file's JSON header with ``change(header)`` (same length, padded); the file
    is then loaded with verify=False, so only the structural checks stand guard."""
    raw = bytearray(path.read_bytes())
    hlen = struct.unpack_from("<I", raw, 12)[0]
    header = json.loads(raw[32:32 + hlen])
    change(header)
    new = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    assert len(new) <= hlen
    raw[32:32 + hlen] = new + b" " * (hlen - len(new))
    path.write_bytes(bytes(raw))


def _section(path, name):
    raw = path.read_bytes()
    hlen = struct.unpack_from("<I", raw, 12)[0]
    header = json.loads(raw[32:32 + hlen])
    d = (32 + hlen + 63) // 64 * 64
    s = header["sections"][name]
    return d + s["offset"], s["nbytes"]


def test_corrupt_sparse_files(lay, tmp_path):
    rng = np.random.default_rng(2)
    s = SBSIndex(lay, engine="sparse")
    s.add(random_codes(rng, lay, 40, 0.03))
    good = s.save(tmp_path / "g.sbsi")
    raw = good.read_bytes()

    def variant(name, edit):
        p = tmp_path / name
        b = bytearray(raw)
        edit(b)
        p.write_bytes(bytes(b))
        return p

    off, _ = _section(good, "sparse_entries")
    poff, _ = _section(good, "sparse_popcounts")
    ooff, _ = _section(good, "sparse_offsets")
    flipped = variant("flip.sbsi", lambda b: b.__setitem__(off + 5, b[off + 5] ^ 0x10))
    with pytest.raises(IndexFormatError, match="checksum"):
        SBSIndex.load(flipped)
    cases = {
        "entries": (lambda b: b.__setitem__(slice(off, off + 2), b"\xff\xff"), "cell"),
        "popcount": (lambda b: b.__setitem__(poff, (b[poff] + 1) % 256), "popcount"),
        "offsets": (lambda b: b.__setitem__(slice(ooff + 8, ooff + 16),
                                            struct.pack("<q", 10**6)), "offsets|sparse"),
    }
    for name, (edit, match) in cases.items():
        with pytest.raises(IndexFormatError, match=match):
            SBSIndex.load(variant(name, edit), verify=False)
    truncated = tmp_path / "t.sbsi"
    truncated.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(IndexFormatError, match="truncated"):
        SBSIndex.load(truncated)
    for change, match in [
        (lambda h: h.__setitem__("storage", "fancy"), "storage"),
        (lambda h: h.__setitem__("engine", "dense"), "engine"),
        (lambda h: h["sections"].pop("sparse_popcounts"), "sparse_popcounts"),
        (lambda h: h.__setitem__("count", 39), "section"),
    ]:
        p = tmp_path / "h.sbsi"
        p.write_bytes(raw)
        _rewrite_header(p, change)
        with pytest.raises(IndexFormatError, match=match):
            SBSIndex.load(p, verify=False)


def test_info_reports_engine(lay, tmp_path, capsys):
    from semcbir_fast.cli import main

    s = SBSIndex(lay)
    s.add(random_codes(np.random.default_rng(4), lay, 30, 0.02))
    p = s.save(tmp_path / "i.sbsi")
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "engine" in out and "sparse (engine=auto" in out and "per image" in out
    assert main(["info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["engine"] == "sparse" and 0 < info["bytes_per_image"] < lay.stride / 8


# ---------------------------------------------------------------------- torch (GPU) search

@pytest.mark.parametrize("sparse", [False, True])
def test_torch_search_on_cpu_tensors(lay, sparse):
    torch = pytest.importorskip("torch")
    from semcbir_fast.search.gpu import DeviceCodes, popcount64

    x = torch.tensor([0, -1, 1 << 62, -(1 << 63), 0x0F0F], dtype=torch.int64)
    assert popcount64(x).tolist() == [0, 64, 1, 1, 8]
    rng = np.random.default_rng(6)
    db = random_codes(rng, lay, 600, 0.03)
    db[10:20] = db[3]  # ties
    q = np.concatenate([db[[3, 599]], rng.integers(0, 256, (2, lay.stride), dtype=np.uint8),
                        random_codes(rng, lay, 3, 0.03)])
    dev = DeviceCodes(to_sparse_sbs(db, lay) if sparse else db, "cpu")
    for k in (1, 12, 650):
        assert_same(dev.search(q, k), sf.hamming_topk(q, db, k))
    assert dev.search(q[:0], 4)[0].shape == (0, 4)


def test_cuda_index_search(lay):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(7)
    db = random_codes(rng, lay, 3000, 0.02)
    q = random_codes(rng, lay, 70, 0.02)
    want = sf.hamming_topk(q, db, 10)
    for engine in ("dense", "sparse"):
        idx = SBSIndex(lay, engine=engine, device="cuda")
        idx.add(db)
        assert_same(idx.search(q, 10), want)
