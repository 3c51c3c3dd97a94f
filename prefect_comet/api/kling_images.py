"""Turn a Kling image input into what the API takes (URL or bare base64), checked first.

Kling Omni takes an image as an http(s) URL or as standard base64 *without* a `data:`
prefix. A JPG/PNG over 10 MB, under 300 px a side or more oblong than 2.5:1 is only
rejected after the task was queued, so bytes, files and base64 are checked here first.
URLs are kept as they are: nothing is fetched before the request.

Every error is a `ValueError` stating the rule; the caller adds the field path.
"""

from __future__ import annotations

import base64
import io
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

try:
    from PIL import Image as _PILImage
except ImportError:  # Pillow is the optional "media" extra; without it, pixel checks are skipped.
    _PILImage = None  # type: ignore[assignment]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_SIDE_PX = 300
MAX_ASPECT = 2.5

_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
# Standard base64 has no ".", "\" and a short string with "/" is more likely a path than an image.
_PATH_HINT = re.compile(r"[./\\]")
_MAX_PATH_CHARS = 4096


def is_http_url(value: str) -> bool:
    """Whether `value` is an absolute http(s) URL with a host and no whitespace."""
    if not value or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def normalize_image(value: str | bytes | os.PathLike[str]) -> str:
    """An http(s) URL as is, anything else as checked standard base64 without a prefix.

    Accepts a URL, `bytes`, a path (or a `str` naming an existing file), a
    `data:image/...;base64,` URL, or bare base64.
    """
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, os.PathLike):
        data = read_image_file(Path(value))
    elif isinstance(value, str):
        if is_http_url(value):
            return value
        match = _DATA_URL.match(value)
        if match:
            data = _decode_base64(value[match.end() :], maybe_path=False)
        elif value[:5].lower() == "data:":
            raise ValueError("a data: URL must look like 'data:image/png;base64,<data>'")
        elif len(value) <= _MAX_PATH_CHARS and os.path.isfile(value):
            data = read_image_file(Path(value))
        else:
            data = _decode_base64(value, maybe_path=True)
    else:
        raise ValueError(
            "must be an http(s) URL, a file path, bytes or a base64 string, "
            f"got {type(value).__name__}"
        )
    check_image_bytes(data)
    return base64.b64encode(data).decode("ascii")


def read_image_file(path: Path) -> bytes:
    """The bytes of an image file, refusing files over the limit before reading them."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ValueError(f"file not found: '{path}'") from None
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"not a regular file: '{path}'")
    if info.st_size > MAX_IMAGE_BYTES:
        raise ValueError(_too_big(info.st_size, f" (file '{path}')"))
    try:
        with path.open("rb") as handle:
            # Never more than the limit, even if the file grew after stat().
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {exc.strerror or exc}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(_too_big(len(data), f" (file '{path}')"))
    return data


def check_image_bytes(data: bytes) -> None:
    """Raise `ValueError` unless `data` is a JPG/PNG that Kling accepts."""
    if not data:
        raise ValueError("image data is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(_too_big(len(data)))
    found = sniff_format(data)
    if found not in ("JPG", "PNG"):
        raise ValueError(f"must be a JPG or PNG image, got {found}")
    if _PILImage is None:
        return
    width, height = _header_size(data)
    if min(width, height) < MIN_SIDE_PX:
        raise ValueError(f"each side must be at least {MIN_SIDE_PX} px, got {width}x{height}")
    # Integer form of 1/2.5 <= width/height <= 2.5, exact at the boundary.
    if width * 2 > height * 5 or height * 2 > width * 5:
        raise ValueError(
            f"aspect ratio must be between 1:2.5 and 2.5:1, got {width}x{height} "
            f"({max(width, height) / min(width, height):.2f}:1)"
        )


def sniff_format(data: bytes) -> str:
    """The image format named by the magic bytes: `"JPG"`, `"PNG"`, `"GIF"`, ..."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data[4:8] == b"ftyp":
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIC"
    return "an unrecognised format"


def _header_size(data: bytes) -> tuple[int, int]:
    assert _PILImage is not None
    try:
        # open() parses the header only; .size needs no pixel decoding.
        with _PILImage.open(io.BytesIO(data)) as image:
            return image.size
    except _PILImage.DecompressionBombError:
        raise ValueError("image declares too many pixels to be a real photo") from None
    except (OSError, ValueError, SyntaxError):
        raise ValueError("could not read the image header (corrupt or truncated file?)") from None


def _decode_base64(text: str, *, maybe_path: bool) -> bytes:
    compact = "".join(text.split())  # line-wrapped base64 (e.g. from `base64`) is still base64
    if not compact:
        raise ValueError("image data is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except ValueError:
        if maybe_path and len(text) <= _MAX_PATH_CHARS and _PATH_HINT.search(text):
            raise ValueError(f"file not found: '{text}'") from None
        if not maybe_path:
            raise ValueError("the data: URL does not carry valid base64") from None
        raise ValueError(
            "must be an http(s) URL, an existing file path, or standard base64 of a JPG/PNG "
            "image; this string is none of them (not valid base64)"
        ) from None


def _too_big(size: int, where: str = "") -> str:
    return f"must be at most 10 MB ({MAX_IMAGE_BYTES:,} bytes), got {size:,} bytes{where}"
