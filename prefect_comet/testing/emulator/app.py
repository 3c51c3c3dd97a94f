"""Request dispatch: route matching, recording, faults, auth."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from . import routes_kling, routes_omni, routes_quota
from .faults import REDIRECT_LOOP_PATH, bend_after, respond_before
from .files import serve_file
from .models import RecordedRequest
from .responses import gateway_error, unauthorized
from .server import Request, Response
from .state import EmulatorState

RouteHandler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    """A route: its name (for faults and records), path pattern, methods and handler."""

    name: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    handler: RouteHandler
    needs_key: bool = True


def _files(state: EmulatorState, request: Request, fault: str | None, task_id: str, name: str) -> Response:
    """`GET /files/{task_id}/{name}.mp4?expires=..&signature=..`: signed result files."""
    problem = state.signer.problem(request.path, request.query)
    if problem is not None:
        return gateway_error(403, f"Access denied: {problem}", type="access_denied", code="signature_invalid")
    found = state.result_file(task_id, name)
    if found is None:
        return gateway_error(404, "file not found", type="invalid_request_error", code="not_found")
    return serve_file(request, found.path, found.size, found.sha256)


def _redirect_loop(state: EmulatorState, request: Request, fault: str | None, hop: str) -> Response:
    """`GET /redirect-loop/{n}`: a redirect to hop n+1, forever (where `redirect_loop` leads)."""
    return Response(302, [("location", f"{REDIRECT_LOOP_PATH}/{int(hop) + 1}")])


_ID = r"(?P<task_id>[^/]+)"
ROUTES = [
    Route("omni.create", re.compile(r"/v1/videos/?"), frozenset({"POST"}), routes_omni.create),
    Route("omni.retrieve", re.compile(rf"/v1/videos/{_ID}"), frozenset({"GET"}), routes_omni.retrieve),
    Route(
        "omni.content",
        re.compile(rf"/v1/videos/{_ID}/content"),
        frozenset({"GET", "HEAD"}),
        routes_omni.content,
    ),
    Route(
        "kling.create", re.compile(r"/kling/v1/videos/omni-video/?"), frozenset({"POST"}), routes_kling.create
    ),
    Route(
        "kling.query",
        re.compile(r"/kling/v1/videos/omni-video/?"),
        frozenset({"GET"}),
        routes_kling.query_external,
    ),
    Route(
        "kling.query",
        re.compile(rf"/kling/v1/videos/omni-video/{_ID}"),
        frozenset({"GET"}),
        routes_kling.query,
    ),
    Route(
        "files",
        re.compile(rf"/files/{_ID}/(?P<name>[^/]+)\.mp4"),
        frozenset({"GET", "HEAD"}),
        _files,
        needs_key=False,
    ),
    # The query service takes the key in the query string and checks it itself.
    Route("user.quota", re.compile(r"/user/quota/?"), frozenset({"GET"}), routes_quota.quota, needs_key=False),
    Route(
        "redirect_loop",
        re.compile(rf"{REDIRECT_LOOP_PATH}/(?P<hop>\d+)"),
        frozenset({"GET", "HEAD"}),
        _redirect_loop,
        needs_key=False,
    ),
]


def _match(request: Request) -> tuple[Route | None, dict[str, str], bool]:
    """(route, path params, whether the path exists under another method)."""
    path_known = False
    for route in ROUTES:
        found = route.pattern.fullmatch(request.path)
        if found is None:
            continue
        if request.method in route.methods:
            return route, found.groupdict(), True
        path_known = True
    return None, {}, path_known


def _record(state: EmulatorState, request: Request, route: Route | None, fault: str | None) -> None:
    headers = {k: ("REDACTED" if k == "authorization" else v) for k, v in request.headers.items()}
    name = route.name if route else None
    state.requests.append(
        RecordedRequest(
            request.method, request.path, name, headers, redacted_query(request.query_string), fault, time.time(),
            request.body if "json" in request.headers.get("content-type", "") else b"",
        )
    )


def redacted_query(query: str) -> str:
    """The query string with the value of every `key` parameter (the query service's API key) redacted."""
    if "key=" not in query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(name, "REDACTED" if name == "key" else value) for name, value in pairs])


def make_handler(state: EmulatorState) -> Callable[[Request], Awaitable[Response]]:
    """The server's request handler bound to `state`."""

    async def handle(request: Request) -> Response:
        route, params, path_known = _match(request)
        fault = state.faults.draw(route.name if route else None)
        _record(state, request, route, fault.kind if fault else None)
        if route is None:
            if path_known:
                return gateway_error(
                    405, f"method {request.method} not allowed", type="invalid_request_error"
                )
            return gateway_error(
                404, f"no route for {request.path}", type="invalid_request_error", code="not_found"
            )
        if fault is not None and (early := respond_before(fault, route.name)) is not None:
            return early
        if route.needs_key and not state.authorized(request.headers.get("authorization")):
            response = unauthorized()
        else:
            response = route.handler(state, request, fault.kind if fault else None, **params)
        response = bend_after(fault, response, state.jobs.keys()) if fault is not None else response
        if route.name in ("omni.content", "files") and request.method == "GET" and 200 <= response.status < 300:
            state.bytes_served[params["task_id"]] += _body_bytes_sent(response)
        return response

    return handle


def _body_bytes_sent(response: Response) -> int:
    """Body bytes an answer sends: all of them, half when cut (`truncate`), none when reset."""
    if response.abort:
        return 0
    return response.length // 2 if response.truncate else response.length
