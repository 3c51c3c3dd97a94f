"""Shared helpers of the benchmarks: quiet Prefect, the emulator in a subprocess, CPU and RSS probes.

Import this module before anything imports Prefect: it sets the environment Prefect reads at
import (no analytics, console logging at WARNING; INFO logs still go to the API, as in
production, so their cost is measured).

`python benchmarks/_common.py serve [--latency S] [--fps N] ...` is the emulator subprocess the
benchmarks start: it prints one JSON line with its base URL, then answers `stats` on stdin with
one JSON line (every request, every job) and stops on `quit` or end of input. The `--callback-*`
options are `CometEmulator`'s (Kling callbacks); `stats` also carries each request's Host and
User-Agent headers (`request_headers`, in the order of `requests`) and every callback delivery
(`callbacks`). `--poll-after-ms N` makes every Omni retrieve answer carry `openai-poll-after-ms: N`.
`EmulatorStats.detection_lags()` gives, per job, the seconds from its completion to the first
request for its result file.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A fresh PREFECT_HOME per run, shared with its subprocesses: ledgers and learned durations of
# earlier runs must not change this one.
os.environ["PREFECT_HOME"] = os.environ.get("COMET_BENCH_HOME") or tempfile.mkdtemp(prefix="prefect-comet-bench-")
os.environ["COMET_BENCH_HOME"] = os.environ["PREFECT_HOME"]
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

import argparse
import asyncio
import contextlib
import json
import math
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_KEY = "sk-bench-0000"
HERE = Path(__file__).resolve().parent
_TICK = os.sysconf("SC_CLK_TCK")


# -- the emulator in its own process -------------------------------------------------------
# The emulator's routes that fetch a job's result file: the content route and the signed file URL.
DOWNLOAD_ROUTES = ("omni.content", "files")


@dataclass
class EmulatorStats:
    """What the emulator saw: requests (route, path, unix time) and jobs."""

    requests: list[tuple[str | None, str, float]]
    jobs: dict[str, dict[str, Any]]
    cpu_seconds: float
    # The Host and User-Agent headers of each request, in the order of `requests`.
    request_headers: list[dict[str, str]] = field(default_factory=list)
    # Every Kling callback delivery: (unix time, task id, Kling status, receiver's HTTP status, dropped).
    callbacks: list[tuple[float, str, str, int | None, bool]] = field(default_factory=list)

    def routes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for route, _, _ in self.requests:
            counts[str(route)] = counts.get(str(route), 0) + 1
        return counts

    def complete_at(self, task_id: str) -> float:
        """When the job became visible as completed: its due time, or later if still rendering."""
        job = self.jobs[task_id]
        return max(job["due"], job["ready_at"] or job["due"])

    def per_job(self, route: str) -> float:
        """Requests to `route` (e.g. `omni.retrieve`) per job the emulator created; NaN without jobs."""
        return self.routes().get(route, 0) / len(self.jobs) if self.jobs else float("nan")

    def first_request_at(self, routes: tuple[str, ...]) -> dict[str, float]:
        """task id -> unix time of the first request to one of `routes` naming that task."""
        first: dict[str, float] = {}
        for route, path, at in self.requests:
            if route in routes and (task_id := task_id_of(route, path)) is not None:
                first[task_id] = min(at, first.get(task_id, at))
        return first

    def detection_lags(self, routes: tuple[str, ...] = DOWNLOAD_ROUTES) -> list[float]:
        """Per job that was downloaded: seconds from `complete_at` to its first request to one of
        `routes` (by default the content route or the signed file URL)."""
        first = self.first_request_at(routes)
        return [first[task_id] - self.complete_at(task_id) for task_id in self.jobs if task_id in first]

    def seen_lags(self, route: str = "omni.retrieve") -> list[float]:
        """Per job: seconds from `complete_at` to the first `route` request at or after it (the
        status look that could see it completed); jobs never looked at after completion are left out."""
        ready = {task_id: self.complete_at(task_id) for task_id in self.jobs}
        seen: dict[str, float] = {}
        for name, path, at in self.requests:
            task_id = task_id_of(name, path) if name == route else None
            if task_id in ready and at >= ready[task_id] and task_id not in seen:
                seen[task_id] = at - ready[task_id]
        return list(seen.values())


def task_id_of(route: str | None, path: str) -> str | None:
    """The task id a request's path names: `/v1/videos/{id}[/content]`, `/files/{id}/{name}.mp4`,
    `/kling/v1/videos/omni-video/{id}`; None for other routes."""
    parts = path.split("/")
    if route in ("omni.retrieve", "omni.content") and len(parts) >= 4:
        return parts[3]
    if route == "files" and len(parts) >= 3:
        return parts[2]
    if route == "kling.query" and len(parts) >= 6:
        return parts[5]
    return None


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0-100) of `values`; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


class EmulatorProcess:
    """A `CometEmulator` in a child process, so its CPU is not the benchmark process's.

    Example:
        ```python
        with EmulatorProcess(latency=10, fps=1) as emu:
            print(emu.base_url)
            stats = emu.stats()
        ```
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> EmulatorProcess:
        command = [sys.executable, str(HERE / "_common.py"), "serve", "--api-key", API_KEY]
        for name, value in self.options.items():
            if value is not None:
                command += [f"--{name.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self._process.stdout is not None
        self.base_url = json.loads(self._process.stdout.readline())["base_url"]
        self._cpu_at_start = process_cpu(self._process.pid)
        return self

    def cpu_used(self) -> float:
        """CPU seconds the emulator has used since it was ready (its start-up excluded)."""
        assert self._process is not None
        return process_cpu(self._process.pid) - self._cpu_at_start

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stats(self) -> EmulatorStats:
        assert self._process is not None and self._process.stdin and self._process.stdout
        self._process.stdin.write("stats\n")
        self._process.stdin.flush()
        raw = json.loads(self._process.stdout.readline())
        return EmulatorStats(
            [tuple(r) for r in raw["requests"]], raw["jobs"], process_cpu(self.pid),
            raw.get("request_headers", []), [tuple(c) for c in raw.get("callbacks", [])],
        )  # fmt: skip

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            with contextlib.suppress(Exception):
                assert self._process.stdin is not None
                self._process.stdin.write("quit\n")
                self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


class InProcessEmulator:
    """The same interface over a `CometEmulator` thread in this process (for comparison only:
    its CPU then counts as the benchmark process's, and it competes for the GIL)."""

    pid = None

    def cpu_used(self) -> float:
        return float("nan")

    def __init__(self, **options: Any) -> None:
        from prefect_comet.testing.emulator import CometEmulator

        self._emulator = CometEmulator(api_key=API_KEY, **options)
        self.base_url = ""

    def __enter__(self) -> InProcessEmulator:
        self._emulator.start()
        self.base_url = self._emulator.base_url
        return self

    def stats(self) -> EmulatorStats:
        requests, jobs = _snapshot(self._emulator)
        headers, callbacks = _extras(self._emulator, len(requests))
        return EmulatorStats(requests, jobs, float("nan"), headers, callbacks)

    def __exit__(self, *exc_info: object) -> None:
        self._emulator.stop()


def emulator(in_process: bool = False, **options: Any) -> EmulatorProcess | InProcessEmulator:
    """The emulator the benchmarks use: a subprocess unless `in_process`."""
    return InProcessEmulator(**options) if in_process else EmulatorProcess(**options)


def _snapshot(emulator: Any) -> tuple[list[tuple[str | None, str, float]], dict[str, dict[str, Any]]]:
    requests = [(r.route, r.path, r.time) for r in list(emulator.requests)]
    jobs = {
        job.task_id: {
            "provider": job.provider,
            "created_at": job.created_at,
            "due": job.created_at + emulator.settings.latency,
            "ready_at": job.ready_at,
            "idempotency_key": job.idempotency_key,
        }
        for job in list(emulator.jobs.values())
    }
    return requests, jobs


_KEPT_HEADERS = ("host", "user-agent")


def _extras(emulator: Any, count: int) -> tuple[list[dict[str, str]], list[tuple[float, str, str, int | None, bool]]]:
    """The kept headers of the first `count` requests (those of `_snapshot`) and every callback delivery."""
    headers = [
        {name: r.headers.get(name, "") for name in _KEPT_HEADERS} for r in list(emulator.requests)[:count]
    ]
    callbacks = [(c.time, c.task_id, c.task_status, c.http_status, c.dropped) for c in emulator.callbacks_sent]
    return headers, callbacks


def _serve(argv: list[str]) -> None:
    from prefect_comet.testing.emulator import CometEmulator

    parser = argparse.ArgumentParser()
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--pad-to-bytes", type=int, default=None)
    parser.add_argument("--kling-parallel-limit", type=int, default=None)
    parser.add_argument("--kling-wrapped", default="false", help="true: the gateway's wrapped Kling shape")
    parser.add_argument("--callback-repeats", type=int, default=1)
    parser.add_argument("--callback-reorder", default="false", help="true: latest status first, once final")
    parser.add_argument("--callback-loss", type=float, default=0.0)
    parser.add_argument("--callback-lose-statuses", default="", help="comma-separated Kling statuses")
    parser.add_argument("--callback-delay", type=float, default=0.0)
    parser.add_argument("--callback-seed", type=int, default=0)
    parser.add_argument("--poll-after-ms", type=int, default=None, help="Omni retrieve answers carry this hint")
    args = parser.parse_args(argv)
    emulator = CometEmulator(
        api_key=args.api_key,
        latency=args.latency,
        fps=args.fps,
        pad_to_bytes=args.pad_to_bytes,
        kling_parallel_limit=args.kling_parallel_limit,
        kling_wrapped=args.kling_wrapped == "true",
        callback_repeats=args.callback_repeats,
        callback_reorder=args.callback_reorder == "true",
        callback_loss=args.callback_loss,
        callback_lose_statuses=[status for status in args.callback_lose_statuses.split(",") if status],
        callback_delay=args.callback_delay,
        callback_seed=args.callback_seed,
        poll_after_ms=args.poll_after_ms,
    )
    with emulator:
        print(json.dumps({"base_url": emulator.base_url}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if command == "stats":
                requests, jobs = _snapshot(emulator)
                headers, callbacks = _extras(emulator, len(requests))
                print(
                    json.dumps({"requests": requests, "jobs": jobs, "request_headers": headers, "callbacks": callbacks}),
                    flush=True,
                )


# -- CPU and memory ------------------------------------------------------------------------
def own_cpu() -> float:
    """CPU seconds (user + system, all threads) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds of another process and its reaped children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class RSSPeak:
    """Samples RSS every `interval` seconds in a thread; `growth` is peak minus the start value."""

    interval: float = 0.005
    start: int = 0
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RSSPeak:
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self.samples += 1
            self._stop.wait(self.interval)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


# -- Prefect -------------------------------------------------------------------------------
@contextlib.contextmanager
def prefect_server() -> Iterator[int | None]:
    """A temporary Prefect server (SQLite, subprocess) for the block; yields its pid."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        server = SubprocessASGIServer._instances.get(None)
        process = getattr(server, "server_process", None)
        try:
            yield process.pid if process is not None else None
        finally:
            asyncio.run(_settle())  # stopping while it still records events prints tracebacks


async def _settle(timeout: float = 60.0) -> None:
    """Wait until the server's count of completed task runs stops changing."""
    deadline, last = time.perf_counter() + timeout, -1
    while time.perf_counter() < deadline:
        with contextlib.suppress(Exception):
            count = await completed_task_runs()
            if count == last:
                return
            last = count
        await asyncio.sleep(1.0)


async def completed_task_runs() -> int:
    """How many task runs the Prefect server has recorded as completed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterState, TaskRunFilterStateType
    from prefect.client.schemas.objects import StateType

    query = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED])))
    async with get_client() as client:
        response = await client._client.post("/task_runs/count", json={"task_runs": query.model_dump(mode="json")})
        response.raise_for_status()
        return int(response.json())


async def server_catch_up(expected: int, timeout: float = 180.0) -> float:
    """Seconds until the server has recorded `expected` completed task runs (it records them
    from events, after the flow has returned); NaN when it did not within `timeout`."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if await completed_task_runs() >= expected:
            return time.perf_counter() - started
        await asyncio.sleep(0.25)
    return float("nan")


def credentials(base_url: str) -> Any:
    from pydantic import SecretStr

    from prefect_comet import CometAPICredentials

    return CometAPICredentials(api_key=SecretStr(API_KEY), base_url=base_url)


# -- reporting -----------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """The machine and versions the numbers were measured on."""
    import httpx
    import prefect

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "python": platform.python_version(),
        "prefect": prefect.__version__,
        "httpx": httpx.__version__,
    }


def print_machine() -> None:
    info = machine()
    print("machine: " + ", ".join(f"{key}={value}" for key, value in info.items()), flush=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    cells = [[str(cell) for cell in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve(sys.argv[2:])
    else:
        print(__doc__)
