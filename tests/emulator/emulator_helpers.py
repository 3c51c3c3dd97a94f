"""Helpers shared by the emulator tests."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import av
import httpx

KEY = "test-key"
LATENCY = 0.3
KLING = "/kling/v1/videos/omni-video"


def omni_form(**fields: str | None) -> dict[str, tuple[None, str]]:
    """Multipart fields for httpx `files=` (forces multipart even without files); None drops one."""
    values = {"model": "omni-fast", "prompt": "Ocean waves at golden hour", **fields}
    return {name: (None, value) for name, value in values.items() if value is not None}


def kling_body(**fields: Any) -> dict[str, Any]:
    """A valid Kling Omni create body, with overrides (None drops a field)."""
    body = {
        "prompt": "A paper boat drifts across a calm pond",
        "aspect_ratio": "16:9",
        "duration": "5",
        **fields,
    }
    return {name: value for name, value in body.items() if value is not None}


def probe(data: bytes) -> tuple[int, int, float]:
    """(width, height, seconds) of an MP4, decoding every frame to prove it is genuine."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        assert frames > 0
        assert container.duration is not None
        return stream.width, stream.height, container.duration / 1_000_000


def wait_for(fetch: Callable[[], httpx.Response], done: Callable[[Any], bool], timeout: float = 15) -> Any:
    """Poll `fetch()` until `done(json_body)`; returns that body."""
    deadline = time.monotonic() + timeout
    while True:
        response = fetch()
        assert response.status_code == 200, response.text
        body = response.json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"timed out; last body {body}"
        time.sleep(0.03)


def omni_done(client: httpx.Client, task_id: str) -> dict[str, Any]:
    """Wait for an Omni task to reach a terminal status."""
    return wait_for(
        lambda: client.get(f"/v1/videos/{task_id}"), lambda b: b["status"] in ("completed", "failed")
    )


def kling_done(client: httpx.Client, task_id: str) -> dict[str, Any]:
    """Wait for a Kling task to reach a terminal status (native shape)."""
    return wait_for(
        lambda: client.get(f"{KLING}/{task_id}"), lambda b: b["data"]["task_status"] in ("succeed", "failed")
    )
