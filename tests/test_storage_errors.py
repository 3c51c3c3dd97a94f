"""A destination that cannot take a video fails with one line saying what to do, and leaves nothing.

A full disk is a real small tmpfs (mounted for the test, unmounted after); a read-only one is
the same tmpfs remounted read-only. Root ignores file modes, so "no access" is a path through a
regular file or a read-only mount, not a chmod.
"""

from __future__ import annotations

import subprocess

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from pydantic import SecretStr

from prefect_comet import CometAPICredentials, OmniVideoRequest, create_video, persist_video, wait_for_video
from prefect_comet.exceptions import StorageError
from prefect_comet.steps.storage_errors import ensure_writable
from prefect_comet.testing.emulator import CometEmulator
from tests.conftest import API_KEY, FAST


async def test_a_full_disk_raises_storage_error_and_leaves_no_partial_file(small_disk):
    async with CometEmulator(api_key=API_KEY, latency=0.2, pad_to_bytes=3 << 20) as emu:
        credentials = CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emu.base_url)
        job = await create_video(OmniVideoRequest(prompt="Too big for the disk"), credentials, idempotency_key="full")
        job = await wait_for_video(job, credentials, **FAST)

        with pytest.raises(StorageError) as raised:
            await persist_video(job, str(small_disk / "videos"), credentials)

    message = str(raised.value)
    assert raised.value.task_id == job.task_id and job.task_id in message
    assert "no space left" in message and "What to do: free space" in message
    assert str(small_disk / "videos") in message and "\n" not in message
    assert [path for path in small_disk.rglob("*") if path.is_file()] == []


def test_a_destination_under_a_regular_file_is_refused_before_paying(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    destination = tmp_path / "notes.txt" / "videos"

    with pytest.raises(StorageError) as raised:
        ensure_writable(str(destination))

    message = str(raised.value)
    assert raised.value.task_id is None
    assert str(destination) in message and "is a file, not a folder" in message and "What to do:" in message
    assert "\n" not in message


def test_a_read_only_destination_is_refused_before_paying(small_disk):
    (small_disk / "videos").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    for destination in (small_disk / "videos", small_disk / "videos" / "new"):
        with pytest.raises(StorageError, match=r"read-only \(EROFS\)\. What to do: make it writable"):
            ensure_writable(str(destination))


class _DeniedStore(MemoryFileSystem):
    """An object store whose bucket refuses writes, raising as s3fs does: a class and a message, no errno."""

    protocol = "denied"

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            raise PermissionError("Access Denied")
        return super()._open(path, mode, **kwargs)


def test_an_object_store_that_refuses_writes_is_refused_before_paying():
    fsspec.register_implementation("denied", _DeniedStore, clobber=True)

    with pytest.raises(StorageError, match=r"denied://bucket/videos: writing there is not allowed \(EACCES\)"):
        ensure_writable("denied://bucket/videos?token=secret")


def test_a_writable_destination_is_made_and_left_clean(tmp_path):
    destination = tmp_path / "new" / "videos"

    ensure_writable(str(destination))
    ensure_writable(str(destination))  # and again, now that it exists

    assert destination.is_dir() and list(destination.iterdir()) == []


async def test_storing_under_a_regular_file_raises_storage_error_with_the_task_id(emulator, credentials, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    job = await create_video(OmniVideoRequest(prompt="Nowhere to go"), credentials, idempotency_key="nowhere")
    job = await wait_for_video(job, credentials, **FAST)

    with pytest.raises(StorageError) as raised:
        await persist_video(job, str(tmp_path / "notes.txt" / "videos"), credentials)

    assert raised.value.task_id == job.task_id
    assert "same idempotency key" in str(raised.value) and "\n" not in str(raised.value)


async def test_the_flow_refuses_an_unwritable_destination_before_paying(tmp_path, credentials, emulator):
    from prefect_comet import generate_video

    (tmp_path / "notes.txt").write_text("a file, not a folder")

    with pytest.raises(StorageError) as raised:
        await generate_video(
            OmniVideoRequest(prompt="Nowhere to go"), destination=str(tmp_path / "notes.txt" / "videos"),
            credentials=credentials, idempotency_key="nowhere", **FAST,
        )

    assert "not a folder" in str(raised.value) and "\n" not in str(raised.value)
    assert emulator.jobs == {}  # found before the paid create
