"""The format and size of an encoded image, read from its header without decoding it.

Used to check an image's pixel count *before* decoding it, so that a small file that
declares a huge image (a "decompression bomb") is refused without allocating its pixels:
the service refuses uploads over its ``--max-pixels`` and accepts only the formats whose
size this module reads (JPEG, PNG, WebP and BMP); :func:`semcbir_fast.imageio.read_image`
refuses files and bytes over ``SEMCBIR_MAX_IMAGE_PIXELS`` (formats this module does not
read are checked after decoding).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["FORMATS", "ImageHeader", "probe_image"]

#: Formats :func:`probe_image` reads, by name.
FORMATS = ("JPEG", "PNG", "WebP", "BMP")

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4),
# JPG (C8) or DAC (CC).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: its format, width and height in pixels."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _jpeg(data: bytes) -> tuple[int, int] | None:
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            return None
        if marker in _SOF:
            if pos + 9 > n:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        pos += 2 + length
    return None


def _png(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack_from(">II", data, 16)


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    return None


def _bmp(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    (size,) = struct.unpack_from("<I", data, 14)
    if size == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack_from("<HH", data, 18)
    w, h = struct.unpack_from("<ii", data, 18)
    return abs(w), abs(h)  # a negative height means top-down rows


def probe_image(data: bytes) -> ImageHeader | None:
    """The format and size declared by the header of ``data``, or None when it is none of
    :data:`FORMATS` or its header is cut short or malformed (a size of 0 counts as
    malformed). Nothing is decoded; a header that passes may still fail to decode."""
    head = bytes(data[:16])
    if head.startswith(b"\xff\xd8\xff"):
        fmt, size = "JPEG", _jpeg(bytes(data))
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        fmt, size = "PNG", _png(bytes(data[:24]))
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        fmt, size = "WebP", _webp(bytes(data[:30]))
    elif head.startswith(b"BM"):
        fmt, size = "BMP", _bmp(bytes(data[:26]))
    else:
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return ImageHeader(fmt, int(size[0]), int(size[1]))
