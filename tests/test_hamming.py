"""Hamming distances and top-k against tests/reference.py, for every backend x SIMD level."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import semcbir_fast as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import INT32_MAX, ref_block_stats, ref_encode_sbs, ref_hamming_matrix, ref_topk

# widths in bytes that hit SIMD special cases, plus real SBS widths:
# 560 = 14 classes x 64 blocks, 744 = 14 classes pyramid 0..3, 6000 = 150 x 64, 6040 = 151 x 64
WIDTHS = (1, 7, 8, 31, 32, 33, 64, 65, 200, 560, 744, 6000, 6040)
HYP = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def random_codes(rng, n, width, density=None):
    """n random codes of `width` bytes (optionally biased bit density to vary distances)."""
    if density is None:
        return rng.integers(0, 256, size=(n, width), dtype=np.uint8)
    bits = (rng.random((n, width * 8)) < density).astype(np.uint8)
    return np.packbits(bits, axis=1)


def check_topk(q, db, k, threads=0):
    dist, ids = sf.hamming_topk(q, db, k, threads=threads)
    d_ref, i_ref = ref_topk(q, db, k)
    assert dist.dtype == np.int32 and ids.dtype == np.int64
    assert dist.shape == d_ref.shape and ids.shape == i_ref.shape, (dist.shape, d_ref.shape)
    if not (np.array_equal(dist, d_ref) and np.array_equal(ids, i_ref)):
        rows = np.flatnonzero((dist != d_ref).any(1) | (ids != i_ref).any(1))
        r = rows[0]
        raise AssertionError(
            f"{rows.size} rows differ (nq={len(d_ref)}, N={len(db)}, k={k}, "
            f"width={db.shape[-1]}); row {r}: got ids {ids[r, :8].tolist()} "
            f"dist {dist[r, :8].tolist()}, expected ids {i_ref[r, :8].tolist()} "
            f"dist {d_ref[r, :8].tolist()}"
        )
    return dist, ids


# --------------------------------------------------------------------------------------
# reference self-checks (no library)
# --------------------------------------------------------------------------------------
def test_reference_hamming_and_topk():
    rng = np.random.default_rng(0)
    for w in (1, 7, 65):
        a = random_codes(rng, 5, w)
        b = random_codes(rng, 9, w)
        brute = np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)
        assert np.array_equal(ref_hamming_matrix(a, b), brute)
    db = np.array([[0b1111], [0b0001], [0b0011], [0b0001], [0]], dtype=np.uint8)
    d, i = ref_topk(np.array([0], dtype=np.uint8), db, 7)
    assert d.tolist() == [[0, 1, 1, 2, 4, INT32_MAX, INT32_MAX]]
    assert i.tolist() == [[4, 1, 3, 2, 0, -1, -1]]
    d, i = ref_topk(np.zeros((2, 1), np.uint8), db[:0], 2)
    assert d.tolist() == [[INT32_MAX] * 2] * 2 and i.tolist() == [[-1, -1]] * 2


# --------------------------------------------------------------------------------------
# hamming_distances
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", WIDTHS)
def test_hamming_distances(backend_isa, width):
    rng = np.random.default_rng(width)
    a = random_codes(rng, 5, width)
    b = random_codes(rng, 37, width)
    expect = ref_hamming_matrix(a, b)
    for threads in (0, 1, 2):
        d = sf.hamming_distances(a, b, threads=threads)
        assert d.dtype == np.int32 and d.shape == (5, 37)
        assert np.array_equal(d, expect)
    # extreme values: all-zeros vs all-ones gives every bit
    z = np.zeros((1, width), np.uint8)
    o = np.full((2, width), 255, np.uint8)
    assert sf.hamming_distances(z, o).tolist() == [[8 * width, 8 * width]]
    # 1-D inputs are one code
    d1 = sf.hamming_distances(a[3], b)
    assert np.array_equal(np.asarray(d1).reshape(1, -1), expect[3:4])


def test_hamming_distances_empty(backend_isa):
    a = np.zeros((0, 16), np.uint8)
    b = np.ones((4, 16), np.uint8)
    assert sf.hamming_distances(a, b).shape == (0, 4)
    assert sf.hamming_distances(b, a).shape == (4, 0)


def test_hamming_noncontiguous(backend_isa):
    rng = np.random.default_rng(1)
    big = random_codes(rng, 40, 130)
    a = big[::3, 1:66]  # strided rows and an offset start, width 65
    b = big[1::2, 1:66]
    assert not a.flags.c_contiguous
    assert np.array_equal(sf.hamming_distances(a, b), ref_hamming_matrix(a, b))
    check_topk(a, b, 5)
    bf = np.asfortranarray(big[:, :64])
    check_topk(bf[:3], bf, 7)


# --------------------------------------------------------------------------------------
# hamming_topk
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", (0, 1, 3, 64, 1001))
@pytest.mark.parametrize("width", (1, 8, 33, 560))
def test_topk(backend_isa, n, width):
    rng = np.random.default_rng([n, width])
    db = random_codes(rng, n, width, density=0.3)
    for nq in (0, 1, 70):
        q = random_codes(rng, nq, width, density=0.3)
        for k in sorted({1, 10, max(n, 1), n + 5}):
            dist, ids = check_topk(q, db, k)
            assert dist.shape == (nq, k)
            if n < k and nq:
                assert (ids[:, n:] == -1).all() and (dist[:, n:] == INT32_MAX).all()


def test_topk_one_d_query(backend_isa):
    rng = np.random.default_rng(5)
    db = random_codes(rng, 50, 24)
    dist, ids = sf.hamming_topk(db[7], db, 3)
    assert dist.shape == (1, 3) and ids.shape == (1, 3)
    assert ids[0, 0] == 7 and dist[0, 0] == 0
    d_ref, i_ref = ref_topk(db[7:8], db, 3)
    assert np.array_equal(dist, d_ref) and np.array_equal(ids, i_ref)


@pytest.mark.parametrize("width", (1, 8, 65, 744))
def test_topk_ties(backend_isa, width):
    rng = np.random.default_rng(width)
    # all-equal codes: every distance ties, ids must come out 0..k-1
    db = np.repeat(random_codes(rng, 1, width), 300, axis=0)
    q = random_codes(rng, 70, width)
    for k in (1, 16, 299, 300, 301):
        dist, ids = check_topk(q, db, k)
        assert np.array_equal(ids[0, : min(k, 300)], np.arange(min(k, 300)))
        assert (dist[:, : min(k, 300)] == dist[:, :1]).all()
    # a tiny alphabet: many ties at every distance
    alphabet = random_codes(rng, 4, width)
    db = alphabet[rng.integers(0, 4, size=1001)]
    for k in (1, 5, 100, 1001):
        check_topk(alphabet, db, k)
        check_topk(db[:70], db, k)


def test_topk_threads(backend_isa):
    rng = np.random.default_rng(3)
    db = random_codes(rng, 2003, 40, density=0.2)
    q = random_codes(rng, 70, 40, density=0.2)
    res = [sf.hamming_topk(q, db, 13, threads=t) for t in (1, 2, 0)]
    d_ref, i_ref = ref_topk(q, db, 13)
    for dist, ids in res:
        assert np.array_equal(dist, d_ref) and np.array_equal(ids, i_ref)


def test_parallel_paths(backend_isa):
    """Databases big enough (12.8 MB: the core gives each thread >= 4 MB) that threads split
    the database (nq < threads) or the queries; ties across the split points must still come
    out by smaller id."""
    rng = np.random.default_rng(17)
    alphabet = random_codes(rng, 6, 256, density=0.5)
    db = alphabet[rng.integers(0, 6, size=50_001)]  # 12.8 MB, many ties everywhere
    q = np.concatenate([alphabet[:2], random_codes(rng, 1, 256)])
    for nq in (1, 3):
        full = ref_topk(q[:nq], db, 50_003)  # prefixes of a stable sort are the smaller k
        for k in (1, 10, 1000, 50_001, 50_003):
            for threads in (0, 1, 2, 3, 7):
                dist, ids = sf.hamming_topk(q[:nq], db, k, threads=threads)
                assert np.array_equal(dist, full[0][:, :k]), (nq, k, threads)
                assert np.array_equal(ids, full[1][:, :k]), (nq, k, threads)
    expect = ref_hamming_matrix(q[:1], db)
    for threads in (0, 1, 2, 5):
        assert np.array_equal(sf.hamming_distances(q[:1], db, threads=threads), expect)
        assert np.array_equal(sf.hamming_distances(db, q[:1], threads=threads), expect.T)
    # width 1, more rows than one tile
    db1 = random_codes(rng, 70_001, 1)
    check_topk(db1[:3], db1, 50, threads=2)


def test_topk_real_width(backend_isa):
    """150 classes x 64 blocks = 6000-byte codes, sparse like real SBS codes."""
    rng = np.random.default_rng(150)
    db = random_codes(rng, 301, 6000, density=0.02)
    db[100:110] = db[5]  # duplicates -> ties
    q = np.concatenate([db[[5, 0]], random_codes(rng, 3, 6000, density=0.02)])
    check_topk(q, db, 20)
    check_topk(q, db, 400)


def test_topk_msrc(backend_isa, msrc_labels):
    codes = sf.encode_sbs(msrc_labels, num_classes=14, levels=3, ignore_index=0)
    expect = np.stack([ref_encode_sbs(x, 14, 3, ignore_index=0) for x in msrc_labels[:8]])
    assert np.array_equal(codes[:8], expect)
    dist, _ = check_topk(codes, codes, 25)
    assert (dist[:, 0] == 0).all()
    assert np.array_equal(
        sf.hamming_distances(codes[:70], codes), ref_hamming_matrix(codes[:70], codes)
    )


# --------------------------------------------------------------------------------------
# Hypothesis properties
# --------------------------------------------------------------------------------------
@st.composite
def code_sets(draw, n_min=1, n_max=40):
    width = draw(st.sampled_from(WIDTHS))
    n = draw(st.integers(n_min, n_max))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from((None, 0.02, 0.5, 0.97)))
    return random_codes(np.random.default_rng(seed), n, width, density)


@settings(HYP, max_examples=25)
@given(x=code_sets(n_min=3), mask_seed=st.integers(0, 2**32 - 1))
def test_hamming_properties(backend_isa, x, mask_seed):
    d = sf.hamming_distances(x, x).astype(np.int64)
    assert np.array_equal(d, ref_hamming_matrix(x, x))
    assert np.array_equal(d, d.T)  # symmetry
    assert not np.diag(d).any()  # d(x, x) = 0
    # triangle inequality d(i,k) <= d(i,j) + d(j,k) for all triples
    assert (d[:, None, :] <= d[:, :, None] + d[None, :, :]).all()
    # invariance under XOR with a common mask (faiss#5387)
    mask = np.random.default_rng(mask_seed).integers(0, 256, size=x.shape[1], dtype=np.uint8)
    xm = x ^ mask
    assert np.array_equal(sf.hamming_distances(xm, xm), d)
    assert np.array_equal(sf.hamming_distances(x[:2], xm[2:]), sf.hamming_distances(xm[:2], x[2:]))


@settings(HYP, max_examples=25)
@given(
    db=code_sets(n_min=0, n_max=300),
    nq=st.integers(0, 9),
    k=st.integers(1, 320),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_is_stable_argsort(backend_isa, db, nq, k, seed):
    rng = np.random.default_rng(seed)
    width = db.shape[1]
    q = random_codes(rng, nq, width)
    if len(db) and nq:
        q[: nq // 2] = db[rng.integers(0, len(db), size=nq // 2)]  # exact matches
    dist, ids = check_topk(q, db, k, threads=int(rng.integers(0, 3)))
    if nq and len(db):
        d = sf.hamming_distances(q, db)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        kk = order.shape[1]
        assert np.array_equal(ids[:, :kk], order)
        assert np.array_equal(dist[:, :kk], np.take_along_axis(d, order, axis=1))
    t1 = sf.hamming_topk(q, db, k, threads=1)
    t2 = sf.hamming_topk(q, db, k, threads=2)
    assert np.array_equal(t1[0], t2[0]) and np.array_equal(t1[1], t2[1])


@settings(HYP, max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.sampled_from((1, 3, 14, 151)),
    levels=st.integers(0, 3),
    pyramid=st.booleans(),
)
def test_hamming_equals_decoded_difference(backend_isa, seed, m, levels, pyramid):
    """SPEC 1: d(code1, code2) = sum over (b,c) of |p1-p2| + |l1-l2|."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(3):
        h, w = rng.integers(1, 30, size=2)
        k = int(rng.integers(1, min(m, 5) + 1))
        cls = rng.choice(m, size=k, replace=False)
        lab = rng.choice(cls, size=(h, w)).astype(np.int32)
        lab[rng.random((h, w)) < 0.1] = -1
        maps.append(lab)
    codes = sf.encode_sbs(maps, num_classes=m, levels=levels, pyramid=pyramid)
    lay = sf.sbs_layout(m, levels, pyramid=pyramid)
    pres, lev = sf.decode_sbs(codes, lay)
    d = sf.hamming_distances(codes, codes)
    for i in range(3):
        p_ref, l_ref = ref_block_stats(maps[i], m, levels, pyramid=pyramid)
        assert np.array_equal(pres[i], p_ref) and np.array_equal(lev[i], l_ref)
        for j in range(3):
            expect = (
                np.abs(pres[i].astype(int) - pres[j]).sum()
                + np.abs(lev[i].astype(int) - lev[j]).sum()
            )
            assert d[i, j] == expect


# --------------------------------------------------------------------------------------
# backend / ISA switching
# --------------------------------------------------------------------------------------
def test_backend_switching():
    pytest.importorskip("numba")
    prev = sf.backend()
    assert prev in ("cpp", "numba")
    try:
        sf.set_backend("numba")
        assert sf.backend() == "numba"
        assert sf.active_isa() == "numba" and sf.available_isas() == ["numba"]
        try:
            sf.set_backend("cpp")
        except RuntimeError:
            pytest.skip("C++ backend not built")
        assert sf.backend() == "cpp"
        isas = sf.available_isas()
        assert "scalar" in isas and set(isas) <= {"scalar", "avx2", "avx512"}
        assert sf.active_isa() in isas
        before = sf.active_isa()
        for isa in isas:
            sf.set_isa(isa)
            assert sf.active_isa() == isa
        sf.set_isa(before)
    finally:
        sf.set_backend(prev)


def _run_python(code: str, **env) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEMCBIR_")}
    full_env.update(env)
    here = os.path.dirname(os.path.abspath(__file__))
    full_env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(here, "..", "python")] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_env_backend_and_isa():
    pytest.importorskip("numba")
    out = _run_python(
        "import semcbir_fast as s; print(s.backend(), s.active_isa())", SEMCBIR_BACKEND="numba"
    )
    assert out == "numba numba"
    out = _run_python(
        "import semcbir_fast as s; print(s.backend(), s.active_isa())",
        SEMCBIR_ISA="scalar",
    )
    if out.split()[0] == "cpp":
        assert out == "cpp scalar"


# --------------------------------------------------------------------------------------
# the backend contract: both backends export the same names with the same arguments
# --------------------------------------------------------------------------------------
#: name -> parameter names (a class: its constructor's; "Class.method" for its methods)
CONTRACT = {
    "encode_sbs": ("maps", "num_classes", "levels", "ignore_index", "pyramid", "stride",
                   "threads"),
    "hamming_topk": ("queries", "database", "k", "threads"),
    "hamming_distances": ("a", "b", "threads"),
    "build_phrase_matrices": ("xy", "words", "classes", "vocab_size", "phrase_len", "threads"),
    "sparse_l2_topk": ("q_indptr", "q_indices", "q_data", "d_indptr", "d_indices", "d_data",
                       "cols", "k", "threads"),
    "SparseL2Index": ("indptr", "indices", "data", "cols", "threads"),
    "SparseL2Index.search": ("q_indptr", "q_indices", "q_data", "k", "threads"),
    "sparse_sbs_encode": ("codes", "num_classes", "levels", "pyramid", "threads"),
    "sparse_sbs_decode": ("offsets", "entries", "popcounts", "num_classes", "levels", "pyramid",
                          "threads"),
    "sparse_sbs_check": ("offsets", "entries", "popcounts", "num_classes", "levels", "pyramid"),
    "SparseSBSIndex": ("offsets", "entries", "popcounts", "num_classes", "levels", "pyramid",
                       "threads", "hot_fraction"),
    "SparseSBSIndex.search": ("queries", "k", "threads", "method"),
    "active_isa": (),
    "available_isas": (),
    "set_isa": ("name",),
    "hardware_threads": (),
}
SPARSE_L2_PROPERTIES = ("rows", "cols", "nnz")
SPARSE_SBS_PROPERTIES = ("rows", "nnz", "inverted_bytes", "hot_cells")


def _pyi_contract() -> dict:
    """Parameter names of every function / method in python/semcbir_fast/_core.pyi."""
    import ast

    path = os.path.join(os.path.dirname(sf.__file__), "_core.pyi")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = tuple(a.arg for a in node.args.args)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    out[node.name] = tuple(a.arg for a in item.args.args[1:])
                elif isinstance(item, ast.FunctionDef) and not any(
                        isinstance(d, ast.Name) and d.id == "property"
                        for d in item.decorator_list):
                    out[f"{node.name}.{item.name}"] = tuple(a.arg for a in item.args.args[1:])
    return out


def _pybind_params(obj) -> tuple:
    """Parameter names from the first line of a pybind11 docstring (self dropped)."""
    import re

    first = obj.__doc__.strip().splitlines()[0]
    inner = first[first.index("(") + 1 : first.rindex(")")]
    names = tuple(re.findall(r"(?:^|,\s*)(\w+):", inner))
    return names[1:] if names[:1] == ("self",) else names


def _members(module) -> dict:
    out = {}
    for name in CONTRACT:
        cls, _, meth = name.partition(".")
        obj = getattr(module, cls)
        out[name] = getattr(obj, meth) if meth else (obj.__init__ if isinstance(obj, type) else obj)
    return out


def test_backend_contract_names_and_arguments():
    from semcbir_fast import _backend

    assert set(_backend.CONTRACT) == {n.partition(".")[0] for n in CONTRACT}
    assert _pyi_contract() == CONTRACT
    if _backend._core is not None:
        core = _backend._core
        assert {n for n in dir(core) if not n.startswith("_")} == set(_backend.CONTRACT)
        for name, fn in _members(core).items():
            assert _pybind_params(fn) == CONTRACT[name], name
        for prop in SPARSE_L2_PROPERTIES:
            assert isinstance(getattr(core.SparseL2Index, prop), property)
        for prop in SPARSE_SBS_PROPERTIES:
            assert isinstance(getattr(core.SparseSBSIndex, prop), property)
    pytest.importorskip("numba")
    import inspect

    from semcbir_fast import _numba

    assert set(_numba.__all__) == set(_backend.CONTRACT)
    for name, fn in _members(_numba).items():
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        assert tuple(p.name for p in params) == CONTRACT[name], name
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
    for prop in SPARSE_L2_PROPERTIES:
        assert isinstance(getattr(_numba.SparseL2Index, prop), property)
    for prop in SPARSE_SBS_PROPERTIES:
        assert isinstance(getattr(_numba.SparseSBSIndex, prop), property)
