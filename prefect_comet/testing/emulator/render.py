"""Real H.264 MP4s via PyAV: a shared render cache plus cheap, unique per-job copies."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import struct
import tempfile
import threading
from fractions import Fraction
from typing import Literal

Variant = Literal["plain", "watermark"]

_CHUNK = 1024 * 1024
_ZEROS = memoryview(bytes(_CHUNK))
# A fixed UUID marks the emulator's per-job tag box (`uuid` boxes carry a 16-byte user type).
_TAG_UUID = bytes.fromhex("c0a1e7e0a7b04f6e9d1c6f6d6574656d")


def encode(path: str, width: int, height: int, seconds: float, fps: int, variant: Variant) -> None:
    """Encode a clip: dark background, a bar sweeping left to right, a box if watermarked."""
    import av  # imported lazily: rendering is the only user

    frames = max(1, round(seconds * fps))
    bar = max(2, width // 12)
    with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            luma, cb, cr = frame.planes
            x = index * (width - bar) // max(1, frames - 1)
            row = b"\x30" * x + b"\xdc" * bar + b"\x30" * (width - x - bar)
            luma.update(_plane(row, width, height, luma.line_size, variant))
            cb.update(bytes([150 if variant == "plain" else 90]) * (cb.line_size * (height // 2)))
            cr.update(bytes([110 if variant == "plain" else 170]) * (cr.line_size * (height // 2)))
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _plane(row: bytes, width: int, height: int, line_size: int, variant: Variant) -> bytes:
    """Luma plane from one row; the watermark variant adds a white box bottom-right."""
    pad = bytes(line_size - width)
    if variant == "plain":
        return (row + pad) * height
    x0, x1, y0, y1 = width * 3 // 4, width * 19 // 20, height * 4 // 5, height * 9 // 10
    boxed = row[:x0] + b"\xff" * (x1 - x0) + row[x1:]
    return (row + pad) * y0 + (boxed + pad) * (y1 - y0) + (row + pad) * (height - y1)


class RenderCache:
    """Encoded clips on disk, one per (width, height, seconds, fps, variant), rendered once."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[object, ...], threading.Lock] = {}

    def get(self, width: int, height: int, seconds: float, fps: int, variant: Variant) -> str:
        """Path of the cached clip, encoding it on first use (thread-safe)."""
        key = (width, height, seconds, fps, variant)
        path = os.path.join(self.directory, f"{width}x{height}_{seconds:g}s_{fps}fps_{variant}.mp4")
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if not os.path.exists(path):
                partial = path + ".part"
                encode(partial, width, height, seconds, fps, variant)
                os.replace(partial, path)
        return path


_shared: RenderCache | None = None
_shared_lock = threading.Lock()


def shared_cache() -> RenderCache:
    """The process-wide cache (every emulator in a process reuses renders); removed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            directory = tempfile.mkdtemp(prefix="comet-emulator-cache-")
            atexit.register(shutil.rmtree, directory, True)
            _shared = RenderCache(directory)
        return _shared


def derive(source: str, dest: str, tag: str, pad_to: int | None = None) -> tuple[int, str]:
    """Copy `source` to `dest` + a trailing `uuid` box holding `tag` (so bytes are unique per
    job) + an optional zero-filled `free` box reaching `pad_to` bytes. Returns (size, sha256).

    Trailing top-level boxes keep the MP4 valid. Nothing is held whole in memory; padding is
    written by extending the file (sparse where the filesystem allows).
    """
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
        payload = tag.encode()
        box = struct.pack(">I4s", 8 + 16 + len(payload), b"uuid") + _TAG_UUID + payload
        out.write(box)
        digest.update(box)
        size = out.tell()
        if pad_to is not None and pad_to > size:
            need = max(pad_to - size, 16)
            header = (
                struct.pack(">I4s", need, b"free")
                if need <= 0xFFFFFFFF
                else struct.pack(">I4sQ", 1, b"free", need)
            )
            out.write(header)
            digest.update(header)
            zeros = need - len(header)
            out.truncate(out.tell() + zeros)
            while zeros > 0:
                step = min(zeros, _CHUNK)
                digest.update(_ZEROS[:step])
                zeros -= step
            size += need
    return size, digest.hexdigest()
