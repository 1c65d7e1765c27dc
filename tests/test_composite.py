"""Tests of composite segmenters (several models, one merged label map).

Hand-made cases: two tiny TorchScript models whose labels follow the pixel colour, so the
merged map of a synthetic image is known by construction. Real case: ``"ade20k+voc"`` on
MSRC images against its two member models run alone and merged here by the documented
rule. Error cases: mismatched or malformed class mappings, different input sizes.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from semcbir_fast._paths import data_root, models_root
from semcbir_fast.eval.cache import LabelStore, model_key, segment_paths
from semcbir_fast.models.sidecar import SegmenterMeta, write_sidecar
from semcbir_fast.segment import (
    CompositeMember,
    CompositeSegmenter,
    Segmenter,
    available_segmenters,
    index_images,
    load_segmenter,
    register_composite,
    segmenter_runtimes,
)
from semcbir_fast.segment.composite import merge_label_space, read_class_mapping

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")

S = 16  # input size of the tiny models


class _Linear(torch.nn.Module):
    """Per-pixel logits ``W @ x + b`` (a 1x1 conv): labels follow the colour."""

    def __init__(self, w: list[list[float]], b: list[float]) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, len(w), 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(w).view(len(w), 3, 1, 1))
            self.conv.bias.copy_(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _save(tmp_path, name, w, b, classes, *, mean=(0.0,) * 3, std=(1.0,) * 3, size=(S, S)):
    path = tmp_path / f"{name}.pt"
    torch.jit.save(torch.jit.script(_Linear(w, b).eval()), str(path))
    write_sidecar(path, SegmenterMeta(name=name, num_classes=len(classes),
                                      class_names=list(classes), mean=list(mean),
                                      std=list(std), input_size=size))
    return path


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """base: argmax of (R, G, B) -> "red thing", "grass", "sky" (inputs 0..255);
    overlay (inputs scaled to 0..1): background 0.5, cow = R, grass = G - 0.2."""
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    base = _save(tmp_path, "base", [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0, 0, 0],
                 ["red thing", "grass", "sky"])
    over = _save(tmp_path, "over", [[0, 0, 0], [1, 0, 0], [0, 1, 0]], [0.5, 0, -0.2],
                 ["background", "cow", "grass"], std=(255.0,) * 3)
    return base, over


def _image() -> np.ndarray:
    """16x16 RGB: left half red, right half blue, bottom-right quarter green."""
    img = np.zeros((S, S, 3), np.uint8)
    img[:, : S // 2, 0] = 255
    img[:, S // 2:, 2] = 255
    img[S // 2:, S // 2:] = (0, 255, 0)
    return img


def test_merge_rule_by_construction(tiny) -> None:
    base, over = tiny
    seg = load_segmenter([str(base), str(over)], device="cpu")
    assert isinstance(seg, CompositeSegmenter) and isinstance(seg, Segmenter)
    # base classes keep their values; "grass" merges; "cow" is appended
    assert seg.class_names == ["red thing", "grass", "sky", "cow"]
    assert seg.num_classes == 4 and seg.label_dtype == np.uint8
    lab = seg.segment(_image())
    want = np.empty((S, S), np.uint8)
    want[:, : S // 2] = 3          # red: the overlay's cow paints over "red thing"
    want[: S // 2, S // 2:] = 2    # blue: overlay says background, the base's sky stays
    want[S // 2:, S // 2:] = 1     # green: both say grass (the merged class)
    np.testing.assert_array_equal(lab, want)


def test_margin_and_order(tiny, tmp_path) -> None:
    base, over = tiny
    # cow logit 1.0 < background 0.5 + margin 0.6: the overlay no longer paints there
    seg = load_segmenter([str(base), CompositeMember(str(over), margin=0.6)], device="cpu")
    lab = seg.segment(_image())
    assert (lab[:, : S // 2] == 0).all()          # the base's "red thing"
    assert (lab[S // 2:, S // 2:] == 1).all()     # grass: 0.8 vs 1.1, base grass anyway
    # a later overlay wins: a second one calling red "fire" repaints the cow pixels
    fire = _save(tmp_path, "fire", [[0, 0, 0], [1, 0, 0]], [0.5, 0], ["background", "fire"],
                 std=(255.0,) * 3)
    seg3 = load_segmenter([str(base), str(over), str(fire)], device="cpu")
    assert seg3.class_names[-2:] == ["cow", "fire"]
    assert (seg3.segment(_image())[:, : S // 2] == 4).all()


def test_mapping_file_format_and_beside_model(tiny, tmp_path) -> None:
    base, over = tiny
    mfile = tmp_path / "m.tsv"
    mfile.write_text("# overlay classes -> merged\nbackground\t-\n#1\tred thing\n"
                     "grass\t#1\n")
    assert read_class_mapping(mfile) == {"background": None, "#1": "red thing", "grass": "#1"}
    seg = load_segmenter([str(base), CompositeMember(str(over), mapping=mfile)], device="cpu")
    assert seg.class_names == ["red thing", "grass", "sky"]  # nothing appended
    assert (seg.segment(_image())[:, : S // 2] == 0).all()
    # the same file beside the model is picked up by default ("a+b" form)
    over.with_suffix(".classmap.tsv").write_text(mfile.read_text())
    seg2 = load_segmenter(f"{base}+{over}", device="cpu")
    assert seg2.class_names == ["red thing", "grass", "sky"]


def test_composite_file_relative_paths(tiny, tmp_path) -> None:
    base, over = tiny
    spec = tmp_path / "mine.composite"
    spec.write_text(json.dumps({"format": "semcbir-composite", "version": 1, "name": "mine",
                                "members": [{"model": base.name},
                                            {"model": over.name, "margin": 0.0}]}))
    seg = load_segmenter(spec, device="cpu")
    assert seg.meta.name == "mine" and seg.class_names[-1] == "cow"
    assert seg.path.suffix == ".composite" and seg.path.with_suffix(".json").is_file()


def test_bad_mappings_and_sizes(tiny, tmp_path) -> None:
    base, over = tiny
    cases = [
        ({"background": None, "cow": "cow", "grass": "grass", "horse": "horse"},
         "unknown classes.*horse.*another model"),
        ({"background": None, "cow": "cow"}, r"1 of the model's 3 classes are not mapped.*grass"),
        ({"background": None, "cow": "cow", "#1": "x", "grass": "grass"}, "mapped twice"),
        ({"background": None, "cow": "#9", "grass": "grass"}, "out of range"),
    ]
    for mapping, match in cases:
        with pytest.raises(ValueError, match=match):
            load_segmenter([str(base), CompositeMember(str(over), mapping=mapping)],
                           device="cpu")
    bad = tmp_path / "bad.tsv"
    bad.write_text("background\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: expected"):
        read_class_mapping(bad)
    small = _save(tmp_path, "small", [[1, 0, 0], [0, 1, 0]], [0, 0], ["background", "x"],
                  size=(8, 8))
    with pytest.raises(ValueError, match=r"different input sizes.*16x16.*8x8"):
        load_segmenter([str(base), str(small)], device="cpu")
    nobg = _save(tmp_path, "nobg", [[1, 0, 0]], [0], ["thing"])
    with pytest.raises(ValueError, match="no class called 'background'"):
        load_segmenter([str(base), str(nobg)], device="cpu")
    with pytest.raises(ValueError, match="ambiguous"):
        merge_label_space([["a", "a"], ["background", "b"]],
                          [None, {"background": None, "b": "a"}])
    # a base mapping may merge its own classes: then "a" is one class and not ambiguous
    assert merge_label_space([["a", "a"], ["background", "b"]],
                             [{"#0": "a", "#1": "a"}, {"background": None, "b": "a"}]
                             )[1][1].tolist() == [-1, 0]
    with pytest.raises(ValueError, match="at least two"):
        load_segmenter([str(base)], device="cpu")


def test_cache_key_covers_every_member(tiny, tmp_path) -> None:
    base, over = tiny
    seg = load_segmenter([str(base), str(over)], device="cpu")
    k1 = model_key(seg.path)
    assert k1 != model_key(base)
    img = tmp_path / "img.png"
    import cv2

    cv2.imwrite(str(img), _image()[:, :, ::-1])
    store = LabelStore.for_segmenter(seg)
    _kept, maps, failed, hits = segment_paths([img], seg, store=store)
    assert hits == 0 and not failed and maps[0].max() == 3
    assert segment_paths([img], seg, store=store)[3] == 1  # cached
    # change the overlay's weights: same composite file, new key, new maps
    _save(tmp_path, "over", [[0, 0, 0], [0, 0, 0], [0, 1, 0]], [0.5, 0, -0.2],
          ["background", "cow", "grass"], std=(255.0,) * 3)
    seg2 = load_segmenter([str(base), str(over)], device="cpu")
    assert seg2.path == seg.path and model_key(seg2.path) != k1
    res = index_images([img], segmenter=seg2, levels=1, progress=False, return_labels=True)
    assert res.codes.shape[0] == 1 and (res.labels[0][:, : S // 2] == 0).all()


def test_registry_entries() -> None:
    names = available_segmenters()
    assert {"ade20k+voc", "voc-mnv2", "ade20k-mnv2"} <= set(names)
    assert segmenter_runtimes("ade20k+voc") == ["torch", "litert"]
    with pytest.raises(ValueError, match="already registered"):
        register_composite("ade20k+voc", ["ade20k-mnv2", "voc-mnv2"])
    with pytest.raises(ValueError, match="single model"):
        register_composite("voc-mnv2", ["ade20k-mnv2", "voc-mnv2"])


def test_the_composite_is_the_default() -> None:
    import inspect

    from semcbir_fast.eval.cache import segment_cached
    from semcbir_fast.segment import DEFAULT_SEGMENTER

    assert DEFAULT_SEGMENTER == "ade20k+voc" and DEFAULT_SEGMENTER in available_segmenters()
    assert inspect.signature(load_segmenter).parameters["model"].default == DEFAULT_SEGMENTER
    assert inspect.signature(segment_cached).parameters["model"].default is None  # = it


def test_missing_overlay_names_the_base_alone(tiny, tmp_path) -> None:
    """No silent fallback: a missing member is an error that names the base as the way out."""
    base, _ = tiny
    with pytest.raises(FileNotFoundError, match=r"cannot load its member .*nope\.pt.*"
                       rf"pass model='{re.escape(str(base))}' to segment with the base"):
        load_segmenter([str(base), str(tmp_path / "nope.pt")], device="cpu")


MSRC = data_root() / "msrc_v1" / "images"


@pytest.mark.skipif(not (models_root() / "deeplabv3_mnv2_pascal_quant.tflite").is_file()
                    or not (MSRC / "1_10_s.jpg").is_file(),
                    reason="shared models / MSRC v1 images absent")
def test_ade20k_voc_on_real_images() -> None:
    pytest.importorskip("ai_edge_litert")
    paths = [str(MSRC / "1_10_s.jpg"), str(MSRC / "6_1_s.jpg")]  # cows; a face
    seg = load_segmenter("ade20k+voc", device="cpu", runtime="litert")
    names = seg.class_names
    assert len(names) == 158 and names[13] == "person" and names[151:] == [
        "bird", "cat", "cow", "dog", "horse", "sheep", "train"]
    ade = load_segmenter("ade20k-mnv2", device="cpu", runtime="litert")
    voc = load_segmenter("voc-mnv2", device="cpu", runtime="litert")
    vlut = np.array([names.index(n) if n is not None else -1
                     for n in (__import__("semcbir_fast.models.voc", fromlist=["x"])
                               .VOC_TO_ADE20K[c] for c in voc.class_names)])
    got = seg.segment(paths, progress=False)
    found = set()
    for p, lab in zip(paths, got):
        a, v = ade.segment(p), vlut[voc.segment(p)]
        want = np.where(v >= 0, v, a)
        np.testing.assert_array_equal(lab, want)
        found |= {names[c] for c in np.unique(lab)}
    assert {"cow", "person"} <= found
