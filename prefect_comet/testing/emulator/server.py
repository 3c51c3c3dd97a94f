"""HTTP/1.1 plumbing: asyncio streams + h11, keep-alive, zero-copy file bodies, fault hooks."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import BinaryIO, cast
from urllib.parse import parse_qsl, urlsplit

import h11

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024  # largest request body accepted (base64 images are big)
READ_SIZE = 64 * 1024


@dataclass
class Request:
    """A fully read request; header names are lower-case."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def query_string(self) -> str:
        """The raw query string (no leading `?`)."""
        return urlsplit(self.target).query


@dataclass
class FileBody:
    """A byte range of a file on disk, sent with sendfile()."""

    path: str
    offset: int
    length: int


@dataclass
class Response:
    """What to answer; the flags at the bottom are how faults bend the delivery."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: FileBody | None = None
    abort: bool = False  # reset the connection instead of answering
    truncate: bool = False  # full Content-Length, about half the body, then close
    chunk_delay: float = 0.0  # > 0: send the body in small chunks with this pause
    chunk_size: int = 16 * 1024
    omit_length: bool = False  # no Content-Length: the body goes chunked

    @property
    def length(self) -> int:
        """Size of the full body."""
        return self.file.length if self.file else len(self.body)


Handler = Callable[[Request], Awaitable[Response]]


class _Span:
    """Stand-in for file bytes so h11 counts them without us reading the file."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class HttpServer:
    """Serve `handler` on a TCP port of the running event loop."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Bind and listen; returns the bound port."""
        self._server = await asyncio.start_server(self._serve, host, port, backlog=2048, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _read_request(conn, reader, writer)
                if request is None:
                    return
                response = await self._call(request)
                if response.abort:
                    reset(writer)
                    return
                if not await _send(conn, writer, request.method, response):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                writer.write(_plain(conn, exc.error_status_hint, str(exc)))
        except (ConnectionError, OSError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:  # server shutdown; ending quietly keeps asyncio from logging it
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _call(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception:  # a bug in a route must not kill the connection silently
            # The path only: a query string may hold a key (`/user/quota?key=...`) or a signature.
            log.exception("emulator handler failed for %s %s", request.method, request.path)
            return Response(500, [("content-type", "text/plain")], b"emulator internal error")


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_SIZE))
            continue
        return event


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    """Read one request with its body; None when the client closed the connection."""
    event = await _next_event(conn, reader)
    if not isinstance(event, h11.Request):
        return None
    if conn.they_are_waiting_for_100_continue:
        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
    chunks: list[bytes] = []
    size = 0
    while True:
        part = await _next_event(conn, reader)
        if isinstance(part, h11.Data):
            size += len(part.data)
            if size > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            chunks.append(bytes(part.data))
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            return None
    target = event.target.decode("latin-1")
    split = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        method=event.method.decode("ascii"),
        target=target,
        path=split.path,
        query=dict(parse_qsl(split.query, keep_blank_values=True)),
        headers=headers,
        body=b"".join(chunks),
    )


def _head(conn: h11.Connection, response: Response) -> bytes:
    headers = list(response.headers)
    if not response.omit_length:
        headers.append(("content-length", str(response.length)))
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=phrase))
    return data or b""


def _plain(conn: h11.Connection, status: int, text: str) -> bytes:
    body = text.encode()
    response = Response(status, [("content-type", "text/plain"), ("connection", "close")], body)
    return (
        _head(conn, response)
        + (conn.send(h11.Data(data=body)) or b"")
        + (conn.send(h11.EndOfMessage()) or b"")
    )


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, method: str, response: Response) -> bool:
    """Write the response; False when the connection must not be reused."""
    writer.write(_head(conn, response))
    length = response.length
    if method == "HEAD" or length == 0:
        pass
    elif response.truncate:
        await _write_range(writer, response, 0, length // 2)
        await writer.drain()
        return False
    elif response.chunk_delay > 0:
        await _send_slowly(conn, writer, response)
    elif response.file is not None:
        span = cast(bytes, _Span(length))  # h11 passes it through, using only its len()
        for part in conn.send_with_data_passthrough(h11.Data(data=span)) or []:
            if part is span:
                await _write_range(writer, response, 0, length)  # sendfile: zero-copy
            else:
                writer.write(part)
    else:
        writer.write(conn.send(h11.Data(data=response.body)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()
    return True


async def _send_slowly(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response) -> None:
    """Send the body in `chunk_size` pieces with `chunk_delay` seconds between them."""
    step, length = max(1, response.chunk_size), response.length
    source: BinaryIO = io.BytesIO(response.body) if response.file is None else open(response.file.path, "rb")
    with source:
        source.seek(response.file.offset if response.file else 0)
        sent = 0
        while sent < length:
            chunk = source.read(min(step, length - sent))
            if not chunk:
                raise ConnectionError("file shrank while sending")
            writer.write(conn.send(h11.Data(data=chunk)) or b"")
            await writer.drain()
            sent += len(chunk)
            if sent < length:
                await asyncio.sleep(response.chunk_delay)


async def _write_range(writer: asyncio.StreamWriter, response: Response, start: int, count: int) -> None:
    """Write body bytes [start, start+count) without holding a file in memory."""
    if response.file is None:
        writer.write(response.body[start : start + count])
        return
    loop = asyncio.get_running_loop()
    with open(response.file.path, "rb") as fh:
        await loop.sendfile(writer.transport, fh, response.file.offset + start, count)


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the TCP connection with an RST (SO_LINGER 0), unsent data is dropped."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
