"""Semantic Binary Signature: encode_sbs / sbs_layout / decode_sbs against tests/reference.py.

Every library test runs under each backend x SIMD level (fixture ``backend_isa``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import semcbir_fast as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import (
    ref_block_bounds,
    ref_block_stats,
    ref_decode,
    ref_encode_sbs,
    ref_layout_sizes,
)

DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64, np.uint32, np.uint64)
SIZES = ((1, 1), (1, 7), (7, 13), (31, 17), (513, 513), (256, 384))
NUM_CLASSES = (1, 3, 14, 150, 151)
HYP = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def max_classes(dtype) -> int:
    """Largest num_classes that the dtype can hold every class of (capped at 65536)."""
    info = np.iinfo(dtype)
    return int(min(info.max + 1, 65536))


def random_map(rng, h, w, dtype, num_classes, void_frac=0.15, iid=None):
    """Label map with a few classes in random proportions plus void pixels of every kind.

    Void values: negative (signed dtypes), >= num_classes, the dtype's extremes and, for
    64-bit dtypes, values that would alias a valid class if truncated to 32 bits.
    """
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    m = num_classes
    if iid is None:
        iid = bool(rng.integers(0, 4) == 0)
    if iid:
        lab = rng.integers(0, m, size=(h, w)).astype(dtype)
    else:
        k = int(rng.integers(1, min(m, 6) + 1))
        classes = rng.choice(m, size=k, replace=False)
        probs = rng.dirichlet(np.ones(k) * 0.7)
        lab = rng.choice(classes, size=(h, w), p=probs).astype(dtype)
    cands = []
    if info.min < 0:
        cands += [-1, int(info.min), -int(rng.integers(1, 50))]
    if m <= info.max:
        cands += [m, int(info.max), min(int(info.max), m + int(rng.integers(0, 300)))]
    if dtype.itemsize == 8:
        cands += [2**32 + min(1, m - 1), 2**33]
        if info.min < 0:
            cands += [-(2**32) + min(1, m - 1)]
    if cands and void_frac > 0:
        mask = rng.random((h, w)) < void_frac
        vals = np.array(cands, dtype=dtype)
        lab[mask] = vals[rng.integers(0, len(vals), size=int(mask.sum()))]
    return lab


def check_code(code, labels, m, levels, ignore_index=None, pyramid=False):
    expect = ref_encode_sbs(labels, m, levels, ignore_index=ignore_index, pyramid=pyramid)
    assert code.dtype == np.uint8
    assert code.shape == expect.shape, (code.shape, expect.shape)
    if not np.array_equal(code, expect):
        bad = np.flatnonzero(code != expect)
        raise AssertionError(
            f"code differs from reference at {bad.size} bytes, first {bad[:8].tolist()}: "
            f"got {code[bad[:8]].tolist()} expected {expect[bad[:8]].tolist()} "
            f"(shape {np.shape(labels)}, dtype {np.asarray(labels).dtype}, M={m}, "
            f"levels={levels}, ignore_index={ignore_index}, pyramid={pyramid})"
        )


# --------------------------------------------------------------------------------------
# Hand-computed codes (bytes written out by hand from SPEC section 1)
# --------------------------------------------------------------------------------------
MAP_2X2 = np.array([[0, 1], [1, 1]])
# levels 0: counts c0=1 c1=3 total 4 -> l=(1,3); bits p=11, t=1000 1110 -> 1110001110
# levels 1: four 1-pixel blocks (0 | 1 / 1 | 1): p=10 01 01 01; l=4 where present
# pyramid 0..1: the 10 bits of level 0 then the 40 bits of level 1, no padding between
HAND_2X2 = {
    (0, False): "e380000000000000",
    (1, False): "95f00f0f0f000000",
    (1, True): "e3a57c03c3c3c000",
}
# 3x5 map, uneven blocks: levels 1 -> rows [0,1) [1,3), cols [0,2) [2,5); -1 is void.
MAP_3X5 = np.array([[0, 0, 1, 1, 2], [2, 2, 1, 1, 1], [0, -1, 1, 2, 1]])
# levels 1: b0 {0:2}/2 -> l0=4; b1 {1:2,2:1}/3 -> l=(0,3,2); b2 {2:2,0:1}/3 -> (2,0,3);
#   b3 {1:5,2:1}/6 -> (0,4,1). presence 100 011 101 011,
#   thermometers 1111 0000 0000 | 0000 1110 1100 | 1100 0000 1110 | 0000 1111 1000
# levels 0: counts (3,7,4) of 14 non-void -> l=(1,2,2): 111 1000 1100 1100
HAND_3X5 = {
    (1, False): "8ebf000ecc0e0f80",
    (0, False): "f198000000000000",
}


def test_reference_hand_cases():
    for (lv, pyr), hexcode in HAND_2X2.items():
        assert ref_encode_sbs(MAP_2X2, 2, lv, pyramid=pyr).tobytes().hex() == hexcode
    for (lv, pyr), hexcode in HAND_3X5.items():
        assert ref_encode_sbs(MAP_3X5, 3, lv, pyramid=pyr).tobytes().hex() == hexcode
    pres, lev = ref_block_stats(MAP_3X5, 3, 1)
    assert pres.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 1, 1]]
    assert lev.tolist() == [[4, 0, 0], [0, 3, 2], [2, 0, 3], [0, 4, 1]]
    # block bounds floor(i*H/g): grids finer than the map have empty blocks
    assert ref_block_bounds(3, 2).tolist() == [0, 1, 3]
    assert ref_block_bounds(3, 4).tolist() == [0, 0, 1, 2, 3]
    # ignore_index=1 leaves 0 and 2: levels 0 -> counts (3, 0, 4) of 7 -> l=(2,0,3)
    code = ref_encode_sbs(MAP_3X5, 3, 0, ignore_index=1)
    assert ref_decode(code, 3, 0)[1].tolist() == [[2, 0, 3]]


def test_reference_level_boundaries():
    # P = 1/4, 1/4+eps, 1/2, 3/4, 3/4+eps, 1 -> 1, 2, 2, 3, 4, 4 (equation 1, P <= .25 -> 1)
    row = np.array([0] * 4 + [1] * 12)[None, :]  # P0 = 4/16
    assert ref_block_stats(row, 2, 0)[1].tolist() == [[1, 3]]
    row = np.array([0] * 5 + [1] * 11)[None, :]  # P0 = 5/16 > .25, P1 = 11/16 <= .75
    assert ref_block_stats(row, 2, 0)[1].tolist() == [[2, 3]]
    row = np.array([0] * 8 + [1] * 8)[None, :]
    assert ref_block_stats(row, 2, 0)[1].tolist() == [[2, 2]]
    row = np.array([0] * 13 + [1] * 3)[None, :]
    assert ref_block_stats(row, 2, 0)[1].tolist() == [[4, 1]]


@pytest.mark.parametrize("case", sorted(HAND_2X2) + [("3x5",) + k for k in sorted(HAND_3X5)])
def test_encode_hand_cases(backend_isa, case):
    if case[0] == "3x5":
        _, lv, pyr = case
        labels, m, hexcode = MAP_3X5, 3, HAND_3X5[(lv, pyr)]
    else:
        lv, pyr = case
        labels, m, hexcode = MAP_2X2, 2, HAND_2X2[(lv, pyr)]
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        code = sf.encode_sbs(labels.astype(dtype), num_classes=m, levels=lv, pyramid=pyr)
        assert code.shape == (8,) and code.dtype == np.uint8
        assert code.tobytes().hex() == hexcode


# --------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", (1, 2, 3, 14, 150, 151, 256, 65536))
@pytest.mark.parametrize("pyramid", (False, True))
def test_layout(m, pyramid):
    for levels in (0, 1, 2, 3, 4, 7, 12):
        lay = sf.sbs_layout(m, levels, pyramid=pyramid)
        ref = ref_layout_sizes(m, levels, pyramid)
        assert isinstance(lay, sf.SBSLayout)
        for key in ("num_classes", "levels", "pyramid", "blocks", "nbits", "nbytes", "stride"):
            assert getattr(lay, key) == ref[key], (key, getattr(lay, key), ref[key])
        assert tuple(lay.level_offsets) == ref["level_offsets"]
        assert lay.stride % 8 == 0 and lay.stride >= lay.nbytes
        if not pyramid:
            assert lay.presence_offset == 0
            assert lay.proportion_offset == m * 4**levels
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.nbits = 1


def test_layout_known_sizes():
    assert sf.sbs_layout(14, 3).nbits == 4480 and sf.sbs_layout(14, 3).stride == 560
    lay = sf.sbs_layout(150, 3)
    assert (lay.blocks, lay.nbits, lay.nbytes, lay.stride) == (64, 48000, 6000, 6000)
    lay = sf.sbs_layout(14, 3, pyramid=True)
    assert (lay.blocks, lay.nbits, lay.nbytes, lay.stride) == (85, 5950, 744, 744)
    assert lay.level_offsets == (0, 70, 350, 1470)
    lay = sf.sbs_layout(3, 0)
    assert (lay.nbits, lay.nbytes, lay.stride) == (15, 2, 8)


# --------------------------------------------------------------------------------------
# encode_sbs bit-exact against the reference
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", (0, 1, 2, 3, 4))
@pytest.mark.parametrize("shape", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_encode_sizes(backend_isa, shape, levels):
    rng = np.random.default_rng([shape[0], shape[1], levels])
    for i, (m, pyramid) in enumerate(((14, False), (151, True), (3, False))):
        dtype = DTYPES[(levels + i + shape[1]) % len(DTYPES)]
        if m > max_classes(dtype):
            dtype = np.int32
        lab = random_map(rng, *shape, dtype, m)
        code = sf.encode_sbs(lab, num_classes=m, levels=levels, pyramid=pyramid)
        check_code(code, lab, m, levels, pyramid=pyramid)


@pytest.mark.parametrize(
    "dtype,m",
    # num_classes too large for the dtype (int8 with 150) is an error: see test_errors.py
    [(d, m) for d in DTYPES for m in NUM_CLASSES if m <= max_classes(d)],
    ids=lambda v: np.dtype(v).name if isinstance(v, type) else f"M{v}",
)
def test_encode_dtypes(backend_isa, dtype, m):
    rng = np.random.default_rng([m, np.dtype(dtype).num])
    for levels in (0, 1, 2, 3, 4):
        lab = random_map(rng, 31, 17, dtype, m, iid=levels == 4)
        for pyramid in (False, True):
            code = sf.encode_sbs(lab, num_classes=m, levels=levels, pyramid=pyramid)
            check_code(code, lab, m, levels, pyramid=pyramid)
        # ignore a class that occurs in the map
        valid = lab[(lab.astype(np.int64) >= 0) & (lab < m)] if lab.size else lab
        ign = int(valid.flat[0]) if valid.size else 0
        code = sf.encode_sbs(lab, num_classes=m, levels=levels, ignore_index=ign)
        check_code(code, lab, m, levels, ignore_index=ign)


@pytest.mark.parametrize("dtype", (np.uint8, np.int16, np.int64, np.uint64), ids=str)
def test_encode_ignore_index(backend_isa, dtype):
    rng = np.random.default_rng(7)
    m = 14
    lab = random_map(rng, 40, 33, dtype, m, void_frac=0.1, iid=True)
    info = np.iinfo(dtype)
    for ign in (None, 0, 5, m - 1, m, 255, info.max, -1):
        try:
            code = sf.encode_sbs(lab, num_classes=m, levels=2, ignore_index=ign)
        except ValueError as exc:  # an ignore_index outside the dtype or int64 may be refused...
            assert not (max(info.min, -(2**63)) <= ign <= min(info.max, 2**63 - 1)), (ign, exc)
            assert "ignore_index" in str(exc)
            continue
        check_code(code, lab, m, 2, ignore_index=ign)  # ...or be a no-op


def test_encode_uint8_all_classes(backend_isa):
    """uint8 with M=256: 255 is a class, nothing is void unless ignore_index says so."""
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 256, size=(50, 70)).astype(np.uint8)
    lab[:3] = 255
    for levels in (0, 2):
        check_code(sf.encode_sbs(lab, num_classes=256, levels=levels), lab, 256, levels)
        code = sf.encode_sbs(lab, num_classes=256, levels=levels, ignore_index=255)
        check_code(code, lab, 256, levels, ignore_index=255)
    lab8 = (lab.astype(np.int16) - 128).astype(np.int8)  # int8 with M=128: negatives void
    check_code(sf.encode_sbs(lab8, num_classes=128, levels=1), lab8, 128, 1)


def test_encode_65536_classes(backend_isa):
    """The largest allowed num_classes, uint16 labels up to 65535 (all valid)."""
    rng = np.random.default_rng(5)
    lab = rng.integers(65500, 65536, size=(9, 11)).astype(np.uint16)
    lab[0, 0] = 0
    code = sf.encode_sbs(lab, num_classes=65536, levels=0)
    check_code(code, lab, 65536, 0)
    lab32 = lab.astype(np.int32)
    lab32[1, 1] = 65536  # void
    check_code(sf.encode_sbs(lab32, num_classes=65536, levels=1), lab32, 65536, 1)


def test_encode_fine_grids(backend_isa):
    """Grids finer than the map (empty blocks encode to zeros), up to levels 6."""
    rng = np.random.default_rng(11)
    for shape in ((1, 1), (1, 7), (3, 5), (7, 13), (2, 64)):
        lab = random_map(rng, *shape, np.int32, 3)
        for levels in (3, 4, 5, 6):
            for pyramid in (False, True):
                code = sf.encode_sbs(lab, num_classes=3, levels=levels, pyramid=pyramid)
                check_code(code, lab, 3, levels, pyramid=pyramid)
    # a 1x1 map at levels 2: only the last block (by=bx=3) holds the pixel
    pres, lev = ref_block_stats(np.array([[1]]), 2, 2)
    assert np.flatnonzero(pres.any(axis=1)).tolist() == [15]
    code = sf.encode_sbs(np.array([[1]], dtype=np.int32), num_classes=2, levels=2)
    p, lv = sf.decode_sbs(code, sf.sbs_layout(2, 2))
    assert np.array_equal(p, pres) and np.array_equal(lv, lev)


def test_encode_all_void_and_padding(backend_isa):
    rng = np.random.default_rng(2)
    for m, levels, pyramid in ((3, 0, False), (14, 2, True), (151, 3, False)):
        lay = sf.sbs_layout(m, levels, pyramid=pyramid)
        void = np.full((17, 23), m, dtype=np.int32)
        void[::2] = -5
        code = sf.encode_sbs(void, num_classes=m, levels=levels, pyramid=pyramid)
        assert code.shape == (lay.stride,) and not code.any()
        # all pixels == ignore_index
        same = np.full((5, 6), 1, dtype=np.uint8)
        code = sf.encode_sbs(same, num_classes=m, levels=levels, ignore_index=1)
        assert not code.any()
        # padding after nbytes is zero, also when every class is present everywhere
        lab = rng.integers(0, m, size=(64, 64)).astype(np.int32)
        code = sf.encode_sbs(lab, num_classes=m, levels=levels, pyramid=pyramid)
        assert not code[lay.nbytes :].any()
        tail_bits = lay.nbytes * 8 - lay.nbits
        if tail_bits:
            assert code[lay.nbytes - 1] & ((1 << tail_bits) - 1) == 0


# --------------------------------------------------------------------------------------
# Batches, lists, threads, layouts in memory, torch
# --------------------------------------------------------------------------------------
def test_encode_batch_and_list(backend_isa):
    rng = np.random.default_rng(21)
    m, levels = 14, 2
    batch = np.stack([random_map(rng, 37, 29, np.int16, m) for _ in range(5)])
    per_map = np.stack([sf.encode_sbs(x, num_classes=m, levels=levels) for x in batch])
    for threads in (0, 1, 2):
        out = sf.encode_sbs(batch, num_classes=m, levels=levels, threads=threads)
        assert out.shape == (5, sf.sbs_layout(m, levels).stride) and out.dtype == np.uint8
        assert out.flags.c_contiguous
        assert np.array_equal(out, per_map)
    for i, x in enumerate(batch):
        check_code(per_map[i], x, m, levels)
    # list of maps of different sizes and dtypes
    maps = [
        random_map(rng, h, w, dt, m)
        for (h, w), dt in zip(
            ((1, 1), (7, 13), (31, 17), (64, 3), (100, 90), (5, 5)),
            (np.uint8, np.int8, np.uint16, np.int32, np.int64, np.uint64),
        )
    ]
    for pyramid in (False, True):
        expect = np.stack([ref_encode_sbs(x, m, 3, pyramid=pyramid) for x in maps])
        for threads in (1, 2):
            out = sf.encode_sbs(maps, num_classes=m, levels=3, pyramid=pyramid, threads=threads)
            assert out.shape == expect.shape
            assert np.array_equal(out, expect)
    # a list with one map is still a batch
    out = sf.encode_sbs([maps[1]], num_classes=m, levels=1)
    assert out.shape == (1, sf.sbs_layout(m, 1).stride)
    check_code(out[0], maps[1], m, 1)


def test_encode_batch_threads_large(backend_isa):
    """More maps than threads, results independent of the thread count."""
    rng = np.random.default_rng(8)
    batch = rng.integers(-1, 16, size=(23, 20, 30)).astype(np.int32)
    outs = [sf.encode_sbs(batch, num_classes=15, levels=3, threads=t) for t in (1, 2, 0)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    check_code(outs[0][22], batch[22], 15, 3)


def test_encode_noncontiguous(backend_isa):
    rng = np.random.default_rng(4)
    base = random_map(rng, 60, 80, np.int32, 14)
    views = (base[::2, ::3], base.T, np.asfortranarray(base), base[5:40, 7:61], base[::-1])
    for v in views:
        check_code(sf.encode_sbs(v, num_classes=14, levels=2), v, 14, 2)
    b3 = np.stack([base, base[::-1]])[:, ::2, 1::2]
    out = sf.encode_sbs(b3, num_classes=14, levels=1)
    for i in range(2):
        check_code(out[i], b3[i], 14, 1)
    b3t = np.stack([base, base]).transpose(0, 2, 1)
    out = sf.encode_sbs(b3t, num_classes=14, levels=1)
    check_code(out[1], b3t[1], 14, 1)


@pytest.mark.parametrize("dtype", (">i2", ">u2", ">i4", ">i8", ">u8"))
def test_encode_byte_order(backend_isa, dtype):
    """Non-native byte order (e.g. labels read from a big-endian file) must be read by value,
    or refused with a ValueError naming labels; never silently mis-read."""
    rng = np.random.default_rng(6)
    native = random_map(rng, 19, 23, np.dtype(dtype).newbyteorder("="), 14)
    swapped = native.astype(dtype)
    assert np.array_equal(native, swapped) and not swapped.dtype.isnative
    try:
        code = sf.encode_sbs(swapped, num_classes=14, levels=2)
    except ValueError as exc:
        assert "labels" in str(exc)
        return
    check_code(code, native, 14, 2)


def test_encode_torch_cpu(backend_isa):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    m = 14
    for tdt in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        lab = random_map(rng, 33, 47, np.int8, m)
        t = torch.from_numpy(lab.astype(np.int64)).to(tdt)
        expect_lab = t.numpy()
        check_code(sf.encode_sbs(t, num_classes=m, levels=2), expect_lab, m, 2)
        tt = t.t()  # non-contiguous
        check_code(sf.encode_sbs(tt, num_classes=m, levels=1), tt.contiguous().numpy(), m, 1)
    batch = torch.from_numpy(rng.integers(-1, m + 1, size=(3, 16, 9))).to(torch.int32)
    out = sf.encode_sbs(batch, num_classes=m, levels=1, pyramid=True)
    for i in range(3):
        check_code(out[i], batch[i].numpy(), m, 1, pyramid=True)
    maps = [torch.zeros(3, 4, dtype=torch.uint8), torch.ones(5, 2, dtype=torch.int64)]
    out = sf.encode_sbs(maps, num_classes=m, levels=0)
    for i in range(2):
        check_code(out[i], maps[i].numpy(), m, 0)


def test_encode_torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    lab = torch.randint(-1, 15, (64, 48), dtype=torch.int64, device="cuda")
    code = sf.encode_sbs(lab, num_classes=14, levels=2)
    check_code(code, lab.cpu().numpy(), 14, 2)


# --------------------------------------------------------------------------------------
# Hypothesis: arbitrary small maps
# --------------------------------------------------------------------------------------
@st.composite
def sbs_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    m = draw(st.sampled_from((1, 2, 3, 5, 14, 128, 150, 151, 256, 300)))
    m = min(m, max_classes(dtype))
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    levels = draw(st.integers(0, 5))
    pyramid = draw(st.booleans())
    ignore = draw(st.one_of(st.none(), st.integers(0, m - 1)))
    seed = draw(st.integers(0, 2**32 - 1))
    lab = random_map(np.random.default_rng(seed), h, w, dtype, m)
    return lab, m, levels, pyramid, ignore


@settings(HYP, max_examples=30)
@given(case=sbs_cases())
def test_encode_property(backend_isa, case):
    lab, m, levels, pyramid, ignore = case
    code = sf.encode_sbs(lab, num_classes=m, levels=levels, ignore_index=ignore, pyramid=pyramid)
    check_code(code, lab, m, levels, ignore_index=ignore, pyramid=pyramid)


# --------------------------------------------------------------------------------------
# decode_sbs
# --------------------------------------------------------------------------------------
def test_reference_decode_inverts_reference():
    rng = np.random.default_rng(12)
    for m, levels, pyramid in ((1, 0, False), (3, 2, True), (14, 3, False), (151, 1, True)):
        lab = random_map(rng, 29, 31, np.int32, m)
        pres, lev = ref_block_stats(lab, m, levels, pyramid=pyramid)
        code = ref_encode_sbs(lab, m, levels, pyramid=pyramid)
        p2, l2 = ref_decode(code, m, levels, pyramid=pyramid)
        assert np.array_equal(pres, p2) and np.array_equal(lev, l2)
        assert set(np.unique(lev)) <= {0, 1, 2, 3, 4}
        assert np.array_equal(pres, (lev > 0).astype(np.uint8))


@pytest.mark.parametrize(
    "m,levels,pyramid",
    [(1, 0, False), (3, 2, True), (14, 3, False), (151, 1, True), (150, 3, False)],
)
def test_decode(backend_isa, m, levels, pyramid):
    rng = np.random.default_rng([m, levels])
    lay = sf.sbs_layout(m, levels, pyramid=pyramid)
    maps = [random_map(rng, 29 + i, 31 - i, np.int32, m) for i in range(4)]
    codes = sf.encode_sbs(maps, num_classes=m, levels=levels, pyramid=pyramid)
    pres, lev = sf.decode_sbs(codes, lay)
    assert pres.shape == (4, lay.blocks, m) and lev.shape == (4, lay.blocks, m)
    assert pres.dtype == np.uint8 and lev.dtype == np.uint8
    for i, x in enumerate(maps):
        p_ref, l_ref = ref_block_stats(x, m, levels, pyramid=pyramid)
        assert np.array_equal(pres[i], p_ref) and np.array_equal(lev[i], l_ref)
    p1, l1 = sf.decode_sbs(codes[2], lay)  # 1-D code
    assert p1.shape == (lay.blocks, m)
    assert np.array_equal(p1, pres[2]) and np.array_equal(l1, lev[2])
    # only the first nbytes are read: a code cut to nbytes decodes the same
    p3, l3 = sf.decode_sbs(np.ascontiguousarray(codes[:, : lay.nbytes]), lay)
    assert np.array_equal(p3, pres) and np.array_equal(l3, lev)


# --------------------------------------------------------------------------------------
# Real data: the 240 MSRC v1 ground-truth maps (0 is void in MSRC)
# --------------------------------------------------------------------------------------
_MSRC_REFERENCE: dict = {}


def _msrc_reference(maps, levels: int, ignore_index):
    """Reference codes of the (session-wide, fixed) MSRC maps, computed once per setting."""
    key = (levels, ignore_index)
    if key not in _MSRC_REFERENCE:
        _MSRC_REFERENCE[key] = np.stack(
            [ref_encode_sbs(x, 14, levels, ignore_index=ignore_index) for x in maps])
    return _MSRC_REFERENCE[key]


@pytest.mark.parametrize("ignore_index", (None, 0))
@pytest.mark.parametrize("levels", (0, 1, 2, 3))
def test_encode_msrc(backend_isa, msrc_labels, levels, ignore_index):
    assert len(msrc_labels) == 240
    expect = _msrc_reference(msrc_labels, levels, ignore_index)
    out = sf.encode_sbs(msrc_labels, num_classes=14, levels=levels, ignore_index=ignore_index)
    assert out.shape == expect.shape
    bad = np.flatnonzero((out != expect).any(axis=1))
    assert bad.size == 0, f"{bad.size} MSRC maps differ, first index {bad[:5].tolist()}"
    if levels == 3:
        one = sf.encode_sbs(msrc_labels[17], num_classes=14, levels=3, ignore_index=ignore_index)
        assert np.array_equal(one, expect[17])
        pres, lev = sf.decode_sbs(out, sf.sbs_layout(14, 3))
        p_ref, l_ref = ref_block_stats(msrc_labels[17], 14, 3, ignore_index=ignore_index)
        assert np.array_equal(pres[17], p_ref) and np.array_equal(lev[17], l_ref)


def test_msrc_ignore_void_class(msrc_labels):
    """With ignore_index=0 the void class never appears; without, class 0 is counted."""
    a = sf.encode_sbs(msrc_labels, num_classes=14, levels=0, ignore_index=0)
    b = sf.encode_sbs(msrc_labels, num_classes=14, levels=0)
    pa, _ = sf.decode_sbs(a, sf.sbs_layout(14, 0))
    pb, _ = sf.decode_sbs(b, sf.sbs_layout(14, 0))
    assert not pa[:, 0, 0].any()
    assert pb[:, 0, 0].sum() > 100  # most MSRC maps have void pixels
    assert np.array_equal(pa[:, :, 1:], pb[:, :, 1:])
