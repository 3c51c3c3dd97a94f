"""A worker killed (SIGKILL) while its jobs are being polled: the same batch run again pays nothing new.

A subprocess runs `tests/crash_batch.py` (four `generate_video` flows with fixed keys) against
an emulator whose jobs take a while and the session's Prefect server. Once the server has
created every job and the ledger knows every task id, the process is killed without warning.
Running the same script again resumes each job by its key: no create request, one job per key,
every video stored and verified.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from prefect.settings import PREFECT_API_URL

from prefect_comet.testing.emulator import CometEmulator
from tests._resilience import ledger_records, leftovers, uri_sha256
from tests._server import Background, prefect_env, wait_until
from tests.conftest import API_KEY
from tests.crash_batch import BATCH

LATENCY = 8.0  # seconds from create to completion: the kill lands while jobs are polled


def test_killed_batch_resumes_without_paying_again(tmp_path):
    destination = tmp_path / "videos"
    with CometEmulator(api_key=API_KEY, latency=LATENCY) as emu:
        env = prefect_env(
            tmp_path / "home", PREFECT_API_URL.value(), COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=emu.base_url,
        )
        command = [sys.executable, "-m", "tests.crash_batch", str(destination), str(tmp_path / "results.json")]

        first = Background("crash-batch-1", command, env=env, log_dir=tmp_path)
        try:
            wait_until(
                lambda: len(emu.jobs) == len(BATCH)
                and sorted(r["key"] for r in ledger_records(destination) if r["task_id"]) == sorted(BATCH)
                and _polled(emu) == emu.jobs.keys(),
                timeout=90, what="every job created, recorded and polled", process=first,
            )
            os.kill(first.process.pid, signal.SIGKILL)
            killed_at = time.time()
            assert first.process.wait(timeout=10) == -signal.SIGKILL
        finally:
            first.stop()
        jobs = dict(emu.jobs)
        assert all(killed_at - job.created_at < LATENCY for job in jobs.values())  # none had finished
        assert not [r for r in emu.requests if r.route in ("omni.content", "files")]  # nothing downloaded
        assert not (tmp_path / "results.json").exists()
        creates = [r for r in emu.requests if r.route in ("omni.create", "kling.create")]

        second = Background("crash-batch-2", command, env=env, log_dir=tmp_path)
        try:
            wait_until(second.exited, timeout=120, what="the second run to finish")
            assert second.process.returncode == 0, second.tail()
        finally:
            second.stop()

        assert emu.jobs.keys() == jobs.keys()  # zero new jobs
        assert emu.created_per_key() == dict.fromkeys(BATCH, 1)
        assert [r for r in emu.requests if r.route in ("omni.create", "kling.create")] == creates
        results = json.loads((tmp_path / "results.json").read_text())
        assert sorted(results) == sorted(BATCH)
        for key, video in results.items():
            assert emu.jobs[video["task_id"]].idempotency_key == key
            assert video["sha256"] == emu.sha256(video["task_id"]) == uri_sha256(video["uri"])
        assert sorted(r["state"] for r in ledger_records(destination)) == ["stored"] * len(BATCH)
        assert not [name for name in leftovers(destination) if "partial" in name]


def _polled(emu: CometEmulator) -> set[str]:
    """The jobs whose status has been asked for."""
    polls = [r.path for r in list(emu.requests) if r.route in ("omni.retrieve", "kling.query")]
    return {task_id for task_id in list(emu.jobs) if any(path.endswith(f"/{task_id}") for path in polls)}
