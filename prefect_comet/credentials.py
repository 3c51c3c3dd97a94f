"""The CometAPI credentials block."""

from __future__ import annotations

import os

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_comet.client import CometClient
from prefect_comet.exceptions import MissingAPIKeyError

DEFAULT_BASE_URL = "https://api.cometapi.com"


class CometAPICredentials(Block):
    """Credentials and connection settings for CometAPI.

    Args:
        api_key: The CometAPI key, sent as `Authorization: Bearer <key>`.
        base_url: The API root; change it only for a proxy or the local emulator.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for each read of a response.

    Example:
        Load stored credentials and open a client:
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
    def from_env(cls) -> "CometAPICredentials":
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

    def get_client(self) -> CometClient:
        """Return a pooled async client for this account; use it as an async context manager.

        Returns:
            A `CometClient` that closes its connections on exit.

        Example:
            ```python
            async with CometAPICredentials.from_env().get_client() as client:
                body = await client.get_json("/v1/videos/task_123")
            ```
        """
        api_key = self.api_key.get_secret_value().strip()
        if not api_key:
            raise MissingAPIKeyError("The CometAPI credentials block holds an empty API key.")
        return CometClient(
            base_url=self.base_url,
            api_key=api_key,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )


def resolve_credentials(credentials: CometAPICredentials | None) -> CometAPICredentials:
    """Return the given block, or credentials from the environment when none is given."""
    return credentials if credentials is not None else CometAPICredentials.from_env()
