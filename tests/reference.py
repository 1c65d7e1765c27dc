"""NumPy reference implementations ("oracles") written from SPEC.md sections 1-3 only, and the
random test data the SBoVP tests share.

Every backend of the library (C++ at each SIMD level, numba, ...) is checked against the
functions here, so they favour clarity over speed; they are vectorised just enough that a
513x513 label map or a few thousand 6000-byte codes take milliseconds, not seconds.

Nothing here imports ``semcbir_fast``: the oracles must stay independent of the code under
test.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INT32_MAX",
    "POPCOUNT8",
    "csr_parts",
    "random_csr",
    "random_image",
    "ref_block_bounds",
    "ref_block_stats",
    "ref_decode",
    "ref_encode_sbs",
    "ref_hamming_matrix",
    "ref_layout_sizes",
    "ref_level_bits",
    "ref_phrase_matrix",
    "ref_sparse_l2_topk",
    "ref_topk",
]

INT32_MAX = 2**31 - 1

#: number of set bits of every byte value 0..255
POPCOUNT8 = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.int64)


# --------------------------------------------------------------------------------------
# SBS layout (SPEC section 1)
# --------------------------------------------------------------------------------------
def ref_layout_sizes(num_classes: int, levels: int, pyramid: bool = False) -> dict:
    """Sizes of an SBS code.

    Returns a dict with ``blocks`` (total over the pyramid), ``nbits``, ``nbytes``
    (= ceil(nbits/8)), ``stride`` (= nbytes rounded up to a multiple of 8),
    ``level_offsets`` (bit offset of each level's bit string) and, for one level,
    ``presence_offset`` / ``proportion_offset``.
    """
    m = int(num_classes)
    lvls = range(levels + 1) if pyramid else [levels]
    level_offsets = []
    nbits = 0
    blocks = 0
    for n in lvls:
        level_offsets.append(nbits)
        nb = 4**n
        blocks += nb
        nbits += 5 * m * nb
    nbytes = (nbits + 7) // 8
    stride = (nbytes + 7) // 8 * 8
    return {
        "num_classes": m,
        "levels": levels,
        "pyramid": bool(pyramid),
        "blocks": blocks,
        "nbits": nbits,
        "nbytes": nbytes,
        "stride": stride,
        "level_offsets": tuple(level_offsets),
        "presence_offset": 0,
        "proportion_offset": m * blocks,
    }


def ref_block_bounds(size: int, g: int) -> np.ndarray:
    """Boundaries ``floor(i*size/g)`` for i = 0..g (g+1 integers, non-decreasing)."""
    return np.array([(i * size) // g for i in range(g + 1)], dtype=np.int64)


def _block_index(h: int, w: int, level: int) -> np.ndarray:
    """(H, W) array: number ``b = by*g + bx`` of the block that holds each pixel."""
    g = 2**level
    rb = ref_block_bounds(h, g)
    cb = ref_block_bounds(w, g)
    # Pixel y is in block row `by` with rb[by] <= y < rb[by+1]. With empty blocks (g > H)
    # several boundaries are equal; side="right" - 1 picks the one non-empty block.
    by = np.searchsorted(rb, np.arange(h), side="right") - 1
    bx = np.searchsorted(cb, np.arange(w), side="right") - 1
    return by[:, None] * g + bx[None, :]


def _as_int64_map(labels) -> np.ndarray:
    if hasattr(labels, "detach"):  # torch tensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {arr.dtype}")
    return arr.astype(np.int64)


def _counts(lab: np.ndarray, num_classes: int, level: int, ignore_index) -> np.ndarray:
    """count[b, c] for one level (4**level, M)."""
    m = int(num_classes)
    nb = 4**level
    h, w = lab.shape
    valid = (lab >= 0) & (lab < m)
    if ignore_index is not None:
        valid &= lab != int(ignore_index)
    blk = _block_index(h, w, level)
    flat = blk[valid] * m + lab[valid]
    return np.bincount(flat, minlength=nb * m).reshape(nb, m)


def _levels_from_counts(count: np.ndarray) -> np.ndarray:
    """l[b, c] = 0 if count == 0 else ceil(4*count/total) (exact integer arithmetic)."""
    total = count.sum(axis=1, keepdims=True)
    safe = np.maximum(total, 1)
    lev = (4 * count + safe - 1) // safe
    return np.where(count > 0, lev, 0).astype(np.uint8)


def ref_block_stats(labels, num_classes: int, levels: int, ignore_index=None, pyramid=False):
    """(presence, level) uint8 arrays of shape (blocks, M) computed from pixel counts.

    For ``pyramid=True`` the blocks of levels 0..n are concatenated in that order.
    """
    lab = _as_int64_map(labels)
    lvls = range(levels + 1) if pyramid else [levels]
    pres, lev = [], []
    for n in lvls:
        cnt = _counts(lab, num_classes, n, ignore_index)
        pres.append((cnt > 0).astype(np.uint8))
        lev.append(_levels_from_counts(cnt))
    return np.concatenate(pres, axis=0), np.concatenate(lev, axis=0)


def ref_level_bits(labels, num_classes: int, level: int, ignore_index=None) -> np.ndarray:
    """The bit string S = [S_S S_P] of one level, as a uint8 array of 0/1 (5*M*4**n)."""
    lab = _as_int64_map(labels)
    cnt = _counts(lab, num_classes, level, ignore_index)
    presence = (cnt > 0).astype(np.uint8).reshape(-1)  # index b*M + c
    lev = _levels_from_counts(cnt).reshape(-1, 1)  # (b*M + c, 1)
    thermo = (lev > np.arange(4)[None, :]).astype(np.uint8)  # bit t = 1 iff l > t
    return np.concatenate([presence, thermo.reshape(-1)])  # index M*nb + (b*M+c)*4 + t


def ref_encode_sbs(labels, num_classes: int, levels: int, ignore_index=None, pyramid=False):
    """SBS code of one label map: (stride,) uint8, MSB-first packed, zero padded."""
    lvls = range(levels + 1) if pyramid else [levels]
    bits = np.concatenate([ref_level_bits(labels, num_classes, n, ignore_index) for n in lvls])
    sizes = ref_layout_sizes(num_classes, levels, pyramid)
    assert bits.size == sizes["nbits"]
    packed = np.packbits(bits)  # bitorder="big": bit i -> byte i//8, MSB first
    out = np.zeros(sizes["stride"], dtype=np.uint8)
    out[: packed.size] = packed
    return out


def ref_decode(code, num_classes: int, levels: int, pyramid=False):
    """Inverse of the packing: (presence, level) uint8 arrays (blocks, M) from one code.

    ``level`` is the number of set thermometer bits (equal to l for a valid code).
    """
    sizes = ref_layout_sizes(num_classes, levels, pyramid)
    bits = np.unpackbits(np.asarray(code, dtype=np.uint8)[: sizes["nbytes"]])[: sizes["nbits"]]
    m = int(num_classes)
    lvls = range(levels + 1) if pyramid else [levels]
    pres, lev = [], []
    for off, n in zip(sizes["level_offsets"], lvls):
        nb = 4**n
        p = bits[off : off + m * nb].reshape(nb, m)
        t = bits[off + m * nb : off + 5 * m * nb].reshape(nb, m, 4)
        pres.append(p)
        lev.append(t.sum(axis=2).astype(np.uint8))
    return np.concatenate(pres, axis=0), np.concatenate(lev, axis=0)


# --------------------------------------------------------------------------------------
# Hamming distances and top-k (SPEC section 2)
# --------------------------------------------------------------------------------------
def _popcount_bytes(x: np.ndarray) -> np.ndarray:
    """Per-byte popcount (np.bitwise_count on NumPy >= 2, else a 256-entry table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return POPCOUNT8[x]


def ref_hamming_matrix(a, b) -> np.ndarray:
    """int64 (na, nb) matrix of bit differences between the rows of two uint8 arrays."""
    a = np.atleast_2d(np.asarray(a, dtype=np.uint8))
    b = np.atleast_2d(np.asarray(b, dtype=np.uint8))
    assert a.shape[1] == b.shape[1], (a.shape, b.shape)
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.int64)
    if b.shape[0] == 0:
        return out
    for i in range(a.shape[0]):  # one query at a time keeps the XOR temporary small
        out[i] = _popcount_bytes(np.bitwise_xor(a[i], b)).sum(axis=1, dtype=np.int64)
    return out


def ref_topk(queries, database, k: int):
    """(distances int32 (nq,k), ids int64 (nq,k)): ascending, ties by smaller id, padded."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.uint8))
    db = np.asarray(database, dtype=np.uint8)
    if db.ndim == 1:
        db = db.reshape(0 if db.size == 0 else 1, -1)
    nq, n = q.shape[0], db.shape[0]
    dist = np.full((nq, k), INT32_MAX, dtype=np.int32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0 or n == 0:
        return dist, ids
    d = ref_hamming_matrix(q, db)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]  # stable: equal distances keep id order
    kk = order.shape[1]
    ids[:, :kk] = order
    dist[:, :kk] = np.take_along_axis(d, order, axis=1)
    return dist, ids


# --------------------------------------------------------------------------------------
# SBoVP: phrase building and sparse L2 top-k (SPEC section 3)
# --------------------------------------------------------------------------------------
def ref_phrase_matrix(xy, words, classes, L, n):
    """Dense (L, L) phrase matrix straight from SPEC.md section 3.4-3.5 (brute force)."""
    xy = np.asarray(xy, dtype=np.float32).astype(np.float64)
    words = np.asarray(words)
    classes = np.asarray(classes)
    H = np.zeros((L, L), dtype=np.int64)
    for c in np.unique(classes):
        if c < 0:
            continue
        members = np.flatnonzero(classes == c)
        m = members.size
        if m < 2:
            continue
        kk = min(n - 1, m - 1)
        pts = xy[members]
        d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2)
        for a in range(m):
            cand = [(d2[a, b], members[b]) for b in range(m) if b != a]
            cand.sort()
            phrase = [words[members[a]]] + [words[idx] for _, idx in cand[:kk]]
            for u in range(len(phrase)):
                for v in range(u + 1, len(phrase)):
                    i, j = sorted((phrase[u], phrase[v]))
                    H[i, j] += 1
    return H


def ref_sparse_l2_topk(A, B, k):
    """Oracle of the sparse L2 top-k between the rows of two scipy.sparse matrices: exact
    squared L2 via A @ B.T with norms in float64, clamped at 0, stable sort by (d2, id),
    float32 sqrt; (distances (nq, k), ids (nq, k)) padded with +inf / -1."""
    A = A.astype(np.float64)
    B = B.astype(np.float64)
    an = np.asarray(A.multiply(A).sum(axis=1)).reshape(-1, 1)
    bn = np.asarray(B.multiply(B).sum(axis=1)).reshape(1, -1)
    d2 = np.maximum(an + bn - 2.0 * (A @ B.T).toarray(), 0.0)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    d = np.take_along_axis(d2, order, axis=1)
    nq, n = d2.shape
    dist = np.full((nq, k), np.inf, np.float32)
    ids = np.full((nq, k), -1, np.int64)
    dist[:, : min(k, n)] = np.sqrt(d).astype(np.float32)
    ids[:, : min(k, n)] = order
    return dist, ids


def random_image(rng, n_kp, L, n_classes, grid=None):
    """(xy float32 (n, 2), words int32, classes int32 in [-1, n_classes)) of one image; on an
    integer ``grid`` there are many exact distance ties."""
    if grid is None:
        xy = rng.uniform(0, 100, size=(n_kp, 2)).astype(np.float32)
    else:
        xy = rng.integers(0, grid, size=(n_kp, 2)).astype(np.float32)
    words = rng.integers(0, L, size=n_kp).astype(np.int32)
    classes = rng.integers(-1, n_classes, size=n_kp).astype(np.int32)
    return xy, words, classes


def random_csr(rng, rows, cols, density, empty_every=0, integer=True):
    """A canonical float32 scipy.sparse CSR matrix (integer counts 1..3 or uniform floats);
    every ``empty_every``-th row empty."""
    import scipy.sparse as sp

    m = sp.random(rows, cols, density=density, format="csr", random_state=rng,
                  data_rvs=(lambda s: rng.integers(1, 4, size=s)) if integer else None)
    m = m.astype(np.float32)
    if empty_every:
        m = m.tolil()
        for r in range(0, rows, empty_every):
            m.rows[r] = []
            m.data[r] = []
        m = m.tocsr()
    m.sort_indices()
    return m


def csr_parts(m):
    """(indptr int64, indices int64, data float32) of a scipy CSR matrix: the kernel inputs."""
    return (np.ascontiguousarray(m.indptr, dtype=np.int64),
            np.ascontiguousarray(m.indices, dtype=np.int64),
            np.ascontiguousarray(m.data, dtype=np.float32))


def package_root() -> str:
    """The folder holding the semcbir_fast under test (the source tree in a developer build,
    site-packages after ``pip install .``): subprocesses must import that same copy."""
    import os

    import semcbir_fast

    return os.path.dirname(os.path.dirname(os.path.abspath(semcbir_fast.__file__)))
