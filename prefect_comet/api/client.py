"""The async HTTP client: one connection pool, safe retries, typed errors; no Prefect here."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from prefect_comet import exceptions as exc
from prefect_comet._files import redact_url
from prefect_comet.api.errors import error_for, parse_json
from prefect_comet.api.retries import RetryPolicy, retry_after_seconds

# Failures after which the request provably never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# Failures that a later identical GET may not meet again.
_TRANSIENT = (exc.RateLimitError, exc.ServerError, exc.ResponseFormatError)

MAX_REDIRECTS = 5
# Asked on a refused create (429) with its Retry-After: True means "waited for room, resend
# now" (a batch's window); False means the client backs off by its own policy.
OnRefused = Callable[[float | None], Awaitable[bool]]

_QUERY = re.compile(r"\?[^\s'\"\])]*")


class _RedactURLs(logging.Filter):
    """httpx logs every request URL at INFO and httpcore raw headers (a redirect's
    `Location`) at DEBUG; signed URLs carry secrets in their query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _QUERY.sub("", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, httpx.URL)
                else _QUERY.sub("", arg) if isinstance(arg, str)
                else arg
                for arg in record.args
            )
        return True


# A filter on a parent logger does not see its children's records: name each one.
for _name in ("httpx", "httpcore.http11", "httpcore.http2", "httpcore.connection", "httpcore.proxy"):
    logging.getLogger(_name).addFilter(_RedactURLs())


@dataclass(frozen=True)
class APIResponse:
    """A decoded JSON answer with the headers it came with (for poll hints)."""

    body: dict[str, Any]
    headers: httpx.Headers


class CometClient:
    """Async CometAPI client over one pooled `httpx.AsyncClient`.

    GETs are retried on connection errors, 429 and 5xx with jittered back-off and
    `Retry-After`. A create POST is retried only when the server provably did not take
    it (no connection, or 429); any other failure after sending raises
    `CreateOutcomeUnknownError`, because the paid job may exist.

    Args:
        base_url: The API root, e.g. `https://api.cometapi.com`.
        api_key: The key, sent only to `base_url`'s origin.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for each read.
        retry: The back-off policy for safe calls.
        transport: An httpx transport to use instead of the network (tests).

    Example:
        ```python
        async with CometClient("https://api.cometapi.com", api_key) as client:
            task = await client.get_json("/v1/videos/task_123")
        ```
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            # Few connections: httpcore matches waiting requests to connections in time that
            # grows with both, and small JSON polls to one host need no more than this.
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            transport=transport,
            event_hooks={"request": [_refuse_other_schemes]},
        )

    def __repr__(self) -> str:
        return f"CometClient(base_url={str(self.base_url)!r}, api_key='********')"

    async def __aenter__(self) -> CometClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def url(self, path_or_url: str) -> httpx.URL:
        """Resolve a path against the base URL; absolute URLs pass through."""
        return self.base_url.join(path_or_url.lstrip("/") if "://" not in path_or_url else path_or_url)

    def _headers_for(self, url: httpx.URL) -> dict[str, str]:
        # The key goes only to the API's own origin, never to a CDN's signed URL.
        same_origin = (url.scheme, url.host, url.port) == (
            self.base_url.scheme,
            self.base_url.host,
            self.base_url.port,
        )
        return {"Authorization": f"Bearer {self._api_key}"} if same_origin else {}

    async def _pause_before_retry(
        self, attempt: int, failure: exc.CometAPIError, retry_after: float | None
    ) -> None:
        """Sleep before the next try, or raise `failure` when the tries are used up."""
        if attempt + 1 >= self.retry.attempts:
            raise failure
        rate_limited = isinstance(failure, exc.RateLimitError)
        await asyncio.sleep(self.retry.delay(attempt, retry_after, rate_limited=rate_limited))

    async def get_json(
        self, path: str, *, params: dict[str, str] | None = None, task_id: str | None = None
    ) -> APIResponse:
        """GET a JSON object, retrying transient failures.

        Args:
            path: A path under the base URL.
            params: Query parameters.
            task_id: The task concerned, for error messages.

        Returns:
            The decoded body and the response headers.
        """
        url = self.url(path)
        for attempt in range(self.retry.attempts):
            retry_after = None
            try:
                response = await self._http.get(url, params=params, headers=self._headers_for(url))
                return APIResponse(parse_json(response, task_id=task_id), response.headers)
            except httpx.TransportError as error:
                failure: exc.CometAPIError = exc.ServerError(
                    f"Could not reach CometAPI at {redact_url(url)} ({type(error).__name__}). "
                    "What to do: check the network and base URL, then retry.",
                    task_id=task_id,
                )
            except (httpx.TooManyRedirects, httpx.InvalidURL, httpx.DecodingError) as error:
                raise exc.ResponseFormatError(
                    f"CometAPI at {redact_url(url)} answered unusably ({type(error).__name__}).",
                    task_id=task_id,
                ) from error
            except _TRANSIENT as error:
                failure = error
                retry_after = retry_after_seconds(response.headers)
            await self._pause_before_retry(attempt, failure, retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    async def create(
        self,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        on_refused: OnRefused | None = None,
    ) -> APIResponse:
        """POST a job-creating request without ever sending it twice blindly.

        Args:
            path: The create route.
            json: A JSON body.
            form: Fields sent as `multipart/form-data`.
            headers: Extra headers, e.g. `Idempotency-Key`.
            on_refused: Asked on each refused create (429); True resends at once (the
                caller waited for room), False backs off by this client's policy.

        Returns:
            The decoded body and the response headers.

        Raises:
            CreateOutcomeUnknownError: The request may have reached the server but no
                usable answer came; the job may exist.
        """
        url = self.url(path)
        files = {name: (None, value) for name, value in (form or {}).items()} or None
        request_headers = {**self._headers_for(url), **(headers or {})}
        attempt = 0
        while True:
            retry_after = None
            try:
                response = await self._http.post(url, json=json, files=files, headers=request_headers)
            except _NOT_SENT as error:
                failure: exc.CometAPIError = exc.ServerError(
                    f"Could not connect to CometAPI at {redact_url(url)} ({type(error).__name__}); "
                    "no job was created. What to do: check the network and base URL, then retry."
                )
            except httpx.TransportError as error:
                raise _outcome_unknown(f"the connection failed after sending ({type(error).__name__})") from error
            else:
                error = error_for(response)
                if error is None:
                    try:
                        return APIResponse(parse_json(response), response.headers)
                    except exc.ResponseFormatError as unreadable:
                        raise _outcome_unknown(
                            "the server accepted it with an unreadable body", response.status_code
                        ) from unreadable
                if isinstance(error, exc.ServerError):
                    raise _outcome_unknown(
                        f"the server answered HTTP {response.status_code}", response.status_code
                    ) from error
                if not isinstance(error, exc.RateLimitError):
                    raise error
                # A 429 is a refusal: the server did not take the job, so resending is safe.
                failure = error
                retry_after = retry_after_seconds(response.headers)
                if on_refused is not None and await on_refused(retry_after):
                    continue
            await self._pause_before_retry(attempt, failure, retry_after)
            attempt += 1

    @asynccontextmanager
    async def stream(
        self, url: str, *, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Open a streamed GET (redirects followed, at most 5); the caller reads and retries.

        Args:
            url: A path under the base URL or an absolute http(s) URL.
            headers: Extra headers, e.g. `Range`.

        Yields:
            The open response; its body has not been read.
        """
        target = self.url(url)
        request = self._http.build_request(
            "GET", target, headers={**self._headers_for(target), **(headers or {})}
        )
        response = await self._http.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()


async def _refuse_other_schemes(request: httpx.Request) -> None:
    # Runs for every redirect too: a server must not steer us to file:// or ftp://.
    if request.url.scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"Refusing the {request.url.scheme!r} scheme.")


def _outcome_unknown(reason: str, status_code: int | None = None) -> exc.CreateOutcomeUnknownError:
    return exc.CreateOutcomeUnknownError(
        f"The create request may have reached CometAPI, but {reason}. The job may exist and "
        "may be billed, so it was not sent again. What to do: look for the job by its "
        "idempotency key or in the CometAPI dashboard before creating it again.",
        status_code=status_code,
    )
