"""semcbir_fast.sbs_torch.encode_sbs_torch is bit-identical to semcbir_fast.encode_sbs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from semcbir_fast import encode_sbs, sbs_layout, sbs_torch
from semcbir_fast._paths import data_root
from semcbir_fast.sbs_torch import encode_sbs_torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small tensors: one intra-op thread is faster and kinder to shared CI machines."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _random_case(rng: np.random.Generator) -> dict:
    h, w = (int(v) for v in rng.integers(1, 48, 2))
    m = int(rng.integers(1, 24))
    dt = DTYPES[int(rng.integers(len(DTYPES)))]
    lo = 0 if np.dtype(dt).kind == "u" else -3
    hi = min(m + 3, int(np.iinfo(dt).max))
    labels = rng.integers(lo, hi + 1, (h, w)).astype(dt)
    if rng.random() < 0.3:  # big uniform regions, as real maps have
        labels[: h // 2] = rng.integers(0, m)
    return {"labels": labels, "num_classes": m, "levels": int(rng.integers(0, 5)),
                "pyramid": bool(rng.integers(2)),
                "ignore_index": [None, 0, 1, -1, 255, 70000][int(rng.integers(6))]}


def _both(labels, **kw) -> tuple[np.ndarray, np.ndarray]:
    return encode_sbs_torch(labels, **kw), encode_sbs(labels, **kw)


def test_random_maps_match_encode_sbs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        case = _random_case(rng)
        got, want = _both(case.pop("labels"), **case)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want, err_msg=str(case))


@pytest.mark.parametrize("levels", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("pyramid", [False, True])
def test_levels_and_pyramid(levels: int, pyramid: bool) -> None:
    rng = np.random.default_rng(levels)
    labels = rng.integers(-1, 9, (37, 53)).astype(np.int32)  # odd sizes, void pixels
    got, want = _both(labels, num_classes=7, levels=levels, pyramid=pyramid, ignore_index=3)
    assert got.shape == (sbs_layout(7, levels, pyramid).stride,)
    np.testing.assert_array_equal(got, want)


def test_grid_finer_than_map() -> None:
    labels = np.array([[0, 1], [2, 2], [1, 0]], dtype=np.uint8)  # 3 x 2 map, 8 x 8 grid
    for pyramid in (False, True):
        got, want = _both(labels, num_classes=3, levels=3, pyramid=pyramid)
        np.testing.assert_array_equal(got, want)
    one = np.array([[4]], dtype=np.int64)
    got, want = _both(one, num_classes=5, levels=4, pyramid=True)
    np.testing.assert_array_equal(got, want)


def test_all_void_is_zero() -> None:
    labels = np.full((10, 12), 9, dtype=np.uint8)
    got = encode_sbs_torch(labels, num_classes=5, levels=2)
    assert not got.any()
    got = encode_sbs_torch(np.zeros((4, 4), np.int32), num_classes=5, levels=1, ignore_index=0)
    assert not got.any()


def test_batch_list_and_single_agree() -> None:
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 11, (6, 29, 31)).astype(np.uint8)
    kw = {"num_classes": 11, "levels": 2, "pyramid": True}
    codes = encode_sbs_torch(batch, **kw)
    assert codes.shape == (6, sbs_layout(11, 2, True).stride)
    np.testing.assert_array_equal(codes, encode_sbs(batch, **kw))
    np.testing.assert_array_equal(codes, encode_sbs_torch(list(batch), **kw))
    np.testing.assert_array_equal(codes, encode_sbs_torch(torch.from_numpy(batch), **kw))
    for i in range(6):
        np.testing.assert_array_equal(codes[i], encode_sbs_torch(batch[i], **kw))


def test_list_of_different_sizes_and_dtypes() -> None:
    rng = np.random.default_rng(2)
    sizes = [(17, 23), (5, 3), (17, 23), (40, 1), (1, 40), (17, 23), (5, 3)]
    maps = [rng.integers(-2, 16, s).astype(np.int16) for s in sizes]
    maps[2] = maps[2].clip(0).astype(np.uint8)  # same size as maps[0], another dtype
    kw = {"num_classes": 14, "levels": 2, "ignore_index": 0}
    got = encode_sbs_torch([torch.from_numpy(m) for m in maps], **kw)
    np.testing.assert_array_equal(got, encode_sbs(maps, **kw))


def test_many_classes_uint16() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 400, (33, 35)).astype(np.uint16)
    got, want = _both(labels, num_classes=300, levels=1)
    np.testing.assert_array_equal(got, want)
    # torch.uint16, what the segmenter returns for > 255 classes
    t = torch.from_numpy(labels.astype(np.int32)).to(torch.uint16)
    got = encode_sbs_torch([t, t[:7, 3:]], num_classes=300, levels=2, ignore_index=5)
    want = encode_sbs([labels, labels[:7, 3:]], num_classes=300, levels=2, ignore_index=5)
    np.testing.assert_array_equal(got, want)


def test_scatter_path_matches_bincount_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA counting path (index_add_), exercised on the CPU."""
    rng = np.random.default_rng(4)
    cases = [_random_case(rng) for _ in range(30)]
    want = [encode_sbs_torch(c["labels"], **{k: v for k, v in c.items() if k != "labels"})
            for c in cases]
    monkeypatch.setattr(sbs_torch, "_use_bincount", lambda device: False)
    for c, w in zip(cases, want):
        kw = {k: v for k, v in c.items() if k != "labels"}
        np.testing.assert_array_equal(encode_sbs_torch(c["labels"], **kw), w)


def test_large_batches_are_sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    batch = rng.integers(0, 9, (7, 13, 11)).astype(np.uint8)
    kw = {"num_classes": 9, "levels": 2, "pyramid": True}
    want = encode_sbs(batch, **kw)
    monkeypatch.setattr(sbs_torch, "_MAX_CELLS", 2 * 16 * 9)  # 2 images per slice
    np.testing.assert_array_equal(encode_sbs_torch(batch, **kw), want)


def test_return_tensor() -> None:
    labels = torch.randint(0, 5, (3, 8, 9), dtype=torch.uint8)
    t = encode_sbs_torch(labels, num_classes=5, levels=1, return_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.device == labels.device
    np.testing.assert_array_equal(t.numpy(), encode_sbs(labels.numpy(), num_classes=5, levels=1))


def test_hamming_equals_level_differences() -> None:
    """SPEC: popcount(a ^ b) = sum over (block, class) of |p1 - p2| + |l1 - l2|."""
    from semcbir_fast import decode_sbs

    rng = np.random.default_rng(5)
    maps = [rng.integers(0, 6, (20, 30)).astype(np.uint8) for _ in range(2)]
    maps[1][:10] = 2
    lay = sbs_layout(6, 2)
    codes = encode_sbs_torch(maps, num_classes=6, levels=2)
    pres, lev = decode_sbs(codes, lay)
    expect = np.abs(pres[0].astype(int) - pres[1]).sum() + np.abs(lev[0].astype(int) - lev[1]).sum()
    assert np.unpackbits(codes[0] ^ codes[1]).sum() == expect


def _msrc_maps(limit: int | None = None) -> list[np.ndarray]:
    cv2 = pytest.importorskip("cv2")
    folder = Path(data_root()) / "msrc_v1" / "labels"
    files = sorted(folder.glob("*.png"))[:limit]
    if not files:
        pytest.skip(f"MSRC v1 label maps absent under {folder} (set SEMCBIR_DATA)")
    return [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]


def test_real_msrc_label_maps_all() -> None:
    maps = _msrc_maps()  # 240 maps, 213x320 and 320x213, 0 = void
    kw = {"num_classes": 14, "levels": 2, "pyramid": True, "ignore_index": 0}
    got = encode_sbs_torch([torch.from_numpy(m) for m in maps], **kw)
    np.testing.assert_array_equal(got, encode_sbs(maps, **kw))


@pytest.mark.parametrize("levels, pyramid", [(0, False), (1, False), (3, False), (4, True)])
def test_real_msrc_label_maps(levels: int, pyramid: bool) -> None:
    maps = _msrc_maps()[::8]  # 30 maps
    kw = {"num_classes": 14, "levels": levels, "pyramid": pyramid, "ignore_index": 0}
    got = encode_sbs_torch([torch.from_numpy(m) for m in maps], **kw)
    np.testing.assert_array_equal(got, encode_sbs(maps, **kw))
    assert got.any(axis=1).all()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"labels": np.zeros((4, 4), np.float32)}, ValueError, "integer dtype"),
        ({"labels": np.zeros((2, 2, 2, 2), np.int32)}, ValueError, "got shape"),
        ({"labels": [np.zeros((2, 2, 2), np.int32)]}, ValueError, r"labels\[0\] must be a 2-D"),
        ({"labels": []}, ValueError, "must not be empty"),
        ({"labels": np.zeros((0, 4), np.int32)}, ValueError, "must not be empty"),
        ({"labels": "x.png"}, ValueError, "labels must be"),
        ({"labels": np.zeros((4, 4), np.uint8), "num_classes": 300}, ValueError, "too large"),
        ({"labels": np.zeros((4, 4), np.uint8), "num_classes": 0}, ValueError, "num_classes"),
        ({"labels": np.zeros((4, 4), np.uint8), "levels": -1}, ValueError, "levels"),
        ({"labels": np.zeros((4, 4), np.uint8), "ignore_index": 1.5}, ValueError, "ignore_index"),
    ],
)
def test_bad_input(kwargs: dict, exc: type, match: str) -> None:
    kw = {"num_classes": 5, "levels": 1}
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        encode_sbs_torch(**kw)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@needs_cuda
def test_cuda_matches_encode_sbs() -> None:
    rng = np.random.default_rng(6)
    for _ in range(40):
        case = _random_case(rng)
        labels = case.pop("labels")
        got = encode_sbs_torch(torch.from_numpy(labels.astype(np.int64)).cuda(), **case)
        np.testing.assert_array_equal(got, encode_sbs(labels, **case), err_msg=str(case))
    maps = _msrc_maps()
    kw = {"num_classes": 14, "levels": 2, "pyramid": True, "ignore_index": 0}
    got = encode_sbs_torch([torch.from_numpy(m).cuda() for m in maps], **kw)
    np.testing.assert_array_equal(got, encode_sbs(maps, **kw))
    t = encode_sbs_torch(torch.from_numpy(maps[0]).cuda(), return_tensor=True, **kw)
    assert t.is_cuda and t.dtype == torch.uint8


@pytest.mark.gpu
@needs_cuda
def test_cuda_batch_does_not_synchronise() -> None:
    """With return_tensor=True the encoder only queues work (no device->host reads)."""
    labels = torch.randint(0, 151, (16, 384, 256), dtype=torch.uint8, device="cuda")
    maps = list(labels[:8]) + [torch.randint(0, 151, (256, 384), dtype=torch.uint8,
                                             device="cuda") for _ in range(4)]
    encode_sbs_torch(maps, num_classes=151, levels=2, return_tensor=True)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = encode_sbs_torch(labels, num_classes=151, levels=2, return_tensor=True)
        b = encode_sbs_torch(maps, num_classes=151, levels=2, pyramid=True, return_tensor=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    np.testing.assert_array_equal(a.cpu().numpy(),
                                  encode_sbs(labels.cpu().numpy(), num_classes=151, levels=2))
    np.testing.assert_array_equal(
        b.cpu().numpy(),
        encode_sbs([m.cpu().numpy() for m in maps], num_classes=151, levels=2, pyramid=True))
