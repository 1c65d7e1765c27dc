"""Paper 002's deep hashing: the code layout, ITQ / PCA-sign, the network, training on a
handful of real Corel images (loss decreases, reproducible, resumable), TorchScript export,
bad inputs, the binary index, the deephash signature and the train-hash command."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from reference import ref_topk
from semcbir_fast._paths import data_root
from semcbir_fast.hamming import hamming_topk
from semcbir_fast.hashing import (
    ITQ,
    PCASign,
    code_stride,
    pack_bits,
    threshold_bits,
    unpack_bits,
)
from semcbir_fast.hashing.experiment import map_at_k, split_train_test
from semcbir_fast.hashing.train import TrainConfig, load_hash_model, train_hashnet
from semcbir_fast.index import BinaryIndex, IndexFormatError, load_index
from semcbir_fast.models.hashnet import HashNetConfig, bins_to_grids

COREL = data_root() / "corel1k" / "images"
# two categories (dinosaurs 4xx, horses 7xx), three images each
IDS = [400, 401, 402, 700, 701, 702]
LABELS = np.array([4, 4, 4, 7, 7, 7])
TINY = {"bits": 16, "fc": (32, 32), "psp_input": "stage3", "seg_channels": 8,
        "dropout": 0.0}
TC = TrainConfig(seg_epochs=3, hash_epochs=3, seg_batch=4, hash_batch=4, lr=0.05, seg_size=16)

pytestmark = pytest.mark.skipif(not COREL.is_dir(), reason="Corel-1K images not present")


@pytest.fixture(scope="module")
def paths() -> list[str]:
    return [str(COREL / f"{i}.jpg") for i in IDS]


@pytest.fixture(scope="module")
def masks(paths: list[str]) -> list[np.ndarray]:
    """Synthetic masks of the images' shapes: class 1 in the top half for dinosaurs,
    class 2 in the left half for horses (class 0 elsewhere)."""
    import cv2

    out = []
    for p, y in zip(paths, LABELS):
        h, w = cv2.imread(p).shape[:2]
        m = np.zeros((h, w), np.uint8)
        if y == 4:
            m[: h // 2] = 1
        else:
            m[:, : w // 2] = 2
        out.append(m)
    return out


@pytest.fixture(scope="module")
def trained(paths, masks, tmp_path_factory):
    ck = tmp_path_factory.mktemp("hash") / "model.pt"
    res = train_hashnet(paths, LABELS, masks, train=TC, checkpoint=ck, progress=False,
                        num_mask_values=3, **TINY)
    return res, ck


# ----------------------------------------------------------------------------- codes
def test_pack_threshold_layout() -> None:
    r = np.array([[0.5, 0.49, 1.0, 0.0, 0.7, 0.2, 0.9, 0.1, 0.6]])
    bits = threshold_bits(r)
    assert bits.tolist() == [[1, 0, 1, 0, 1, 0, 1, 0, 1]]  # sgn(0) = +1 -> bit 1
    codes = pack_bits(bits)
    assert codes.dtype == np.uint8 and codes.shape == (1, 8) and codes.flags.c_contiguous
    assert codes[0, 0] == 0b10101010 and codes[0, 1] == 0b10000000 and not codes[0, 2:].any()
    assert np.array_equal(unpack_bits(codes, 9), bits)
    assert [code_stride(b) for b in (8, 48, 64, 65)] == [8, 8, 8, 16]
    with pytest.raises(ValueError, match="only 0 and 1"):
        pack_bits(np.array([[2, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        threshold_bits(np.zeros(3))


def test_itq_pca_sign() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 32)) @ rng.standard_normal((32, 32))
    for h in (PCASign(bits=16), ITQ(bits=16, seed=1)):
        c = h.fit(x).encode(x)
        assert c.shape == (200, 8) and c.dtype == np.uint8
        # balanced-ish bits: PCA directions are centred
        ones = unpack_bits(c, 16).mean(0)
        assert np.all((ones > 0.2) & (ones < 0.8))
    itq = ITQ(bits=16, seed=1).fit(x)
    assert itq.losses[-1] <= itq.losses[0]  # quantisation loss goes down
    assert all(b <= a + 1e-6 for a, b in zip(itq.losses, itq.losses[1:]))
    r = itq.rotation
    assert np.allclose(r @ r.T, np.eye(16), atol=1e-8)
    assert np.array_equal(ITQ(bits=16, seed=1).fit(x).encode(x), itq.encode(x))
    with pytest.raises(ValueError, match="needs at least 16 dimensions"):
        PCASign(bits=16).fit(x[:10])
    with pytest.raises(ValueError, match="not fitted"):
        ITQ(bits=8).encode(x)
    with pytest.raises(ValueError, match="dim 3"):
        PCASign(bits=8).fit(x).encode(x[:, :3])


def test_map_at_k_definition() -> None:
    ranked = np.array([[1, 0, 1, 0], [0, 0, 0, 0]])
    # query 0 (label 1): rel 1,0,1 -> (1/1 + 2/3) / 2; query 1 (label 1): no hit -> 0
    assert map_at_k(ranked, [1, 1], 3) == pytest.approx(((1 + 2 / 3) / 2 + 0) / 2)
    tr, te = split_train_test(np.repeat([0, 1], 10), 0.5)
    assert len(tr) == 10 and len(np.intersect1d(tr, te)) == 0


# ----------------------------------------------------------------------------- network
def test_config_and_bins() -> None:
    assert bins_to_grids() == [1, 2, 3, 4]  # the paper's 28 / 14 / 9 / 7 on a 28 map
    with pytest.raises(ValueError, match="multiple of 8"):
        HashNetConfig(num_classes=2, num_seg_classes=2, bits=12)
    with pytest.raises(ValueError, match="num_classes"):
        HashNetConfig(num_classes=1, num_seg_classes=2)
    with pytest.raises(ValueError, match="num_seg_classes"):
        HashNetConfig(num_classes=2, num_seg_classes=0)
    cfg = HashNetConfig(num_classes=3, num_seg_classes=4, bits=24, fc=(8, 8))
    assert HashNetConfig.from_dict(cfg.to_dict()) == cfg


def test_training_lowers_loss_and_codes(trained, paths) -> None:
    res, ck = trained
    seg = [h["loss"] for h in res.history if h["phase"] == "seg"]
    hsh = [h["loss"] for h in res.history if h["phase"] == "hash"]
    assert len(seg) == 3 and len(hsh) == 3
    assert seg[-1] < seg[0] and hsh[-1] < hsh[0]
    codes = res.model.encode(paths)
    assert codes.dtype == np.uint8 and codes.shape == (6, 8) and codes.flags.c_contiguous
    assert not codes[:, 2:].any()  # 16 bits = 2 bytes, then zero padding
    # the checkpoint on disk gives the same codes
    assert np.array_equal(load_hash_model(ck).encode(paths), codes)


def test_reproducible_and_resume(paths, masks, trained, tmp_path) -> None:
    res, _ = trained
    want = res.model.net.state_dict()
    ck = tmp_path / "part.pt"
    first = train_hashnet(paths, LABELS, masks, train=TC, checkpoint=ck, progress=False,
                          num_mask_values=3, stop_after=("seg", 1), **TINY)
    assert [h["phase"] for h in first.history] == ["seg", "seg"]
    again = train_hashnet(paths, LABELS, masks, train=TC, checkpoint=ck, resume=True,
                          progress=False, num_mask_values=3, **TINY)
    assert again.resumed_from == ("seg", 2)
    got = again.model.net.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert [h["loss"] for h in again.history] == [h["loss"] for h in res.history]
    # another data set or other settings are refused
    with pytest.raises(ValueError, match="other settings"):
        train_hashnet(paths, LABELS, masks, train=dataclasses.replace(TC, lr=0.01),
                      checkpoint=ck, resume=True, progress=False, num_mask_values=3, **TINY)
    with pytest.raises(ValueError, match="other images"):
        train_hashnet(paths, LABELS[::-1].copy(), masks, train=TC, checkpoint=ck,
                      resume=True, progress=False, num_mask_values=3, **TINY)


def test_torchscript_export_same_codes(trained, paths, tmp_path) -> None:
    res, _ = trained
    model = res.model
    sm = model.export_torchscript(tmp_path / "hash.ts")
    loaded = torch.jit.load(str(tmp_path / "hash.ts"))
    x = model.preprocess(paths)
    eager = model.full_model()
    with torch.no_grad():
        e_codes = eager.codes(x)
        assert torch.equal(loaded.codes(x), e_codes) and torch.equal(sm.codes(x), e_codes)
        assert e_codes.dtype == torch.uint8 and e_codes.shape == (6, 16)
        # the eager full model agrees with the cached-map path up to float16 rounding
        r_full = eager(x).numpy()
    r_cached = model.outputs(paths)
    assert np.abs(r_full - r_cached).max() < 2e-2


def test_baseline_without_masks(paths) -> None:
    res = train_hashnet(paths, LABELS, None, use_segmentation=False, train=TC, progress=False,
                        **TINY)
    assert res.model.net.psp is None and [h["phase"] for h in res.history] == ["hash"] * 3
    assert res.model.encode(paths).shape == (6, 8)


def test_bad_inputs(paths, masks) -> None:
    kw = dict(train=TC, progress=False, num_mask_values=3, **TINY)
    with pytest.raises(ValueError, match="class label per image"):
        train_hashnet(paths, None, masks, **kw)
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_hashnet(paths, np.zeros(6, int), masks, **kw)
    with pytest.raises(ValueError, match="one class per image"):
        train_hashnet(paths, LABELS[:4], masks, **kw)
    with pytest.raises(ValueError, match="one map per image"):
        train_hashnet(paths, LABELS, masks[:5], **kw)
    with pytest.raises(ValueError, match="needs a mask per image"):
        train_hashnet(paths, LABELS, None, **kw)
    bad = list(masks)
    bad[2] = np.zeros((10, 100), np.uint8)
    with pytest.raises(ValueError, match="mask 2 has shape"):
        train_hashnet(paths, LABELS, bad, **kw)
    with pytest.raises(ValueError, match="at least 2 mask classes"):
        train_hashnet(paths, LABELS, [np.zeros_like(m) for m in masks], **kw)
    with pytest.raises(ValueError, match="not a hash model checkpoint"):
        p = Path(paths[0])
        load_hash_model(p)


# ----------------------------------------------------------------------------- index
def test_binary_index_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, (50, 20), dtype=np.uint8)
    codes = pack_bits(bits)
    idx = BinaryIndex(20)
    assert idx.stride == 8 and idx.nbytes == 3
    ids = idx.add(codes, keys=[f"k{i}" for i in range(50)])
    assert ids.tolist() == list(range(50))
    d, i = idx.search(codes[:5], k=7)
    d2, i2 = hamming_topk(codes[:5], codes, 7)
    assert np.array_equal(d, d2) and np.array_equal(i, i2)
    assert d.dtype == np.int32 and i.dtype == np.int64
    d, i = idx.search(codes[:1], k=60)
    assert i[0, 50:].tolist() == [-1] * 10
    idx.save(tmp_path / "b.idx")
    back = load_index(tmp_path / "b.idx")
    assert isinstance(back, BinaryIndex) and back.keys_of([3]) == ["k3"]
    assert np.array_equal(back.reconstruct_batch([1, 2]), codes[1:3])
    bad = codes[:1].copy()
    bad[0, 2] |= 1  # bit 23, past the 20 meaningful bits
    with pytest.raises(ValueError, match="must be zero"):
        idx.add(bad)
    with pytest.raises(ValueError, match="shape"):
        idx.search(np.zeros((1, 16), np.uint8), 3)
    raw = (tmp_path / "b.idx").read_bytes()
    (tmp_path / "t.idx").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IndexFormatError):
        load_index(tmp_path / "t.idx")


# ----------------------------------------------------------------------------- signature
def test_deephash_signature_pipeline(trained, paths, masks, tmp_path) -> None:
    from semcbir_fast.pipeline import Retriever, build_index
    from semcbir_fast.signatures import Inputs, create_signature

    _, ck = trained
    sig = create_signature("deephash", num_classes=3, hash_model=str(ck))
    assert sig.requires == ("images",) and sig.nbits == 16
    built = build_index(paths, sig, progress=False)
    idx = built.index
    assert isinstance(idx, BinaryIndex) and len(idx) == 6
    idx.save(tmp_path / "d.idx")
    back = load_index(tmp_path / "d.idx")
    assert back.signature.name == "deephash" and back.nbits == 16
    hits = Retriever(back).query([paths[0], paths[4]], k=6)
    assert hits.ids.shape == (2, 6) and hits.distances.dtype == np.int32
    assert hits.distances[0, 0] == 0
    # concatenation with SBS bits: learned bits first, then SPEC.md section 1's
    from semcbir_fast import encode_sbs

    cat = create_signature("deephash", num_classes=3, hash_model=str(ck), sbs_levels=0)
    assert cat.requires == ("images", "labels") and cat.nbits == 16 + 15
    enc = cat.encode(Inputs(masks, None, paths))
    plain = sig.encode(Inputs([], None, paths))
    sbs = encode_sbs(masks, num_classes=3, levels=0).reshape(6, -1)
    b = unpack_bits(enc, 31)
    assert np.array_equal(b[:, :16], unpack_bits(plain, 16))
    assert np.array_equal(b[:, 16:], unpack_bits(sbs, 15))
    # an index is only queried with its own model
    other = tmp_path / "other.pt"
    m = load_hash_model(ck)
    with torch.no_grad():
        m.net.hash.bias.add_(1.0)
    m.save(other)
    os.replace(other, ck.with_name("swap.pt"))
    h = back.signature
    h.params = dataclasses.replace(h.params, hash_model=str(ck.with_name("swap.pt")))
    with pytest.raises(ValueError, match="not the model this index was built with"):
        h.encode(Inputs([], None, paths[:1]))
    with pytest.raises(ValueError, match="--hash-model"):
        create_signature("deephash", num_classes=3).encode(Inputs([], None, paths[:1]))


def test_cli_train_hash_index_search(paths, tmp_path, capsys) -> None:
    from semcbir_fast.cli import main

    root = tmp_path / "ds"
    for p, y in zip(paths, LABELS):
        d = root / f"c{y}"
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(p, d / Path(p).name)
    ck = tmp_path / "m.pt"
    args = ["train-hash", "folders", "--root", str(root), "-o", str(ck), "--no-segmentation",
            "--bits", "16", "--fc", "16", "16", "--hash-epochs", "2", "--hash-batch", "2",
            "--train-fraction", "1", "-q"]
    assert main(args) == 0
    assert "16 bits" in capsys.readouterr().out
    assert main(args) == 1  # exists, no --resume
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert main(["train-hash", "folders", "--root", str(root), "-o", str(tmp_path / "x.pt"),
                 "--bits", "12", "-q"]) == 1
    assert "multiple of 8" in capsys.readouterr().err
    idx = tmp_path / "i.idx"
    assert main(["index", str(root), "-o", str(idx), "--signature", "deephash",
                 "--hash-model", str(ck), "-q"]) == 0
    assert "deephash" in capsys.readouterr().out
    assert main(["search", str(idx), paths[0], "-k", "3", "--json"]) == 0
    assert '"distance": 0' in capsys.readouterr().out.replace(" ", "").replace(
        '"distance":0', '"distance": 0')
    assert main(["index", str(root), "-o", str(tmp_path / "j.idx"), "--signature",
                 "deephash", "-q"]) == 1
    assert "--hash-model" in capsys.readouterr().err


def test_binary_index_device_search() -> None:
    """The device engine (search.gpu.DeviceCodes, run here on CPU tensors) gives the SIMD
    scan's results on 48-bit codes, ties included; its upload is cached per content."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    codes = pack_bits(rng.integers(0, 2, (300, 48), dtype=np.uint8))
    codes[100:110] = codes[5]  # duplicates: ties broken by the smaller id
    idx = BinaryIndex(48)
    idx.add(codes)
    dev = idx._on_device(idx.codes)
    for k in (1, 10, 305):
        d, i = dev.search(codes[:20], k)
        d2, i2 = hamming_topk(codes[:20], codes, k)
        assert np.array_equal(d, d2) and np.array_equal(i, i2)
        rd, ri = ref_topk(codes[:20], codes, k)
        assert np.array_equal(d, rd) and np.array_equal(i, ri)
    assert idx._on_device(idx.codes) is dev
    idx.add(codes[:3])
    assert idx._on_device(idx.codes) is not dev
    with pytest.raises(ValueError, match="device must be"):
        BinaryIndex(48, device="tpu")


def test_binary_index_cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(12)
    codes = pack_bits(rng.integers(0, 2, (5000, 48), dtype=np.uint8))
    idx = BinaryIndex(48, device="cuda")
    idx.add(codes)
    d, i = idx.search(codes[:64], 10)
    d2, i2 = hamming_topk(codes[:64], codes, 10)
    assert np.array_equal(d, d2) and np.array_equal(i, i2)
