"""Writing a download's bytes to its file in order while hashing them."""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

# Past this many bytes a download hashes and writes in a worker thread (see HashingWriter).
INLINE_BYTES = 32 << 20
STEP_BYTES = 4 << 20
# Shared by every download in the process: a batch downloads many files at once, and a
# thread per download would only add threads competing for the same cores.
_WORKERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="prefect-comet-write")


class HashingWriter:
    """Writes bytes to a file in the order given and keeps their SHA-256.

    Why a thread: hashing and writing cost more CPU per byte than receiving does, and on the
    event loop's core they cut a large download's speed by a quarter or more. Both let go of the GIL
    for a large buffer, so past `INLINE_BYTES` they run in a worker thread while the loop
    receives. Bytes are gathered into two alternating 4 MiB buffers so the worker takes the
    GIL once per buffer, not once per socket read; one step at a time keeps the order.
    Smaller files (most clips) are written inline and never allocate the buffers.

    A resumed download passes the hasher of the bytes already in the file and their count:
    the digest then covers the whole file, and a large file goes on in the worker thread.

    Args:
        target: An open binary file (any fsspec file). `close()` closes it.
        hasher: A SHA-256 already fed the bytes before `target`'s position (resuming), or None.
        already_written: How many bytes `hasher` has seen (counts towards `INLINE_BYTES`).

    Example:
        ```python
        writer = HashingWriter(open("clip.mp4", "wb"))
        await writer.write(b"....ftypisom")
        sha256 = await writer.finish()  # every byte is in the file now
        await writer.close()
        ```
    """

    def __init__(self, target: IO[bytes], *, hasher: Any = None, already_written: int = 0) -> None:
        self.target = target
        self._hasher = hasher if hasher is not None else hashlib.sha256()
        self._inline_left = max(0, INLINE_BYTES - already_written)
        self._filling = self._spare = bytearray()
        self._fill = 0
        self._step: Future[None] | None = None

    async def write(self, chunk: bytes) -> None:
        """Add `chunk` after the bytes already written; raises a failed earlier step's error."""
        if len(chunk) <= self._inline_left:
            self._inline_left -= len(chunk)
            self._hasher.update(chunk)
            self.target.write(chunk)
            return
        if not self._filling:
            self._inline_left = 0
            self._filling, self._spare = bytearray(STEP_BYTES), bytearray(STEP_BYTES)
        view = memoryview(chunk)
        while view:
            taken = view[: len(self._filling) - self._fill]
            self._filling[self._fill : self._fill + len(taken)] = taken
            self._fill += len(taken)
            view = view[len(taken) :]
            if self._fill == len(self._filling):
                await self._hand_over()

    async def finish(self) -> str:
        """Write what is still buffered and return the hex SHA-256 of everything written."""
        if self._filling:
            await self._hand_over()
            await self._wait_for_step()
        return self._hasher.hexdigest()

    async def close(self) -> None:
        """Close the target once no step is writing to it; buffered bytes are dropped."""
        step = self._step
        if step is not None and not step.cancel() and not step.done():
            try:
                await asyncio.wrap_future(step)
            except Exception:  # noqa: BLE001  (the download already failed with its own error)
                pass
        self.target.close()

    async def _hand_over(self) -> None:
        await self._wait_for_step()
        full = memoryview(self._filling)[: self._fill]
        self._step = _WORKERS.submit(self._hash_and_write, full)
        self._filling, self._spare, self._fill = self._spare, self._filling, 0

    async def _wait_for_step(self) -> None:
        if self._step is not None:
            await asyncio.wrap_future(self._step)

    def _hash_and_write(self, data: memoryview) -> None:
        self._hasher.update(data)
        self.target.write(data)
