"""SBoVP (SPEC.md section 3): phrase building and sparse L2 search against the NumPy / SciPy
oracles of tests/reference.py (the kernel-level tests under every backend x SIMD level, the
``backend_isa`` fixture), vocabulary, keypoint labelling, feature extraction and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import random_csr, random_image, ref_phrase_matrix, ref_sparse_l2_topk
from semcbir_fast.features import Features
from semcbir_fast.sbovp import (
    PhraseSignatures,
    Vocabulary,
    append_histograms,
    build_phrase_signatures,
    keypoint_classes,
    normalize_signatures,
    phrase_l2_topk,
    sbovp_signatures,
)

sp = pytest.importorskip("scipy.sparse")


# ---------------------------------------------------------------------------------------------
# Helpers (the oracles and the random data are in tests/reference.py)
# ---------------------------------------------------------------------------------------------


def dense_rows(sig: PhraseSignatures) -> np.ndarray:
    return np.stack([sig.to_dense(i) for i in range(len(sig))]) if len(sig) else np.zeros(0)


# ---------------------------------------------------------------------------------------------
# Phrase building
# ---------------------------------------------------------------------------------------------


def test_hand_computed_n2(backend_isa):
    # class 0: kp0 (w0) at (0,0), kp1 (w1) at (1,0), kp2 (w2) at (5,0); kp3 void.
    # NN: 0->1, 1->0, 2->1  =>  pairs {0,1} twice, {1,2} once.
    xy = np.array([[0, 0], [1, 0], [5, 0], [0, 1]], np.float32)
    sig = build_phrase_signatures([xy], [[0, 1, 2, 1]], [[0, 0, 0, -1]], 3, n=2)
    assert sig.indices.tolist() == [0 * 3 + 1, 1 * 3 + 2]
    assert sig.data.tolist() == [2.0, 1.0]
    H = sig.to_dense(0)
    assert H[0, 1] == 2 and H[1, 2] == 1 and H.sum() == 3


def test_hand_computed_n3_diagonal_and_ties(backend_isa):
    # One region, 4 keypoints on a square of side 1; words 0,0,1,1.
    # kp0 (0,0): neighbours at d2=1 are kp1 (1,0) and kp2 (0,1) -> ties broken by index: kp1, kp2.
    # kp1 (1,0): kp0 (d2 1), kp3 (1,1) (d2 1) -> kp0, kp3.
    # kp2 (0,1): kp0, kp3. kp3 (1,1): kp1, kp2.
    xy = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    words = [0, 0, 1, 1]
    sig = build_phrase_signatures([xy], [words], [[7, 7, 7, 7]], 2, n=3)
    want = ref_phrase_matrix(xy, np.array(words), np.array([7] * 4), 2, 3)
    np.testing.assert_array_equal(sig.to_dense(0), want)
    # phrases: kp0 (0,0,1), kp1 (0,0,1), kp2 (1,0,1), kp3 (1,0,1): 3 pairs each, 12 in all
    assert sig.data.sum() == 12
    assert want[0, 0] == 2 and want[1, 1] == 2 and want[0, 1] == 8


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("grid", [None, 6])
def test_random_against_reference(backend_isa, n, grid):
    rng = np.random.default_rng(100 * n + (grid or 0))
    L = 11
    imgs = [random_image(rng, int(rng.integers(0, 60)), L, 4, grid) for _ in range(12)]
    sig = build_phrase_signatures([a for a, _, _ in imgs], [b for _, b, _ in imgs],
                                  [c for _, _, c in imgs], L, n=n, threads=1)
    assert len(sig) == len(imgs) and sig.shape == (len(imgs), L * L)
    for i, (xy, w, c) in enumerate(imgs):
        want = ref_phrase_matrix(xy, w, c, L, n)
        np.testing.assert_array_equal(sig.to_dense(i), want, err_msg=f"image {i}")
        row = sig.indices[sig.indptr[i]:sig.indptr[i + 1]]
        assert np.all(np.diff(row) > 0)
        assert np.all(row // L <= row % L)  # upper triangle only


def test_threads_identical_and_large_region(backend_isa):
    rng = np.random.default_rng(5)
    imgs = [random_image(rng, 3000, 50, 2) for _ in range(6)] + \
           [random_image(rng, 40, 50, 3, grid=4) for _ in range(20)]
    args = ([a for a, _, _ in imgs], [b for _, b, _ in imgs], [c for _, _, c in imgs], 50)
    one = build_phrase_signatures(*args, n=3, threads=1)
    two = build_phrase_signatures(*args, n=3, threads=2)
    for f in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(one, f), getattr(two, f))
    xy, w, c = imgs[0]
    np.testing.assert_array_equal(one.to_dense(0), ref_phrase_matrix(xy, w, c, 50, 3))


def test_degenerate_images(backend_isa):
    xy1 = np.array([[1, 1]], np.float32)
    xy2 = np.array([[0, 0], [3, 3], [9, 9]], np.float32)
    sig = build_phrase_signatures(
        [np.zeros((0, 2), np.float32), xy1, xy2, xy2, xy2],
        [[], [2], [0, 1, 2], [0, 1, 2], [0, 1, 2]],
        [[], [0], [0, 1, 2], [-1, -1, -1], [5, 5, -3]],
        3, n=4)
    # no keypoints / one keypoint / single-keypoint regions / all void -> empty rows
    assert np.diff(sig.indptr).tolist()[:4] == [0, 0, 0, 0]
    # region of 2 < n = 4: each keypoint links to the only other one -> pair {0,1} twice
    assert sig.to_dense(4)[0, 1] == 2 and sig.data[sig.indptr[4]:].sum() == 2


def test_build_bad_input(backend_isa):
    xy = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"words\[0\] must be in \[0, 4\)"):
        build_phrase_signatures([xy], [[0, 4]], [[0, 0]], 4)
    with pytest.raises(ValueError, match="n must be in"):
        build_phrase_signatures([xy], [[0, 1]], [[0, 0]], 4, n=5)
    with pytest.raises(ValueError, match="one entry per keypoint"):
        build_phrase_signatures([xy], [[0]], [[0, 0]], 4)
    with pytest.raises(ValueError, match="one entry per image"):
        build_phrase_signatures([xy], [[0, 1]], [], 4)
    with pytest.raises(ValueError, match="non-finite"):
        build_phrase_signatures([np.array([[0, np.nan], [1, 1]], np.float32)], [[0, 1]],
                                [[0, 0]], 4)
    with pytest.raises(ValueError, match=r"xy\[0\] must be \(n, 2\)"):
        build_phrase_signatures([np.zeros((2, 3))], [[0, 1]], [[0, 0]], 4)
    with pytest.raises(ValueError, match="n_words"):
        build_phrase_signatures([xy], [[0, 1]], [[0, 0]], 0)


# ---------------------------------------------------------------------------------------------
# Sparse L2 top-k
# ---------------------------------------------------------------------------------------------


def _sig(m, n_words):
    return PhraseSignatures(m.indptr, m.indices, m.data, n_words)


@pytest.mark.parametrize("k", [1, 5, 40, 77])
def test_topk_against_scipy(backend_isa, k):
    rng = np.random.default_rng(k)
    L = 30
    A = random_csr(rng, 25, L * L, 0.02, empty_every=7)
    B = random_csr(rng, 60, L * L, 0.02, empty_every=9)
    d, i = phrase_l2_topk(_sig(A, L), _sig(B, L), k, threads=1)
    wd, wi = ref_sparse_l2_topk(A, B, k)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(d, wd)
    assert d.dtype == np.float32 and i.dtype == np.int64 and d.shape == (25, k)
    if k > 60:
        assert np.all(i[:, 60:] == -1) and np.all(np.isinf(d[:, 60:]))


def test_topk_ties_and_duplicates(backend_isa):
    rng = np.random.default_rng(1)
    base = random_csr(rng, 5, 400, 0.05)
    B = sp.vstack([base, base, base, sp.csr_matrix((3, 400), dtype=np.float32)]).tocsr()
    d, i = phrase_l2_topk(base, B, 18)
    wd, wi = ref_sparse_l2_topk(base, B, 18)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(d, wd)
    assert np.all(d[:, :3] == 0) and i[0, :3].tolist() == [0, 5, 10]


def test_topk_threads_and_float_data(backend_isa):
    rng = np.random.default_rng(2)
    A = random_csr(rng, 300, 2500, 0.01, integer=False)
    B = random_csr(rng, 700, 2500, 0.01, empty_every=50, integer=False)
    a, b = normalize_signatures(_sig(A, 50), "l2"), normalize_signatures(_sig(B, 50), "l2")
    d1, i1 = phrase_l2_topk(a, b, 10, threads=1)
    d2, i2 = phrase_l2_topk(a, b, 10, threads=2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(i1, i2)
    wd, wi = ref_sparse_l2_topk(a.to_scipy(), b.to_scipy(), 10)
    np.testing.assert_allclose(d1, wd, rtol=1e-5, atol=1e-6)
    assert (i1 == wi).mean() > 0.99  # float rounding may swap near-ties


def test_topk_compressed_column_path(backend_isa):
    # Huge column space (2^40) with few non-zeros: the inverted index compresses columns.
    rng = np.random.default_rng(3)
    A = random_csr(rng, 20, 5000, 0.01)
    B = random_csr(rng, 50, 5000, 0.01)

    def widen(m):
        return sp.csr_matrix((m.data, m.indices.astype(np.int64) * 219_902_325, m.indptr),
                             shape=(m.shape[0], 2**40))

    d, i = phrase_l2_topk(widen(A), widen(B), 7)
    wd, wi = ref_sparse_l2_topk(A, B, 7)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(d, wd)


def test_topk_empty_database_and_queries(backend_isa):
    rng = np.random.default_rng(4)
    A = random_csr(rng, 3, 100, 0.1)
    empty = sp.csr_matrix((0, 100), dtype=np.float32)
    d, i = phrase_l2_topk(A, empty, 4)
    assert d.shape == (3, 4) and np.all(i == -1) and np.all(np.isinf(d))
    d, i = phrase_l2_topk(empty, A, 2)
    assert d.shape == (0, 2) and i.shape == (0, 2)


def test_topk_noncanonical_scipy_input(backend_isa):
    # duplicates and unsorted indices are summed / sorted at the edge
    m = sp.csr_matrix((np.array([1, 2, 3], np.float32), np.array([5, 2, 5]), np.array([0, 3])),
                      shape=(1, 10))
    ref = sp.csr_matrix((np.array([2, 4], np.float32), np.array([2, 5]), np.array([0, 2])),
                        shape=(1, 10))
    d, i = phrase_l2_topk(m, ref, 1)
    assert d[0, 0] == 0 and i[0, 0] == 0


def test_topk_bad_input(backend_isa):
    L = 4
    good = PhraseSignatures([0, 1], [1], [1.0], L)
    with pytest.raises(ValueError, match="k must be"):
        phrase_l2_topk(good, good, 0)
    with pytest.raises(ValueError, match="same number of columns"):
        phrase_l2_topk(good, PhraseSignatures([0, 1], [1], [1.0], 5), 1)
    with pytest.raises(ValueError, match="normalised"):
        phrase_l2_topk(normalize_signatures(good, "l2"), good, 1)
    with pytest.raises(ValueError, match="phrases of n=2"):
        phrase_l2_topk(good, PhraseSignatures([0, 1], [1], [1.0], L, n=3), 1)
    unsorted = PhraseSignatures([0, 2], [3, 1], [1.0, 1.0], L)
    with pytest.raises(ValueError, match="strictly increasing"):
        phrase_l2_topk(unsorted, good, 1)
    outside = PhraseSignatures([0, 1], [16], [1.0], L)
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        phrase_l2_topk(good, outside, 1)
    with pytest.raises(ValueError, match="non-finite"):
        phrase_l2_topk(PhraseSignatures([0, 1], [1], [np.inf], L), good, 1)
    with pytest.raises(ValueError, match="PhraseSignatures or a scipy.sparse"):
        phrase_l2_topk(np.zeros((2, 16)), good, 1)
    with pytest.raises(ValueError, match="inconsistent CSR"):
        PhraseSignatures([0, 3], [1], [1.0], L)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(0, 15), st.integers(1, 20))
def test_topk_property_stable_argsort(backend_isa, seed, nq, n, k):
    rng = np.random.default_rng(seed)
    A = random_csr(rng, nq, 36, 0.2)
    B = random_csr(rng, n, 36, 0.2)
    d, i = phrase_l2_topk(A, B, k)
    wd, wi = ref_sparse_l2_topk(A, B, k)
    np.testing.assert_array_equal(i, wi)
    np.testing.assert_array_equal(d, wd)


# ---------------------------------------------------------------------------------------------
# Signatures container and normalisation
# ---------------------------------------------------------------------------------------------


def test_signatures_container(tmp_path):
    rng = np.random.default_rng(6)
    imgs = [random_image(rng, 30, 9, 2) for _ in range(5)]
    sig = build_phrase_signatures([a for a, _, _ in imgs], [b for _, b, _ in imgs],
                                  [c for _, _, c in imgs], 9)
    sub = sig[[3, 1]]
    np.testing.assert_array_equal(sub.to_dense(0), sig.to_dense(3))
    np.testing.assert_array_equal(sub.to_dense(1), sig.to_dense(1))
    np.testing.assert_array_equal(sig[2].to_dense(0), sig.to_dense(2))
    np.testing.assert_array_equal(sig.to_scipy().toarray()[4], sig.to_dense(4).reshape(-1))
    l2 = normalize_signatures(sig, "l2")
    l1 = normalize_signatures(sig, "l1")
    nz = np.diff(sig.indptr) > 0
    np.testing.assert_allclose(np.linalg.norm(dense_rows(l2).reshape(5, -1), axis=1)[nz], 1,
                               rtol=1e-6)
    np.testing.assert_allclose(dense_rows(l1).reshape(5, -1).sum(axis=1)[nz], 1, rtol=1e-6)
    with pytest.raises(ValueError, match="already"):
        normalize_signatures(l2, "l1")
    p = tmp_path / "sig.npz"
    l2.save(p)
    back = PhraseSignatures.load(p)
    assert back.normalize == "l2" and back.n_words == 9
    np.testing.assert_array_equal(back.data, l2.data)
    bad = tmp_path / "x.npz"
    np.savez(bad, a=1)
    with pytest.raises(ValueError, match="not a semcbir_fast phrase-signature"):
        PhraseSignatures.load(bad)


# ---------------------------------------------------------------------------------------------
# Keypoint classes
# ---------------------------------------------------------------------------------------------


def test_keypoint_classes_scaling_and_void():
    lab = np.array([[0, 1], [2, 3]], np.uint8)  # 2x2 map of a 100x200 (h x w) image
    xy = np.array([[10, 10], [150, 10], [10, 80], [199.4, 99.4], [-3, -3]], np.float32)
    got = keypoint_classes(xy, (100, 200), lab)
    assert got.tolist() == [0, 1, 2, 3, 0]
    got = keypoint_classes(xy, (100, 200), lab, ignore_index=0, num_classes=3)
    assert got.tolist() == [-1, 1, 2, -1, -1]
    same = np.arange(12, dtype=np.int32).reshape(3, 4)  # same size: nearest pixel
    assert keypoint_classes([[1.4, 0.6], [2.6, 2.0]], (3, 4), same).tolist() == [5, 11]
    assert keypoint_classes([[0, 0]], (3, 4), same - 20).tolist() == [-1]
    with pytest.raises(ValueError, match="label_map must be"):
        keypoint_classes(xy, (100, 200), np.zeros((2, 2), np.float32))


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_thread():
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    yield


def blobs(rng, n_per, centers):
    return np.concatenate([c + 0.01 * rng.standard_normal((n_per, centers.shape[1]))
                           for c in centers]).astype(np.float32)


def argmin_oracle(x, centroids):
    d = ((x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]) ** 2).sum(-1)
    return np.argmin(d, axis=1)


@pytest.mark.parametrize("backend", ["auto", "opencv"])
def test_vocabulary_fit_assign(backend, tmp_path):
    if backend == "opencv":
        pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 8)).astype(np.float32) * 5
    x = blobs(rng, 50, centers)
    v = Vocabulary.fit(x, 4, seed=1, backend=backend)
    assert v.n_words == 4 and v.descriptor_dim == 8 and not v.binary
    w = v.assign(x)
    assert w.dtype == np.int32
    np.testing.assert_array_equal(w, argmin_oracle(x, v.centroids))
    if backend == "opencv":  # k-means++ seeding recovers well-separated blobs exactly
        per_blob = w.reshape(4, 50)
        assert all(len(set(r.tolist())) == 1 for r in per_blob)
        assert len(set(per_blob[:, 0].tolist())) == 4
    p = tmp_path / "voc.npz"
    v.save(p)
    back = Vocabulary.load(p)
    np.testing.assert_array_equal(back.centroids, v.centroids)
    np.testing.assert_array_equal(back.assign(x), w)
    assert back.info["backend"] == v.info["backend"]
    assert v.assign(np.zeros((0, 8), np.float32)).shape == (0,)


def test_vocabulary_binary_descriptors():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    protos = rng.integers(0, 256, size=(3, 32), dtype=np.uint8)
    x = np.repeat(protos, 20, axis=0)
    flip = rng.random(x.shape) < 0.02  # a few flipped bits
    x = np.where(flip, x ^ np.uint8(1), x).astype(np.uint8)
    v = Vocabulary.fit([Features(np.zeros((60, 2)), x, (10, 10), "orb")], 3, seed=0,
                       backend="opencv")
    assert v.binary and v.descriptor_dim == 32 and v.centroids.shape == (3, 256)
    assert v.method == "orb"
    w = v.assign(x)
    np.testing.assert_array_equal(w, argmin_oracle(np.unpackbits(x, axis=1), v.centroids))
    assert all(len(set(r.tolist())) == 1 for r in w.reshape(3, 20))
    with pytest.raises(ValueError, match="binary uint8 descriptors of width 32"):
        v.assign(np.zeros((2, 32), np.float32))


def test_vocabulary_mismatch_errors(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 64)).astype(np.float32)
    v = Vocabulary.fit([Features(np.zeros((40, 2)), x, (5, 5), "kaze")], 5, seed=0)
    with pytest.raises(ValueError, match="width 64"):
        v.assign(rng.standard_normal((3, 128)).astype(np.float32))
    with pytest.raises(ValueError, match="fitted on kaze descriptors, got sift"):
        v.assign(Features(np.zeros((3, 2)), x[:3], (5, 5), "sift"))
    with pytest.raises(ValueError, match="at least as many training descriptors"):
        Vocabulary.fit(x[:3], 5)
    with pytest.raises(ValueError, match="n_words must be"):
        Vocabulary.fit(x, 0)
    with pytest.raises(ValueError, match="backend must be"):
        Vocabulary.fit(x, 2, backend="sklearn")
    with pytest.raises(ValueError, match="finite"):
        Vocabulary.fit(np.full((5, 2), np.nan, np.float32), 2)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="cannot read vocabulary|not a semcbir_fast"):
        Vocabulary.load(bad)
    np.savez(tmp_path / "other.npz", centroids=x)
    with pytest.raises(ValueError, match="not a semcbir_fast vocabulary"):
        Vocabulary.load(tmp_path / "other.npz")


# ---------------------------------------------------------------------------------------------
# End to end on synthetic features
# ---------------------------------------------------------------------------------------------


def test_sbovp_signatures_end_to_end():
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((6, 16)).astype(np.float32) * 4
    vocab = Vocabulary.fit(blobs(rng, 30, centers), 6, seed=0, method="kaze")
    feats, maps = [], []
    for _ in range(4):
        n = int(rng.integers(0, 40))
        xy = rng.uniform(0, 64, size=(n, 2)).astype(np.float32)
        desc = centers[rng.integers(0, 6, size=n)] + 0.01 * rng.standard_normal((n, 16))
        feats.append(Features(xy, desc.astype(np.float32), (64, 64), "kaze"))
        maps.append(rng.integers(0, 3, size=(16, 16)).astype(np.uint8))  # 4x smaller map
    feats.append(Features(np.zeros((0, 2)), np.zeros((0, 16), np.float32), (64, 64), "kaze"))
    maps.append(np.zeros((16, 16), np.uint8))
    raw = sbovp_signatures(feats, maps, vocab, n=3, normalize=None, ignore_index=0)
    for i, (f, m) in enumerate(zip(feats, maps)):
        w = vocab.assign(f)
        c = keypoint_classes(f.xy, f.image_size, m, ignore_index=0)
        np.testing.assert_array_equal(raw.to_dense(i), ref_phrase_matrix(f.xy, w, c, 6, 3))
    assert raw.indptr[-1] == raw.indptr[-2]  # image without keypoints: empty row
    l2 = sbovp_signatures(feats, maps, vocab, n=3, ignore_index=0)
    assert l2.normalize == "l2"
    d, _ = phrase_l2_topk(l2, l2, 2)
    assert np.all(d[:, 0][np.diff(l2.indptr) > 0] == 0)
    with pytest.raises(ValueError, match="one map per image"):
        sbovp_signatures(feats, maps[:2], vocab)
    with pytest.raises(ValueError, match="normalize must be"):
        sbovp_signatures(feats, maps, vocab, normalize="max")
    with pytest.raises(ValueError, match="fitted on kaze descriptors, got sift"):
        sbovp_signatures([Features(feats[0].xy, feats[0].descriptors, (64, 64), "sift")],
                         maps[:1], vocab)


# ---------------------------------------------------------------------------------------------
# OpenCV feature extraction
# ---------------------------------------------------------------------------------------------


def _test_image():
    rng = np.random.default_rng(0)
    img = np.zeros((96, 128), np.uint8)
    for _ in range(12):
        x, y = rng.integers(5, 110), rng.integers(5, 80)
        img[y:y + 12, x:x + 12] = rng.integers(60, 255)
    return img


def test_extract_features_methods(tmp_path):
    cv2 = pytest.importorskip("cv2")
    cv2.setNumThreads(1)
    from semcbir_fast.features import (
        available_methods,
        extract_features,
        load_features,
        save_features,
    )

    avail = available_methods()
    assert "sift" in avail and "orb" in avail
    img = _test_image()
    blank = np.zeros((40, 40), np.uint8)
    for method, dim, dtype in [("kaze", 64, np.float32), ("sift", 128, np.float32),
                               ("orb", 32, np.uint8), ("akaze", 61, np.uint8)]:
        if method not in avail:
            continue
        f, e = extract_features([img, blank], method, threads=2, progress=False)
        assert f.method == method and f.image_size == (96, 128)
        assert len(f) > 0 and f.descriptors.shape == (len(f), dim) and f.descriptors.dtype == dtype
        assert len(e) == 0 and e.descriptors.dtype == dtype  # no keypoint: empty, no error
    rgb = np.stack([img] * 3, axis=2)
    (a,) = extract_features([rgb], "sift", progress=False, max_keypoints=5)
    assert len(a) == 5
    p = tmp_path / "f.npz"
    save_features(p, [a, a])
    b = load_features(p)
    assert len(b) == 2 and b[1].method == "sift"
    np.testing.assert_array_equal(b[1].xy, a.xy)


def test_extract_features_errors():
    cv2 = pytest.importorskip("cv2")
    from semcbir_fast.features import extract_features, make_detector

    with pytest.raises(ValueError, match="method must be one of"):
        extract_features([], "brisk")
    if not hasattr(cv2, "SURF_create"):
        try:
            cv2.xfeatures2d.SURF_create()
            has_surf = True
        except (cv2.error, AttributeError):
            has_surf = False
        if not has_surf:
            with pytest.raises(ValueError, match="not available.*use one of "):
                make_detector("surf")
    with pytest.raises(ValueError, match="max_keypoints"):
        extract_features([_test_image()], "orb", max_keypoints=0)
    with pytest.raises(ValueError, match="cannot read image"):
        extract_features(["/nonexistent/x.jpg"], "orb", progress=False)


def test_semantic_words_extension():
    rng = np.random.default_rng(8)
    centers = rng.standard_normal((5, 8)).astype(np.float32) * 4
    vocab = Vocabulary.fit(blobs(rng, 20, centers), 5, seed=0)
    feats, maps = [], []
    for _ in range(3):
        xy = rng.uniform(0, 32, size=(30, 2)).astype(np.float32)
        desc = centers[rng.integers(0, 5, size=30)].astype(np.float32)
        feats.append(Features(xy, desc, (32, 32), "kaze"))
        maps.append(rng.integers(0, 4, size=(32, 32)).astype(np.uint8))
    sig = sbovp_signatures(feats, maps, vocab, n=2, normalize=None, num_classes=4,
                           ignore_index=0, semantic_words=True)
    assert sig.num_classes == 4 and sig.n_words == 20 and sig.shape[1] == 400
    plain = sbovp_signatures(feats, maps, vocab, n=2, normalize=None, ignore_index=0)
    for r, (f, m) in enumerate(zip(feats, maps)):
        w = vocab.assign(f)
        c = keypoint_classes(f.xy, f.image_size, m, ignore_index=0)
        tagged = np.where(c >= 0, c * 5 + w, w)
        H = sig.to_dense(r)
        np.testing.assert_array_equal(H, ref_phrase_matrix(f.xy, tagged, c, 20, 2))
        # block-diagonal: every pair stays inside one class block; folding the blocks
        # gives back the plain signature
        i, j = np.nonzero(H)
        assert np.all(i // 5 == j // 5)
        folded = np.zeros((5, 5))
        np.add.at(folded, (i % 5, j % 5), H[i, j])
        np.testing.assert_array_equal(folded, plain.to_dense(r))
    with pytest.raises(ValueError, match="semantic words"):
        phrase_l2_topk(sig, PhraseSignatures(sig.indptr, sig.indices, sig.data, 20), 1)
    with pytest.raises(ValueError, match="needs num_classes"):
        sbovp_signatures(feats, maps, vocab, semantic_words=True)


def test_phrase_index_reuse_matches_topk(backend_isa):
    from semcbir_fast.sbovp import PhraseIndex

    rng = np.random.default_rng(9)
    L = 20
    db = normalize_signatures(_sig(random_csr(rng, 80, L * L, 0.03, empty_every=11), L), "l2")
    q = normalize_signatures(_sig(random_csr(rng, 15, L * L, 0.03), L), "l2")
    index = PhraseIndex(db, threads=1)
    assert len(index) == 80 and index.nnz == db.nnz
    for k in (1, 7, 100):
        d, i = index.search(q, k, threads=2)
        wd, wi = phrase_l2_topk(q, db, k, threads=1)
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(d, wd)
    with pytest.raises(ValueError, match="normalised"):
        index.search(_sig(random_csr(rng, 2, L * L, 0.03), L), 1)
    with pytest.raises(ValueError, match="same number of columns"):
        index.search(sp.csr_matrix((1, 5), dtype=np.float32), 1)
    empty = PhraseIndex(sp.csr_matrix((0, L * L), dtype=np.float32))
    d, i = empty.search(q.to_scipy(), 2)
    assert np.all(i == -1) and np.all(np.isinf(d))


def test_one_shot_paths_identical_to_phrase_index(backend_isa):
    """phrase_l2_topk transposes the queries (one or two blocks per worker) or falls back to
    a PhraseIndex (many blocks): every path gives bit-identical results."""
    from semcbir_fast.sbovp import PhraseIndex

    rng = np.random.default_rng(12)
    L = 40
    dbm = random_csr(rng, 900, L * L, 0.02, empty_every=13, integer=False)
    dbm.data[::17] = 0.0  # explicit zeros
    qm = random_csr(rng, 260, L * L, 0.02, empty_every=7, integer=False)
    qm.data[::11] = 0.0
    db, q = _sig(dbm, L), _sig(qm, L)
    index = PhraseIndex(db, threads=1)

    def wide(m, scale):  # the same matrices in a huge column space (hash-mode lookups)
        return sp.csr_matrix((m.data, m.indices.astype(np.int64) * scale, m.indptr),
                             shape=(m.shape[0], L * L * scale))

    # one block of queries each; k = 900: full rankings; k = 1000 > N: padding
    for k in (1, 10, 900, 1000):
        wd, wi = index.search(q, k, threads=1)
        for t in (1, 2):
            d, i = phrase_l2_topk(q, db, k, threads=t)
            np.testing.assert_array_equal(i, wi)
            np.testing.assert_array_equal(d, wd)
        d, i = phrase_l2_topk(wide(qm, 1 << 27), wide(dbm, 1 << 27), k, threads=2)
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(d, wd)
    # (At 2 threads the cases above split the database rows between the workers and merge
    # their heaps.) Many queries, full rankings: 2^20 // 900 = 1165 queries per block -> 2
    # blocks (2300 queries: transposed, queries split between workers at 2 threads) and 5
    # blocks (4700 queries: PhraseIndex fallback) at 1 thread.
    for nq, threads in ((2300, 1), (2300, 2), (4700, 1)):
        qq = _sig(random_csr(rng, nq, L * L, 0.01, empty_every=5, integer=False), L)
        wd, wi = index.search(qq, 900, threads=1)
        d, i = phrase_l2_topk(qq, db, 900, threads=threads)
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(d, wd)
    # fewer database rows than workers (2100 queries: enough work for 2 threads), and an
    # empty database
    many = _sig(random_csr(rng, 2100, L * L, 0.01, integer=False), L)
    for n in (1, 0):
        small = _sig(dbm[:n], L)
        wd, wi = PhraseIndex(small).search(many, 3)
        d, i = phrase_l2_topk(many, small, 3, threads=2)
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_array_equal(d, wd)


# ---------------------------------------------------------------------------------------------
# Hellinger normalisation and the appended semantic histogram (our extension)
# ---------------------------------------------------------------------------------------------


def test_hellinger_and_appended_histogram_against_numpy(tmp_path):
    rng = np.random.default_rng(11)
    imgs = [random_image(rng, 30, 6, 3) for _ in range(6)]
    imgs[2] = (np.zeros((0, 2), np.float32), np.zeros(0, np.int32), np.zeros(0, np.int32))
    raw = build_phrase_signatures([a for a, _, _ in imgs], [b for _, b, _ in imgs],
                                  [c for _, _, c in imgs], 6)
    counts = raw.to_scipy().toarray().astype(np.float64)
    hel = normalize_signatures(raw, "hellinger")
    root = np.sqrt(counts)
    norms = np.linalg.norm(root, axis=1, keepdims=True)
    want = np.divide(root, norms, out=np.zeros_like(root), where=norms > 0)
    np.testing.assert_allclose(hel.to_scipy().toarray(), want, rtol=1e-6, atol=1e-7)

    hist = rng.dirichlet(np.ones(4), 6)
    hist[4] = 0  # a label map without valid pixels
    for w in (0.5, 1.0, 2.0):
        sig = append_histograms(hel, hist, w)
        assert sig.shape == (6, 36 + 4) and sig.histogram_classes == 4
        full = np.hstack([want, w * np.sqrt(hist)])
        n = np.linalg.norm(full, axis=1, keepdims=True)
        ref = np.divide(full, n, out=np.zeros_like(full), where=n > 0)
        got = sig.to_scipy().toarray()
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
        # squared L2 = 2 - 2 (cos + w^2 BC) / (1 + w^2) between images with phrases and pixels
        a, b = 0, 5
        bc = np.sqrt(hist[a] * hist[b]).sum()
        cos = want[a] @ want[b]
        d, i = phrase_l2_topk(sig[[a]], sig, 6)
        d_ab = d[0, list(i[0]).index(b)]
        assert abs(d_ab**2 - (2 - 2 * (cos + w * w * bc) / (1 + w * w))) < 1e-5
        np.testing.assert_array_equal(sig.to_dense(0).reshape(-1), got[0, :36])  # phrases only
    sig.save(tmp_path / "s.npz")
    back = PhraseSignatures.load(tmp_path / "s.npz")
    assert (back.histogram_classes, back.histogram_weight) == (4, 2.0)
    np.testing.assert_array_equal(back.indices, sig.indices)
    with pytest.raises(ValueError, match="histogram of 4 classes with weight 2"):
        phrase_l2_topk(sig, append_histograms(hel, hist, 1.0), 2)
    with pytest.raises(ValueError, match="l2- or hellinger-normalised"):
        append_histograms(raw, hist)
    with pytest.raises(ValueError, match="without a histogram"):
        append_histograms(sig, hist)
    with pytest.raises(ValueError, match="already"):
        normalize_signatures(sig, "l2")
    with pytest.raises(ValueError, match="histograms must be"):
        append_histograms(hel, hist[:3])
    with pytest.raises(ValueError, match="weight must be"):
        append_histograms(hel, hist, 0)


def test_sbovp_signatures_with_histogram_matches_the_steps():
    from semcbir_fast.hybrid import semantic_histograms

    rng = np.random.default_rng(12)
    feats = [Features(rng.uniform(0, 32, (25, 2)), rng.normal(size=(25, 8)).astype(np.float32),
                      (32, 32), "kaze") for _ in range(5)]
    maps = [np.kron(rng.integers(0, 3, (2, 2)), np.ones((16, 16), np.int64)) for _ in range(5)]
    vocab = Vocabulary.fit(feats, 4, seed=0)
    full = sbovp_signatures(feats, maps, vocab, normalize="hellinger", num_classes=3,
                            semantic_words=True, histogram_weight=1.5)
    steps = append_histograms(
        sbovp_signatures(feats, maps, vocab, normalize="hellinger", num_classes=3,
                         semantic_words=True),
        semantic_histograms(maps, 3), 1.5)
    np.testing.assert_array_equal(full.indptr, steps.indptr)
    np.testing.assert_array_equal(full.indices, steps.indices)
    np.testing.assert_array_equal(full.data, steps.data)
    assert full.shape == (5, 12 * 12 + 3)
    with pytest.raises(ValueError, match="histogram_weight > 0 needs num_classes"):
        sbovp_signatures(feats, maps, vocab, histogram_weight=1.0)
    with pytest.raises(ValueError, match="histogram_weight > 0 needs"):
        sbovp_signatures(feats, maps, vocab, num_classes=3, normalize="l1",
                         histogram_weight=1.0)
    with pytest.raises(ValueError, match="histogram_weight must be"):
        sbovp_signatures(feats, maps, vocab, num_classes=3, histogram_weight=-1)
