"""`prefect-comet callbacks`: receive Kling callbacks, confirm each with the API, resume the runs they wake."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Annotated

import typer
from prefect.settings import PREFECT_API_URL

from prefect_comet.callbacks.receiver import create_receiver_app, receiver_server
from prefect_comet.callbacks.tokens import SECRET_VARIABLE, callback_secret
from prefect_comet.cli._common import BAD_INPUT, Block, fail, start_prefect
from prefect_comet.credentials import CometAPICredentials
from prefect_comet.testing.emulator.serving import port_in_use


def callbacks(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The port; 0 picks a free one.")],
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    block: Block = None,
    ledger: Annotated[
        str | None,
        typer.Option("--ledger", metavar="URL", help="A job ledger's folder, to note confirmed callbacks in."),
    ] = None,
) -> None:
    """Receive Kling callbacks until Ctrl-C or SIGTERM: checked, confirmed with the API, sent to Prefect as events."""
    if not PREFECT_API_URL.value():
        fail(
            "PREFECT_API_URL is not set: the receiver sends its events to, and resumes runs on, the Prefect "
            "server your flows use. What to do: set PREFECT_API_URL to that server's API URL.",
            BAD_INPUT,
        )
    start_prefect()  # fails in one line when that server does not answer
    credentials = CometAPICredentials.load(block) if block else CometAPICredentials.from_env()
    configured = credentials.callback_secret.get_secret_value() if credentials.callback_secret else None
    secret = callback_secret(configured)
    if secret is None:
        fail(
            f"No callback secret. What to do: set {SECRET_VARIABLE} (the same value the flows use), or save "
            "the credentials block with callback_secret and pass --block NAME.",
            BAD_INPUT,
        )
    listening = _listen(host, port)
    bound = listening.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    server = receiver_server(create_receiver_app(credentials, secret, ledger))
    print(f"Kling callback receiver listening on {url}", flush=True)
    print(
        f"Flows should pass callback_base_url={url!r} (or the public HTTPS address in front of it); "
        "stop it with Ctrl-C.",
        flush=True,
    )
    with listening:
        asyncio.run(server.serve(sockets=[listening]))


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port`, or one line naming the port and the cure."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise port_in_use(host, port) from error
