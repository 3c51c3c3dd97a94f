"""The account's balance and usage from CometAPI's query service (`GET /user/quota?key=...`).

The key travels in that URL's query string (REFERENCE.md section 4), so the URL is a secret:
it is built here, sent, and never put in a log line, an error or a result. Errors name the
service by its redacted URL, the server's own message is scrubbed of the key, and httpx's
request log lines lose their query strings (the filter installed by `api.client`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from prefect_comet import exceptions as exc
from prefect_comet._files import redact_url
from prefect_comet.api import client as _client  # noqa: F401  installs the httpx URL filter
from prefect_comet.api.answers import text_value
from prefect_comet.api.errors import error_for
from prefect_comet.api.retries import RetryPolicy, retry_after_seconds

DEFAULT_QUERY_BASE_URL = "https://query.cometapi.com"
QUOTA_PATH = "/user/quota"
# Few tries: reading the balance is a look, never worth holding a run for long.
QUOTA_RETRY = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, max_retry_after=10.0)
UNLIMITED = -1

_logger = logging.getLogger("prefect_comet.api")


class KeyQuota(BaseModel):
    """One API key's balance and usage.

    Args:
        name: The key's name in the CometAPI console.
        remain_usd: What the key may still spend in USD; None when unlimited (or unreadable).
        used_usd: What the key has spent in USD.
        unlimited: Whether the key has no limit (the service answered `-1`).
    """

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    remain_usd: float | None = None
    used_usd: float | None = None
    unlimited: bool = False


class AccountBalance(BaseModel):
    """The account's balance and usage as the query service reports them.

    Args:
        username: The account's user name.
        balance_usd: The balance in USD (`total_quota`); None when unlimited (`-1`) or unreadable.
        used_usd: What the account has spent in USD (`total_used_quota`).
        request_count: How many requests the account has made.
        api_keys: Each key's balance and usage (the answer's `keys`; not named `keys`, which would
            make Prefect take a task result for a mapping).
        unlimited: Whether the account has no balance limit (the service answered `-1`).

    Example:
        ```python
        balance = await CometAPICredentials.load("comet").get_balance()
        print(balance.balance_usd, balance.used_usd)
        ```
    """

    model_config = ConfigDict(frozen=True)

    username: str | None = None
    balance_usd: float | None = None
    used_usd: float | None = None
    request_count: int | None = None
    api_keys: list[KeyQuota] = Field(default_factory=list)
    unlimited: bool = False

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> AccountBalance:
        """Read the service's JSON answer; odd fields are dropped with a warning, never fatal.

        Args:
            body: `{"username", "total_quota", "total_used_quota", "request_count", "keys": [...]}`.

        Returns:
            The balance.

        Example:
            ```python
            AccountBalance.from_answer({"total_quota": 12.5, "total_used_quota": 3})  # balance_usd=12.5
            ```
        """
        total = body.get("total_quota")
        return cls(
            username=text_value(body.get("username"), field="username"),
            balance_usd=_usd(total, "total_quota"),
            used_usd=_usd(body.get("total_used_quota"), "total_used_quota", balance=False),
            request_count=_count(body.get("request_count")),
            api_keys=_keys(body.get("keys")),
            unlimited=_is_unlimited(total),
        )


async def read_balance(
    http: httpx.AsyncClient,
    query_base_url: str,
    api_key: str,
    *,
    retry: RetryPolicy = QUOTA_RETRY,
) -> AccountBalance:
    """`GET {query_base_url}/user/quota?key=<key>`: the account's balance and usage.

    Connection failures, 429 and 5xx are tried again (a GET is safe to repeat). Whatever
    fails, the error raised names the service by its URL without the query string, and no
    httpx exception (whose text holds the full URL) is chained to it.

    Args:
        http: The client to send with (redirects are not followed: the key stays here).
        query_base_url: The query service's root, e.g. `https://query.cometapi.com`.
        api_key: The key whose account is read; it is sent only in the query string.
        retry: How often a transient failure is tried again.

    Returns:
        The balance and usage of the account and of each key.

    Raises:
        AuthenticationError: The service refused the key.
        RateLimitError: The service kept answering 429.
        ServerError: The service could not be reached or kept failing.
        ResponseFormatError: The answer was not the documented JSON object.

    Example:
        ```python
        async with httpx.AsyncClient() as http:
            balance = await read_balance(http, "https://query.cometapi.com", api_key)
        ```
    """
    url = httpx.URL(query_base_url.rstrip("/") + QUOTA_PATH)
    shown = redact_url(url)
    for attempt in range(retry.attempts):
        body, failure, retry_after = await _get(http, url, api_key, shown)
        if body is not None:
            return AccountBalance.from_answer(body)
        assert failure is not None
        if not isinstance(failure, exc.RateLimitError | exc.ServerError) or attempt + 1 >= retry.attempts:
            raise failure
        rate_limited = isinstance(failure, exc.RateLimitError)
        await asyncio.sleep(retry.delay(attempt, retry_after, rate_limited=rate_limited))
    raise AssertionError("unreachable")  # pragma: no cover


async def _get(
    http: httpx.AsyncClient, url: httpx.URL, api_key: str, shown: str
) -> tuple[dict[str, Any] | None, exc.CometAPIError | None, float | None]:
    """One GET: (body, None, None), or (None, the error, its Retry-After) for a failure.

    httpx's exceptions are never raised on nor chained: their text holds the full URL.
    """
    try:
        response = await http.get(url, params={"key": api_key}, follow_redirects=False)
    except httpx.TransportError as error:
        return None, exc.ServerError(
            f"Could not reach the CometAPI query service at {shown} ({type(error).__name__}). "
            "What to do: check the network and the block's query_base_url, then retry."
        ), None
    except httpx.HTTPError as error:  # an invalid URL and the like
        return None, exc.ResponseFormatError(
            f"The CometAPI query service at {shown} could not be asked ({type(error).__name__}). "
            "What to do: check the block's query_base_url."
        ), None
    if 300 <= response.status_code < 400:
        return None, exc.ResponseFormatError(
            f"The CometAPI query service at {shown} answered a redirect (HTTP {response.status_code}); "
            "it is not followed, as the key would travel with it. What to do: check query_base_url.",
            status_code=response.status_code,
        ), None
    error = error_for(response)
    if error is not None:
        return None, _scrubbed(error, api_key, shown), retry_after_seconds(response.headers)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return None, exc.ResponseFormatError(
            f"The CometAPI query service at {shown} answered HTTP {response.status_code} with a body "
            "that is not a JSON object. What to do: check the block's query_base_url.",
            status_code=response.status_code,
        ), None
    return body, None, None


def _scrubbed(error: exc.CometAPIError, api_key: str, shown: str) -> exc.CometAPIError:
    """The same error about the query service, with the key cut out of the server's message."""
    message = str(error).replace("CometAPI answered", f"The CometAPI query service at {shown} answered", 1)
    if api_key:
        message = message.replace(api_key, "********")
    return type(error)(
        message, status_code=error.status_code, code=error.code, request_id=error.request_id
    )


def _is_unlimited(raw: Any) -> bool:
    return isinstance(raw, int | float | str) and not isinstance(raw, bool) and str(raw).strip() in ("-1", "-1.0")


def _usd(raw: Any, field: str, *, balance: bool = True) -> float | None:
    """A sum of USD: a finite number (or numeric string); for a balance, `-1` (unlimited) is
    None and other negative values are kept (an account in debt); a usage is never negative."""
    if raw is None or raw == "":
        return None
    if balance and _is_unlimited(raw):
        return None
    try:
        value = float(raw) if isinstance(raw, int | float | str) and not isinstance(raw, bool) else None
    except (OverflowError, ValueError):
        value = None
    if value is None or not math.isfinite(value) or (value < 0 and not balance):
        return _dropped(raw, field)
    return value


def _count(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw) if isinstance(raw, int | float | str) and not isinstance(raw, bool) else None
    except (OverflowError, ValueError):
        value = None
    if value is None or not math.isfinite(value) or value < 0 or value != int(value):
        return _dropped(raw, "request_count")
    return int(value)


def _keys(raw: Any) -> list[KeyQuota]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        return _dropped(raw, "keys") or []
    keys = []
    for item in raw:
        if not isinstance(item, dict):
            _dropped(item, "keys[]")
            continue
        keys.append(
            KeyQuota(
                name=text_value(item.get("name"), field="keys[].name"),
                remain_usd=_usd(item.get("remain_quota"), "keys[].remain_quota"),
                used_usd=_usd(item.get("used_quota"), "keys[].used_quota", balance=False),
                unlimited=_is_unlimited(item.get("remain_quota")),
            )
        )
    return keys


def _dropped(raw: Any, field: str) -> None:
    shown = repr(raw)[:80]
    _logger.warning("The CometAPI query service answered an unusable %s (%s %s); ignoring it.",
                    field, type(raw).__name__, shown)
    return None
