"""B3: poll efficiency on long jobs: status requests per job and completion-detection delay.

K Omni + K Kling jobs of the batch flow and K Omni jobs of the bare reference (same poll
policy, see bare_httpx.py) run at the same time against one emulator subprocess whose jobs
take `--latency` seconds (default 120). `--stagger` seconds (default 30) after they start, a
second batch flow in the same process sends K more Kling jobs of the same kind (model,
duration, ratio): Kling's native answers carry no progress, so these wait by how long the
first wave's Kling jobs took (learned), while the first wave had nothing to learn from. The
stagger must let the first wave be seen finished before the second nears its end. Last, a new
Python process (as a deployment's next run would be) sends K more Kling jobs of that kind: it
starts with what the earlier ones learned (kept under PREFECT_HOME). From the emulator's own
request log, per job:

- completed at: when the emulator first answers `completed` (due time, or later if its file
  was still rendering);
- detected at: the first status request received at or after that moment (the wait returns
  as soon as its answer is read, a few ms later);
- polls: status requests up to and including that one. Our flow sends one more status GET
  after the wait (to fetch fresh download URLs); it is counted separately.

With callbacks (`--callbacks` alone, and a row of the full run): K more Kling jobs of a kind no
job of this run and no earlier run had (ratio 9:16; a fresh PREFECT_HOME, so no learned
duration), created with `callback_base_url` pointing at a `prefect-comet callbacks` receiver
that the benchmark starts (a subprocess on a free port, its process group killed at the end),
the emulator POSTing each status change to it. They poll every 40 s
(`callback_poll_interval_seconds`) and wake on their callback's event. The receiver confirms a
callback that claims an end with one status GET of its own, so the log holds two clients'
status requests. They send the same User-Agent (both are `CometClient`), so the receiver is
given the emulator as `http://localhost:PORT` and our flows as `http://127.0.0.1:PORT`: the
Host header the emulator records tells them apart, exactly. As a check, the table shows how
long after the callback POST before it each receiver GET came (tens to a few hundred ms). For these jobs, detected at = our flow's
first status request at or after completion; status requests = ours up to it + the
receiver's (all of them) = total; and each detecting request is labelled "callback" when it
came sooner than a slow poll could (its sleep was cut short), else "slow poll".

    .venv/bin/python benchmarks/b3_poll_efficiency.py   # 120 s: 3 Omni + 3 Kling (ours), 3 Omni (bare),
                                                        # 3 Kling (ours) 30 s later, then 3 Kling
                                                        # (ours) in a new process; 3 Kling (ours,
                                                        # 9:16) with callbacks from the start
    .venv/bin/python benchmarks/b3_poll_efficiency.py --kling-wrapped   # Kling answers with progress
    .venv/bin/python benchmarks/b3_poll_efficiency.py --latency 300 --jobs 2 --stagger 60
    .venv/bin/python benchmarks/b3_poll_efficiency.py --callbacks --jobs 3   # only the callbacks row

Target: a 120 s job detected within 5 s of completion with <= 20 status requests; with
callbacks, the first Kling job of its kind within 1 s with <= 5 status requests (ours up to
detection plus all of the receiver's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import _common  # noqa: F401  (sets Prefect's environment first)
import httpx
from _common import API_KEY, EmulatorProcess, EmulatorStats, credentials, prefect_server, print_machine, table, verdict
from bare_httpx import run_bare

if TYPE_CHECKING:
    from prefect_comet import KlingOmniVideoRequest


LEARNED = "ours kling, after one of its kind finished"
NEXT_RUN = "ours kling, next run (a new process)"
CALLED_BACK = "ours kling, first of its kind, with callbacks"
STATUS_ROUTE = {"omni": ("omni.retrieve", "/v1/videos/{}"), "kling": ("kling.query", "/kling/v1/videos/omni-video/{}")}
CALLBACK_SECRET = "b3-callback-secret"
RECEIVER_API_HOST = "localhost"  # how the receiver names the emulator; our flows say 127.0.0.1
RECEIVER_START_SECONDS = 120.0  # its Prefect check on a busy 2-core machine


def per_job(stats: EmulatorStats, task_id: str, provider: str = "omni") -> dict:
    route_name, template = STATUS_ROUTE[provider]
    path = template.format(task_id)
    times = sorted(t for route, p, t in stats.requests if route == route_name and p == path)
    complete = stats.complete_at(task_id)
    detected = next(t for t in times if t >= complete)
    polls = sum(t <= detected for t in times)
    return {"delay": detected - complete, "polls": polls, "after": len(times) - polls}


def per_called_back_job(stats: EmulatorStats, task_id: str, ours_host: str) -> dict:
    """One callbacks job from the log: our status requests and the receiver's (by Host), its callbacks."""
    from prefect_comet.options import DEFAULTS

    route_name, template = STATUS_ROUTE["kling"]
    path = template.format(task_id)
    hits = [
        (t, stats.request_headers[index].get("host"))
        for index, (route, p, t) in enumerate(stats.requests)
        if route == route_name and p == path
    ]
    ours = sorted(t for t, host in hits if host == ours_host)
    receiver = sorted(t for t, host in hits if host != ours_host)
    complete, created = stats.complete_at(task_id), stats.jobs[task_id]["created_at"]
    detected = next(t for t in ours if t >= complete)
    polls = sum(t <= detected for t in ours)
    before = [t for t in ours if t < detected]
    # A slow poll comes a full interval after the previous look; a woken one sooner.
    woken = bool(before) and detected - before[-1] < DEFAULTS.callback_poll_interval_seconds - 0.05
    callbacks = sorted((t, status, http) for t, tid, status, http, dropped in stats.callbacks if tid == task_id)
    ends = [t for t, status, _ in callbacks if status in ("succeed", "failed")]
    return {
        "delay": detected - complete,
        "polls": polls,
        "after": len(ours) - polls,
        "receiver": len(receiver),
        "total": polls + len(receiver),
        "by": "callback" if woken else "slow poll",
        "callback_after": ends[0] - complete if ends else float("nan"),
        # each receiver GET after the latest callback POST before it (a check of who sent it)
        "confirm_ms": [1000 * (t - max((c for c, _, _ in callbacks if c <= t), default=float("nan"))) for t in receiver],
        "timeline": (
            f"created {time.strftime('%H:%M:%S', time.localtime(created))}; ours at "
            + ", ".join(f"+{t - created:.2f}" for t in ours)
            + f" s; completed +{complete - created:.2f}; callbacks "
            + ", ".join(f"{status}@+{t - created:.2f}->{http}" for t, status, http in callbacks)
            + "; receiver at "
            + (", ".join(f"+{t - created:.2f}" for t in receiver) or "-")
        ),
    }


def _kling(prompt: str, aspect_ratio: str = "16:9") -> KlingOmniVideoRequest:
    from prefect_comet import KlingOmniVideoRequest

    return KlingOmniVideoRequest(prompt=prompt, aspect_ratio=aspect_ratio, duration="5")


@contextlib.contextmanager
def callback_receiver(base_url: str) -> Iterator[str]:
    """`prefect-comet callbacks --port 0` in its own process group, on this run's Prefect server; its URL.

    It names the emulator `localhost` (our flows say 127.0.0.1), so its status requests are
    told from ours by their Host header. The flows of this process get the same callback secret.
    """
    from prefect.settings import PREFECT_API_URL

    script = Path(sys.executable).parent / "prefect-comet"
    port = urlsplit(base_url).port
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the harness server the flows report to
        "COMETAPI_KEY": API_KEY,
        "COMETAPI_BASE_URL": f"http://{RECEIVER_API_HOST}:{port}",
        "COMETAPI_CALLBACK_SECRET": CALLBACK_SECRET,
    }
    log_path = Path(tempfile.mkdtemp(prefix="b3-receiver-")) / "receiver.log"
    secret_before = os.environ.get("COMETAPI_CALLBACK_SECRET")
    os.environ["COMETAPI_CALLBACK_SECRET"] = CALLBACK_SECRET
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(script), "callbacks", "--port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        url = _receiver_url(process, log_path)
        yield url
    finally:
        _stop_group(process)
        if secret_before is None:
            os.environ.pop("COMETAPI_CALLBACK_SECRET", None)
        else:
            os.environ["COMETAPI_CALLBACK_SECRET"] = secret_before
        noted = [line for line in log_path.read_text(errors="replace").splitlines() if _worth_showing(line)]
        if noted:
            print("callback receiver said:\n  " + "\n  ".join(noted[-20:]), flush=True)
        shutil.rmtree(log_path.parent, ignore_errors=True)


def _receiver_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    """The URL the receiver prints once listening, after its /healthz answers."""
    deadline = time.monotonic() + RECEIVER_START_SECONDS
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+)", log_path.read_text(errors="replace"))
        if found:
            url = found.group(1)
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200:
                        return url
                time.sleep(0.1)
            break
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the callback receiver did not start:\n{log_path.read_text(errors='replace')[-2000:]}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the receiver's process group (a clean stop), then SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _worth_showing(line: str) -> bool:
    return bool(line.strip()) and "listening on" not in line and "callback_base_url=" not in line


def next_run(base_url: str, jobs: int, folder: str) -> list[str]:
    """Run K Kling jobs of the same kind in a new process, as a deployment's next run; their task ids."""
    from prefect.settings import PREFECT_API_URL

    command = [sys.executable, __file__, "--next-run-against", base_url, "--jobs", str(jobs), "--folder", folder]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}  # the same Prefect server
    answer = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(answer.stdout.strip().splitlines()[-1])


def _as_next_run(base_url: str, jobs: int, folder: str) -> None:
    from prefect_comet import generate_videos

    result = asyncio.run(generate_videos(
        [_kling(f"next-run boat {index}") for index in range(jobs)],
        destination=folder,
        credentials=credentials(base_url),
        max_in_flight=jobs,
    ))
    print(json.dumps([outcome.stored.task_id for outcome in result.outcomes]))


async def called_back(base_url: str, jobs: int, folder: str, receiver_url: str):
    """K Kling jobs of a kind never seen here (9:16), calling back the receiver."""
    from prefect_comet import generate_videos

    return await generate_videos(
        [_kling(f"called-back boat {index}", aspect_ratio="9:16") for index in range(jobs)],
        destination=folder,
        credentials=credentials(base_url),
        max_in_flight=jobs,
        callback_base_url=receiver_url,
    )


async def run_both(base_url: str, jobs: int, ours_folder: str, bare_folder: str, stagger: float, receiver_url: str):
    from prefect_comet import OmniVideoRequest, generate_videos

    ours = generate_videos(
        [OmniVideoRequest(prompt=f"long clip {index}") for index in range(jobs)]
        + [_kling(f"long boat {index}") for index in range(jobs)],
        destination=ours_folder,
        credentials=credentials(base_url),
        max_in_flight=2 * jobs,
    )
    bare = run_bare(base_url, API_KEY, jobs, bare_folder, max_in_flight=jobs)

    async def second_wave():
        await asyncio.sleep(stagger)
        return await generate_videos(
            [_kling(f"later boat {index}") for index in range(jobs)],
            destination=os.path.join(ours_folder, "second-wave"),  # its own manifest
            credentials=credentials(base_url),
            max_in_flight=jobs,
        )

    with_callbacks = called_back(base_url, jobs, os.path.join(ours_folder, "callbacks"), receiver_url)
    return await asyncio.gather(ours, bare, second_wave(), with_callbacks)


def report_called_back(stats: EmulatorStats, ours_host: str, task_ids: list[str]) -> dict:
    """The callbacks jobs' table, their timelines and verdicts; their per-job numbers."""
    jobs = [per_called_back_job(stats, task_id, ours_host) for task_id in task_ids]
    rows = [
        [
            index + 1, f"{job['delay']:.2f}", job["by"], f"{job['callback_after']:.3f}",
            " / ".join(f"{ms:.0f}" for ms in job["confirm_ms"]) or "-",
            job["polls"], job["receiver"], job["total"], job["after"],
        ]
        for index, job in enumerate(jobs)
    ]  # fmt: skip
    print(f"\n{CALLED_BACK}: per job (request log; ours = Host {ours_host}, receiver = Host {RECEIVER_API_HOST}:...)\n")
    print(table(
        ["job", "detection delay s", "seen by", "end callback POST after completion s",
         "receiver GET after callback POST ms", "ours to detection", "receiver's", "total",
         "ours after (fresh URLs)"],
        rows,
    ))
    print()
    for index, job in enumerate(jobs):
        print(f"job {index + 1}: {job['timeline']}")
    worst_delay = max(job["delay"] for job in jobs)
    worst_total = max(job["total"] for job in jobs)
    print(
        f"{CALLED_BACK}: worst detection delay {worst_delay:.2f} s (target <= 1) -> {verdict(worst_delay <= 1)}; "
        f"most status requests to detection, ours + the receiver's, {worst_total} (target <= 5) -> "
        f"{verdict(worst_total <= 5)}; with our GET after: {max(job['total'] + job['after'] for job in jobs)}"
    )
    return {"jobs": jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=120.0, help="job duration in the emulator (s)")
    parser.add_argument("--jobs", type=int, default=3, help="jobs of each variant, run in parallel")
    parser.add_argument(
        "--kling-wrapped", action="store_true", help="Kling queries answer the gateway's wrapped shape (with progress)"
    )
    parser.add_argument(
        "--stagger", type=float, default=30.0, help="seconds before the second wave of Kling jobs (ours) starts"
    )
    parser.add_argument(
        "--callbacks", action="store_true", help="only the callbacks variant (Kling jobs calling back a receiver)"
    )
    parser.add_argument("--next-run-against", default=None, help=argparse.SUPPRESS)  # the new process's part
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.next_run_against:
        _as_next_run(args.next_run_against, args.jobs, args.folder)
        return
    print_machine()
    if args.callbacks:
        only_called_back(args)
        return
    print(
        f"B3: ours {args.jobs} Omni + {args.jobs} Kling ({'wrapped' if args.kling_wrapped else 'native'} query shape), "
        f"bare {args.jobs} Omni; jobs of {args.latency:g} s, run together; {args.jobs} more Kling (ours, same kind) "
        f"{args.stagger:g} s later; {args.jobs} Kling (ours, a kind never seen) with callbacks from the start",
        flush=True,
    )

    ours_folder, bare_folder = tempfile.mkdtemp(prefix="b3-ours-"), tempfile.mkdtemp(prefix="b3-bare-")
    try:
        with (
            prefect_server(),
            EmulatorProcess(latency=args.latency, fps=1, kling_wrapped=args.kling_wrapped) as emu,
            callback_receiver(emu.base_url) as receiver_url,
        ):
            started = time.perf_counter()
            result, bare, later, calling = asyncio.run(
                run_both(emu.base_url, args.jobs, ours_folder, bare_folder, args.stagger, receiver_url)
            )
            wall = time.perf_counter() - started
            next_ids = next_run(emu.base_url, args.jobs, os.path.join(ours_folder, "next-run"))
            stats = emu.stats()
    finally:
        shutil.rmtree(ours_folder, ignore_errors=True)
        shutil.rmtree(bare_folder, ignore_errors=True)
    assert result.stored_count == 2 * args.jobs and later.stored_count == args.jobs == calling.stored_count
    ours_host = urlsplit(emu.base_url).netloc

    measured = {
        f"ours {provider}": [
            per_job(stats, outcome.stored.task_id, provider) for outcome in result.outcomes if outcome.provider == provider
        ]
        for provider in ("omni", "kling")
    }
    measured[LEARNED] = [per_job(stats, outcome.stored.task_id, "kling") for outcome in later.outcomes]
    measured[NEXT_RUN] = [per_job(stats, task_id, "kling") for task_id in next_ids]
    measured["bare omni"] = [per_job(stats, item.task_id) for item in bare]
    measured[CALLED_BACK + " (ours only)"] = [
        per_called_back_job(stats, outcome.stored.task_id, ours_host) for outcome in calling.outcomes
    ]
    rows = []
    for variant, jobs in measured.items():
        rows.append([
            variant,
            " / ".join(f"{job['delay']:.2f}" for job in jobs),
            f"{max(job['delay'] for job in jobs):.2f}",
            " / ".join(str(job["polls"]) for job in jobs),
            f"{statistics.mean(job['after'] for job in jobs):.0f}",
        ])
    print(f"\nall jobs of the first process done in {wall:.1f} s\n")
    print(table(
        ["variant", "detection delay s (each job)", "worst delay s", "status requests to detection (each job)",
         "status GETs after detection"],
        rows,
    ))
    for variant in ("ours omni", "ours kling", LEARNED, NEXT_RUN):
        jobs = measured[variant]
        worst_delay = max(job["delay"] for job in jobs)
        worst_requests = max(job["polls"] + job["after"] for job in jobs)
        print(
            f"{variant}: worst detection delay {worst_delay:.2f} s (target <= 5) -> {verdict(worst_delay <= 5)}; "
            f"most status requests {worst_requests} incl. the one after (target <= 20) -> {verdict(worst_requests <= 20)}"
        )
    report_called_back(stats, ours_host, [outcome.stored.task_id for outcome in calling.outcomes])


def only_called_back(args: argparse.Namespace) -> None:
    """`--callbacks`: K Kling jobs of a new kind with callbacks, nothing else."""
    print(
        f"B3 --callbacks: ours {args.jobs} Kling ({'wrapped' if args.kling_wrapped else 'native'} query shape, "
        f"a kind never seen here) calling back a receiver; jobs of {args.latency:g} s",
        flush=True,
    )
    folder = tempfile.mkdtemp(prefix="b3-callbacks-")
    try:
        with (
            prefect_server(),
            EmulatorProcess(latency=args.latency, fps=1, kling_wrapped=args.kling_wrapped) as emu,
            callback_receiver(emu.base_url) as receiver_url,
        ):
            started = time.perf_counter()
            calling = asyncio.run(called_back(emu.base_url, args.jobs, folder, receiver_url))
            wall = time.perf_counter() - started
            time.sleep(1.0)  # requests the receiver may still send after our flow ended land in the log
            stats = emu.stats()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert calling.stored_count == args.jobs
    print(f"\nall jobs done in {wall:.1f} s")
    report_called_back(stats, urlsplit(emu.base_url).netloc, [outcome.stored.task_id for outcome in calling.outcomes])


if __name__ == "__main__":
    main()
