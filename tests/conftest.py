"""Shared fixtures: a temporary Prefect server and a CometAPI emulator on loopback."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Ledgers kept under PREFECT_HOME must not leak between test sessions (or into ~/.prefect).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-comet-tests-")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import pytest
from pydantic import SecretStr

from prefect_comet import CometAPICredentials

# The S3 fixtures (a moto server on loopback) start only for the tests that ask for them; the
# leftover check fails the suite when a process it started outlives it.
pytest_plugins = ["tests.s3", "tests._leftover_processes"]

API_KEY = "sk-test-canary-4f1d2c"
# Poll fast against the emulator; its jobs finish in a fraction of a second.
FAST = {"poll_interval_seconds": 0.05, "max_poll_interval_seconds": 0.2}


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect server (SQLite) for the whole run: the real engine, no mocks."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _forget_learned_durations() -> None:
    """Durations learned from one test's jobs must not change another test's poll cadence."""
    from prefect_comet.steps import learned_durations as _durations

    _durations.forget_all()


@pytest.fixture
def emulator():
    """A fresh emulator per test, so request logs and faults never leak between tests."""
    from prefect_comet.testing.emulator import CometEmulator

    with CometEmulator(api_key=API_KEY, latency=0.3) as emu:
        yield emu


@pytest.fixture
def credentials(emulator) -> CometAPICredentials:
    return CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emulator.base_url)


@pytest.fixture
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    monkeypatch.delenv("COMETAPI_BASE_URL", raising=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of its own, unmounted at teardown; skipped where mounting is refused."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
