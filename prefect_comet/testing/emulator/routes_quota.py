"""The query service's balance route (`GET /user/quota?key=...`), on the emulator's own base URL."""

from __future__ import annotations

from .responses import json_response, unauthorized
from .server import Request, Response
from .state import EmulatorState

UNLIMITED = -1
KEY_NAME = "emulator-key"


def quota(state: EmulatorState, request: Request, fault: str | None) -> Response:
    """`GET /user/quota?key=<key>`: the account's balance and usage (REFERENCE.md section 4).

    The key is the query parameter, not a bearer header; a wrong or missing one answers 401.
    `-1` stands for an unlimited balance (`balance_usd=None`).
    """
    if not state.key_matches(request.query.get("key")):
        return unauthorized()
    balance = UNLIMITED if state.balance_usd is None else round(state.balance_usd, 6)
    used = round(state.charged_usd, 6)
    requests = sum(1 for recorded in state.requests if recorded.route not in (None, "files", "user.quota"))
    return json_response(
        200,
        {
            "username": "emulator",
            "total_quota": balance,
            "total_used_quota": used,
            "request_count": requests,
            "keys": [{"name": KEY_NAME, "remain_quota": balance, "used_quota": used}],
        },
    )
