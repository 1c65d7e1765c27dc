"""Tests of the native HRNetV2 segmentation network (semcbir_fast.models.hrnet).

CPU tests use W18 on tiny inputs (the machine is small); W48 is built for the shape and
parameter-count tests only. The GPU test (marked ``gpu``) runs W48 at 512x512.
"""

from __future__ import annotations

import math
import pickle

import pytest

torch = pytest.importorskip("torch")
from semcbir_fast.models.export import export_torchscript
from semcbir_fast.models.hrnet import (
    HRNET_MEAN,
    HRNET_STD,
    BasicBlock,
    Bottleneck,
    HRNetV2Seg,
    hrnet_meta,
    hrnet_seg,
    infer_hrnet_config,
    load_hrnet_checkpoint,
    normalize_hrnet_state_dict,
)
from semcbir_fast.models.sidecar import read_sidecar
from torch import nn

pytestmark = pytest.mark.filterwarnings(
    r"ignore:.*torch\.jit\.\w+.*deprecated:DeprecationWarning")

NC = 7  # classes of the small test models


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _out_side(n: int) -> int:
    """Logit side for an input side ``n``: two stride-2 convs with padding 1."""
    return math.ceil(math.ceil(n / 2) / 2)


def calibrate(model: HRNetV2Seg, x: torch.Tensor, *, seed: int = 0,
              residual_gain: float = 0.1) -> HRNetV2Seg:
    """Give ``model`` random weights with well-scaled activations, then eval mode.

    Kaiming convolutions, random batch-norm affines, the last BN of every residual block
    damped by ``residual_gain`` (keeps the deep random network well conditioned), and
    batch-norm statistics measured on ``x`` (one cumulative training-mode pass), so
    every layer sees roughly unit-variance inputs in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
        for m in model.modules():
            if isinstance(m, BasicBlock):
                m.bn2.weight.fill_(residual_gain)
            elif isinstance(m, Bottleneck):
                m.bn3.weight.fill_(residual_gain)
        model.train()
        model(x)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model


@pytest.fixture(scope="module")
def w18() -> HRNetV2Seg:
    torch.manual_seed(0)
    return calibrate(HRNetV2Seg(18, NC), torch.randn(4, 3, 64, 64))


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def w18_out(w18: HRNetV2Seg, x64: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return w18(x64)


# ------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("width", [18, 32])
def test_output_shape_w18_w32(width: int) -> None:
    model = hrnet_seg(width, NC)
    assert not model.training
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, NC, 16, 16)
    assert y.dtype == torch.float32


def test_output_shape_w48_and_branch_widths() -> None:
    model = hrnet_seg(48, 19)
    with torch.no_grad():
        feats = model.features(torch.randn(1, 3, 32, 32))
        y = model(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [48, 96, 192, 384]
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert y.shape == (1, 19, 8, 8)
    assert model.last_layer[0].in_channels == 720  # 15 * C


@pytest.mark.parametrize("hw", [(67, 45), (33, 50), (1, 1), (31, 97)])
def test_odd_input_sizes(w18: HRNetV2Seg, hw: tuple[int, int]) -> None:
    h, w = hw
    with torch.no_grad():
        y = w18(torch.randn(2, 3, h, w))
    assert y.shape == (2, NC, _out_side(h), _out_side(w))
    assert torch.isfinite(y).all()


def test_batch_members_are_independent(w18: HRNetV2Seg, x64: torch.Tensor,
                                       w18_out: torch.Tensor) -> None:
    with torch.no_grad():
        y1 = w18(x64[1:2])
    torch.testing.assert_close(y1, w18_out[1:2], rtol=1e-4, atol=1e-5)


def test_channels_last_matches_contiguous(w18: HRNetV2Seg, x64: torch.Tensor,
                                          w18_out: torch.Tensor) -> None:
    model = HRNetV2Seg(18, NC)
    model.load_state_dict(w18.state_dict())
    model = model.eval().to(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x64.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, w18_out, rtol=1e-4, atol=1e-4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"width must be a positive int.*got 0"):
        HRNetV2Seg(0, 5)
    with pytest.raises(ValueError, match=r"num_classes must be a positive int.*got -1"):
        HRNetV2Seg(18, -1)
    with pytest.raises(ValueError, match=r"num_classes must be a positive int.*got 2.5"):
        hrnet_seg(18, 2.5)  # type: ignore[arg-type]


def test_forward_rejects_wrong_input(w18: HRNetV2Seg) -> None:
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\).*\[1, 4, 16, 16\]"):
        w18(torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\).*\[3, 16, 16\]"):
        w18(torch.randn(3, 16, 16))


# -------------------------------------------------------------------- TorchScript


def test_script_matches_eager(w18: HRNetV2Seg, x64: torch.Tensor,
                              w18_out: torch.Tensor) -> None:
    scripted = torch.jit.script(w18)
    with torch.no_grad():
        y = scripted(torch.randn(1, 3, 37, 29))
        assert y.shape == (1, NC, 10, 8)
        torch.testing.assert_close(scripted(x64), w18_out, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match=r"x must be \(N, 3, H, W\)"):
        scripted(torch.randn(1, 1, 16, 16))


def test_export_round_trip(tmp_path, w18: HRNetV2Seg, x64: torch.Tensor,
                           w18_out: torch.Tensor) -> None:
    meta = hrnet_meta(NC, name="hrnet-w18-test")
    w18.train()
    try:
        path = export_torchscript(w18, tmp_path / "sub" / "model.pt", meta)
        assert w18.training, "export must restore the caller's train/eval mode"
    finally:
        w18.eval()
    assert path == tmp_path / "sub" / "model.pt" and path.is_file()
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert torch.equal(loaded(x64), w18_out)
    back = read_sidecar(path)
    assert back == meta
    assert back.mean == pytest.approx([123.675, 116.28, 103.53])
    assert back.std == pytest.approx([58.395, 57.12, 57.375])
    assert HRNET_MEAN == pytest.approx(back.mean) and HRNET_STD == pytest.approx(back.std)
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_export_checks_num_classes(tmp_path) -> None:
    tiny = nn.Conv2d(3, 7, kernel_size=1)  # any model: the check is generic
    with pytest.raises(ValueError, match=r"num_classes=9.*got \(1, 7, 64, 64\)"):
        export_torchscript(tiny, tmp_path / "m.pt", hrnet_meta(9))
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()
    with pytest.raises(ValueError, match=r"\(1, 3, 40, 24\) input.*num_classes=9"):
        export_torchscript(tiny, tmp_path / "m.pt", hrnet_meta(9, input_size=(40, 24)))
    path = export_torchscript(tiny, tmp_path / "m.pt", hrnet_meta(7, size_divisor=48))
    assert read_sidecar(path).size_divisor == 48
    with pytest.raises(TypeError, match="meta must be a SegmenterMeta"):
        export_torchscript(tiny, tmp_path / "m.pt", {"num_classes": 7})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export_torchscript("model", tmp_path / "m.pt", hrnet_meta(7))  # type: ignore[arg-type]


def test_hrnet_meta_defaults() -> None:
    meta = hrnet_meta(3, ["a", "b", "c"], input_size=(512, 512))
    assert meta.class_names == ["a", "b", "c"] and meta.input_size == (512, 512)
    assert hrnet_meta(2).class_names == ["class_0", "class_1"]
    with pytest.raises(ValueError, match="class_names must have num_classes=3"):
        hrnet_meta(3, ["a"])


# -------------------------------------------------------------- state-dict naming

OFFICIAL_KEYS = [
    "conv1.weight", "bn1.running_var", "conv2.weight", "bn2.bias",
    "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean",
    "layer1.3.conv3.weight", "layer1.3.bn3.weight",
    "transition1.0.0.weight", "transition1.0.1.running_var",  # 256 -> C, same resolution
    "transition1.1.0.0.weight", "transition1.1.0.1.bias",  # new branch, 256 -> 2C
    "transition2.2.0.0.weight", "transition3.3.0.1.running_mean",
    "stage2.0.branches.0.0.conv1.weight", "stage2.0.branches.1.3.bn2.num_batches_tracked",
    "stage2.0.fuse_layers.0.1.0.weight", "stage2.0.fuse_layers.0.1.1.running_var",
    "stage2.0.fuse_layers.1.0.0.0.weight", "stage2.0.fuse_layers.1.0.0.1.weight",
    "stage3.3.fuse_layers.2.0.0.1.running_var",  # intermediate step of a 2-step down path
    "stage3.3.fuse_layers.2.0.1.0.weight", "stage3.3.fuse_layers.2.0.1.1.bias",
    "stage4.2.branches.3.3.conv2.weight", "stage4.2.fuse_layers.0.3.0.weight",
    "stage4.2.fuse_layers.3.0.2.1.running_mean", "stage4.2.fuse_layers.3.2.0.0.weight",
    "last_layer.0.weight", "last_layer.0.bias", "last_layer.1.running_var",
    "last_layer.3.weight", "last_layer.3.bias",
]


def test_state_dict_uses_official_names(w18: HRNetV2Seg) -> None:
    sd = w18.state_dict()
    assert not [k for k in OFFICIAL_KEYS if k not in sd]
    # identity transitions / fusions hold no parameters (None in the official code)
    assert not [k for k in sd if k.startswith(("transition2.0.", "transition2.1.",
                                               "stage2.0.fuse_layers.0.0.", "stage4.0.fuse_layers.3.3."))]
    assert not [k for k in sd if k.startswith(("stage2.1.", "stage3.4.", "stage4.3."))]
    assert sd["transition1.0.0.weight"].shape == (18, 256, 3, 3)
    assert sd["stage3.3.fuse_layers.2.0.0.0.weight"].shape == (18, 18, 3, 3)
    assert sd["stage3.3.fuse_layers.2.0.1.0.weight"].shape == (72, 18, 3, 3)
    assert sd["stage4.2.fuse_layers.0.3.0.weight"].shape == (18, 144, 1, 1)
    assert sd["last_layer.3.weight"].shape == (NC, 270, 1, 1)
    assert infer_hrnet_config(sd) == {"width": 18, "num_classes": NC, "stage_modules": (1, 4, 3)}


def _wrap(sd: dict, how: str) -> dict:
    if how == "plain":
        return dict(sd)
    if how == "model.":  # official FullModel (model + loss), with its OHEM class weights
        out = {f"model.{k}": v for k, v in sd.items()}
        out["loss.criterion.weight"] = torch.ones(NC)
        return out
    if how == "module.":  # DataParallel
        return {f"module.{k}": v for k, v in sd.items()}
    if how == "module.model.":
        out = {f"module.model.{k}": v for k, v in sd.items()}
        out["module.loss.criterion.weight"] = torch.ones(NC)
        return out
    if how == "state_dict":  # MSeg-style checkpoint dict
        return {"epoch": 150, "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}}
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["plain", "model.", "module.", "module.model.", "state_dict"])
def test_checkpoint_round_trip(tmp_path, how: str, w18: HRNetV2Seg, x64: torch.Tensor,
                               w18_out: torch.Tensor) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save(_wrap(w18.state_dict(), how), path)
    model = hrnet_seg(18, NC, pretrained=path)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(x64), w18_out)


def test_load_report_and_in_memory_dict(w18: HRNetV2Seg, x64: torch.Tensor,
                                        w18_out: torch.Tensor) -> None:
    model = HRNetV2Seg(18, NC)
    report = load_hrnet_checkpoint(model, _wrap(w18.state_dict(), "module.model."))
    assert report.ok and report.ignored == ["module.loss.criterion.weight"]
    assert len(report.loaded) == len(w18.state_dict())
    with torch.no_grad():
        assert torch.equal(model.eval()(x64), w18_out)


def test_normalize_keeps_only_tensors_and_strips_prefixes(w18: HRNetV2Seg) -> None:
    sd, ignored = normalize_hrnet_state_dict(_wrap(w18.state_dict(), "state_dict"))
    assert set(sd) == set(w18.state_dict()) and ignored == []
    with pytest.raises(ValueError, match="holds no tensors"):
        normalize_hrnet_state_dict({"epoch": 3})
    with pytest.raises(ValueError, match="collide"):
        normalize_hrnet_state_dict({"conv1.weight": torch.ones(1),
                                    "module.conv1.weight": torch.ones(1)})


def test_other_width_gives_clear_error(tmp_path, w18: HRNetV2Seg) -> None:
    path = tmp_path / "w18.pth"
    torch.save(_wrap(w18.state_dict(), "model."), path)
    with pytest.raises(ValueError, match=r"HRNetV2-W18 checkpoint.*HRNetV2-W48.*width=18") as ei:
        hrnet_seg(48, NC, pretrained=path)
    assert "size mismatch" not in str(ei.value) and len(str(ei.value)) < 400
    with pytest.raises(ValueError, match=r"HRNetV2-W18 checkpoint.*HRNetV2-W32"):
        hrnet_seg(32, NC, pretrained=path, strict=False)  # never loadable, even non-strict


def test_other_num_classes(tmp_path, w18: HRNetV2Seg) -> None:
    path = tmp_path / "nc7.pth"
    torch.save(w18.state_dict(), path)
    with pytest.raises(ValueError, match=r"num_classes=7 \(last_layer.3.weight\).*"
                                         r"num_classes=19.*num_classes=7"):
        hrnet_seg(18, 19, pretrained=path)
    with pytest.warns(UserWarning, match=r"shape mismatches \(2 keys"):
        model = hrnet_seg(18, 19, pretrained=path, strict=False)
    own = model.state_dict()
    assert torch.equal(own["stage4.2.branches.3.3.conv2.weight"],
                       w18.state_dict()["stage4.2.branches.3.3.conv2.weight"])
    assert torch.equal(own["last_layer.0.weight"], w18.state_dict()["last_layer.0.weight"])
    assert own["last_layer.3.weight"].shape == (19, 270, 1, 1)


def test_missing_and_unexpected_keys_reported(w18: HRNetV2Seg) -> None:
    sd = {k: v for k, v in w18.state_dict().items() if not k.startswith("stage4.2.")}
    sd["decoder.extra.weight"] = torch.zeros(3)
    n_missing = len([k for k in w18.state_dict() if k.startswith("stage4.2.")
                     and not k.endswith("num_batches_tracked")])
    with pytest.raises(ValueError) as ei:
        load_hrnet_checkpoint(HRNetV2Seg(18, NC), sd)
    msg = str(ei.value)
    assert f"missing from the checkpoint ({n_missing} keys): stage4.2.* ({n_missing})" in msg
    assert "unexpected in the checkpoint (1 keys): decoder.* (1)" in msg
    assert "note: the checkpoint has (1, 4, 2) modules" in msg
    assert len(msg) < 1200, "the summary must be grouped, not a wall of keys"

    model = HRNetV2Seg(18, NC)
    with pytest.warns(UserWarning, match=r"loaded partially.*\n.*missing"):
        report = load_hrnet_checkpoint(model, sd, strict=False)
    assert len(report.missing) == n_missing and report.unexpected == ["decoder.extra.weight"]
    assert torch.equal(model.state_dict()["stage4.1.branches.0.0.conv1.weight"],
                       w18.state_dict()["stage4.1.branches.0.0.conv1.weight"])


def test_old_checkpoint_without_num_batches_tracked(w18: HRNetV2Seg, x64: torch.Tensor,
                                                    w18_out: torch.Tensor) -> None:
    sd = {k: v for k, v in w18.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = HRNetV2Seg(18, NC)
    assert load_hrnet_checkpoint(model, sd).ok
    with torch.no_grad():
        assert torch.equal(model.eval()(x64), w18_out)


def test_classification_checkpoint_hint(w18: HRNetV2Seg) -> None:
    sd = {k: v for k, v in w18.state_dict().items() if not k.startswith("last_layer.")}
    sd["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 18, 1, 1)
    sd["classifier.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(ValueError, match=r"(?s)missing.*last_layer.*classification"):
        load_hrnet_checkpoint(HRNetV2Seg(18, NC), sd)
    with pytest.warns(UserWarning):
        report = load_hrnet_checkpoint(HRNetV2Seg(18, NC), sd, strict=False)
    assert sorted(report.missing) == sorted(
        k for k in w18.state_dict() if k.startswith("last_layer.") and "num_batches" not in k)


def test_other_stage_layout_is_named() -> None:
    small = {"transition1.0.0.weight": torch.zeros(18, 256, 3, 3),
             "stage3.0.branches.0.0.conv1.weight": torch.zeros(18, 18, 3, 3),
             "stage2.0.branches.0.0.conv1.weight": torch.zeros(18, 18, 3, 3),
             "stage4.0.branches.0.0.conv1.weight": torch.zeros(18, 18, 3, 3)}
    with pytest.raises(ValueError, match=r"(?s)missing.*note: .*\(1, 1, 1\) modules.*"
                                         r"\(1, 4, 3\).*W18-Small"):
        load_hrnet_checkpoint(HRNetV2Seg(18, NC), small)


class _Opaque:
    pass


def test_bad_checkpoint_files(tmp_path, w18: HRNetV2Seg) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hrnet_seg(18, NC, pretrained=tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    torch.save(w18.state_dict(), good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        hrnet_seg(18, NC, pretrained=bad)
    opaque = tmp_path / "opaque.pth"
    torch.save({"state_dict": w18.state_dict(), "cfg": _Opaque()}, opaque)
    with pytest.raises((ValueError, pickle.UnpicklingError), match="Python objects|weights_only"):
        hrnet_seg(18, NC, pretrained=opaque)
    with pytest.raises(TypeError, match="pretrained must be a path or a state dict"):
        hrnet_seg(18, NC, pretrained=42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- parameter count


def _expected_params(width: int, num_classes: int) -> int:
    """Parameters of HRNetV2-W``width`` counted from the architecture description alone."""
    def conv(k: int, cin: int, cout: int, bias: bool = False) -> int:
        return k * k * cin * cout + (cout if bias else 0)

    def bn(c: int) -> int:
        return 2 * c

    total = conv(3, 3, 64) + bn(64) + conv(3, 64, 64) + bn(64)  # stem
    for b in range(4):  # stage 1: Bottlenecks 64 -> 256
        cin = 64 if b == 0 else 256
        total += conv(1, cin, 64) + bn(64) + conv(3, 64, 64) + bn(64) + conv(1, 64, 256) + bn(256)
    total += conv(1, 64, 256) + bn(256)  # projection shortcut of the first block
    pre = [256]
    for n_branches, modules in ((2, 1), (3, 4), (4, 3)):
        cur = [width * 2**i for i in range(n_branches)]
        for i, c in enumerate(cur):  # transition
            if i < len(pre):
                total += 0 if c == pre[i] else conv(3, pre[i], c) + bn(c)
            else:
                total += conv(3, pre[-1], c) + bn(c)  # HRNetV2 adds one branch per stage
        for _ in range(modules):
            total += sum(4 * 2 * (conv(3, c, c) + bn(c)) for c in cur)  # 4 BasicBlocks
            for i, ci in enumerate(cur):  # fusion
                for j, cj in enumerate(cur):
                    if j > i:
                        total += conv(1, cj, ci) + bn(ci)
                    elif j < i:
                        total += (i - j - 1) * (conv(3, cj, cj) + bn(cj)) + conv(3, cj, ci) + bn(ci)
        pre = cur
    c = sum(pre)
    total += conv(1, c, c, bias=True) + bn(c) + conv(1, c, num_classes, bias=True)
    return total


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("width", [18, 32])
def test_param_count_matches_description(width: int) -> None:
    assert _count(HRNetV2Seg(width, 171)) == _expected_params(width, 171)


def test_param_count_w48_published() -> None:
    model = HRNetV2Seg(48, 19)
    n = _count(model)
    assert n == _expected_params(48, 19) == 65_859_379
    # Published HRNetV2-W48 Cityscapes (19 classes): 65.9M in the HRNetV2 paper's table,
    # 65.8M in some tables (truncated). Both are 0.1M-resolution roundings of one value,
    # so the true count lies within 0.1M of 65.85M.
    assert abs(n - 65.85e6) <= 0.1e6
    # MSeg head: 194 classes add 720 * 175 weights and 175 biases.
    assert _expected_params(48, 194) == n + 721 * 175


# -------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype, max_rel, min_agree", [
    ("float16", 3e-2, 0.95),
    ("bfloat16", 0.15, 0.80),
])
def test_gpu_w48_autocast_channels_last(dtype: str, max_rel: float, min_agree: float) -> None:
    """W48 at 512x512: fp16/bf16 autocast + channels_last against a true fp32 reference.

    Bounds are from a CPU autocast study of this calibrated random network (W18 and
    W48 at 128x128: fp16 rel. error ~0.6%, argmax agreement ~99%; bf16 ~4.6%, ~94%),
    with margin; random deep networks amplify rounding more than trained ones.
    """
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = calibrate(HRNetV2Seg(48, 194).to(dev), torch.randn(4, 3, 256, 256, device=dev))
    x = torch.randn(2, 3, 512, 512, generator=torch.Generator().manual_seed(3)).to(dev)
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            ref = model(x)
            model_cl = model.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            fp32_cl = model_cl(x_cl)
            with torch.autocast("cuda", dtype=getattr(torch, dtype)):
                low = model_cl(x_cl)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert ref.shape == low.shape == (2, 194, 128, 128)
    assert low.dtype == getattr(torch, dtype)
    assert torch.isfinite(low).all()
    rel32 = ((fp32_cl - ref).norm() / ref.norm()).item()
    assert rel32 < 1e-4, f"fp32 channels_last vs contiguous: rel. error {rel32:.2e}"
    low = low.float()
    rel = ((low - ref).norm() / ref.norm()).item()
    agree = (low.argmax(1) == ref.argmax(1)).float().mean().item()
    assert rel < max_rel and agree > min_agree, f"{dtype}: rel. error {rel:.4f}, argmax agreement {agree:.4f}"
