"""Fixtures for the emulator tests: a running emulator and an authorized client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from emulator_helpers import KEY, LATENCY

from prefect_comet.testing.emulator import CometEmulator


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Shadows the suite-wide autouse Prefect server: emulator tests speak plain HTTP only."""
    yield


@pytest.fixture
def emu() -> Iterator[CometEmulator]:
    with CometEmulator(api_key=KEY, latency=LATENCY) as emulator:
        yield emulator


@pytest.fixture
def client(emu: CometEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        yield c
