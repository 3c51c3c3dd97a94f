"""Turn CometAPI answers into JSON bodies or typed exceptions (status, code, request id kept).

Two error shapes reach us: the gateway's `{"error": {"message", "type", "code"}}` and
Kling's envelope `{"code": 1303, "message": ...}` (sometimes with HTTP 200).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from prefect_comet import exceptions as exc

# Kling codes that may pass through the /kling routes, by the exception they mean.
_KLING_CODES: list[tuple[range, type[exc.CometAPIError]]] = [
    (range(1000, 1005), exc.AuthenticationError),
    (range(1100, 1103), exc.AccountError),
    (range(1103, 1104), exc.AuthenticationError),
    (range(1200, 1204), exc.BadRequestError),
    (range(1300, 1302), exc.ContentPolicyError),
    (range(1302, 1304), exc.RateLimitError),
    (range(5000, 5003), exc.ServerError),
]

_ADVICE: dict[type[exc.CometAPIError], str] = {
    exc.AuthenticationError: "check the API key in your CometAPICredentials block or COMETAPI_KEY",
    exc.AccountError: "a person must fix the account (balance, billing) before retrying",
    exc.BadRequestError: "fix the request; retrying the same input will fail again",
    exc.ContentPolicyError: "change the prompt or inputs; they were refused by content policy",
    exc.RateLimitError: "lower concurrency or retry later",
    exc.ServerError: "the API failed on its side; retry later",
    exc.NotFoundError: "check the task id and the API family (Omni or Kling)",
}


def kling_code(body: Any) -> int | None:
    """The Kling envelope's numeric `code`, or None when the body is no Kling error."""
    if not isinstance(body, dict) or "code" not in body:
        return None
    code = body["code"]
    if isinstance(code, str):
        if code.strip().lower() in ("", "0", "success"):
            return None
        try:
            code = int(code)
        except ValueError:
            return None
    return code if isinstance(code, int) and code != 0 else None


def error_for(response: httpx.Response, *, task_id: str | None = None) -> exc.CometAPIError | None:
    """The exception an answer means, or None when it is a success."""
    body = _json_or_none(response)
    code = kling_code(body)
    status = response.status_code
    if code is None and status < 400:
        return None
    message = _server_message(body) or response.reason_phrase or "no message"
    cls = _class_for(status, code, body)
    detail = f"CometAPI answered HTTP {status}"
    if code is not None:
        detail += f" with code {code}"
    return cls(
        f"{detail}: {message}. What to do: {_ADVICE[cls]}.",
        task_id=task_id,
        status_code=status,
        code=code,
        request_id=_request_id(body, response.headers),
    )


def parse_json(response: httpx.Response, *, task_id: str | None = None) -> dict[str, Any]:
    """The JSON object of a successful answer; raise the typed error otherwise."""
    error = error_for(response, task_id=task_id)
    if error is not None:
        raise error
    body = _json_or_none(response)
    if not isinstance(body, dict):
        raise exc.ResponseFormatError(
            f"CometAPI answered HTTP {response.status_code} with a body that is not a JSON "
            f"object (content type {response.headers.get('content-type', 'none')!r}).",
            task_id=task_id,
            status_code=response.status_code,
            request_id=_request_id(None, response.headers),
        )
    return body


def _class_for(status: int, code: int | None, body: Any) -> type[exc.CometAPIError]:
    if code is not None:
        for codes, cls in _KLING_CODES:
            if code in codes:
                return exc.NotFoundError if status == 404 else cls
    if status in (401, 403):
        return exc.AuthenticationError
    if status == 404:
        return exc.NotFoundError
    if status == 429:
        return exc.RateLimitError
    if status >= 500 and _gateway_code(body) != "invalid_request":
        return exc.ServerError
    return exc.BadRequestError


def _gateway_code(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code") or "") if isinstance(error, dict) else ""


def _server_message(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or "")
    if isinstance(error, str):
        return error
    return str(body.get("message") or "")


def _request_id(body: Any, headers: httpx.Headers) -> str | None:
    """The server's request id: Kling's envelope carries one, gateways may send a header."""
    found = body.get("request_id") if isinstance(body, dict) else None
    found = found or headers.get("x-request-id") or headers.get("request-id")
    return str(found)[:100] if isinstance(found, (str, int)) and str(found).strip() else None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
