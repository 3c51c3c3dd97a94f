"""Serve an emulator in the foreground until SIGINT or SIGTERM: how the command lines run it."""

from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Callable
from types import FrameType

from .core import CometEmulator


def serve_until_stopped(emulator: CometEmulator, *, announce: Callable[[str], None] = print) -> None:
    """Start `emulator`, announce its URL, serve until SIGINT or SIGTERM, then stop it cleanly.

    Both signals get handlers of their own for the time it serves: a process started in the
    background by a shell inherits SIGINT ignored, and SIGTERM would otherwise end it without
    stopping the server. The earlier handlers are put back afterwards. Call it from the main
    thread.

    Args:
        emulator: An emulator not yet started.
        announce: Receives the line `CometAPI emulator listening on <base URL>`.

    Raises:
        OSError: The port is taken (errno EADDRINUSE); the message names it and what to do.

    Example:
        ```python
        serve_until_stopped(CometEmulator(port=0, latency=2.0))
        ```
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    earlier = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise port_in_use(emulator.host, emulator.port) from error
        try:
            announce(f"CometAPI emulator listening on {emulator.base_url}")
            while not stop.wait(0.5):
                pass
        finally:
            emulator.stop()
    finally:
        for sig, handler in earlier.items():
            signal.signal(sig, handler)


def port_in_use(host: str, port: int) -> OSError:
    """The one-line error for a port already taken, naming the cure (also used by `prefect-comet callbacks`)."""
    return OSError(
        errno.EADDRINUSE,
        f"port {port} on {host} is already in use. What to do: stop what listens there, or choose "
        "another port (--port 0 picks a free one and prints it).",
    )
