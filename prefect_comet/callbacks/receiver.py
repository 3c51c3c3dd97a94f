"""The Kling callback receiver: a small web app that checks each callback's token, then answers 202 at once.

What a callback says is confirmed in the background (`callbacks/confirming.py`). The query
string holds the token, so no log line ever shows it: uvicorn's access log is off and the
app's own access line names the path only.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prefect.logging import get_logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prefect_comet.api.answers import checked_task_id
from prefect_comet.callbacks.confirming import CallbackConfirmer, Delivery
from prefect_comet.callbacks.tokens import CALLBACK_PATH, token_matches
from prefect_comet.credentials import CometAPICredentials
from prefect_comet.exceptions import ResponseFormatError
from prefect_comet.steps.ledger import JobLedger

MAX_BODY_BYTES = 256 * 1024
CLAIMED_STATUS_CHARS = 40

access_logger = get_logger("prefect_comet.callbacks.access")


def create_receiver_app(credentials: CometAPICredentials, secret: str, ledger_uri: str | None = None) -> FastAPI:
    """The receiver of Kling callbacks: `POST /kling/callback?key=&token=&run=` and `GET /healthz`.

    A callback whose token is not the key's is refused (401) before anything else happens. An
    accepted one is answered 202 at once and confirmed in the background: a GET to the API, a
    `comet.video.callback` event, a note in the ledger, and a resume of the named flow run once
    its jobs are done.

    Args:
        credentials: The CometAPI account the jobs belong to; its pooled client is held while
            the app runs.
        secret: The callback secret the flows' callback URLs were made with.
        ledger_uri: A job ledger folder to note confirmed callbacks in (None: no notes).

    Returns:
        The app, for uvicorn (see `receiver_server`) or any ASGI server.

    Example:
        ```python
        app = create_receiver_app(CometAPICredentials.load("comet"), secret, "s3://bucket/videos/.comet-ledger")
        ```
    """
    if not secret:
        raise ValueError("callback secret: empty; set COMETAPI_CALLBACK_SECRET or the block's callback_secret")
    confirmer = CallbackConfirmer(JobLedger(ledger_uri) if ledger_uri else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with credentials.get_client() as client:
            confirmer.start(client)
            try:
                yield
            finally:
                await confirmer.stop()

    app = FastAPI(title="prefect-comet callbacks", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.confirmer = confirmer
    app.add_middleware(_PathOnlyAccessLog)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post(CALLBACK_PATH)
    async def kling_callback(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _answer(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        key = request.query_params.get("key", "")
        if not key or not token_matches(secret, key, request.query_params.get("token")):
            return _answer(401, "unknown or missing callback token")
        run = request.query_params.get("run") or None
        if run is not None and not _is_uuid(run):
            return _answer(400, "run: not a flow run id")
        body = await _read_at_most(request, MAX_BODY_BYTES)
        if body is None:
            return _answer(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        delivery = _delivery(body, key, run)
        if delivery is None:
            return _answer(400, "the body is not a Kling task object with a task_id")
        if confirmer.submit(delivery) == "full":
            return _answer(503, "too many callbacks waiting; send it again later")
        return _answer(202, "accepted")

    return app


def receiver_server(app: FastAPI) -> uvicorn.Server:
    """A uvicorn server for the receiver: no access log (it would print the token), a clean stop on a signal.

    SIGINT and SIGTERM end `serve()` normally, so the process exits 0 after the app shut down.

    Args:
        app: The receiver app.

    Returns:
        The server; run it with `await server.serve(sockets=[listening_socket])`.

    Example:
        ```python
        sock = socket.create_server(("127.0.0.1", 0))
        asyncio.run(receiver_server(create_receiver_app(credentials, secret)).serve(sockets=[sock]))
        ```
    """
    config = uvicorn.Config(app, access_log=False, log_config=None, lifespan="on", server_header=False)
    return _Server(config)


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: Any) -> None:
        # uvicorn would raise the signal again once stopped, ending the process with it.
        self.should_exit = True


class _PathOnlyAccessLog:
    """One access line per request, `METHOD /path status`: never the query string."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            access_logger.info("%s %s %s", scope["method"], scope["path"], status[0])


async def _read_at_most(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` bytes (never more is kept)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _delivery(body: bytes, key: str, run: str | None) -> Delivery | None:
    """The task id and claimed status of a Kling task object (also wrapped as `{"data": {...}}`)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and "task_id" not in data and isinstance(data.get("data"), dict):
        data = data["data"]
    if not isinstance(data, dict) or not isinstance(data.get("task_id"), str | int):
        return None
    try:
        task_id = checked_task_id(data["task_id"])
    except ResponseFormatError:
        return None
    claimed = data.get("task_status") or data.get("status")
    claimed = claimed[:CLAIMED_STATUS_CHARS] if isinstance(claimed, str) else ""
    return Delivery(key=key, task_id=task_id, claimed_status=claimed, flow_run_id=run)


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _answer(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)
