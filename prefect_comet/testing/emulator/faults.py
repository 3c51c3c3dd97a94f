"""Scripted and random fault injection, and how each fault bends a response.

Besides the transient kinds (HTTP errors, dropped connections, cut bodies) there are hostile
ones, for tests that a client refuses what a broken or malicious server sends:

- `hostile_id` (create and status routes): the task id in the JSON answer becomes
  `opts["task_id"]` (default `../../x`); the job itself is created/read as usual.
- `redirect` (body routes): `302` to `opts["location"]` (e.g. `file:///etc/passwd`).
- `redirect_loop` (body routes): `302` into an endless chain of redirects.
- `content_type` (body routes): the answer claims `opts["content_type"]` (default
  `text/html`); with `opts["body"]` that body replaces the video.
- `not_mp4` (body routes): a body of the same length that is not an MP4.
- `no_length` (body routes): no `Content-Length` (chunked), so only counting bytes tells the size.

And odd ones, for tests that a client drops a strange value and goes on:

- `odd_times` (create and status routes): every `created_at`, `completed_at` and `updated_at`
  in the JSON answer (at any depth, so also a wrapped Kling answer) becomes `opts["value"]`
  (default `None`, i.e. null), e.g. `253402300800`, `1e12`, `1e300`, `"inf"` or `-1`.
  `float("inf")` is sent as the bare `Infinity` that Python's JSON reader takes.
"""

from __future__ import annotations

import json
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .responses import gateway_error, kling_error
from .server import Response

ROUTES = ("omni.create", "omni.retrieve", "omni.content", "kling.create", "kling.query", "files", "user.quota")
_JSON_ROUTES = {"omni.create", "omni.retrieve", "kling.create", "kling.query"}
_STATUS_ROUTES = {"omni.retrieve", "kling.query"}
_BODY_ROUTES = {"omni.content", "files"}

HTTP_ERRORS = {"http_429": 429, "http_500": 500, "http_502": 502, "http_503": 503, "http_504": 504}
COMMON_KINDS = frozenset({*HTTP_ERRORS, "reset_before", "reset_after"})
# What `set_fault_rate` draws from unless told otherwise.
TRANSIENT_KINDS = COMMON_KINDS | {"truncate"}
# Hostile answers: never drawn at random unless asked for by `kinds`.
HOSTILE_JSON_KINDS = frozenset({"hostile_id"})
HOSTILE_BODY_KINDS = frozenset({"redirect", "redirect_loop", "content_type", "not_mp4", "no_length"})
# Odd values in a well-formed answer: also never drawn at random unless asked for.
ODD_JSON_KINDS = frozenset({"odd_times"})
ALL_KINDS = (
    TRANSIENT_KINDS
    | {"slow", "malformed_json", "unknown_status"}
    | HOSTILE_JSON_KINDS
    | HOSTILE_BODY_KINDS
    | ODD_JSON_KINDS
)
# The time fields `odd_times` replaces.
TIME_FIELDS = frozenset({"created_at", "completed_at", "updated_at"})
# Where `redirect_loop` sends a client: every hop answers a redirect to the next one.
REDIRECT_LOOP_PATH = "/redirect-loop"


def applicable_kinds(route: str) -> frozenset[str]:
    """Fault kinds that make sense for `route`."""
    kinds = set(COMMON_KINDS)
    if route in _BODY_ROUTES:
        kinds |= {"truncate", "slow", *HOSTILE_BODY_KINDS}
    if route in _JSON_ROUTES:
        kinds |= {"slow", "malformed_json", *HOSTILE_JSON_KINDS, *ODD_JSON_KINDS}
    if route in _STATUS_ROUTES:
        kinds.add("unknown_status")
    if route == "user.quota":  # the query service's balance: errors, drops and a broken body
        kinds.add("malformed_json")
    return frozenset(kinds)


@dataclass(frozen=True)
class Fault:
    """One injected fault: its kind and options (`retry_after`, `delay`, ...)."""

    kind: str
    opts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Scripted:
    fault: Fault
    remaining: int


class FaultPlan:
    """Per-route FIFO of scripted faults, plus an optional seeded random fault rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripted: dict[str, deque[_Scripted]] = {route: deque() for route in ROUTES}
        self._rate = 0.0
        self._rng = random.Random(0)
        self._random_kinds: dict[str, list[str]] = {}

    def add(self, route: str, kind: str, times: int = 1, **opts: Any) -> None:
        """Queue `kind` for the next `times` requests to `route`."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {ROUTES}")
        if kind not in applicable_kinds(route):
            raise ValueError(f"fault {kind!r} does not apply to route {route!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._scripted[route].append(_Scripted(Fault(kind, dict(opts)), times))

    def set_rate(
        self,
        rate: float,
        routes: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        seed: int = 0,
    ) -> None:
        """Inject a random fault with probability `rate` per request (0 disables)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        chosen_routes = list(routes) if routes is not None else list(ROUTES)
        chosen_kinds = frozenset(kinds) if kinds is not None else TRANSIENT_KINDS
        if unknown := (set(chosen_routes) - set(ROUTES)) | (chosen_kinds - ALL_KINDS):
            raise ValueError(f"unknown routes/kinds: {sorted(unknown)}")
        with self._lock:
            self._rate = rate
            self._rng = random.Random(seed)
            self._random_kinds = {
                route: sorted(chosen_kinds & applicable_kinds(route)) for route in chosen_routes
            }

    def draw(self, route: str | None) -> Fault | None:
        """The fault for the next request to `route`, if any (scripted first)."""
        if route is None:
            return None
        with self._lock:
            queue = self._scripted.get(route)
            if queue:
                entry = queue[0]
                entry.remaining -= 1
                if entry.remaining <= 0:
                    queue.popleft()
                return entry.fault
            kinds = self._random_kinds.get(route)
            if self._rate > 0 and kinds and self._rng.random() < self._rate:
                return Fault(self._rng.choice(kinds))
        return None


def respond_before(fault: Fault, route: str) -> Response | None:
    """A response replacing the route entirely (errors, reset_before), else None."""
    if fault.kind == "reset_before":
        return Response(0, abort=True)
    if fault.kind == "redirect":
        return Response(302, [("location", str(fault.opts.get("location", "file:///etc/passwd")))])
    if fault.kind == "redirect_loop":
        return Response(302, [("location", f"{REDIRECT_LOOP_PATH}/1")])
    status = HTTP_ERRORS.get(fault.kind)
    if status is None:
        return None
    if status == 429:
        headers = [("retry-after", f"{float(fault.opts.get('retry_after', 1)):g}")]
        if route.startswith("kling."):
            return kling_error(429, 1302, "request rate too fast, please retry later", headers)
        return gateway_error(
            429, "Rate limit exceeded, retry later", code="rate_limit_exceeded", headers=headers
        )
    return gateway_error(status, f"Emulated upstream error {status}", code="upstream_error")


def bend_after(fault: Fault, response: Response, task_ids: Iterable[str] = ()) -> Response:
    """Apply faults that act once the route has done its work.

    `task_ids` are the ids a `hostile_id` fault may replace (the emulator's jobs).
    """
    if fault.kind == "hostile_id":
        return _with_hostile_id(response, set(task_ids), str(fault.opts.get("task_id", "../../x")))
    if fault.kind in ("content_type", "not_mp4", "no_length", "odd_times") and not 200 <= response.status < 300:
        return response  # an error answer stays what it is
    if fault.kind == "odd_times":
        value = fault.opts.get("value")
        return _rewrite_json(response, lambda key, old: value if key in TIME_FIELDS else old)
    if fault.kind == "content_type":
        content_type = str(fault.opts.get("content_type", "text/html"))
        headers = [(k, v) for k, v in response.headers if k != "content-type"]
        body = fault.opts.get("body")
        if body is None:
            response.headers = [("content-type", content_type), *headers]
            return response
        data = body.encode() if isinstance(body, str) else bytes(body)
        headers = [(k, v) for k, v in headers if k not in ("content-range", "etag", "accept-ranges")]
        return Response(200, [("content-type", content_type), *headers], data)
    if fault.kind == "not_mp4":
        filler = b"<!doctype html><html><body>This is not a video.</body></html>\n"
        data = (filler * (response.length // len(filler) + 1))[: max(response.length, len(filler))]
        return Response(response.status, response.headers, data)
    if fault.kind == "no_length":
        response.omit_length = True
        return response
    if fault.kind == "reset_after":
        response.abort = True
    elif fault.kind == "truncate":
        response.truncate = True
    elif fault.kind == "slow":
        response.chunk_delay = float(fault.opts.get("delay", 0.05))
        response.chunk_size = int(fault.opts.get("chunk_size", response.chunk_size))
    elif fault.kind == "malformed_json":
        body = response.body or b'{"status":"ok"}'
        headers = [(k, v) for k, v in response.headers if k != "content-type"]
        return Response(
            200, [("content-type", "application/json"), *headers], body[: max(1, len(body) // 2)] + b'{"'
        )
    return response


def _with_hostile_id(response: Response, task_ids: set[str], hostile: str) -> Response:
    """The JSON answer with every task id (under an `id`/`task_id` key) replaced by `hostile`."""
    return _rewrite_json(
        response,
        lambda key, value: hostile
        if key in ("id", "task_id") and isinstance(value, str) and value in task_ids
        else value,
    )


def _rewrite_json(response: Response, change: Callable[[str, Any], Any]) -> Response:
    """The JSON answer with each `key: value` pair (at any depth) given `change(key, value)`."""
    try:
        payload = json.loads(response.body)
    except ValueError:
        return response

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: swap(change(key, value)) for key, value in node.items()}
        if isinstance(node, list):
            return [swap(item) for item in node]
        return node

    body = json.dumps(swap(payload), separators=(",", ":")).encode()
    return Response(response.status, response.headers, body)
