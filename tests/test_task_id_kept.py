"""A task id, once the server has given it, is never dropped: logged, kept, and in the error."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from prefect_comet import OmniVideoRequest, generate_video
from prefect_comet.exceptions import StorageError
from prefect_comet.steps.ledger import LEDGER_FOLDER
from tests.conftest import FAST

PAGE = 4096


def _fill_leaving(folder: Path, free_bytes: int) -> Path:
    """Fill the disk under `folder` so that exactly `free_bytes` stay free."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - free_bytes))
    assert os.statvfs(folder).f_bavail * stats.f_frsize == free_bytes
    return filler


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_a_full_disk_after_the_create_keeps_the_task_id_and_a_rerun_pays_nothing(
    small_disk, credentials, emulator
):
    destination = small_disk / "videos"
    (destination / LEDGER_FOLDER).mkdir(parents=True)
    # One page free: the key's claim takes it, so recording the task id meets a full disk.
    filler = _fill_leaving(small_disk, PAGE)
    lines = _Lines()
    logging.getLogger("prefect").addHandler(lines)
    try:
        with pytest.raises(StorageError) as caught:
            await generate_video(
                OmniVideoRequest(prompt="A full disk"), destination=str(destination), credentials=credentials,
                idempotency_key="full-disk", **FAST,
            )
    finally:
        logging.getLogger("prefect").removeHandler(lines)

    [task_id] = emulator.jobs
    assert caught.value.task_id == task_id and task_id in str(caught.value)
    assert "same key" in str(caught.value)  # what to do
    assert [line for line in lines.lines if task_id in line and "created" in line]  # logged at once

    filler.unlink()  # the user frees space and runs again
    stored = await generate_video(
        OmniVideoRequest(prompt="A full disk"), destination=str(destination), credentials=credentials,
        idempotency_key="full-disk", **FAST,
    )

    assert stored.task_id == task_id and emulator.created_per_key() == {"full-disk": 1}
    assert stored.sha256 == emulator.sha256(task_id)
