"""The CometAPI credentials block, and the pooled client it hands out.

One connection pool per account and event loop is shared by every task that runs there, so
a batch of hundreds of jobs polls over a handful of kept-alive connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from prefect_comet.api.client import CometClient
from prefect_comet.exceptions import MissingAPIKeyError

DEFAULT_BASE_URL = "https://api.cometapi.com"


class CometAPICredentials(CredentialsBlock):
    """Credentials and connection settings for CometAPI.

    Args:
        api_key: The CometAPI key, sent as `Authorization: Bearer <key>`.
        base_url: The API root; change it only for a proxy or the local emulator.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for each read of a response.

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
        return _lease(self, api_key)


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
async def _lease(credentials: CometAPICredentials, api_key: str) -> AsyncIterator[CometClient]:
    slot = (id(asyncio.get_running_loop()), credentials.base_url, hashlib.sha256(api_key.encode()).hexdigest())
    pool = _pools.get(slot)
    if pool is None:
        pool = _pools[slot] = _Pool(
            CometClient(
                base_url=credentials.base_url,
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
