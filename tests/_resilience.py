"""Helpers shared by the resilience tests (S3, chaos, crash, ambiguous creates, canary, hostile input)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import fsspec

from prefect_comet.steps.ledger import LEDGER_FOLDER


def uri_sha256(uri: str) -> str:
    """SHA-256 of what storage holds at `uri` (any fsspec URL or local path)."""
    digest = hashlib.sha256()
    with fsspec.open(uri, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, tuple[str, int, int]]:
    """Every file and folder under `root` (kind, size, mtime of files), except the subtree `skip`.

    A folder's own mtime is left out: creating the destination inside it changes it.
    """
    found: dict[str, tuple[str, int, int]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = here / name
            if skip is not None and path == skip:
                continue
            stat = path.lstat()
            kind = "dir" if path.is_dir() else "file"
            size, mtime = (stat.st_size, stat.st_mtime_ns) if kind == "file" else (0, 0)
            found[str(path.relative_to(root))] = (kind, size, mtime)
    return found


def ledger_records(destination: str | Path) -> list[dict[str, Any]]:
    """The ledger records kept beside the videos in a local destination."""
    folder = Path(destination) / LEDGER_FOLDER
    if not folder.is_dir():
        return []
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def leftovers(destination: str | Path) -> list[str]:
    """Files in a local destination other than ledger records: videos, sidecars, partial files."""
    root = Path(destination)
    if not root.exists():
        return []
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not (path.parent.name == LEDGER_FOLDER and path.suffix == ".json")
    )


class Starter:
    """Creates a round's flow runs one after another on a quiet server, then lets all go at once.

    The test harness's SQLite Prefect server answers `POST /api/flow_runs/` with 503 ("database
    is locked") when another connection commits while it creates a flow run, and Prefect's
    client then backs off for up to a minute. So each run is created alone; on reaching Running
    it waits (an async `on_running` hook) until every run of the round is there. From then on
    the runs go on together: the jobs are concurrent, only their start is ordered.

    Example:
        ```python
        starter = Starter(len(requests))
        stored = await asyncio.gather(*(starter.run(generate_video, r, idempotency_key=k) for k, r in requests.items()))
        ```
    """

    def __init__(self, count: int) -> None:
        self._gate = asyncio.Lock()
        self._count = count
        self._arrived = 0
        self._go = asyncio.Event()

    async def run(self, flow_object, *args, **kwargs):
        """Call `flow_object(*args, **kwargs)` as one of this round's flow runs; returns its result."""
        running = asyncio.get_running_loop().create_future()

        async def wait_for_the_others(flow, flow_run, state) -> None:
            if not running.done():
                running.set_result(None)
            await self._go.wait()

        async with self._gate:
            call = asyncio.ensure_future(
                flow_object.with_options(on_running=[wait_for_the_others])(*args, **kwargs)
            )
            await asyncio.wait({call, running}, return_when=asyncio.FIRST_COMPLETED)
        self._arrived += 1
        if self._arrived >= self._count:
            self._go.set()
        return await call
