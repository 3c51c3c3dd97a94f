"""Signed result URLs and file delivery with HTTP Range support."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import urlencode

from .server import FileBody, Request, Response

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Signer:
    """HMAC-signs `/files/...` paths with an expiry, using a per-emulator secret."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self.issued: list[str] = []  # every signature handed out, for leak checks

    def signature(self, path: str, expires: int) -> str:
        """Hex HMAC-SHA256 over path and expiry."""
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, base_url: str, path: str, ttl: float) -> str:
        """Absolute signed URL valid for `ttl` seconds."""
        expires = int(time.time() + ttl)
        signature = self.signature(path, expires)
        self.issued.append(signature)
        query = urlencode({"expires": expires, "signature": signature})
        return f"{base_url}{path}?{query}"

    def problem(self, path: str, query: dict[str, str]) -> str | None:
        """Why the request's signature is not acceptable, or None when it is."""
        expires, signature = query.get("expires", ""), query.get("signature", "")
        if not expires.isdigit() or not signature:
            return "missing or malformed signature"
        if not hmac.compare_digest(signature, self.signature(path, int(expires))):
            return "signature does not match"
        if int(expires) < time.time():
            return "signed URL has expired"
        return None


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) for a single `bytes=` range, None when unsatisfiable/invalid."""
    match = _RANGE.match(header.strip())
    if not match or size == 0:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        return (start, end) if start < size and start <= end else None
    if last and int(last) > 0:  # suffix range: the last N bytes
        return max(0, size - int(last)), size - 1
    return None


def serve_file(request: Request, path: str, size: int, etag: str) -> Response:
    """200 with the whole MP4, 206 for a `Range`, 416 for a bad one."""
    headers = [("content-type", "video/mp4"), ("accept-ranges", "bytes"), ("etag", f'"{etag}"')]
    wanted = request.headers.get("range")
    if wanted is None or (request.headers.get("if-range", f'"{etag}"') != f'"{etag}"'):
        return Response(200, headers, file=FileBody(path, 0, size))
    span = parse_range(wanted, size)
    if span is None:
        return Response(416, [("content-range", f"bytes */{size}")])
    start, end = span
    headers.append(("content-range", f"bytes {start}-{end}/{size}"))
    return Response(206, headers, file=FileBody(path, start, end - start + 1))
