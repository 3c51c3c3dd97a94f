"""Per-job callback URLs: a token (an HMAC of the job's key) in the URL, never the API key.

Kling's callbacks are not signed, so the URL itself carries the proof: a token only the
holder of the callback secret can compute for that key. The receiver recomputes it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from urllib.parse import urlencode

SECRET_VARIABLE = "COMETAPI_CALLBACK_SECRET"
CALLBACK_PATH = "/kling/callback"


def callback_secret(configured: str | None = None) -> str | None:
    """The callback secret: the one given (e.g. from the credentials block), else the environment.

    Args:
        configured: A secret from the credentials block, if it holds one.

    Returns:
        The secret, or None when neither the block nor `COMETAPI_CALLBACK_SECRET` sets one.

    Example:
        ```python
        secret = callback_secret(os.environ.get("MY_SECRET"))
        ```
    """
    secret = (configured or os.environ.get(SECRET_VARIABLE, "")).strip()
    return secret or None


def token_for(secret: str, key: str) -> str:
    """The callback token of an idempotency key: hex HMAC-SHA256 of the key under the secret.

    Args:
        secret: The callback secret.
        key: The job's idempotency key.

    Returns:
        64 hex characters.

    Example:
        ```python
        token_for("s3cret", "launch-teaser-0")
        ```
    """
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def token_matches(secret: str, key: str, token: str | None) -> bool:
    """Whether `token` is the key's token (compared in constant time).

    Args:
        secret: The callback secret.
        key: The idempotency key named by the callback URL.
        token: The token the callback URL carried.

    Returns:
        True only for the exact token.

    Example:
        ```python
        token_matches(secret, key, request.query_params.get("token"))
        ```
    """
    return bool(token) and hmac.compare_digest(token_for(secret, key), str(token))


def callback_url_for(base_url: str, key: str, secret: str, flow_run_id: str | None = None) -> str:
    """The `callback_url` of one job: the receiver's route with the key, its token and the run.

    The flow run id is a hint for the receiver (which run to wake or resume); it is checked
    against that run's own list of jobs, so it needs no signature.

    Args:
        base_url: The receiver's public URL, e.g. `https://hooks.example.com`.
        key: The job's idempotency key.
        secret: The callback secret.
        flow_run_id: The flow run waiting for the job.

    Returns:
        The URL to send as the request's `callback_url`.

    Example:
        ```python
        callback_url_for("https://hooks.example.com", "kite-1", secret, "0b6c...")
        ```
    """
    query = {"key": key, "token": token_for(secret, key)}
    if flow_run_id:
        query["run"] = flow_run_id
    return f"{base_url.rstrip('/')}{CALLBACK_PATH}?{urlencode(query)}"
