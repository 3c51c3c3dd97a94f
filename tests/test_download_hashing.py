"""Downloaded bytes land in order with an exact SHA-256, written inline or in a worker thread."""

from __future__ import annotations

import hashlib
import random

import pytest

from prefect_comet import OmniVideoRequest, generate_video
from prefect_comet.steps import hashing_writer as _hashing_writer
from prefect_comet.steps.hashing_writer import HashingWriter
from prefect_comet.testing.emulator import CometEmulator
from tests.conftest import API_KEY, FAST


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes small enough that a test-sized file crosses into threaded writing."""
    monkeypatch.setattr(_hashing_writer, "INLINE_BYTES", 300_001)
    monkeypatch.setattr(_hashing_writer, "STEP_BYTES", 70_003)  # not a multiple of any chunk size


@pytest.mark.parametrize("total", [0, 1, 300_001, 300_002, 1_234_567])
async def test_bytes_and_digest_are_exact_across_the_switch(small_steps, tmp_path, total):
    data = random.Random(total).randbytes(total)
    writer = HashingWriter(open(tmp_path / "out", "wb"))
    at, sizes = 0, random.Random(1)
    while at < len(data):
        size = sizes.choice([1, 7, 4096, 65_536, 200_000])  # some larger than a step
        await writer.write(data[at : at + size])
        at += size

    digest = await writer.finish()
    await writer.close()

    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "out").read_bytes() == data


class _FullDisk:
    def __init__(self, room: int) -> None:
        self.room, self.closed = room, False

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return len(data)

    def close(self) -> None:
        self.closed = True


async def test_a_failed_threaded_write_is_raised_and_the_file_still_closes(small_steps):
    disk = _FullDisk(room=400_000)
    writer = HashingWriter(disk)  # type: ignore[arg-type]

    with pytest.raises(OSError, match="No space left"):
        for _ in range(20):
            await writer.write(b"x" * 65_536)
        await writer.finish()
    await writer.close()

    assert disk.closed


async def test_a_resumed_large_download_written_in_a_thread_is_intact(small_steps, credentials, tmp_path):
    with CometEmulator(api_key=API_KEY, latency=0.2, pad_to_bytes=3 << 20) as emu:
        emu.add_fault("omni.content", "truncate", times=2)
        stored = await generate_video(
            OmniVideoRequest(prompt="Large waves"), destination=str(tmp_path),
            credentials=credentials.model_copy(update={"base_url": emu.base_url}), **FAST,
        )
        downloads_seen = [r for r in emu.requests if r.route == "omni.content"]

        assert stored.size_bytes >= 3 << 20
        assert stored.sha256 == emu.sha256(stored.task_id)
        assert hashlib.sha256((tmp_path / f"{stored.task_id}.mp4").read_bytes()).hexdigest() == stored.sha256
        assert downloads_seen[-1].headers.get("range", "").startswith("bytes=")  # resumed mid-file
