"""Back-off policy for calls that are safe to repeat."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a safe call is repeated.

    Delays grow exponentially with full jitter (a random delay between 0 and the
    exponential cap), which spreads many clients' retries apart. A server's
    `Retry-After` wins over the computed delay, up to `max_retry_after`.

    Args:
        attempts: Tries in all, the first included.
        base_delay: Seconds the exponential cap starts from.
        max_delay: Largest computed delay in seconds.
        max_retry_after: Largest `Retry-After` honoured, in seconds.
        min_rate_limit_delay: Least wait after a 429 that gave no `Retry-After` (Kling
            asks for at least a second after 1302/1303).

    Example:
        ```python
        policy = RetryPolicy(attempts=8, max_delay=60)
        policy.delay(attempt=2, retry_after=None)  # somewhere in [0, 2.0]
        ```
    """

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    min_rate_limit_delay: float = 1.0

    def delay(
        self, attempt: int, retry_after: float | None = None, *, rate_limited: bool = False
    ) -> float:
        """Seconds to sleep before try number `attempt + 1` (attempt counts from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        cap = min(self.max_delay, self.base_delay * 2**attempt)
        jittered = random.uniform(0, cap)
        return max(jittered, self.min_rate_limit_delay) if rate_limited else jittered


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Read `Retry-After` as seconds, from a number or an HTTP date; None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
