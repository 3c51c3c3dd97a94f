"""Streamed, checked, resumable downloads into a temporary file; `storing` makes it final."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import httpx

from prefect_comet import exceptions as exc
from prefect_comet._files import CHUNK_BYTES, redact_url
from prefect_comet.api.client import CometClient
from prefect_comet.api.errors import error_for
from prefect_comet.api.provider import LaterURL
from prefect_comet.api.retries import retry_after_seconds
from prefect_comet.options import DEFAULTS
from prefect_comet.steps.hashing_writer import HashingWriter

# Box types an MP4 (ISO BMFF) file can start with.
_MP4_FIRST_BOXES = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide"}
_NOT_VIDEO_TYPES = ("application/json", "text/", "application/xml", "application/problem")


@dataclass(frozen=True)
class Downloaded:
    """What one download wrote."""

    sha256: str
    size_bytes: int
    source: str  # the URL that served it, without query string


@dataclass
class Prefix:
    """The bytes an interrupted download left in its file, so a later one goes on after them.

    Build one with `read_prefix`.

    Args:
        size: How many bytes the file holds.
        hasher: A SHA-256 fed exactly those bytes; the download goes on feeding it.
        head: Their first 8 bytes, for the MP4 signature check.
        open_rest: Opens the file to append after them.
    """

    size: int
    hasher: Any
    head: bytes
    open_rest: Callable[[], IO[bytes]]


def read_prefix(file: IO[bytes], open_rest: Callable[[], IO[bytes]]) -> Prefix:
    """Hash what an interrupted download left, in chunks, so resuming it keeps one SHA-256.

    Blocking (it reads the whole file): call it off the event loop.

    Args:
        file: The leftover file, open for reading at its start; left open.
        open_rest: Opens the same file to append after its end.

    Returns:
        The prefix to pass to `download`.

    Example:
        ```python
        with open(leftover, "rb") as file:
            prefix = read_prefix(file, lambda: open(leftover, "ab"))
        ```
    """
    hasher, size, head = hashlib.sha256(), 0, b""
    while chunk := file.read(CHUNK_BYTES):
        if len(head) < 8:
            head += chunk[: 8 - len(head)]
        hasher.update(chunk)
        size += len(chunk)
    return Prefix(size, hasher, head, open_rest)


class _Retryable(Exception):
    """A failure a later attempt may not meet (dropped connection, 429, 5xx)."""

    def __init__(self, error: exc.CometAPIError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


async def download(
    client: CometClient,
    urls: list[str | LaterURL],
    open_target: Callable[[], IO[bytes]],
    *,
    task_id: str,
    max_bytes: int = DEFAULTS.max_video_bytes,
    prefix: Prefix | None = None,
) -> Downloaded:
    """Stream the first URL that serves a video into the target file.

    Bytes go from the socket to `open_target()`, hashed on the way, through at most two
    4 MiB buffers, so memory stays flat. A dropped connection resumes with `Range` when the
    server answers 206, and restarts otherwise. The size is checked against `Content-Length`.
    With `prefix` (what an interrupted run left in the file) the first request already asks
    for the rest; a server that answers 200 instead of 206 is read from byte 0 again.

    Args:
        client: The API client (sends the key only to the API's own origin).
        urls: Candidate URLs, best first; a callable gives one only when those before it failed.
        open_target: Opens (and truncates) the temporary file to write.
        task_id: The task, for error messages.
        max_bytes: Refuse bodies larger than this.
        prefix: The bytes already in the file, from `read_prefix`; None starts from byte 0.

    Returns:
        The SHA-256 (of the whole file, prefix included), size and (redacted) source.

    Example:
        ```python
        downloaded = await download(client, urls, lambda: open(path, "wb"), task_id=job.task_id)
        ```
    """
    failure: exc.CometAPIError | None = None
    if prefix is not None and not _usable(prefix, max_bytes):
        prefix = None
    for candidate in urls:
        url = await candidate() if callable(candidate) else candidate
        if url is None:
            continue
        try:
            return await _download_one(
                client, url, open_target, task_id=task_id, max_bytes=max_bytes, prefix=prefix
            )
        except (exc.BadRequestError, exc.NotFoundError, exc.AuthenticationError) as error:
            failure = error  # this route will not serve it; the next candidate may
            prefix = None  # the file may have changed since: the next one starts from byte 0
    assert failure is not None
    raise failure


async def _download_one(
    client: CometClient,
    url: str,
    open_target: Callable[[], IO[bytes]],
    *,
    task_id: str,
    max_bytes: int,
    prefix: Prefix | None,
) -> Downloaded:
    state = _Progress(open_target, prefix)
    try:
        for attempt in range(client.retry.attempts):
            try:
                if not await _continue(client, url, state, task_id, max_bytes):
                    await state.restart()
                    await _continue(client, url, state, task_id, max_bytes)
                return Downloaded(await state.writer.finish(), state.size, redact_url(url))
            except _Retryable as retryable:
                if attempt + 1 >= client.retry.attempts:
                    raise retryable.error from None
                await asyncio.sleep(client.retry.delay(attempt, retryable.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        await state.writer.close()


def _usable(prefix: Prefix, max_bytes: int) -> bool:
    """A prefix worth resuming: a checked MP4 start, within the limit (shorter ones are cheap to redo)."""
    return 8 <= prefix.size <= max_bytes and prefix.head[4:8] in _MP4_FIRST_BOXES


class _Progress:
    """The file being written: its writer, how many bytes it holds, and its first 8 bytes."""

    def __init__(self, open_target: Callable[[], IO[bytes]], prefix: Prefix | None) -> None:
        self._open_target = open_target
        if prefix is None:
            self.writer, self.size, self.head = HashingWriter(open_target()), 0, b""
        else:
            target = prefix.open_rest()
            self.writer = HashingWriter(target, hasher=prefix.hasher, already_written=prefix.size)
            self.size, self.head = prefix.size, prefix.head

    async def restart(self) -> None:
        """Empty the file and start again from byte 0."""
        await self.writer.close()
        self.writer, self.size, self.head = HashingWriter(self._open_target()), 0, b""


async def _continue(
    client: CometClient,
    url: str,
    state: _Progress,
    task_id: str,
    max_bytes: int,
) -> bool:
    """Fetch the rest of the file into `state`'s file; False when the server refuses the range."""
    # identity: a Range counts encoded bytes, so the body must not be compressed.
    headers = {"Accept-Encoding": "identity"}
    if state.size:
        headers["Range"] = f"bytes={state.size}-"
    shown = redact_url(client.url(url))
    try:
        async with client.stream(url, headers=headers) as response:
            if state.size and response.status_code == 416:
                return False  # what the file holds is not a start of this video (e.g. all of it)
            if response.status_code >= 400:
                await response.aread()
                error = error_for(response, task_id=task_id)
                assert error is not None
                if isinstance(error, (exc.RateLimitError, exc.ServerError)):
                    raise _Retryable(error, retry_after_seconds(response.headers))
                raise error
            if state.size and response.status_code != 206:
                await state.restart()  # the server sends the whole file: take it from byte 0
            total = _expected_total(response, state.size)
            _check_headers(response, total, max_bytes, task_id, shown)
            # No chunk size: httpx would hold back (and lose on a drop) bytes short of a full chunk.
            async for chunk in response.aiter_bytes():
                if len(state.head) < 8:
                    state.head += chunk[:8]
                    _check_signature(state.head, task_id, shown)
                state.size += len(chunk)
                if state.size > max_bytes:
                    raise _too_large(max_bytes, task_id, shown)
                await state.writer.write(chunk)
    except httpx.UnsupportedProtocol as error:
        raise exc.InvalidContentError(
            f"The download from {shown} was redirected to a non-http(s) URL; refused.",
            task_id=task_id,
        ) from error
    except httpx.InvalidURL as error:
        raise exc.InvalidContentError(
            f"The download from {shown} was redirected to an unusable, non-http(s) URL; refused.",
            task_id=task_id,
        ) from error
    except httpx.TooManyRedirects as error:
        raise exc.InvalidContentError(
            f"The download from {shown} redirected too often; refused.", task_id=task_id
        ) from error
    except httpx.TransportError as error:
        raise _Retryable(
            exc.ServerError(
                f"The download from {shown} failed after {state.size} bytes "
                f"({type(error).__name__}). What to do: retry persist_video later.",
                task_id=task_id,
            )
        ) from error
    if len(state.head) < 8:
        _check_signature(state.head, task_id, shown, complete=True)
    if total is not None and state.size != total:
        raise _Retryable(
            exc.InvalidContentError(
                f"The download from {shown} ended at {state.size} of {total} bytes.",
                task_id=task_id,
            )
        )
    return True


def _expected_total(response: httpx.Response, offset: int) -> int | None:
    content_range = response.headers.get("content-range", "")
    if response.status_code == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _check_headers(
    response: httpx.Response, total: int | None, max_bytes: int, task_id: str, shown: str
) -> None:
    content_type = response.headers.get("content-type", "").lower()
    if content_type.startswith(_NOT_VIDEO_TYPES):
        raise exc.InvalidContentError(
            f"{shown} answered {content_type!r} instead of a video. What to do: check that the "
            "job completed; re-run persist_video later.",
            task_id=task_id,
        )
    if total is not None and total > max_bytes:
        raise _too_large(max_bytes, task_id, shown)


def _check_signature(head: bytes, task_id: str, shown: str, complete: bool = False) -> None:
    if len(head) >= 8 and head[4:8] in _MP4_FIRST_BOXES:
        return
    if len(head) >= 8 or complete:
        raise exc.InvalidContentError(
            f"{shown} served bytes that are not an MP4 file (no ISO-BMFF box at the start).",
            task_id=task_id,
        )


def _too_large(max_bytes: int, task_id: str, shown: str) -> exc.InvalidContentError:
    return exc.InvalidContentError(
        f"{shown} serves more than the {max_bytes}-byte limit. What to do: raise "
        "max_video_bytes if this size is expected.",
        task_id=task_id,
    )
