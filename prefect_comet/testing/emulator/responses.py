"""JSON bodies and the two error shapes: CometAPI gateway errors and Kling envelopes."""

from __future__ import annotations

import json
import secrets
from typing import Any

from .server import Response


def request_id() -> str:
    """A fresh request id, as gateways put in error messages and envelopes."""
    return f"req_{secrets.token_hex(8)}"


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    """Serialize `payload` as a JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, [("content-type", "application/json"), *(headers or [])], body)


def gateway_error(
    status: int,
    message: str,
    *,
    type: str = "comet_api_error",
    param: str = "",
    code: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """CometAPI gateway error: `{"error": {message, type, param, code}}`."""
    error = {"message": f"{message} (request id: {request_id()})", "type": type, "param": param, "code": code}
    return json_response(status, {"error": error}, headers)


def kling_error(
    status: int, code: int, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    """Kling envelope error: `{"code", "message", "request_id"}`."""
    return json_response(status, {"code": code, "message": message, "request_id": request_id()}, headers)


def unauthorized() -> Response:
    """401 for a missing or wrong API key."""
    return gateway_error(401, "Invalid token", code="invalid_api_key")
