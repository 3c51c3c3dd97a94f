"""One connection pool per account and event loop, shared by every task that runs there.

A batch of hundreds of jobs then polls over a handful of kept-alive connections instead
of opening a client per task.
"""

from __future__ import annotations

import asyncio
import hashlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from prefect_comet.client import CometClient
from prefect_comet.credentials import CometAPICredentials, resolve_credentials


@dataclass
class _Shared:
    client: CometClient
    users: int = 0


_pools: dict[tuple[int, str, str], _Shared] = {}


@asynccontextmanager
async def shared_client(credentials: CometAPICredentials | None) -> AsyncIterator[CometClient]:
    """Borrow the pooled client for these credentials on the running loop.

    The pool closes when its last borrower returns it.

    Args:
        credentials: The CometAPI block; `COMETAPI_KEY` is used when None.

    Yields:
        A client shared with every concurrent borrower of the same account.

    Example:
        ```python
        async with shared_client(credentials) as client:
            job, _ = await provider.retrieve(client, "task_1")
        ```
    """
    resolved = resolve_credentials(credentials)
    key_digest = hashlib.sha256(resolved.api_key.get_secret_value().encode()).hexdigest()
    slot = (id(asyncio.get_running_loop()), resolved.base_url, key_digest)
    shared = _pools.get(slot)
    if shared is None:
        shared = _pools[slot] = _Shared(resolved.get_client())
    shared.users += 1
    try:
        yield shared.client
    finally:
        shared.users -= 1
        if shared.users == 0 and _pools.get(slot) is shared:
            del _pools[slot]
            await shared.client.aclose()
