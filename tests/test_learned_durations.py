"""Learned durations: jobs without progress are waited on by how long their kind took before."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.settings import PREFECT_HOME

from prefect_comet import CometClient, KlingOmniVideoRequest
from prefect_comet.api.kling import KlingProvider, _job_from_data
from prefect_comet.api.omni import _job_from_task
from prefect_comet.models import VideoJob, VideoStatus
from prefect_comet.steps import learned_durations as _durations
from prefect_comet.steps import poll_cadence, waiting
from prefect_comet.steps.poll_cadence import PollPolicy
from prefect_comet.steps.waiting import poll_until_terminal
from tests.conftest import API_KEY

EPOCH = 1_722_769_557.0  # the fake clock's wall time at monotonic 0
KLING_REQUEST = {"prompt": "A paper boat", "duration": "5", "mode": "pro", "aspect_ratio": "16:9", "sound": "off"}


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(EPOCH + seconds, tz=UTC)


def _kling(model: str = "kling-video-o1", **request: str) -> VideoJob:
    return VideoJob(provider="kling", task_id="t1", model=model, request={**KLING_REQUEST, **request})


# -- the memory -------------------------------------------------------------------------------
def test_the_typical_duration_is_the_median_of_recent_jobs():
    job = _kling()
    assert _durations.typical(job) is None
    for seconds in (100, 300, 120):
        _durations.remember(job, seconds)
    assert _durations.typical(job) == 120
    _durations.remember(job, 130)
    assert _durations.typical(job) == 125
    for _ in range(20):  # only the last 20 count
        _durations.remember(job, 60)
    assert _durations.typical(job) == 60


def test_non_positive_durations_are_ignored():
    _durations.remember(_kling(), 0)
    _durations.remember(_kling(), -3)
    assert _durations.typical(_kling()) is None


def test_kinds_are_kept_apart():
    _durations.remember(_kling(), 100)
    assert _durations.typical(_kling(prompt="Another prompt entirely")) == 100  # the prompt is no part of it
    assert _durations.typical(_kling(duration="10")) is None
    assert _durations.typical(_kling(mode="std")) is None
    assert _durations.typical(_kling(aspect_ratio="9:16")) is None
    assert _durations.typical(_kling(model="kling-v3-omni")) is None
    omni = {"model": "omni-fast", "seconds": "4", "aspect_ratio": "16:9", "resolution": "720p"}
    _durations.remember(VideoJob(provider="omni", task_id="o", model="omni-fast", request=omni), 40)
    assert _durations.typical(VideoJob(provider="omni", task_id="o", model="omni-fast", request={**omni, "seconds": "12"})) is None
    assert _durations.typical(VideoJob(provider="omni", task_id="o2", model="omni-fast", request=omni)) == 40
    assert _durations.typical(_kling()) == 100


def test_the_server_clock_wins_over_the_local_one():
    # Kling native: milliseconds, created_at/updated_at; 95 s on the server, 200 s seen by us.
    kling = _job_from_data(
        {"task_id": "k1", "task_status": "succeed", "created_at": 1722769557708, "updated_at": 1722769652708}
    ).model_copy(update={"model": "kling-video-o1", "request": KLING_REQUEST})
    _durations.remember(kling, local_elapsed=200)
    assert _durations.typical(kling) == pytest.approx(95.0)

    # Omni: seconds, created_at/completed_at.
    omni = _job_from_task({"id": "o1", "status": "completed", "model": "omni-fast", "created_at": 1722769557,
                           "completed_at": 1722769617})
    _durations.remember(omni, local_elapsed=200)
    assert _durations.typical(omni) == 60


def test_the_local_elapsed_time_is_the_fallback():
    without_times = _kling()
    _durations.remember(without_times, local_elapsed=42)
    assert _durations.typical(without_times) == 42

    same_stamp = _kling(duration="10").model_copy(update={"created_at": _at(0), "updated_at": _at(0)})
    _durations.remember(same_stamp, local_elapsed=7)  # a zero server duration says nothing
    assert _durations.typical(same_stamp) == 7

    # A created_at of -1 (1969) beside a real completion time is an odd clock, not a 56-year render.
    odd_clock = _kling(mode="std").model_copy(
        update={"created_at": datetime.fromtimestamp(-1, tz=UTC), "updated_at": _at(90)}
    )
    _durations.remember(odd_clock, local_elapsed=88)
    assert _durations.typical(odd_clock) == 88


# -- the wait, on a fake clock -----------------------------------------------------------------
class _FakeClock:
    """`time` and `asyncio.sleep` for the wait: sleeping moves the clock, instantly."""

    def __init__(self, start: float) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class _FakeKling:
    """A Kling job without progress (native shape) that ends at `finish` on the fake clock."""

    def __init__(self, clock: _FakeClock, finish: float, created: float | None, hint: float | None,
                 round_trip: float, progress: bool = False) -> None:
        self.clock, self.finish, self.created, self.hint = clock, finish, created, hint
        self.round_trip, self.progress = round_trip, progress
        self.looks: list[float] = []

    async def retrieve(self, client: object, task_id: str) -> tuple[VideoJob, float | None]:
        self.looks.append(self.clock.now)
        self.clock.now += self.round_trip
        done = self.clock.now >= self.finish
        created = None if self.created is None else _at(self.created)
        job = VideoJob(
            provider="kling", task_id=task_id, raw_status="succeed" if done else "processing",
            status=VideoStatus.SUCCEEDED if done else VideoStatus.RUNNING,
            created_at=created, updated_at=_at(self.finish) if done and created else created,
            progress=int(99 * min(self.clock.now / self.finish, 1)) if self.progress else None,
        )
        return job, self.hint


async def _follow(
    monkeypatch: pytest.MonkeyPatch,
    finish: float,
    *,
    start: float = 0.0,
    created: float | None = 0.0,
    hint: float | None = None,
    round_trip: float = 0.0,
    progress: bool = False,
) -> _FakeKling:
    """Wait (default policy: 2 s growing x1.5 to 15 s) for a job that ends at `finish`."""
    clock = _FakeClock(start)
    server = _FakeKling(clock, finish, created, hint, round_trip, progress)
    monkeypatch.setattr(waiting, "provider_for", lambda job: server)
    monkeypatch.setattr(waiting, "time", clock)
    monkeypatch.setattr(poll_cadence, "time", clock)
    monkeypatch.setattr(waiting, "asyncio", SimpleNamespace(sleep=clock.sleep))
    job = _kling().model_copy(update={"created_at": None if created is None else _at(created)})
    done = await poll_until_terminal(None, job, timeout_seconds=3600)  # type: ignore[arg-type]
    assert done.status is VideoStatus.SUCCEEDED
    return server


def _gaps(looks: list[float]) -> list[float]:
    return [round(later - earlier, 3) for earlier, later in zip(looks, looks[1:])]


async def test_without_a_learned_duration_the_interval_just_grows(monkeypatch):
    server = await _follow(monkeypatch, finish=120)

    gaps = _gaps(server.looks)
    assert gaps == sorted(gaps) and gaps[0] == 2 and gaps[-1] == 15
    assert server.looks[-1] - 120 > 5  # seen late: the reason to learn
    assert _durations.typical(_kling()) == 120  # learned on the server's clock, not the 131 s we saw


async def test_a_learned_duration_polls_sparsely_early_and_densely_near_the_end(monkeypatch):
    _durations.remember(_kling(), 120)

    server = await _follow(monkeypatch, finish=120)

    gaps = _gaps(server.looks)
    assert server.looks[-1] - 120 <= 2  # seen within one short interval of the end
    assert len(server.looks) <= 15
    assert gaps[:5] == [15] * 5  # far from the end: the largest interval
    assert 0 < server.looks[-1] - 120 <= poll_cadence.END_MARGIN_SECONDS  # then just after the end


@pytest.mark.parametrize("finish", [10, 30, 120])
async def test_rising_progress_puts_a_look_within_a_second_of_the_end(monkeypatch, finish):
    server = await _follow(monkeypatch, finish=finish, progress=True, round_trip=0.05)

    assert server.looks[-1] - finish <= 1.0  # the plain 2 s poll: 1 s on average, 2 s at worst
    assert len(server.looks) <= 15  # the plain 2 s poll: finish / 2


async def test_a_late_job_is_seen_soon_with_few_requests(monkeypatch):
    _durations.remember(_kling(), 120)

    server = await _follow(monkeypatch, finish=150)  # 30 s later than usual

    gaps = _gaps(server.looks)
    assert server.looks[-1] - 150 <= 0.25 * 30  # a quarter of the lateness at most
    assert len(server.looks) <= 25
    overdue = [gap for look, gap in zip(server.looks, gaps) if look > 120]
    assert overdue == sorted(overdue) and overdue[-1] > 2  # backs off as the lateness grows


async def test_a_resumed_job_counts_its_age_from_the_server_creation_time(monkeypatch):
    _durations.remember(_kling(), 120)

    server = await _follow(monkeypatch, finish=120, start=100, created=0)  # first look 100 s in

    assert server.looks[-1] - 120 <= 2
    assert _gaps(server.looks)[0] == 10  # half of the 20 s left, not of 120


async def test_a_creation_time_in_the_future_falls_back_to_our_own_count(monkeypatch):
    _durations.remember(_kling(), 120)

    server = await _follow(monkeypatch, finish=120, created=500)  # the server's clock runs ahead

    assert server.looks[-1] - 120 <= 2
    assert _gaps(server.looks)[0] == 15


async def test_a_server_hint_is_the_shortest_wait_and_a_wrong_estimate_costs_at_most_the_first_interval(
    monkeypatch,
):
    _durations.remember(_kling(), 120)  # far off: the job ends at 10 s

    server = await _follow(monkeypatch, finish=10, hint=1.0)

    assert set(_gaps(server.looks)) == {2.0}  # never under the hint, never over the first interval


async def test_near_the_end_a_hint_does_not_make_the_look_early(monkeypatch):
    server = await _follow(monkeypatch, finish=30, hint=0.5, progress=True, round_trip=0.05)

    assert min(_gaps(server.looks)) >= 0.5
    assert server.looks[-1] - 30 <= 1.0
    assert len(server.looks) <= 20  # a look every 0.5 s would be 60


async def test_a_server_hint_of_hours_is_capped_at_the_longest_interval(monkeypatch):
    server = await _follow(monkeypatch, finish=40, hint=7200.0)

    assert set(_gaps(server.looks)) == {15.0}  # the default max_interval, not two hours


async def test_a_job_done_at_the_first_look_teaches_nothing_without_server_times(monkeypatch):
    await _follow(monkeypatch, finish=0, created=None, round_trip=0.3)
    assert _durations.typical(_kling()) is None  # 0.3 s would be the request, not the render

    await _follow(monkeypatch, finish=5, created=None, round_trip=0.3)
    assert _durations.typical(_kling()) == pytest.approx(5.9)  # seen running: first look to the answer "done"


# -- the file under PREFECT_HOME ----------------------------------------------------------------
def test_a_new_process_starts_with_what_earlier_ones_learned():
    # A deployment's next run is a new process: it must not wait as if it knew nothing.
    _durations.remember(_kling(), 120)
    _durations.remember(_kling(duration="10"), 200)

    script = (
        "from prefect_comet.steps import learned_durations as _durations\n"
        "from prefect_comet.models import VideoJob\n"
        f"request = {KLING_REQUEST!r}\n"
        "job = VideoJob(provider='kling', task_id='t9', model='kling-video-o1', request=request)\n"
        "print(_durations.typical(job), _durations.typical(job.model_copy(update={'request': {**request, 'duration': '10'}})))\n"
    )
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)

    assert answer.stdout.split() == ["120.0", "200.0"]


def test_a_damaged_file_is_ignored_and_replaced(caplog):
    path = Path(PREFECT_HOME.value()) / _durations.FILE_NAME
    path.write_text("{not json")
    _durations._loaded_from = None  # as in a process that starts now

    assert _durations.typical(_kling()) is None
    assert "Ignoring the learned durations" in caplog.text
    _durations.remember(_kling(), 90)
    assert json.loads(path.read_text())["kinds"] == {_durations._kind_of(_kling()): [90.0]}


def test_a_batch_writes_a_kind_once_then_at_most_every_30_s(monkeypatch):
    path = Path(PREFECT_HOME.value()) / _durations.FILE_NAME
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(_durations.time, "monotonic", lambda: clock.now)

    def on_disk() -> list[float]:
        return json.loads(path.read_text())["kinds"][_durations._kind_of(_kling())]

    _durations.remember(_kling(), 100)  # the first of its kind is written at once
    _durations.remember(_kling(), 110)
    assert on_disk() == [100.0]
    clock.now += 30
    _durations.remember(_kling(), 120)
    assert on_disk() == [100.0, 110.0, 120.0]


def test_kinds_learned_by_another_process_are_kept():
    path = Path(PREFECT_HOME.value()) / _durations.FILE_NAME
    _durations.remember(_kling(), 100)
    other = json.loads(path.read_text())
    other["kinds"]["another kind"] = [42.0]
    path.write_text(json.dumps(other))

    _durations.remember(_kling(duration="10"), 150)  # a new kind: written at once

    assert json.loads(path.read_text())["kinds"]["another kind"] == [42.0]


# -- against the emulator ----------------------------------------------------------------------
async def test_a_finished_kling_job_teaches_its_duration(emulator):
    request = KlingOmniVideoRequest(prompt="A paper boat", aspect_ratio="16:9")
    async with CometClient(emulator.base_url, API_KEY) as client:
        started = time.monotonic()
        job = await KlingProvider().create(client, request, idempotency_key=None)
        assert _durations.typical(job) is None
        await poll_until_terminal(
            client, job, timeout_seconds=30, policy=PollPolicy(initial_interval=0.05, max_interval=0.2)
        )
        elapsed = time.monotonic() - started

    learned = _durations.typical(job)
    assert learned is not None and emulator.settings.latency - 0.01 <= learned <= elapsed
