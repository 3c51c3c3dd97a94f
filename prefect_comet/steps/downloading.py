"""Streamed, checked, resumable downloads into a temporary file; `storing` makes it final."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import httpx

from prefect_comet import exceptions as exc
from prefect_comet._files import redact_url
from prefect_comet.api.client import CometClient
from prefect_comet.api.errors import error_for
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


class _Retryable(Exception):
    """A failure a later attempt may not meet (dropped connection, 429, 5xx)."""

    def __init__(self, error: exc.CometAPIError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


async def download(
    client: CometClient,
    urls: list[str],
    open_target: Callable[[], IO[bytes]],
    *,
    task_id: str,
    max_bytes: int = DEFAULTS.max_video_bytes,
) -> Downloaded:
    """Stream the first URL that serves a video into a fresh target file.

    Bytes go from the socket to `open_target()`, hashed on the way, through at most two
    4 MiB buffers, so memory stays flat. A dropped connection resumes with `Range` when the
    server answers 206, and restarts otherwise. The size is checked against `Content-Length`.

    Args:
        client: The API client (sends the key only to the API's own origin).
        urls: Candidate URLs, best first.
        open_target: Opens (and truncates) the temporary file to write.
        task_id: The task, for error messages.
        max_bytes: Refuse bodies larger than this.

    Returns:
        The SHA-256, size and (redacted) source of the bytes written.
    """
    failure: exc.CometAPIError | None = None
    for url in urls:
        try:
            return await _download_one(client, url, open_target, task_id=task_id, max_bytes=max_bytes)
        except (exc.BadRequestError, exc.NotFoundError, exc.AuthenticationError) as error:
            failure = error  # this route will not serve it; the next candidate may
    assert failure is not None
    raise failure


async def _download_one(
    client: CometClient,
    url: str,
    open_target: Callable[[], IO[bytes]],
    *,
    task_id: str,
    max_bytes: int,
) -> Downloaded:
    state = _Progress(open_target())
    try:
        for attempt in range(client.retry.attempts):
            try:
                if state.size and not await _continue(client, url, state, task_id, max_bytes):
                    await state.writer.close()
                    state = _Progress(open_target())
                if not state.size:
                    await _continue(client, url, state, task_id, max_bytes)
                return Downloaded(await state.writer.finish(), state.size, redact_url(url))
            except _Retryable as retryable:
                if attempt + 1 >= client.retry.attempts:
                    raise retryable.error from None
                await asyncio.sleep(client.retry.delay(attempt, retryable.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        await state.writer.close()


class _Progress:
    def __init__(self, target: IO[bytes]) -> None:
        self.writer = HashingWriter(target)
        self.size = 0
        self.head = b""


async def _continue(
    client: CometClient,
    url: str,
    state: _Progress,
    task_id: str,
    max_bytes: int,
) -> bool:
    """Fetch the rest of the file into `state`'s file; False when the server cannot resume."""
    # identity: a Range counts encoded bytes, so the body must not be compressed.
    headers = {"Accept-Encoding": "identity"}
    if state.size:
        headers["Range"] = f"bytes={state.size}-"
    shown = redact_url(client.url(url))
    try:
        async with client.stream(url, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                error = error_for(response, task_id=task_id)
                assert error is not None
                if isinstance(error, (exc.RateLimitError, exc.ServerError)):
                    raise _Retryable(error, retry_after_seconds(response.headers))
                raise error
            if state.size and response.status_code != 206:
                return False
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
