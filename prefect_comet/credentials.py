"""The CometAPI credentials block, the pooled client it hands out, and the account's balance.

One connection pool per account and event loop is shared by every task that runs there, so
a batch of hundreds of jobs polls over a handful of kept-alive connections.

`COMETAPI_BASE_URL` is honoured by a block whose `base_url` is the default, with a warning:
a run pointed at the emulator by the environment never reaches the paid API unnoticed;
`COMETAPI_QUERY_BASE_URL` does the same for `query_base_url` (the balance's query service).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx
from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from prefect_comet._files import redact_url
from prefect_comet._logging import run_logger
from prefect_comet.api.client import CometClient
from prefect_comet.api.quota import DEFAULT_QUERY_BASE_URL, AccountBalance, read_balance
from prefect_comet.exceptions import MissingAPIKeyError

DEFAULT_BASE_URL = "https://api.cometapi.com"
BASE_URL_VARIABLE = "COMETAPI_BASE_URL"
QUERY_BASE_URL_VARIABLE = "COMETAPI_QUERY_BASE_URL"
_told: set[tuple[str, str]] = set()  # (variable's value, block's URL) pairs already warned about


class CometAPICredentials(CredentialsBlock):
    """Credentials and connection settings for CometAPI.

    Args:
        api_key: The CometAPI key, sent as `Authorization: Bearer <key>`.
        base_url: The API root; change it only for a proxy or the local emulator. Left at
            the default, `COMETAPI_BASE_URL` (when set) is used instead, with a warning.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for each read of a response.
        callback_secret: HMAC secret for Kling callback URLs; `COMETAPI_CALLBACK_SECRET` when empty.
        query_base_url: The root of CometAPI's query service, where the balance is read. Left at
            the default, `COMETAPI_QUERY_BASE_URL` (when set) is used instead, with a warning.

    Example:
        Load stored credentials and borrow the account's pooled client:
        ```python
        from prefect_comet import CometAPICredentials

        credentials = CometAPICredentials.load("BLOCK_NAME")
        async with credentials.get_client() as client:
            ...
        ```
    """

    _block_type_name = "CometAPI Credentials"
    _block_type_slug = "cometapi-credentials"
    _logo_url = "https://www.cometapi.com/favicon.ico"
    _documentation_url = "https://apidoc.cometapi.com/"
    _description = "Credentials for CometAPI video generation (Omni and Kling Omni)."

    api_key: SecretStr = Field(
        default=...,
        title="API Key",
        description="The CometAPI key, sent as a Bearer token.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        title="Base URL",
        description="The API root URL; change it only for a proxy or the local emulator.",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a connection."
    )
    read_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for each read of a response."
    )
    callback_secret: SecretStr | None = Field(
        default=None,
        title="Callback secret",
        description="HMAC secret for Kling callback URLs; COMETAPI_CALLBACK_SECRET when empty.",
    )
    query_base_url: str = Field(
        default=DEFAULT_QUERY_BASE_URL,
        title="Query base URL",
        description="The root URL of CometAPI's query service (balance and usage); change it only "
        "for a proxy or the local emulator.",
    )

    @classmethod
    def from_env(cls) -> CometAPICredentials:
        """Build credentials from `COMETAPI_KEY` and `COMETAPI_BASE_URL`.

        Returns:
            Credentials holding the key from the environment.

        Raises:
            MissingAPIKeyError: `COMETAPI_KEY` is unset or empty.

        Example:
            ```python
            credentials = CometAPICredentials.from_env()
            ```
        """
        api_key = os.environ.get("COMETAPI_KEY", "").strip()
        if not api_key:
            raise MissingAPIKeyError(
                "No CometAPI key: pass a CometAPICredentials block "
                "(CometAPICredentials.load('NAME')) or set the COMETAPI_KEY environment variable."
            )
        base_url = os.environ.get("COMETAPI_BASE_URL", "").strip() or DEFAULT_BASE_URL
        return cls(api_key=SecretStr(api_key), base_url=base_url)

    def get_client(self) -> AbstractAsyncContextManager[CometClient]:
        """Borrow this account's pooled client on the running event loop.

        Every borrower on one loop with the same key and base URL shares one connection
        pool; it closes when the last borrower is done. Use it as an async context manager.

        Returns:
            An async context manager that yields the shared `CometClient`.

        Raises:
            MissingAPIKeyError: The block holds an empty key.

        Example:
            ```python
            async with CometAPICredentials.from_env().get_client() as client:
                body = await client.get_json("/v1/videos/task_123")
            ```
        """
        api_key = self.api_key.get_secret_value().strip()
        if not api_key:
            raise MissingAPIKeyError("The CometAPI credentials block holds an empty API key.")
        return _lease(self, api_key, self.effective_base_url())

    def effective_base_url(self) -> str:
        """Where requests go: `base_url`, or `COMETAPI_BASE_URL` when `base_url` is the default.

        A block saved without a `base_url` cannot say whether the default was chosen, while
        the variable is set on purpose (the demo, a test, a proxy); so the variable wins, and
        a warning says so once per process. A block with any other `base_url` ignores it.

        Example:
            ```python
            # with COMETAPI_BASE_URL=http://127.0.0.1:8765 in the environment:
            CometAPICredentials(api_key="anything").effective_base_url()  # "http://127.0.0.1:8765"
            ```
        """
        return _overridden(self.base_url, DEFAULT_BASE_URL, BASE_URL_VARIABLE, "base_url")

    def effective_query_base_url(self) -> str:
        """Where the balance is read: `query_base_url`, or `COMETAPI_QUERY_BASE_URL` when
        `query_base_url` is the default (the same rule as `effective_base_url`).

        Example:
            ```python
            # with COMETAPI_QUERY_BASE_URL=http://127.0.0.1:8765 in the environment:
            CometAPICredentials(api_key="anything").effective_query_base_url()  # "http://127.0.0.1:8765"
            ```
        """
        return _overridden(self.query_base_url, DEFAULT_QUERY_BASE_URL, QUERY_BASE_URL_VARIABLE, "query_base_url")

    async def get_balance(self) -> AccountBalance:
        """Read the account's balance and usage from CometAPI's query service.

        The service takes the key in its URL's query string (`GET /user/quota?key=...`), so
        that URL is a secret: it appears in no log line, error or result. CometAPI advises a
        dedicated query-only key (quota 0) for this; a block holding one works the same.

        Returns:
            The balance (`balance_usd`, None when unlimited), the usage (`used_usd`,
            `request_count`) and each key's figures (`api_keys`).

        Raises:
            MissingAPIKeyError: The block holds an empty key.
            AuthenticationError: The service refused the key.
            ServerError: The service could not be reached or kept failing.

        Example:
            ```python
            balance = await CometAPICredentials.load("BLOCK_NAME").get_balance()
            print(f"{balance.balance_usd} USD left, {balance.used_usd} USD used")
            ```
        """
        api_key = self.api_key.get_secret_value().strip()
        if not api_key:
            raise MissingAPIKeyError("The CometAPI credentials block holds an empty API key.")
        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            return await read_balance(http, self.effective_query_base_url(), api_key)


def _overridden(value: str, default: str, variable: str, field: str) -> str:
    """`value`, or the environment `variable` when `value` is the default; warned once per process."""
    override = os.environ.get(variable, "").strip()
    if not override or _same_url(override, default) or not _same_url(value, default):
        return value
    if (override, value) not in _told:
        _told.add((override, value))
        run_logger("prefect_comet.credentials").warning(
            "%s=%s is set, so it is used instead of the credentials block's default %s %s. "
            "To reach %s with this block, unset %s; to pin another URL, save the block with %s.",
            variable, redact_url(override), field, default, default, variable, field,
        )
    return override


def _same_url(first: str, second: str) -> bool:
    return first.strip().rstrip("/").lower() == second.strip().rstrip("/").lower()


def borrow_client(credentials: CometAPICredentials | None) -> AbstractAsyncContextManager[CometClient]:
    """The pooled client of the given block, or of `COMETAPI_KEY` when none is given.

    Example:
        ```python
        async with borrow_client(None) as client:
            ...
        ```
    """
    return (credentials if credentials is not None else CometAPICredentials.from_env()).get_client()


@dataclass
class _Pool:
    client: CometClient
    users: int = 0


_pools: dict[tuple[int, str, str], _Pool] = {}


@asynccontextmanager
async def _lease(credentials: CometAPICredentials, api_key: str, base_url: str) -> AsyncIterator[CometClient]:
    slot = (id(asyncio.get_running_loop()), base_url, hashlib.sha256(api_key.encode()).hexdigest())
    pool = _pools.get(slot)
    if pool is None:
        pool = _pools[slot] = _Pool(
            CometClient(
                base_url=base_url,
                api_key=api_key,
                connect_timeout=credentials.connect_timeout,
                read_timeout=credentials.read_timeout,
            )
        )
    pool.users += 1
    try:
        yield pool.client
    finally:
        pool.users -= 1
        if pool.users == 0 and _pools.get(slot) is pool:
            del _pools[slot]
            await pool.client.aclose()
