"""Global CNN descriptors (semcbir_fast.deep) against hand-computed values and independent
NumPy references written from the papers' equations (loops, not vectorised code)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from semcbir_fast.deep import (
    NeuralCodes,
    block_weights,
    correspondence_stride,
    crow,
    crow_channel_weights,
    crow_spatial_weights,
    eta_tilde,
    fit_pca_whitening,
    gap,
    gem,
    l2_normalize,
    last_block_weights,
    neural_codes,
    significance_counts,
)

# --------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------


def ref_gem(x: np.ndarray, p: float, eps: float = 1e-6) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.zeros((n, c))
    for i, k in itertools.product(range(n), range(c)):
        vals = [max(float(x[i, k, a, b]), eps) ** p for a in range(h) for b in range(w)]
        out[i, k] = (sum(vals) / len(vals)) ** (1.0 / p)
    return out


def ref_crow(x: np.ndarray, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    """Kalantidis et al. 2016, section 3 (one image at a time, plain loops)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c))
    for i in range(n):
        s_raw = np.zeros((h, w))
        for r, q in itertools.product(range(h), range(w)):
            s_raw[r, q] = sum(float(x[i, k, r, q]) for k in range(c))
        z = sum(v**a for v in s_raw.ravel()) ** (1.0 / a)
        s = np.zeros((h, w)) if z == 0 else (s_raw / z) ** (1.0 / b)
        qk = np.array([np.count_nonzero(x[i, k] > 0) / (h * w) for k in range(c)])
        omega = [math.log(qk.sum() / qk[k]) if qk[k] > 0 else 0.0 for k in range(c)]
        for k in range(c):
            agg = sum(s[r, q] * float(x[i, k, r, q]) for r in range(h) for q in range(w))
            out[i, k] = omega[k] * agg
    return out


def ref_eta_tilde(blocks: list[np.ndarray], q: float, strides: list[int]) -> np.ndarray:
    """Paper 003, eqs. 8, 11-15, literally: index sets, indicator counts, weighted means."""
    last = blocks[-1]
    n, cn, hn, wn = last.shape
    out = []
    for img in range(n):
        z_last = [[(i, j) for i in range(hn) for j in range(wn) if last[img, k, i, j] >= q]
                  for k in range(cn)]  # eq. 8 as index lists
        parts: list[float] = []
        for m, y in enumerate(blocks[:-1]):
            _, cm, hm, wm = y.shape
            s = strides[m]
            zm = np.zeros((hm, wm))
            for k in range(cn):  # eq. 12: Z_{m,k} = union of I_{m,k}(i_N, j_N)
                z_mk = set()
                for (i_n, j_n) in z_last[k]:
                    z_mk |= {(i, j) for i in range(hm) for j in range(wm)
                             if i // s == i_n and j // s == j_n}  # eq. 11
                for (i, j) in z_mk:  # eq. 13: count the sets holding (i, j)
                    zm[i, j] += 1
            for k in range(cm):  # eq. 14
                den = zm.sum()
                parts.append(0.0 if den == 0 else float((zm * y[img, k]).sum() / den))
        for k in range(cn):  # eq. 14 with m = N: mean of the channel's significant values
            vals = [float(last[img, k, i, j]) for (i, j) in z_last[k]]
            parts.append(sum(vals) / len(vals) if vals else 0.0)
        out.append(parts)
    return np.array(out)


def rand_maps(rng, *shape, signed=False, sparse=0.0):
    x = rng.standard_normal(shape).astype(np.float32)
    if not signed:
        x = np.abs(x)
    if sparse:
        x[rng.random(shape) < sparse] = 0.0
    return x


# --------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------


def test_gap_gem_against_references() -> None:
    rng = np.random.default_rng(0)
    x = rand_maps(rng, 2, 3, 4, 5, sparse=0.3)
    np.testing.assert_allclose(gap(x), x.mean(axis=(2, 3)), rtol=1e-6)
    for p in (1.0, 2.5, 3.0):
        np.testing.assert_allclose(gem(x, p), ref_gem(x, p), rtol=1e-5)
    # p = 1 is GAP on maps without zeros; large p tends to the maximum
    xp = x + 0.1
    np.testing.assert_allclose(gem(xp, 1.0), gap(xp), rtol=1e-5)
    np.testing.assert_allclose(gem(xp.astype(np.float64), 200.0), xp.max(axis=(2, 3)), rtol=0.05)


def test_crow_hand_computed() -> None:
    # 2 channels on a 1x2 grid: channel 0 = [3, 0], channel 1 = [1, 4]
    x = np.array([[[[3.0, 0.0]], [[1.0, 4.0]]]], dtype=np.float64)
    # S' = [4, 4] -> 2-norm sqrt(32) -> S = (4 / sqrt(32)) ** 0.5 each
    s = (4.0 / math.sqrt(32.0)) ** 0.5
    np.testing.assert_allclose(crow_spatial_weights(x), [[[s, s]]], rtol=1e-12)
    # Q = [1/2, 1] -> Omega = [log(1.5 / 0.5), log(1.5 / 1)]
    omega = [math.log(3.0), math.log(1.5)]
    np.testing.assert_allclose(crow_channel_weights(x), [omega], rtol=1e-12)
    np.testing.assert_allclose(crow(x), [[omega[0] * 3 * s, omega[1] * 5 * s]], rtol=1e-12)


@pytest.mark.parametrize("a,b", [(2.0, 2.0), (1.0, 1.0), (3.0, 0.5)])
def test_crow_against_reference(a: float, b: float) -> None:
    rng = np.random.default_rng(1)
    x = rand_maps(rng, 3, 6, 5, 4, sparse=0.5)
    x[1, 2] = 0.0  # an all-zero channel: weight 0, no overflow
    x[2] = 0.0  # an all-zero map
    got = crow(x, a, b)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref_crow(x, a, b), rtol=1e-5, atol=1e-7)
    assert crow_channel_weights(x)[1, 2] == 0.0


def test_l2_normalize() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 2.0])), [0.0, 1.0])


def test_numpy_in_numpy_out_torch_in_torch_out() -> None:
    rng = np.random.default_rng(2)
    x = rand_maps(rng, 2, 3, 4, 4)
    t = torch.from_numpy(x)
    for fn in (gap, gem, crow):
        a, b = fn(x), fn(t)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        assert a.shape == (2, 3) and a.dtype == np.float32
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6)
        np.testing.assert_allclose(fn(x[0]), a[0], rtol=1e-6)  # one (C, H, W) map
    half = gap(t.half())  # reduced in float32
    assert half.dtype == torch.float32


def test_pooling_bad_inputs() -> None:
    x = np.ones((1, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="p must be"):
        gem(x, 0.0)
    with pytest.raises(ValueError, match="eps must be"):
        gem(x, 3.0, eps=0.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\)"):
        gap(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        gap([[1.0]])
    with pytest.raises(ValueError, match="a and b must be"):
        crow(x, a=0.0)
    with pytest.raises(ValueError, match=r"\(N, D\) or \(D,\)"):
        l2_normalize(x)


# --------------------------------------------------------------------------------------
# Paper 003: significant neurons
# --------------------------------------------------------------------------------------


def test_correspondence_stride() -> None:
    assert correspondence_stride((112, 112), (7, 7)) == 16
    assert correspondence_stride((14, 14), (7, 7)) == 2
    assert correspondence_stride((7, 7), (7, 7)) == 1
    assert correspondence_stride((113, 121), (8, 8)) == 16  # ceil-size ("SAME") pyramid
    with pytest.raises(ValueError, match="strides= explicitly"):
        correspondence_stride((5, 5), (4, 4))


def test_neural_codes_hand_computed() -> None:
    # last block: 1 channel 2x2, significant (>= 0.5) at (0, 0) and (1, 1)
    last = np.array([[[[1.0, 0.2], [0.4, 0.7]]]])
    # block m: 1 channel 4x4 of values 0..15, stride 2 -> z_m = 1 on the top-left and
    # bottom-right 2x2 squares
    y = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w_m = (0 + 1 + 4 + 5 + 10 + 11 + 14 + 15) / 8
    w_n = (1.0 + 0.7) / 2
    np.testing.assert_allclose(significance_counts(last), [[[1, 0], [0, 1]]])
    np.testing.assert_allclose(last_block_weights(last), [[w_n]])
    np.testing.assert_allclose(eta_tilde([y, last]), [[w_m, w_n]])
    nc = neural_codes([y, last])
    assert isinstance(nc, NeuralCodes)
    np.testing.assert_allclose(nc.h, [[(1.0 + 0.2 + 0.4 + 0.7) / 4]])  # GAP of the last block
    np.testing.assert_allclose(nc.eta, [[nc.h[0, 0], w_m, w_n]])


def test_counts_weight_by_number_of_significant_channels() -> None:
    # two channels in the last block (1x2), both significant at (0, 0), one at (0, 1)
    last = np.array([[[[0.9, 0.6]], [[0.8, 0.1]]]])
    y = np.array([[[[2.0, 4.0, 10.0, 20.0]]]])  # 1x4, stride 2
    # z_m = [2, 2, 1, 1] -> (2*2 + 2*4 + 10 + 20) / 6
    np.testing.assert_allclose(block_weights(y, significance_counts(last)), [[42.0 / 6]])
    np.testing.assert_allclose(last_block_weights(last), [[0.75, 0.8]])


@pytest.mark.parametrize(
    "sizes,q",
    [
        ([(8, 8), (4, 4), (2, 2)], 0.5),
        ([(9, 7), (5, 4), (3, 2)], 0.8),  # odd sizes: ceil pyramid
        ([(12, 6), (6, 3), (3, 2)], 1.2),
        ([(6, 6), (3, 3), (3, 3)], 0.5),  # two blocks at the same stride
    ],
)
def test_eta_tilde_against_paper_reference(sizes, q: float) -> None:
    rng = np.random.default_rng(3)
    chans = [3, 4, 5]
    blocks = [rand_maps(rng, 2, c, h, w, signed=(m < len(sizes) - 1)).astype(np.float64)
              for m, (c, (h, w)) in enumerate(zip(chans, sizes))]
    strides = [correspondence_stride(b.shape[2:], blocks[-1].shape[2:]) for b in blocks[:-1]]
    want = ref_eta_tilde(blocks, q, strides)
    got = eta_tilde(blocks, q)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(eta_tilde(blocks, q, strides=strides), want, rtol=1e-10)
    t = eta_tilde([torch.from_numpy(b) for b in blocks], q)
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-10)
    nc = neural_codes(blocks, q=q)
    np.testing.assert_allclose(nc.eta, np.concatenate([nc.h, want], axis=1), rtol=1e-10)
    assert nc.eta.shape == (2, blocks[-1].shape[1] + sum(chans))


def test_no_significant_neuron_gives_zeros() -> None:
    rng = np.random.default_rng(4)
    y = rand_maps(rng, 1, 3, 4, 4)
    last = np.full((1, 2, 2, 2), 0.1, np.float32)
    np.testing.assert_array_equal(eta_tilde([y, last], 0.5), np.zeros((1, 5), np.float32))


def test_explicit_h_and_shapes() -> None:
    rng = np.random.default_rng(5)
    blocks = [rand_maps(rng, 2, 3, 8, 8), rand_maps(rng, 2, 4, 2, 2)]
    h = rng.standard_normal((2, 7)).astype(np.float32)
    nc = neural_codes(blocks, h)
    np.testing.assert_array_equal(nc.h, h)
    assert nc.eta.shape == (2, 7 + 3 + 4)
    single = neural_codes([b[0] for b in blocks])  # one image, (C, H, W) each
    np.testing.assert_allclose(single.eta, neural_codes(blocks).eta[0], rtol=1e-6)
    with pytest.raises(ValueError, match="one row per image"):
        neural_codes(blocks, h[:1])
    with pytest.raises(ValueError, match="one value per block"):
        eta_tilde(blocks, strides=[2, 2])
    with pytest.raises(ValueError, match="at least the last block"):
        eta_tilde([])
    with pytest.raises(ValueError, match="images"):
        eta_tilde([blocks[0][:1], blocks[1]])


# --------------------------------------------------------------------------------------
# PCA whitening
# --------------------------------------------------------------------------------------


def test_pca_whitening_against_svd() -> None:
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 5))
    x = rng.standard_normal((400, 5)) @ a + 3.0  # correlated, off-centre
    pw = fit_pca_whitening(x, eps=0.0)
    assert pw.dim == 5
    y = pw.transform(x, normalize=False).astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.T @ y / len(y), np.eye(5), atol=1e-4)  # whitened
    # independent reference: SVD of the centred data
    c = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    ref = c @ vt.T / (s / math.sqrt(len(x)))
    np.testing.assert_allclose(np.abs(y), np.abs(ref), rtol=1e-4, atol=1e-4)  # up to signs
    np.testing.assert_allclose(pw.eigenvalues, s**2 / len(x), rtol=1e-8)
    # reduced, L2-normalised output
    pw2 = fit_pca_whitening(x, dim=2)
    z = pw2(x[:3])
    assert z.shape == (3, 2) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    assert pw2(x[0]).shape == (2,)


def test_pca_whitening_bad_inputs() -> None:
    x = np.random.default_rng(7).standard_normal((10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        fit_pca_whitening(x[:1])
    with pytest.raises(ValueError, match="dim must be"):
        fit_pca_whitening(x, dim=5)
    with pytest.raises(ValueError, match="eps must be"):
        fit_pca_whitening(x, eps=-1.0)
    pw = fit_pca_whitening(x)
    assert pw.dim == 4
    with pytest.raises(ValueError, match="D=4 columns"):
        pw.transform(np.ones((2, 3)))
