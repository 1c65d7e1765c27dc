"""semcbir_fast.imageio.read_image: real JPEGs, odd PNG flavours, broken files, arrays."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from semcbir_fast._paths import data_root
from semcbir_fast.imageio import ImageReadError, read_image

COREL = data_root() / "corel1k" / "images"
MSRC = data_root() / "msrc_v1" / "images"


def _real_images() -> list[Path]:
    files = [COREL / f"{i}.jpg" for i in (0, 150, 333, 999)]
    files += sorted(MSRC.glob("*.jpg"))[:3]
    return [f for f in files if f.is_file()]


def _cv2_reference(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("path", _real_images(), ids=lambda p: p.name)
def test_real_jpeg_matches_cv2_imread(path: Path) -> None:
    img = read_image(path)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.flags.c_contiguous
    np.testing.assert_array_equal(img, _cv2_reference(path))
    # str, bytes and memoryview inputs decode identically
    np.testing.assert_array_equal(read_image(str(path)), img)
    data = path.read_bytes()
    np.testing.assert_array_equal(read_image(data), img)
    np.testing.assert_array_equal(read_image(memoryview(data)), img)


def test_real_data_present() -> None:
    if not COREL.is_dir():
        pytest.skip(f"Corel-1K absent under {COREL} (set SEMCBIR_DATA)")
    assert len(_real_images()) >= 4


def test_non_ascii_path(tmp_path: Path) -> None:
    src = COREL / "0.jpg"
    if not src.is_file():
        pytest.skip("Corel-1K absent")
    dst = tmp_path / "bild_ü_日本語 é.jpg"
    shutil.copyfile(src, dst)
    np.testing.assert_array_equal(read_image(dst), _cv2_reference(src))


def test_rgb_order(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3] = (255, 0, 0)  # red
    rgb[:, 3:] = (0, 0, 255)  # blue
    path = tmp_path / "rb.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(path), rgb)


def test_grayscale_replicated(tmp_path: Path) -> None:
    gray = np.random.default_rng(0).integers(0, 256, (13, 17), dtype=np.uint8)
    path = tmp_path / "gray.png"
    assert cv2.imwrite(str(path), gray)
    img = read_image(path)
    assert img.shape == (13, 17, 3)
    for ch in range(3):
        np.testing.assert_array_equal(img[:, :, ch], gray)


def test_rgba_alpha_dropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # fully transparent pixel keeps its stored colour
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    img = read_image(path)
    np.testing.assert_array_equal(img, rgba[:, :, :3])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_scaled_with_rounding(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(2)
    shape = (7, 5) if channels == 1 else (7, 5, channels)
    v = rng.integers(0, 65536, shape, dtype=np.uint16)
    v.flat[:4] = [0, 65535, 128, 129]  # ends and the rounding boundary (128.5 -> 0.5/1)
    path = tmp_path / "deep.png"
    bgr = v if channels == 1 else cv2.cvtColor(
        v, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), bgr)
    img = read_image(path)
    expect = np.floor(v.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    if channels == 1:
        expect = np.repeat(expect[:, :, None], 3, axis=2)
    else:
        expect = expect[:, :, :3]
    np.testing.assert_array_equal(img, expect)


def _assert_bad(path: Path, match: str) -> None:
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert info.value.source == str(path)
    assert isinstance(info.value, ValueError)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_bad(path, "empty")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the pixels you are looking for\n")
    _assert_bad(path, "not a readable image")


def test_corrupt_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_bad(path, "not a readable image")


def test_truncated_jpeg(tmp_path: Path) -> None:
    src = COREL / "0.jpg"
    if not src.is_file():
        pytest.skip("Corel-1K absent")
    path = tmp_path / "half.jpg"
    path.write_bytes(src.read_bytes()[:300])
    _assert_bad(path, "cannot read image")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _assert_bad(tmp_path / "nope.jpg", "no such file")
    _assert_bad(tmp_path, "directory")


def test_bad_bytes_named_by_size() -> None:
    with pytest.raises(ImageReadError, match=r"<5 bytes>"):
        read_image(b"hello")


def test_array_passthrough() -> None:
    a = np.random.default_rng(4).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(a), a)
    f = np.asfortranarray(a)
    out = read_image(f)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((4, 5), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((4, 5, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((4, 5, 3), np.float32), "uint8"),
        (np.zeros((0, 5, 3), np.uint8), "non-empty"),
    ],
)
def test_bad_arrays(arr: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_image(arr)


def test_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(5).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = torch.from_numpy(a)
    np.testing.assert_array_equal(read_image(t), a)
    np.testing.assert_array_equal(read_image(t.permute(2, 0, 1)), a)
    with pytest.raises(ValueError, match="uint8"):
        read_image(t.float())
    with pytest.raises(ValueError, match=r"\(H, W, 3\) or \(3, H, W\)"):
        read_image(torch.zeros((2, 5, 7, 3), dtype=torch.uint8))


def test_unsupported_type() -> None:
    with pytest.raises(TypeError, match="source must be"):
        read_image(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the pixel limit
def _png_header(width: int, height: int) -> bytes:
    """The signature and IHDR chunk of an 8-bit RGB PNG of ``width x height``, nothing else:
    what a decompression bomb shows before its (tiny, highly compressed) pixel data."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def test_max_image_pixels_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from semcbir_fast.imageio import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels

    monkeypatch.delenv("SEMCBIR_MAX_IMAGE_PIXELS", raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 2 ** 28
    monkeypatch.setenv("SEMCBIR_MAX_IMAGE_PIXELS", " 1200 ")
    assert max_image_pixels() == 1200
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("SEMCBIR_MAX_IMAGE_PIXELS", bad)
        with pytest.raises(ValueError, match="SEMCBIR_MAX_IMAGE_PIXELS"):
            read_image(b"\x89PNG")


def test_bomb_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 20,000 x 20,000 = 4e8 pixels: over the default limit (2^28) and under OpenCV's own
    # (2^30), so only the header check refuses it before the pixels would be allocated
    monkeypatch.delenv("SEMCBIR_MAX_IMAGE_PIXELS", raising=False)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(20_000, 20_000) + b"\x00" * 64)
    _assert_bad(path, r"20000 x 20000 = 400,000,000 pixels, more than the limit of "
                      r"268,435,456 \(SEMCBIR_MAX_IMAGE_PIXELS")
    with pytest.raises(ImageReadError, match="more than the limit"):
        read_image(path.read_bytes())


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_pixel_limit_applies_to_every_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             ext: str) -> None:
    # 40 x 30 = 1,200 pixels; TIFF is not read by the header probe: checked after decoding
    path = tmp_path / f"small{ext}"
    rgb = np.random.default_rng(5).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    monkeypatch.setenv("SEMCBIR_MAX_IMAGE_PIXELS", "1199")
    _assert_bad(path, r"40 x 30 = 1,200 pixels, more than the limit of 1,199")
    for limit in ("1200", "0"):
        monkeypatch.setenv("SEMCBIR_MAX_IMAGE_PIXELS", limit)
        assert read_image(path).shape == (30, 40, 3)


def test_pixel_limit_leaves_arrays_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCBIR_MAX_IMAGE_PIXELS", "10")
    assert read_image(np.zeros((30, 40, 3), np.uint8)).shape == (30, 40, 3)


# ------------------------------------------------------------------ GIF
def test_gif_found_and_read_like_pillow(tmp_path: Path) -> None:
    from PIL import Image
    from semcbir_fast.eval.datasets import folders

    rng = np.random.default_rng(8)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, (30, 40), dtype=np.uint8)
    (tmp_path / "cats").mkdir()
    path = tmp_path / "cats" / "a.GIF"
    im = Image.fromarray(index, mode="P")
    im.putpalette(palette.tobytes())
    im.save(path)
    cv2.imwrite(str(tmp_path / "cats" / "b.png"), np.zeros((8, 8, 3), np.uint8))
    assert [p.name for p in folders(tmp_path).images] == ["a.GIF", "b.png"]
    try:
        img = read_image(path)
    except ImageReadError:
        pytest.skip(f"this OpenCV ({cv2.__version__}) does not decode GIF")
    np.testing.assert_array_equal(img, np.asarray(Image.open(path).convert("RGB")))
    np.testing.assert_array_equal(img, palette[index])
