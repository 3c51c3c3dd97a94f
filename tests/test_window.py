"""The batch window: refusals give the slot back, one waiter probes, admitted probes grow it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from prefect_comet import CometClient, RetryPolicy
from prefect_comet.batch.flow import _CreatesFirst
from prefect_comet.batch.parallel_limit import AdaptiveWindow, Patience

PROBE = 0.2


async def _hold(window: AdaptiveWindow, entered: list[int], index: int, release: asyncio.Event) -> None:
    async with window.slot():
        entered.append(index)
        await release.wait()


async def test_a_refused_create_gives_its_slot_back_and_waits_for_room():
    window = AdaptiveWindow(4, probe_interval=PROBE)
    release = asyncio.Event()
    holders = [asyncio.create_task(_hold(window, [], n, release)) for n in range(3)]
    await asyncio.sleep(0)

    async with window.slot() as slot:
        started = asyncio.get_running_loop().time()
        assert await slot.on_refused(None) is True  # the hook the client calls on a 429
        waited = asyncio.get_running_loop().time() - started
        # The server holds 3, so do we; this job came back in as the one probe beyond that.
        assert window.limit == 3 and window.active == 4 and window.refusals == 1
    assert waited >= PROBE  # never resent sooner than the probe interval (Kling: 1 s)
    release.set()
    await asyncio.gather(*holders)
    assert window.active == 0


async def test_one_waiter_probes_a_full_window_and_an_admitted_probe_grows_it():
    window = AdaptiveWindow(4, probe_interval=PROBE)
    window.limit = 2  # as after a refusal
    release = asyncio.Event()
    entered: list[int] = []
    tasks = [asyncio.create_task(_hold(window, entered, n, release)) for n in range(3)]
    await asyncio.sleep(0.05)
    assert entered == [0, 1]

    await asyncio.sleep(PROBE + 0.05)
    assert entered == [0, 1, 2]  # one probe after the interval, not every waiter at once
    assert window.active == 3 and window.limit == 2

    async with window.slot() as slot:  # the next probe, and the server takes it
        slot.admitted()
        assert window.limit == 4 == window.active  # the limit grows to what the server admitted
    release.set()
    await asyncio.gather(*tasks)


async def test_a_full_window_at_its_maximum_does_not_probe():
    window = AdaptiveWindow(2, probe_interval=PROBE)
    release = asyncio.Event()
    entered: list[int] = []
    tasks = [asyncio.create_task(_hold(window, entered, n, release)) for n in range(3)]
    await asyncio.sleep(3 * PROBE)
    assert entered == [0, 1]  # max_in_flight is a hard bound
    release.set()
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2]


async def test_releasing_after_generation_lets_the_next_job_start_before_the_block_ends():
    window = AdaptiveWindow(1)
    order: list[str] = []

    async def job(name: str) -> None:
        async with window.slot() as slot:
            order.append(f"{name} runs")
            slot.release()  # the server is done; the download still goes on
            await asyncio.sleep(0.05)
            order.append(f"{name} stored")

    await asyncio.gather(job("a"), job("b"))
    assert order.index("b runs") < order.index("a stored")
    assert window.active == 0


async def test_the_hook_declines_once_released_and_after_patience():
    window = AdaptiveWindow(2, probe_interval=0.01, patience=0.05)
    async with window.slot() as slot:
        assert await slot.on_refused(None) is True
        await asyncio.sleep(0.06)
        assert await slot.on_refused(None) is False  # refused too long: the client's policy decides
    async with window.slot() as slot:
        slot.release()
        assert await slot.on_refused(None) is False  # no slot held: the client's policy decides


async def test_outside_a_window_patience_waits_between_tries_then_declines():
    patience = Patience(seconds=0.3, probe_interval=0.05, max_wait=0.1)
    started = asyncio.get_running_loop().time()
    gaps = []
    while await patience.on_refused(None):
        now = asyncio.get_running_loop().time()
        gaps.append(now - started)
        started = now
    assert len(gaps) >= 2 and all(0.05 <= gap < 0.2 for gap in gaps)  # never sooner than a probe


async def test_patience_honours_the_servers_retry_after():
    patience = Patience(seconds=5, probe_interval=0.01, max_wait=0.02)
    started = asyncio.get_running_loop().time()
    assert await patience.on_refused(0.15) is True
    assert asyncio.get_running_loop().time() - started >= 0.15


def test_max_in_flight_must_be_positive():
    with pytest.raises(ValueError, match="max_in_flight: must be at least 1"):
        AdaptiveWindow(0)


@respx.mock
async def test_a_refusal_handled_by_the_hook_costs_no_retry_attempt():
    route = respx.post("https://api.test/v1/videos").mock(
        side_effect=[httpx.Response(429, json={"error": {"message": "busy"}}, headers={"Retry-After": "2"})] * 4
        + [httpx.Response(200, json={"id": "task_1", "status": "queued"})]
    )
    seen: list[float | None] = []

    async def hook(retry_after: float | None) -> bool:
        seen.append(retry_after)
        return True

    async with CometClient("https://api.test", "sk-x", retry=RetryPolicy(attempts=2)) as client:
        answer = await client.create("/v1/videos", form={"prompt": "p"}, on_refused=hook)

    assert answer.body["id"] == "task_1" and route.call_count == 5
    assert seen == [2.0] * 4  # the server's Retry-After reaches the window


async def test_a_create_held_in_the_window_holds_task_runs_back_no_longer_than_the_cap(monkeypatch):
    monkeypatch.setattr(_CreatesFirst, "MAX_HOLD_SECONDS", 0.3)
    creates, release = _CreatesFirst(), asyncio.Event()

    async def send() -> None:
        async with creates.sending():
            await release.wait()

    sender = asyncio.create_task(send())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await creates.settled()
    held = loop.time() - started
    release.set()
    await sender
    started = loop.time()
    await creates.settled()

    assert 0.25 <= held < 2.0
    assert loop.time() - started < 0.1  # nothing is being sent: no wait
