"""B6: scale. One batch of N = 2,000 jobs of 30 s with 500 in flight, against N = 100.

For each N, in one process run against a fresh emulator subprocess: our `generate_videos`
stores every video, and we measure the wall time against the ideal schedule (waves of
`max_in_flight` jobs, each `latency` long), the peak RSS of our process, our CPU per job (it
should stay flat as N grows), the Prefect server's CPU per job, and the rows the Prefect server
wrote per job (task runs, states, logs, events, artifacts: counted in its SQLite database).

    .venv/bin/python benchmarks/b6_scale.py                   # N = 100, then 2,000 (~5 min)
    .venv/bin/python benchmarks/b6_scale.py --ns 2000 --latency 30 --max-in-flight 500

Targets: every job stored; peak RSS <= 512 MiB; wall <= 1.3 x the ideal schedule; CPU per job
flat from N = 100 to N = 2,000.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (sets Prefect's environment first)
from _common import (
    API_KEY,  # noqa: F401
    RSSPeak,
    credentials,
    emulator,
    own_cpu,
    prefect_server,
    print_machine,
    process_cpu,
    table,
    verdict,
)

# The tables a flow run writes to on the Prefect server (SQLite), counted before and after.
SERVER_TABLES = (
    "flow_run", "flow_run_state", "task_run", "task_run_state", "log", "events", "event_resources",
    "artifact", "artifact_collection",
)
MIB = 1024 * 1024


def _database() -> Path:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url.get_secret_value()
    return Path(url.split("///", 1)[1])


def server_rows() -> dict[str, int]:
    """Rows in each table the Prefect server writes for a flow run."""
    counts = {}
    with sqlite3.connect(f"file:{_database()}?mode=ro", uri=True, timeout=30) as db:
        for name in SERVER_TABLES:
            try:
                counts[name] = db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]  # noqa: S608
            except sqlite3.OperationalError:  # a table this server version does not have
                counts[name] = 0
    return counts


async def _until_settled(timeout: float = 300.0) -> float:
    """Seconds until the server's row counts stop changing (it records events after the flow)."""
    started, last = time.perf_counter(), None
    while time.perf_counter() - started < timeout:
        now = server_rows()
        if now == last:
            return time.perf_counter() - started
        last = now
        await asyncio.sleep(2.0)
    return float("nan")


def measure(n: int, args: argparse.Namespace, server_pid: int | None) -> dict:
    from prefect_comet import OmniVideoRequest, generate_videos

    folder = tempfile.mkdtemp(prefix="b6-")
    requests = [OmniVideoRequest(prompt=f"scale clip {index}") for index in range(n)]
    in_flight = min(n, args.max_in_flight)
    try:
        with emulator(latency=args.latency, fps=args.fps) as emu:
            rows_before = server_rows()
            server_cpu = process_cpu(server_pid) if server_pid else float("nan")
            cpu, started = own_cpu(), time.perf_counter()
            with RSSPeak(interval=0.05) as rss:
                result = asyncio.run(
                    generate_videos(requests, destination=folder, credentials=credentials(emu.base_url),
                                    max_in_flight=in_flight)
                )
            wall, cpu = time.perf_counter() - started, own_cpu() - cpu
            stats = emu.stats()
        settled = asyncio.run(_until_settled())
        server_cpu = (process_cpu(server_pid) - server_cpu) if server_pid else float("nan")
        rows_after = server_rows()
        stored = sum(1 for path in Path(folder).glob("*.mp4"))
        written = {name: rows_after[name] - rows_before[name] for name in SERVER_TABLES}
        retrieves = sum(1 for route, _, _ in stats.requests if route and "retrieve" in str(route))
        return {
            "n": n, "in_flight": in_flight, "wall": wall, "ideal": math.ceil(n / in_flight) * args.latency,
            "cpu": cpu, "server_cpu": server_cpu, "rss_peak": rss.peak, "rss_growth": rss.growth,
            "stored": result.stored_count, "files": stored, "written": written, "settled": settled,
            "retrieves": retrieves,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="100,2000", help="batch sizes, comma separated")
    parser.add_argument("--latency", type=float, default=30.0, help="emulator generation time (s)")
    parser.add_argument("--fps", type=int, default=1, help="emulator render fps (low: cheap renders)")
    parser.add_argument("--max-in-flight", type=int, default=500, help="jobs in flight (capped at N)")
    args = parser.parse_args()
    print_machine()
    print(f"B6: latency {args.latency:g} s, max_in_flight min(N, {args.max_in_flight}), fps {args.fps}", flush=True)
    runs = []
    with prefect_server() as server_pid:
        for n in (int(value) for value in args.ns.split(",")):
            run = measure(n, args, server_pid)
            runs.append(run)
            print(f"  N={n}: wall {run['wall']:.1f} s (ideal {run['ideal']:.0f} s), stored {run['stored']}, "
                  f"RSS peak {run['rss_peak'] / MIB:.0f} MiB, CPU {run['cpu'] / n * 1000:.1f} ms/job", flush=True)
    rows, checks = [], []
    for run in runs:
        n = run["n"]
        written = run["written"]
        rows.append([
            n, run["in_flight"], f"{run['wall']:.1f}", f"{run['ideal']:.0f}", f"{run['wall'] / run['ideal']:.2f}",
            f"{run['stored']} / {run['files']}", f"{run['rss_peak'] / MIB:.0f}", f"{run['rss_growth'] / MIB:.0f}",
            f"{run['cpu'] / n * 1000:.1f}", f"{run['server_cpu'] / n * 1000:.1f}",
            f"{sum(written.values()) / n:.1f}", f"{run['retrieves'] / n:.1f}", f"{run['settled']:.0f}",
        ])
        checks.append(f"N={n}: every job stored: {run['stored']} of {n} -> {verdict(run['stored'] == n)}")
        checks.append(f"N={n}: peak RSS {run['rss_peak'] / MIB:.0f} MiB (target <= 512) -> "
                      f"{verdict(run['rss_peak'] <= 512 * MIB)}")
        checks.append(f"N={n}: wall / ideal {run['wall'] / run['ideal']:.2f} (target <= 1.3) -> "
                      f"{verdict(run['wall'] <= 1.3 * run['ideal'])}")
    if len(runs) > 1:
        per_job = [run["cpu"] / run["n"] for run in runs]
        by_n = ", ".join(f"{run['n']}: {cost * 1000:.0f}" for run, cost in zip(runs, per_job))
        checks.append(f"CPU ms/job by N: {by_n} (max/min {max(per_job) / min(per_job):.2f})")
    print()
    print(table(
        ["N", "in flight", "wall s", "ideal s", "wall / ideal", "stored / files", "RSS peak MiB", "RSS growth MiB",
         "our CPU ms/job", "Prefect server CPU ms/job", "server rows/job", "status requests/job",
         "server settled s after"],
        rows,
    ))
    for run in runs:
        print(f"  N={run['n']} server rows by table: "
              + ", ".join(f"{name} {count / run['n']:.1f}" for name, count in run["written"].items() if count))
    print("\n" + "\n".join(checks))


if __name__ == "__main__":
    main()
