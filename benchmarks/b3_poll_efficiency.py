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

    .venv/bin/python benchmarks/b3_poll_efficiency.py   # 120 s: 3 Omni + 3 Kling (ours), 3 Omni (bare),
                                                        # 3 Kling (ours) 30 s later, then 3 Kling
                                                        # (ours) in a new process
    .venv/bin/python benchmarks/b3_poll_efficiency.py --kling-wrapped   # Kling answers with progress
    .venv/bin/python benchmarks/b3_poll_efficiency.py --latency 300 --jobs 2 --stagger 60

Target: a 120 s job detected within 5 s of completion with <= 20 status requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import _common  # noqa: F401  (sets Prefect's environment first)
from _common import API_KEY, EmulatorProcess, EmulatorStats, credentials, prefect_server, print_machine, table, verdict
from bare_httpx import run_bare

if TYPE_CHECKING:
    from prefect_comet import KlingOmniVideoRequest


LEARNED = "ours kling, after one of its kind finished"
NEXT_RUN = "ours kling, next run (a new process)"
STATUS_ROUTE = {"omni": ("omni.retrieve", "/v1/videos/{}"), "kling": ("kling.query", "/kling/v1/videos/omni-video/{}")}


def per_job(stats: EmulatorStats, task_id: str, provider: str = "omni") -> dict:
    route_name, template = STATUS_ROUTE[provider]
    path = template.format(task_id)
    times = sorted(t for route, p, t in stats.requests if route == route_name and p == path)
    complete = stats.complete_at(task_id)
    detected = next(t for t in times if t >= complete)
    polls = sum(t <= detected for t in times)
    return {"delay": detected - complete, "polls": polls, "after": len(times) - polls}


def _kling(prompt: str) -> KlingOmniVideoRequest:
    from prefect_comet import KlingOmniVideoRequest

    return KlingOmniVideoRequest(prompt=prompt, aspect_ratio="16:9", duration="5")


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


async def run_both(base_url: str, jobs: int, ours_folder: str, bare_folder: str, stagger: float):
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

    return await asyncio.gather(ours, bare, second_wave())


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
    parser.add_argument("--next-run-against", default=None, help=argparse.SUPPRESS)  # the new process's part
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.next_run_against:
        _as_next_run(args.next_run_against, args.jobs, args.folder)
        return
    print_machine()
    print(
        f"B3: ours {args.jobs} Omni + {args.jobs} Kling ({'wrapped' if args.kling_wrapped else 'native'} query shape), "
        f"bare {args.jobs} Omni; jobs of {args.latency:g} s, run together; {args.jobs} more Kling (ours, same kind) "
        f"{args.stagger:g} s later",
        flush=True,
    )

    ours_folder, bare_folder = tempfile.mkdtemp(prefix="b3-ours-"), tempfile.mkdtemp(prefix="b3-bare-")
    try:
        with prefect_server(), EmulatorProcess(latency=args.latency, fps=1, kling_wrapped=args.kling_wrapped) as emu:
            started = time.perf_counter()
            result, bare, later = asyncio.run(run_both(emu.base_url, args.jobs, ours_folder, bare_folder, args.stagger))
            wall = time.perf_counter() - started
            next_ids = next_run(emu.base_url, args.jobs, os.path.join(ours_folder, "next-run"))
            stats = emu.stats()
    finally:
        shutil.rmtree(ours_folder, ignore_errors=True)
        shutil.rmtree(bare_folder, ignore_errors=True)
    assert result.stored_count == 2 * args.jobs and later.stored_count == args.jobs

    measured = {
        f"ours {provider}": [
            per_job(stats, outcome.stored.task_id, provider) for outcome in result.outcomes if outcome.provider == provider
        ]
        for provider in ("omni", "kling")
    }
    measured[LEARNED] = [per_job(stats, outcome.stored.task_id, "kling") for outcome in later.outcomes]
    measured[NEXT_RUN] = [per_job(stats, task_id, "kling") for task_id in next_ids]
    measured["bare omni"] = [per_job(stats, item.task_id) for item in bare]
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


if __name__ == "__main__":
    main()
