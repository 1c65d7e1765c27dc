"""One decode of each image file per pipeline pass (:func:`semcbir_fast.imageio.decode_scope`).

The low-level decoder (``imageio._decode_bytes``) is wrapped with a counter:

- the memo itself on synthetic PNGs: nothing is remembered outside a scope, a hit is a
  private copy, a file changed on disk is decoded again, the byte bound holds (and evicts
  only entries already read back), bytes / arrays / unreadable files are not memoised,
  scopes nest, threads reading one file wait for a single decode;
- the pipeline on real MSRC images with a tiny TorchScript segmenter and EfficientNet-Lite0
  on the CPU: building and querying a ``fused`` (its defaults), ``regions`` (masked and crop)
  and ``cnn`` index decodes each file exactly once, gives the same vectors with the memo
  off, and the label-map cache still skips the segmenter.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from semcbir_fast import imageio
from semcbir_fast._paths import data_root
from semcbir_fast.imageio import (
    ImageReadError,
    active_decode_memo,
    decode_memo_bytes,
    decode_scope,
    read_image,
)

MSRC = data_root() / "msrc_v1" / "images"


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts the decodes of each source (file name) from here on."""
    counts: Counter = Counter()
    real = imageio._decode_bytes

    def counting(buf, source):
        counts[source] += 1
        return real(buf, source)

    monkeypatch.setattr(imageio, "_decode_bytes", counting)
    return counts


def _png(path: Path, seed: int, hw: tuple[int, int] = (20, 30)) -> Path:
    img = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    return [_png(tmp_path / f"img{i}.png", i) for i in range(4)]


# ----------------------------------------------------------------------------- the memo
def test_outside_a_scope_nothing_is_memoised(pngs, decodes):
    assert active_decode_memo() is None
    a, b = read_image(pngs[0]), read_image(pngs[0])
    assert decodes[str(pngs[0])] == 2
    np.testing.assert_array_equal(a, b)
    assert a is not b and a.flags.writeable


def test_a_scope_decodes_each_file_once_and_hands_out_copies(pngs, decodes, monkeypatch):
    ref = [read_image(p) for p in pngs]
    decodes.clear()
    monkeypatch.chdir(pngs[0].parent)
    with decode_scope() as memo:
        assert memo is not None and active_decode_memo() is memo
        first = [read_image(p) for p in pngs]
        again = [read_image(str(p)) for p in pngs]
        rel = read_image(pngs[1].name)  # a relative path of the same file: one key
        assert all(decodes[str(p)] == 1 for p in pngs) and decodes[pngs[1].name] == 0
        assert memo.stats.decodes == 4 and memo.stats.hits == 5 and len(memo) == 4
        assert pngs[2] in memo and memo.nbytes == sum(r.nbytes for r in ref)
        for r, x, y in zip(ref, first, again):
            np.testing.assert_array_equal(x, r)
            np.testing.assert_array_equal(y, r)
            assert x.flags.writeable and y.flags.writeable and x.flags.c_contiguous
        np.testing.assert_array_equal(rel, ref[1])
        first[0][:] = 0  # a caller's array is its own: the memo is not corrupted
        again[0][0, 0] = 7
        np.testing.assert_array_equal(read_image(pngs[0]), ref[0])
    assert active_decode_memo() is None and len(memo) == 0 and memo.nbytes == 0
    read_image(pngs[0])  # the scope is closed: decoded again
    assert decodes[str(pngs[0])] == 2


def test_a_changed_file_is_decoded_again(tmp_path, decodes):
    p = _png(tmp_path / "x.png", 0)
    with decode_scope() as memo:
        old = read_image(p)
        st = os.stat(p)
        _png(p, 1)  # new pixels, same size; and a new modification time
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        new = read_image(p)
        assert decodes[str(p)] == 2 and memo.stats.stale == 1
        assert not np.array_equal(old, new)
        np.testing.assert_array_equal(new, cv2.imread(str(p))[:, :, ::-1])
        _png(p, 2, hw=(21, 30))  # another size
        np.testing.assert_array_equal(read_image(p), cv2.imread(str(p))[:, :, ::-1])
        assert decodes[str(p)] == 3 and len(memo) == 1
        read_image(p)
        assert decodes[str(p)] == 3


def test_the_byte_bound_holds_and_evicts_read_back_entries_first(pngs, decodes):
    ref = [read_image(p) for p in pngs]
    decodes.clear()
    one = ref[0].nbytes  # all four are 20 x 30 x 3
    with decode_scope(max_bytes=2 * one + one // 2) as memo:
        assert memo.max_bytes == 2 * one + one // 2
        for p in pngs[:3]:
            read_image(p)
        # no entry has been read back yet: the third image is not kept (the first two
        # are what the next reader of the pass needs first)
        assert len(memo) == 2 and memo.nbytes <= memo.max_bytes and memo.stats.refused == 1
        assert pngs[0] in memo and pngs[2] not in memo
        read_image(pngs[0])  # read back: now it may make room
        got = read_image(pngs[2])  # decoded again, kept in place of image 0
        assert decodes[str(pngs[2])] == 2 and memo.stats.evicted == 1
        assert pngs[2] in memo and pngs[0] not in memo and memo.nbytes <= memo.max_bytes
        np.testing.assert_array_equal(got, ref[2])
        out = [read_image(p) for _ in range(3) for p in pngs]
        assert memo.nbytes <= memo.max_bytes and len(memo) <= 2
    for i, x in enumerate(out):
        np.testing.assert_array_equal(x, ref[i % 4])  # the same pixels with and without
    with decode_scope(max_bytes=one - 1) as small:  # an image larger than the bound
        read_image(pngs[0])
        read_image(pngs[0])
        assert len(small) == 0 and small.stats.refused == 2


def test_bound_settings_and_nested_scopes(pngs, decodes, monkeypatch):
    monkeypatch.delenv("SEMCBIR_DECODE_MEMO_MB", raising=False)
    assert decode_memo_bytes() == imageio.DEFAULT_DECODE_MEMO_MB << 20
    monkeypatch.setenv("SEMCBIR_DECODE_MEMO_MB", "1.5")
    assert decode_memo_bytes() == 3 << 19
    with decode_scope() as memo:
        assert memo.max_bytes == 3 << 19
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("SEMCBIR_DECODE_MEMO_MB", bad)
        with pytest.raises(ValueError, match="SEMCBIR_DECODE_MEMO_MB"), decode_scope():
            pass
    monkeypatch.setenv("SEMCBIR_DECODE_MEMO_MB", "0")  # off: behaviour unchanged
    with decode_scope() as memo:
        assert memo is None and active_decode_memo() is None
        read_image(pngs[0])
        read_image(pngs[0])
    assert decodes[str(pngs[0])] == 2
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_bytes"), decode_scope(max_bytes=bad):
            pass
    with decode_scope(max_bytes=1 << 20) as outer:
        read_image(pngs[1])
        with decode_scope(max_bytes=5) as inner:  # joins the open memo and its bound
            assert inner is outer and inner.max_bytes == 1 << 20
            read_image(pngs[1])
        assert active_decode_memo() is outer and pngs[1] in outer  # still open
        read_image(pngs[1])
    assert active_decode_memo() is None and decodes[str(pngs[1])] == 1


def test_bytes_arrays_and_unreadable_files_are_not_memoised(pngs, tmp_path, decodes):
    data = pngs[0].read_bytes()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with decode_scope() as memo:
        a = read_image(data)
        read_image(data)
        assert decodes[f"<{len(data)} bytes>"] == 2
        arr = np.zeros((4, 5, 3), np.uint8)
        read_image(arr)
        for _ in range(2):
            with pytest.raises(ImageReadError, match="broken.png"):
                read_image(bad)
        with pytest.raises(ImageReadError, match="no such file"):
            read_image(tmp_path / "missing.png")
        with pytest.raises(ImageReadError, match="directory"):
            read_image(tmp_path)
        assert decodes[str(bad)] == 2 and len(memo) == 0
    np.testing.assert_array_equal(a, read_image(pngs[0]))


def test_threads_reading_the_same_files_decode_each_once(pngs, monkeypatch):
    counts: Counter = Counter()
    lock = threading.Lock()
    real = imageio._decode_bytes

    def slow(buf, source):  # a slow decoder, so that threads do meet on one file
        with lock:
            counts[source] += 1
        time.sleep(0.02)
        return real(buf, source)

    ref = [read_image(p) for p in pngs]
    monkeypatch.setattr(imageio, "_decode_bytes", slow)
    jobs = [i % len(pngs) for i in range(200)]
    with decode_scope() as memo, ThreadPoolExecutor(max_workers=8) as pool:
        out = list(pool.map(lambda i: (i, read_image(pngs[i])), jobs))
    assert all(counts[str(p)] == 1 for p in pngs), counts
    assert memo.stats.decodes == 4 and memo.stats.hits == 196
    for i, x in out:
        np.testing.assert_array_equal(x, ref[i])
    # a bound too small for anything: every reader decodes, none waits forever
    counts.clear()
    with decode_scope(max_bytes=1), ThreadPoolExecutor(max_workers=8) as pool:
        out = list(pool.map(lambda i: (i, read_image(pngs[i])), jobs[:40]))
    assert sum(counts.values()) == 40
    for i, x in out:
        np.testing.assert_array_equal(x, ref[i])


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory):
    """A tiny TorchScript segmenter (3 classes: each pixel's dominant colour channel)."""
    torch = pytest.importorskip("torch")
    from semcbir_fast.models.sidecar import SegmenterMeta, write_sidecar
    from semcbir_fast.segment import load_segmenter

    class ColorNet(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x, 4)

    path = tmp_path_factory.mktemp("models") / "color.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(ColorNet().eval()).save(str(path))
    write_sidecar(path, SegmenterMeta(name="color", num_classes=3, class_names=["r", "g", "b"],
                                      mean=[127.5] * 3, std=[127.5] * 3, input_size=(64, 64)))
    return load_segmenter(path, device="cpu")


@pytest.fixture(scope="module")
def msrc_paths() -> list[str]:
    pytest.importorskip("torch")
    files = sorted(MSRC.glob("*.jpg"))[::48][:5]
    if len(files) < 5:
        pytest.skip(f"MSRC v1 images not found under {MSRC}")
    return [str(f) for f in files]


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A private cache folder and an empty descriptor memo, on the CPU."""
    from semcbir_fast.deep import extract as ex

    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEMCBIR_DEVICE", "cpu")
    monkeypatch.delenv("SEMCBIR_DECODE_MEMO_MB", raising=False)
    ex.clear_memo()
    yield ex.clear_memo
    ex.clear_memo()


@pytest.mark.parametrize("name, kw, compare", [
    ("fused", {}, True),
    ("regions", {"region_mode": "masked", "pca_dim": 4}, True),
    ("regions", {"region_mode": "crop", "pca_dim": 4, "regions": 2}, False),
    ("cnn", {}, False),
], ids=["fused", "regions-masked", "regions-crop", "cnn"])
def test_build_and_query_decode_each_file_once(name, kw, compare, segmenter, msrc_paths,
                                               fresh, decodes, monkeypatch):
    from semcbir_fast.pipeline import Retriever, build_index
    from semcbir_fast.signatures import create_signature

    def build():
        fresh()
        sig = create_signature(name, num_classes=3, **kw)
        return build_index(msrc_paths, sig, segmenter=segmenter, progress=False,
                           use_cache=False)

    built = build()
    assert len(built.index) == len(msrc_paths)
    assert {p: decodes[p] for p in msrc_paths} == {p: 1 for p in msrc_paths}
    assert active_decode_memo() is None  # the chunk's scope is closed
    decodes.clear()
    fresh()
    queries = msrc_paths[:2]
    hits = Retriever(built.index, segmenter, use_cache=False).query(queries, k=2,
                                                                    resegment=True)
    assert hits.source == ["segmented"] * 2 and (hits.ids[:, 0] == np.arange(2)).all()
    assert {p: decodes[p] for p in queries} == {p: 1 for p in queries}
    if not compare:
        return
    # the memo off: the files are decoded by every reader, and the vectors are the same
    decodes.clear()
    monkeypatch.setenv("SEMCBIR_DECODE_MEMO_MB", "0")
    off = build()
    assert all(decodes[p] >= 2 for p in msrc_paths)
    ids = np.arange(len(msrc_paths))
    a, b = built.index.reconstruct_batch(ids), off.index.reconstruct_batch(ids)
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_label_cache_still_skips_the_segmenter(segmenter, msrc_paths, fresh, decodes):
    """The caches that skip work keep doing so: a second build takes the label maps from
    the per-image cache (the backbone alone reads the files, once each)."""
    from semcbir_fast.pipeline import build_index
    from semcbir_fast.signatures import create_signature

    first = build_index(msrc_paths, create_signature("fused", num_classes=3),
                        segmenter=segmenter, progress=False)
    assert first.cached == 0
    decodes.clear()
    fresh()
    again = build_index(msrc_paths, create_signature("fused", num_classes=3),
                        segmenter=segmenter, progress=False)
    assert again.cached == len(msrc_paths)
    assert {p: decodes[p] for p in msrc_paths} == {p: 1 for p in msrc_paths}
    decodes.clear()  # and the descriptor memo skips the backbone (no decode at all)
    build_index(msrc_paths, create_signature("fused", num_classes=3), segmenter=segmenter,
                progress=False)
    assert sum(decodes[p] for p in msrc_paths) == 0


def test_evaluate_decodes_each_file_once(segmenter, msrc_paths, fresh, decodes):
    """``evaluate`` of a regions signature (global + region backbone passes) over images
    segmented in the same scope, as ``semcbir eval`` does."""
    from semcbir_fast.eval.cache import segment_paths
    from semcbir_fast.eval.datasets import Dataset
    from semcbir_fast.eval.evaluate import evaluate
    from semcbir_fast.pipeline import decode_pass
    from semcbir_fast.signatures import Inputs, create_signature

    sig = create_signature("regions", num_classes=3, pca_dim=4)
    ds = Dataset(name="five", root=Path(msrc_paths[0]).parent,
                 images=[Path(p) for p in msrc_paths],
                 categories=np.array([0, 0, 0, 1, 1]))
    with decode_pass(sig.requires):
        _, maps, failed, _ = segment_paths(msrc_paths, segmenter, use_cache=False,
                                           progress=False)
        assert not failed
        res = evaluate(ds, sig, Inputs(maps), ks=(2,), top=3)
    assert 0 < res.results[0].map <= 1
    assert {p: decodes[p] for p in msrc_paths} == {p: 1 for p in msrc_paths}
