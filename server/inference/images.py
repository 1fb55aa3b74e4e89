"""What an image's bytes are, from their header alone: format and size, or a message for a 400.

The projector decodes images with libmtmd (stb_image inside). Looking at the header first
means a client's wrong bytes get a precise answer, an image too large to decode never
reaches the decoder (a few KB of PNG can inflate to gigabytes), and bytes that are not an
image never reach libmtmd's audio and video fallbacks.
"""
from __future__ import annotations

import base64
import binascii
import struct

MAX_SIDE = 8192  # pixels; decoding takes 3 bytes a pixel (192 MiB at the limit)

# The formats stb_image decodes that clients send.
FORMATS = "PNG, JPEG, GIF or BMP"

_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC, which share the range)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """The bytes are not an image this server takes; the message says why."""


def decode_base64(data: str, where: str) -> bytes:
    """An image sent as base64 (a bare string, or a data URI's payload), or ImageError."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{where}: the image's base64 does not decode") from None


def decode_data_uri(url, where: str) -> bytes:
    """The bytes of a `data:<type>;base64,<data>` URI, or ImageError: this server fetches no URLs."""
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        raise ImageError(f"{where}: images must be data URIs (data:image/png;base64,...); "
                         "this server does not fetch URLs")
    header, data = url.split(",", 1)
    if not header.endswith(";base64"):
        raise ImageError(f"{where}: image data URIs must be base64")
    return decode_base64(data, where)


def sniff(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header, or ImageError."""
    fmt, width, height = _header(data)
    if width <= 0 or height <= 0:
        raise ImageError(f"the {fmt} image has no pixels ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageError(f"the {fmt} image is {width}x{height} pixels; the limit is {MAX_SIDE} a side")
    return fmt, width, height


def _header(data: bytes) -> tuple[str, int, int]:
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("the PNG image is truncated: it has no IHDR header")
        w, h = struct.unpack(">II", data[16:24])
        return "PNG", w, h
    if data.startswith(b"\xff\xd8\xff"):
        return ("JPEG", *_jpeg_size(data))
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            raise ImageError("the GIF image is truncated")
        w, h = struct.unpack("<HH", data[6:10])
        return "GIF", w, h
    if data.startswith(b"BM") and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return "BMP", w, abs(h)  # a negative height means top-down rows
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise ImageError(f"WebP images are not supported; send a {FORMATS} image")
    if not data:
        raise ImageError("the image is empty")
    raise ImageError(f"the data is not a {FORMATS} image")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError("the JPEG image is corrupt (bad segment marker)")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if marker == 0xDA:  # scan data before any frame header
            break
        i += 2 + length
    raise ImageError("the JPEG image is truncated or has no frame header")
