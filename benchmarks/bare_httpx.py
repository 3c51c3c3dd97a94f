"""The practical limit: bare asyncio + httpx doing a batch's work, and the sequential sample loop.

No Prefect, no prefect_comet: one `httpx.AsyncClient`, one coroutine per job, at most
`max_in_flight` jobs at once. Each job does what the batch flow does for an Omni request:
create (multipart `POST /v1/videos`), poll `GET /v1/videos/{id}`, stream
`GET /v1/videos/{id}/content` to a local `.partial` file while hashing it with SHA-256, then
rename it into place. How it polls is `run_bare(..., poll=...)`:

- `"policy"` (the default, B1's policy reference): the same poll policy as
  `prefect_comet.steps.poll_cadence.PollPolicy` (first interval 2 s, x1.5 per look up to 15 s;
  once progress rises, half the estimated remaining time within those bounds;
  `openai-poll-after-ms` wins).
- `"plain"` (B1's plain reference, issue 17): what a user would write: a fixed 2 s
  (`plain_interval`) between looks, whatever the server hints, no back-off, no progress estimate.

`run_sequential` is the seed page's sample in a loop: create, poll, download, one job after
another (the poll policy, a blocking `httpx.Client`).

Standalone: `python benchmarks/bare_httpx.py --n 100 --latency 10 [--poll plain] [--hint-ms 500]`
starts its own emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

FORM = {"model": "omni-fast", "seconds": "4", "aspect_ratio": "16:9", "resolution": "720p"}
TERMINAL_OK = {"completed", "succeeded", "success"}
TERMINAL_FAILED = {"failed", "error", "failure"}
PLAIN_INTERVAL = 2.0  # seconds between looks of the plain script
Poll = Literal["policy", "plain"]


@dataclass(frozen=True)
class Policy:
    """The same cadence as prefect_comet's PollPolicy defaults."""

    initial: float = 2.0
    maximum: float = 15.0
    backoff: float = 1.5


@dataclass(frozen=True)
class Result:
    task_id: str
    path: str
    sha256: str
    size: int
    polls: int


class _Estimate:
    """Seconds to 100 % from the progress rate seen so far (same rule as the library)."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None
        self.latest: tuple[float, int] | None = None

    def observe(self, now: float, progress: int | None) -> None:
        if progress is None or progress <= 0:
            return
        if self.first is None:
            self.first = (now, progress)
        self.latest = (now, progress)

    def next_wait(self, now: float, interval: float, policy: Policy) -> float:
        if self.first is None or self.latest is None:
            return interval
        (t0, p0), (t1, p1) = self.first, self.latest
        if p1 <= p0 or t1 <= t0:
            return interval
        remaining = max(0.0, (100 - p1) / ((p1 - p0) / (t1 - t0)) - (now - t1))
        return min(max(remaining / 2, policy.initial), policy.maximum)


def _progress(task: dict) -> int | None:
    value = task.get("progress")
    return int(value) if isinstance(value, (int, float)) else None


def _hint(response: httpx.Response) -> float | None:
    hint = response.headers.get("openai-poll-after-ms")
    return float(hint) / 1000 if hint and hint.isdigit() else None


def _client_kwargs(api_key: str, base_url: str) -> dict:
    return {
        "base_url": base_url,
        "headers": {"Authorization": f"Bearer {api_key}"},
        "timeout": httpx.Timeout(60.0, connect=10.0),
        "limits": httpx.Limits(max_connections=32, max_keepalive_connections=32),  # as CometClient
    }


async def _one_async(
    client: httpx.AsyncClient,
    prompt: str,
    destination: Path,
    policy: Policy,
    poll: Poll = "policy",
    plain_interval: float = PLAIN_INTERVAL,
) -> Result:
    files = {name: (None, value) for name, value in {**FORM, "prompt": prompt}.items()}
    response = await client.post("/v1/videos", files=files, headers={"Idempotency-Key": uuid.uuid4().hex})
    response.raise_for_status()
    task_id = response.json()["id"]
    interval, estimate, polls = policy.initial, _Estimate(), 0
    while True:
        response = await client.get(f"/v1/videos/{task_id}")
        polls += 1
        response.raise_for_status()
        task = response.json()
        status = str(task.get("status", "")).lower()
        now = time.monotonic()
        if poll == "policy":
            estimate.observe(now, _progress(task))
        if status in TERMINAL_OK:
            break
        if status in TERMINAL_FAILED:
            raise RuntimeError(f"{task_id} failed: {task.get('error')}")
        if poll == "plain":  # what a user writes: look every 2 s, no hint, no back-off, no estimate
            await asyncio.sleep(plain_interval)
            continue
        hint = _hint(response)
        await asyncio.sleep(hint if hint is not None else estimate.next_wait(now, interval, policy))
        interval = min(interval * policy.backoff, policy.maximum)
    final = destination / f"{task_id}.mp4"
    partial = destination / f".{task_id}.mp4.partial"
    hasher, size = hashlib.sha256(), 0
    async with client.stream("GET", f"/v1/videos/{task_id}/content", headers={"Accept-Encoding": "identity"}) as body:
        body.raise_for_status()
        with open(partial, "wb") as file:
            async for chunk in body.aiter_bytes():
                hasher.update(chunk)
                file.write(chunk)
                size += len(chunk)
    os.replace(partial, final)
    return Result(task_id, str(final), hasher.hexdigest(), size, polls)


async def run_bare(
    base_url: str,
    api_key: str,
    n: int,
    destination: str | Path,
    *,
    max_in_flight: int,
    policy: Policy = Policy(),
    poll: Poll = "policy",
    plain_interval: float = PLAIN_INTERVAL,
) -> list[Result]:
    """N jobs with at most `max_in_flight` at once; every job's Result.

    `poll="policy"` polls with `policy` (as the library does); `poll="plain"` looks every
    `plain_interval` seconds and ignores any `openai-poll-after-ms` hint.
    """
    if poll not in ("policy", "plain"):
        raise ValueError(f"poll must be 'policy' or 'plain', not {poll!r}")
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    gate = asyncio.Semaphore(max_in_flight)
    async with httpx.AsyncClient(**_client_kwargs(api_key, base_url)) as client:

        async def one(index: int) -> Result:
            async with gate:
                return await _one_async(client, f"bench clip {index}", destination, policy, poll, plain_interval)

        return list(await asyncio.gather(*(one(index) for index in range(n))))


def run_sequential(
    base_url: str, api_key: str, n: int, destination: str | Path, *, policy: Policy = Policy()
) -> list[Result]:
    """The seed sample in a loop: each job created, waited for and downloaded before the next."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    results = []
    with httpx.Client(**_client_kwargs(api_key, base_url)) as client:
        for index in range(n):
            files = {name: (None, value) for name, value in {**FORM, "prompt": f"seq clip {index}"}.items()}
            response = client.post("/v1/videos", files=files)
            response.raise_for_status()
            task_id = response.json()["id"]
            interval, estimate, polls = policy.initial, _Estimate(), 0
            while True:
                response = client.get(f"/v1/videos/{task_id}")
                polls += 1
                response.raise_for_status()
                task = response.json()
                status = str(task.get("status", "")).lower()
                now = time.monotonic()
                estimate.observe(now, _progress(task))
                if status in TERMINAL_OK:
                    break
                if status in TERMINAL_FAILED:
                    raise RuntimeError(f"{task_id} failed")
                hint = _hint(response)
                time.sleep(hint if hint is not None else estimate.next_wait(now, interval, policy))
                interval = min(interval * policy.backoff, policy.maximum)
            final = destination / f"{task_id}.mp4"
            hasher, size = hashlib.sha256(), 0
            with client.stream("GET", f"/v1/videos/{task_id}/content") as body, open(final, "wb") as file:
                body.raise_for_status()
                for chunk in body.iter_bytes():
                    hasher.update(chunk)
                    file.write(chunk)
                    size += len(chunk)
            results.append(Result(task_id, str(final), hasher.hexdigest(), size, polls))
    return results


def main() -> None:
    import tempfile

    from _common import API_KEY, EmulatorProcess, own_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--latency", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=None, help="default: N")
    parser.add_argument("--sequential", action="store_true")
    parser.add_argument("--poll", choices=("policy", "plain"), default="policy", help="plain: every 2 s, fixed")
    parser.add_argument("--hint-ms", type=int, default=None, help="the emulator sends openai-poll-after-ms: N")
    args = parser.parse_args()
    with (
        EmulatorProcess(latency=args.latency, fps=1, poll_after_ms=args.hint_ms) as emu,
        tempfile.TemporaryDirectory() as folder,
    ):
        cpu, started = own_cpu(), time.perf_counter()
        if args.sequential:
            results = run_sequential(emu.base_url, API_KEY, args.n, folder)
        else:
            results = asyncio.run(
                run_bare(
                    emu.base_url, API_KEY, args.n, folder,
                    max_in_flight=args.max_in_flight or args.n, poll=args.poll,
                )  # fmt: skip
            )
        wall, cpu = time.perf_counter() - started, own_cpu() - cpu
    polls = sum(r.polls for r in results) / len(results)
    print(f"{len(results)} jobs in {wall:.2f} s; CPU {cpu / len(results) * 1000:.1f} ms/job; {polls:.1f} polls/job")


if __name__ == "__main__":
    main()
