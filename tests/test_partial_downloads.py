"""A download cut short (the process killed) is resumed by the next run, never shared, never left behind.

The acceptance test kills a real process (SIGKILL) while it streams a large video, then runs the
same key again: the leftover partial file is adopted and only the missing bytes are fetched (the
emulator's own count says so). The others plant leftovers beside a finished job: a live writer's
(its `flock` held by the test) is never adopted, a dead one's is resumed, and one the server
will not resume (200 instead of 206, or 416) is dropped and fetched again from byte 0.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr

from prefect_comet import (
    CometAPICredentials,
    OmniVideoRequest,
    create_video,
    generate_video,
    persist_video,
    wait_for_video,
)
from prefect_comet.steps import hashing_writer as _hashing_writer
from prefect_comet.steps.hashing_writer import HashingWriter
from prefect_comet.testing.emulator import CometEmulator
from tests._server import Background, prefect_env, wait_until
from tests.conftest import API_KEY, FAST

BIG = 8 << 20  # large enough that a slowed download is still running when it is killed
KILL_AFTER = 1 << 20  # kill once this many bytes are on disk
# The killed run: one `generate_video` with a fixed key, so the re-run resumes the same job.
CHILD = """
import asyncio, sys
from prefect_comet import OmniVideoRequest, generate_video
asyncio.run(generate_video(
    OmniVideoRequest(prompt=sys.argv[3]), destination=sys.argv[1], idempotency_key=sys.argv[2],
    poll_interval_seconds=0.05, max_poll_interval_seconds=0.2,
))
"""


@pytest.fixture
def processes() -> Iterator[list[Background]]:
    """Processes a test starts; every one is stopped at teardown, pass or fail."""
    started: list[Background] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes small enough that a test-sized file crosses into threaded writing."""
    monkeypatch.setattr(_hashing_writer, "INLINE_BYTES", 300_001)
    monkeypatch.setattr(_hashing_writer, "STEP_BYTES", 70_003)


def _partials(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if ".partial" in path.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _content_requests(emu: CometEmulator) -> list:
    return [r for r in emu.requests if r.route in ("omni.content", "files")]


async def test_a_killed_download_is_resumed_from_its_partial_file(tmp_path, processes):
    destination = tmp_path / "videos"
    key, prompt = "resume-after-kill", "A long pan over a harbour"
    async with CometEmulator(api_key=API_KEY, latency=0.3, pad_to_bytes=BIG) as emu:
        emu.add_fault("omni.content", "slow", delay=0.05, chunk_size=64 << 10)  # ~1.3 MB/s
        env = prefect_env(
            tmp_path / "home", PREFECT_API_URL.value(), COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=emu.base_url
        )
        first = Background(
            "killed-download", [sys.executable, "-c", CHILD, str(destination), key, prompt],
            env=env, log_dir=tmp_path,
        )
        processes.append(first)
        await asyncio.to_thread(
            wait_until,
            lambda: sum(p.stat().st_size for p in _partials(destination)) >= KILL_AFTER,
            timeout=120, what=f"{KILL_AFTER} bytes of the download on disk", process=first,
        )
        os.kill(first.process.pid, signal.SIGKILL)
        assert await asyncio.to_thread(first.process.wait, timeout=10) == -signal.SIGKILL
        (leftover,) = _partials(destination)
        partial_bytes = leftover.stat().st_size
        (task_id,) = emu.jobs
        served_before = emu.bytes_served(task_id)

        stored = await generate_video(
            OmniVideoRequest(prompt=prompt), destination=str(destination), idempotency_key=key,
            credentials=_credentials(emu), **FAST,
        )

        served = emu.bytes_served(task_id) - served_before
        assert 0 < partial_bytes < stored.size_bytes
        assert served == stored.size_bytes - partial_bytes < stored.size_bytes
        assert _content_requests(emu)[-1].headers.get("range") == f"bytes={partial_bytes}-"
        assert stored.sha256 == emu.sha256(task_id) == _sha256(Path(stored.uri))
        assert emu.created_per_key() == {key: 1}
        assert _partials(destination) == []


async def test_a_live_writers_file_is_left_alone_while_a_dead_ones_is_resumed(small_steps, tmp_path):
    destination = tmp_path / "videos"
    destination.mkdir()
    async with CometEmulator(api_key=API_KEY, latency=0.2, pad_to_bytes=1 << 20) as emu:
        job, data = await _finished_job(emu, "live-and-dead")
        final = destination / f"{job.task_id}.mp4"
        live = _leftover(final, "live0000live", data[:600_000])
        dead = _leftover(final, "dead0000dead", data[:400_000])
        older_dead = _leftover(final, "dead1111dead", data[:100_000])
        with open(live, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a writer that is still running

            stored = await persist_video(job, str(destination), _credentials(emu))

            assert _content_requests(emu)[-1].headers.get("range") == "bytes=400000-"
            assert emu.bytes_served(job.task_id) == len(data) - 400_000
            assert stored.sha256 == emu.sha256(job.task_id) == _sha256(final)
            assert live.read_bytes() == data[:600_000]  # untouched: never shared
            assert not dead.exists() and not older_dead.exists()

            with open(live, "ab") as rest:  # the live writer finishes too, and lands its own file
                rest.write(data[600_000:])
            os.replace(live, final)
        assert _sha256(final) == emu.sha256(job.task_id)
        assert _partials(destination) == []


@pytest.mark.parametrize("refusal", ["200", "416"])
async def test_a_leftover_the_server_will_not_resume_is_dropped_and_fetched_again(tmp_path, refusal):
    destination = tmp_path / "videos"
    destination.mkdir()
    async with CometEmulator(api_key=API_KEY, latency=0.2, pad_to_bytes=1 << 20) as emu:
        job, data = await _finished_job(emu, f"refused-{refusal}")
        final = destination / f"{job.task_id}.mp4"
        if refusal == "200":  # a server that ignores Range: the whole file, status 200
            _leftover(final, "dead0000dead", data[:300_000])
            emu.add_fault("omni.content", "content_type", content_type="video/mp4", body=data)
        else:  # the whole file was there already (killed before the move): nothing left to range over
            _leftover(final, "dead0000dead", data)

        stored = await persist_video(job, str(destination), _credentials(emu))

        requests = _content_requests(emu)
        expected_range = "bytes=300000-" if refusal == "200" else f"bytes={len(data)}-"
        assert requests[0].headers.get("range") == expected_range
        assert emu.bytes_served(job.task_id) == len(data)  # once from byte 0, nothing appended
        assert stored.sha256 == emu.sha256(job.task_id) == _sha256(final)
        assert _partials(destination) == []


async def test_a_resumed_file_hashed_in_the_worker_thread_is_whole(small_steps, tmp_path):
    data = os.urandom(1_000_000)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data[:250_000])
    hasher = hashlib.sha256(data[:250_000])

    writer = HashingWriter(open(path, "ab"), hasher=hasher, already_written=250_000)
    for at in range(250_000, len(data), 65_536):
        await writer.write(data[at : at + 65_536])
    digest = await writer.finish()
    await writer.close()

    assert writer._filling  # past INLINE_BYTES with the prefix counted: the worker thread wrote
    assert digest == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data


def _credentials(emu: CometEmulator) -> CometAPICredentials:
    return CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emu.base_url)


async def _finished_job(emu: CometEmulator, key: str):
    """A succeeded job (nothing downloaded yet) and the bytes its video is made of."""
    credentials = _credentials(emu)
    job = await create_video(OmniVideoRequest(prompt=f"Leftovers: {key}"), credentials, idempotency_key=key)
    job = await wait_for_video(job, credentials, **FAST)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", job.task_id)  # so the file is named `<task id>.mp4`
    return job, Path(emu.jobs[job.task_id].videos[0].path).read_bytes()


def _leftover(final: Path, suffix: str, data: bytes) -> Path:
    """A partial file as a run killed mid-download leaves it beside `final`."""
    path = final.parent / f".{final.name}.partial-{suffix}"
    path.write_bytes(data)
    return path
