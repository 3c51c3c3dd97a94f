"""Kling callbacks: the emulator POSTs the task object to `callback_url` on each status change."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from emulator_helpers import KEY, KLING, kling_body, kling_done, omni_done, omni_form

from prefect_comet.testing.emulator import CallbackDelivery, CometEmulator, EmulatedJob
from prefect_comet.testing.emulator.callbacks import CallbackSender
from prefect_comet.testing.emulator.state import EmulatorState, Settings

LATENCY = 0.5
ORDER = ["submitted", "processing", "succeed"]
RANK = {"submitted": 0, "processing": 1, "succeed": 2, "failed": 2}
WRAPPED = {"SUBMITTED": "submitted", "IN_PROGRESS": "processing", "SUCCESS": "succeed", "FAILURE": "failed"}
SIGNED = re.compile(r"\?expires=\d+&signature=[0-9a-f]+")


@dataclass
class Post:
    """One callback as the receiver got it."""

    at: float
    path: str
    body: dict[str, Any]
    seen: dict[str, Any] | None = None  # the query's `data` fetched while handling it


@dataclass
class Receiver:
    """A tiny HTTP server on loopback recording every POST; `on_post` may look at each body."""

    on_post: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    posts: list[Post] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                seen = receiver.on_post(body) if receiver.on_post else None
                receiver.posts.append(Post(at, self.path, body, seen))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.close()


@contextlib.contextmanager
def running(**options: Any) -> Iterator[tuple[CometEmulator, httpx.Client]]:
    with CometEmulator(api_key=KEY, latency=LATENCY, **options) as emu:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as client:
            yield emu, client


def create(client: httpx.Client, **fields: Any) -> str:
    response = client.post(KLING, json=kling_body(**fields))
    assert response.status_code == 200, response.text
    return response.json()["data"]["task_id"]


def wait_until(ready: Callable[[], bool], timeout: float = 10, why: Callable[[], object] = str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out: {why()}"
        time.sleep(0.02)


def status_of(data: dict[str, Any]) -> str:
    """The Kling status a `data` object reports, native or wrapped."""
    return data["task_status"] if "task_status" in data else WRAPPED[data["status"]]


def unsigned(data: dict[str, Any]) -> str:
    """`data` as JSON without what changes from one query to the next: the URL signatures
    and a running job's wrapped `progress`."""
    return SIGNED.sub("", json.dumps({k: v for k, v in data.items() if k != "progress"}, sort_keys=True))


def boundaries(emu: CometEmulator, task_id: str) -> dict[str, float]:
    """When a query starts reporting each status (the emulator's timeline)."""
    job = emu.jobs[task_id]
    due = job.created_at + LATENCY
    return {
        "submitted": job.created_at,
        "processing": job.created_at + 0.1 * LATENCY,
        "succeed": max(due, job.ready_at or due),
        "failed": max(due, job.ready_at or due),
    }


@pytest.mark.parametrize(
    ("wrapped", "prompt", "last"),
    [(False, "A paper boat", "succeed"), (True, "A paper boat", "succeed"), (False, "A boat [fail]", "failed")],
)
def test_one_callback_per_status_change_carrying_what_a_query_answers(
    receiver: Receiver, wrapped: bool, prompt: str, last: str
) -> None:
    with running(kling_wrapped=wrapped) as (emu, client):
        receiver.on_post = lambda body: client.get(f"{KLING}/{body['task_id']}").json()["data"]
        task_id = create(client, prompt=prompt, external_task_id="ext-1", callback_url=f"{receiver.url}/hook?token=t1")
        wait_until(
            lambda: len(receiver.posts) >= 3 and len(emu.callbacks_sent) >= 3,
            why=lambda: ([status_of(p.body) for p in receiver.posts], emu.callbacks_sent),
        )
        time.sleep(LATENCY / 2)  # nothing more comes
        sent = emu.callbacks_sent
        edges = boundaries(emu, task_id)
    posts = receiver.posts
    assert [status_of(post.body) for post in posts] == ["submitted", "processing", last]
    assert {post.path for post in posts} == {"/hook?token=t1"}
    for post in posts:
        native = post.body["data"]["data"] if wrapped else post.body
        assert (post.body["task_id"], native["task_id"]) == (task_id, task_id)
        assert native["task_info"] == {"external_task_id": "ext-1"}
        assert post.seen is not None
        assert RANK[status_of(post.seen)] >= RANK[status_of(post.body)]  # a query already said so
        if status_of(post.seen) == status_of(post.body):
            assert unsigned(post.seen) == unsigned(post.body)
    assert [unsigned(post.seen) for post in posts[1:] if post.seen] == [unsigned(post.body) for post in posts[1:]]
    final = posts[-1].body["data"]["data"] if wrapped else posts[-1].body
    if last == "succeed":
        [video] = final["task_result"]["videos"]
        assert video["url"].startswith(emu.base_url) and video["duration"] == "5.0"
    else:
        assert "fail" in final["task_status_msg"].lower()
    assert [(d.task_id, d.task_status, d.http_status, d.dropped) for d in sent] == [
        (task_id, status, 200, False) for status in ("submitted", "processing", last)
    ]
    assert all(isinstance(d, CallbackDelivery) and d.time >= edges[d.task_status] for d in sent)
    assert all(post.at >= edges[status_of(post.body)] for post in posts)


def test_each_delivery_is_repeated(receiver: Receiver) -> None:
    with running(callback_repeats=3) as (emu, client):
        task_id = create(client, callback_url=f"{receiver.url}/hook")
        kling_done(client, task_id)
        wait_until(lambda: len(receiver.posts) >= 9)
        time.sleep(LATENCY / 2)
    assert [post.body["task_status"] for post in receiver.posts] == [s for s in ORDER for _ in range(3)]
    assert len(emu.callbacks_sent) == 9


def test_reordered_deliveries_send_a_later_status_first_but_never_early(receiver: Receiver) -> None:
    with running(callback_reorder=True) as (emu, client):
        task_id = create(client, callback_url=f"{receiver.url}/hook")
        wait_until(lambda: len(receiver.posts) >= 3)
        edges = boundaries(emu, task_id)
    statuses = [post.body["task_status"] for post in receiver.posts]
    assert statuses == ["succeed", "processing", "submitted"]
    assert all(post.at >= edges["succeed"] for post in receiver.posts)  # held until final
    assert [d.task_status for d in emu.callbacks_sent] == statuses


def test_callback_delay_postpones_every_delivery(receiver: Receiver) -> None:
    with running(callback_delay=0.3) as (emu, client):
        task_id = create(client, callback_url=f"{receiver.url}/hook")
        wait_until(lambda: len(receiver.posts) >= 3)
        edges = boundaries(emu, task_id)
    assert [post.body["task_status"] for post in receiver.posts] == ORDER
    assert all(post.at >= edges[post.body["task_status"]] + 0.3 for post in receiver.posts)


def test_lose_statuses_drops_those_deliveries(receiver: Receiver) -> None:
    with running(callback_lose_statuses={"succeed"}) as (emu, client):
        task_id = create(client, callback_url=f"{receiver.url}/hook")
        kling_done(client, task_id)
        wait_until(lambda: len(emu.callbacks_sent) >= 3)
        time.sleep(0.1)
    assert [post.body["task_status"] for post in receiver.posts] == ["submitted", "processing"]
    assert [(d.task_status, d.http_status, d.dropped) for d in emu.callbacks_sent] == [
        ("submitted", 200, False),
        ("processing", 200, False),
        ("succeed", None, True),
    ]


def test_loss_one_drops_everything(receiver: Receiver) -> None:
    with running(callback_loss=1.0) as (emu, client):
        task_id = create(client, callback_url=f"{receiver.url}/hook")
        kling_done(client, task_id)
        wait_until(lambda: len(emu.callbacks_sent) >= 3)
        time.sleep(0.1)
    assert receiver.posts == []
    assert [(d.task_status, d.dropped) for d in emu.callbacks_sent] == [(s, True) for s in ORDER]


def test_random_loss_is_reproducible_with_a_seed(receiver: Receiver) -> None:
    patterns = []
    for _ in range(2):
        with running(callback_loss=0.5, callback_repeats=8, callback_seed=7) as (emu, client):
            create(client, callback_url=f"{receiver.url}/hook")
            wait_until(lambda emu=emu: len(emu.callbacks_sent) >= 24)
            patterns.append([(d.task_status, d.dropped) for d in emu.callbacks_sent])
    assert patterns[0] == patterns[1]
    dropped = [lost for _, lost in patterns[0]]
    assert any(dropped) and not all(dropped)
    assert len(receiver.posts) == 2 * dropped.count(False)  # both runs posted the same


def test_a_receiver_that_is_down_breaks_nothing() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there once closed
    with running() as (emu, client):
        task_id = create(client, callback_url=f"http://127.0.0.1:{closed}/hook")
        assert kling_done(client, task_id)["data"]["task_status"] == "succeed"
        assert create(client) and client.get(f"{KLING}/{task_id}").status_code == 200
        wait_until(lambda: len(emu.callbacks_sent) >= 3)
    assert [(d.task_status, d.http_status, d.dropped) for d in emu.callbacks_sent] == [
        (s, None, False) for s in ORDER
    ]


def test_a_hanging_receiver_slows_no_route_and_stop_cancels_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    accepted: list[socket.socket] = []
    done = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    port = listener.getsockname()[1]

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])  # read nothing, answer nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    caplog.set_level(logging.DEBUG, logger="asyncio")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with running() as (emu, client):
                task_id = create(client, callback_url=f"http://127.0.0.1:{port}/hook")
                wait_until(lambda: bool(accepted))  # a delivery is in flight, waiting for an answer
                started = time.monotonic()
                assert client.get(f"{KLING}/{task_id}").status_code == 200
                assert create(client)
                assert time.monotonic() - started < 0.5
                assert kling_done(client, task_id)["data"]["task_status"] == "succeed"
                stopping = time.monotonic()
            assert time.monotonic() - stopping < 2  # no waiting out the 5 s timeout
            assert emu.callbacks_sent == []  # cancelled, not answered
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, (ResourceWarning, RuntimeWarning))]
        assert not [r for r in caplog.records if "destroyed" in r.getMessage() or "Unclosed" in r.getMessage()]
    finally:
        done.set()
        thread.join(5)
        listener.close()
        for conn in accepted:
            conn.close()


def test_omni_jobs_and_kling_jobs_without_callback_url_send_nothing(receiver: Receiver) -> None:
    with running() as (emu, client):
        kling_id = create(client, callback_url=f"{receiver.url}/hook")
        quiet_id = create(client)
        omni_id = client.post("/v1/videos", files=omni_form()).json()["id"]
        omni_done(client, omni_id)
        kling_done(client, quiet_id)
        kling_done(client, kling_id)
        wait_until(lambda: len(receiver.posts) >= 3)
        time.sleep(LATENCY / 2)
    assert {post.body["task_id"] for post in receiver.posts} == {kling_id}
    assert {d.task_id for d in emu.callbacks_sent} == {kling_id}


@pytest.mark.parametrize(
    "options",
    [{"callback_repeats": 0}, {"callback_loss": 1.5}, {"callback_delay": -1}, {"callback_lose_statuses": {"done"}}],
)
def test_bad_callback_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="callback_"):
        CometEmulator(**options)


async def test_a_status_the_watcher_looked_too_late_for_is_still_sent(receiver: Receiver, tmp_path: Any) -> None:
    # A job created long ago (as if the loop had been busy): its first look finds it failed already.
    state = EmulatorState(Settings(latency=LATENCY), str(tmp_path))
    sender = CallbackSender(state)
    job = EmulatedJob(
        task_id="42", provider="kling", request={"callback_url": f"{receiver.url}/hook"}, created_at=time.time() - 10,
        idempotency_key=None, width=1920, height=1080, duration_seconds=5.0, outcome="fail",
    )  # fmt: skip
    try:
        state.add_job(job)
        deadline = time.monotonic() + 10
        while len(sender.sent) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await sender.close()
        state.close()
    assert [post.body["task_status"] for post in receiver.posts] == ["submitted", "processing", "failed"]
    assert receiver.posts[0].body["updated_at"] == int(job.created_at * 1000)  # as create answered it
