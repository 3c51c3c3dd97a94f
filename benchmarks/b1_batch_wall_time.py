"""B1: batch wall time and orchestration CPU of `generate_videos` against bare asyncio + httpx.

For each N, in one process run: the bare script (benchmarks/bare_httpx.py) and our flow do the
same work (create, poll with the same policy, stream to local files with SHA-256) at the same
concurrency, each against a fresh emulator subprocess with a fixed generation time. Then the
seed's sequential sample loop runs a few jobs and is extrapolated linearly to N=100.

    .venv/bin/python benchmarks/b1_batch_wall_time.py            # N = 10, 100, 500
    .venv/bin/python benchmarks/b1_batch_wall_time.py --ns 100 --profile prof.out
    .venv/bin/python benchmarks/b1_batch_wall_time.py --ablate 100   # where our extra time goes

Targets: ours/bare wall <= 1.25 at N=100 and 500; >= 50x faster than sequential at N=100;
CPU per job roughly constant as N grows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import _common  # noqa: F401  (sets Prefect's environment first)
from _common import (
    API_KEY,
    completed_task_runs,
    credentials,
    emulator,
    own_cpu,
    prefect_server,
    print_machine,
    process_cpu,
    server_catch_up,
    table,
    verdict,
)
from bare_httpx import run_bare, run_sequential


def measure_bare(n: int, args: argparse.Namespace) -> dict:
    folder = tempfile.mkdtemp(prefix="b1-bare-")
    try:
        with emulator(args.in_process_emulator, latency=args.latency, fps=args.fps) as emu:
            cpu, started = own_cpu(), time.perf_counter()
            results = asyncio.run(
                run_bare(emu.base_url, API_KEY, n, folder, max_in_flight=min(n, args.max_in_flight))
            )
            wall, cpu = time.perf_counter() - started, own_cpu() - cpu
            emulator_cpu = emu.cpu_used()
        assert len(results) == n and all(r.size > 0 for r in results)
        return {"variant": "bare", "n": n, "wall": wall, "cpu": cpu, "emulator_cpu": emulator_cpu}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure_ours(
    n: int,
    args: argparse.Namespace,
    server_pid: int | None,
    profile: cProfile.Profile | None,
    task_runs_per_job: int = 1,
) -> dict:
    from prefect_comet import OmniVideoRequest, generate_videos

    folder = tempfile.mkdtemp(prefix="b1-ours-")
    requests = [OmniVideoRequest(prompt=f"bench clip {index}") for index in range(n)]
    recorded_before = asyncio.run(completed_task_runs())
    try:
        with emulator(args.in_process_emulator, latency=args.latency, fps=args.fps) as emu:
            block = credentials(emu.base_url)
            server_cpu = process_cpu(server_pid) if server_pid else float("nan")
            cpu, started = own_cpu(), time.perf_counter()
            if profile:
                profile.enable()
            result = asyncio.run(
                generate_videos(
                    requests, destination=folder, credentials=block, max_in_flight=min(n, args.max_in_flight)
                )
            )
            if profile:
                profile.disable()
            wall, cpu = time.perf_counter() - started, own_cpu() - cpu
            emulator_cpu = emu.cpu_used()
        assert result.stored_count == n, result.failed_count
        # The server records task runs from events after the flow returns: wait, and report the lag.
        lag = asyncio.run(server_catch_up(recorded_before + task_runs_per_job * n))
        server_cpu = (process_cpu(server_pid) - server_cpu) if server_pid else float("nan")
        return {
            "variant": "ours", "n": n, "wall": wall, "cpu": cpu,
            "emulator_cpu": emulator_cpu, "server_cpu": server_cpu, "server_lag": lag,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Cumulative switches for `--ablate`: each step removes one more per-job cost from our flow (by
# patching the library in this process only), to show where the wall time and CPU go.
ABLATION_STEPS = [
    ("full flow", None),
    ("- poster frame", "poster"),
    ("- comet.video.* events", "events"),
    ("- logs to the API", "logs"),
    ("- the Prefect task run per job (generate-one-video called as a plain function)", "tasks"),
]


def _ablate(step: str | None, stack: contextlib.ExitStack) -> str:
    """Switch one cost off; returns what was patched (or why not)."""
    import prefect_comet.batch.flow as batch
    import prefect_comet.steps.storing as storage
    import prefect_comet.tasks as tasks

    def patch(module: object, name: str, value: object) -> str:
        if not hasattr(module, name):
            return f"{module.__name__}.{name} not found (library changed?)"
        stack.enter_context(mock.patch.object(module, name, value))
        return f"{module.__name__}.{name}"

    if step == "poster":
        return patch(storage, "store_poster", lambda *args, **kwargs: None)
    if step == "events":
        return patch(tasks, "emit_video_event", lambda *args, **kwargs: None)
    if step == "logs":
        from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

        stack.enter_context(temporary_settings({PREFECT_LOGGING_TO_API_ENABLED: False}))
        return "PREFECT_LOGGING_TO_API_ENABLED=false"
    if step == "tasks":
        return patch(batch, "_generate_one", batch._generate_one.fn)
    return "nothing"


def run_ablation(args: argparse.Namespace, n: int) -> None:
    print(f"\nAblation at N={n} (cumulative; bare reference first):", flush=True)
    rows = []
    with prefect_server() as server_pid, contextlib.ExitStack() as stack:
        bare = measure_bare(n, args)
        rows.append(["bare asyncio + httpx", f"{bare['wall']:.2f}", "1.00", f"{bare['cpu'] / n * 1000:.1f}", "", ""])
        print(f"  bare: wall {bare['wall']:.2f} s", flush=True)
        for label, step in ABLATION_STEPS:
            patched = _ablate(step, stack)
            ours = measure_ours(n, args, server_pid, None, task_runs_per_job=0 if step == "tasks" else 1)
            rows.append([
                label, f"{ours['wall']:.2f}", f"{ours['wall'] / bare['wall']:.2f}", f"{ours['cpu'] / n * 1000:.1f}",
                f"{ours['server_cpu'] / n * 1000:.1f}", patched,
            ])
            print(f"  {label}: wall {ours['wall']:.2f} s, CPU {ours['cpu'] / n * 1000:.1f} ms/job", flush=True)
    print()
    print(table(["variant", "wall s", "/ bare", "CPU ms/job", "Prefect server CPU ms/job", "patched"], rows))


def measure_sequential(args: argparse.Namespace) -> dict:
    folder = tempfile.mkdtemp(prefix="b1-seq-")
    try:
        with emulator(args.in_process_emulator, latency=args.latency, fps=args.fps) as emu:
            started = time.perf_counter()
            results = run_sequential(emu.base_url, API_KEY, args.sequential_n, folder)
            wall = time.perf_counter() - started
        assert len(results) == args.sequential_n
        return {"variant": "sequential", "n": args.sequential_n, "wall": wall}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="10,100,500", help="batch sizes, comma separated")
    parser.add_argument("--latency", type=float, default=10.0, help="emulator generation time (s)")
    parser.add_argument("--fps", type=int, default=1, help="emulator render fps (low: cheap renders)")
    parser.add_argument("--max-in-flight", type=int, default=100, help="concurrency of both (capped at N)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (N, variant); medians reported")
    parser.add_argument("--variants", default="bare,ours", help="which of bare,ours to run")
    parser.add_argument("--sequential-n", type=int, default=3, help="jobs run sequentially (0: skip)")
    parser.add_argument("--in-process-emulator", action="store_true", help="emulator thread in this process")
    parser.add_argument("--profile", default=None, help="write a cProfile of our largest run here")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    parser.add_argument("--ablate", type=int, default=None, metavar="N", help="only the cost breakdown at N")
    args = parser.parse_args()
    if args.ablate:
        print_machine()
        run_ablation(args, args.ablate)
        return
    ns = [int(n) for n in args.ns.split(",")]
    variants = [v for v in ("bare", "ours") if v in args.variants.split(",")]
    print_machine()
    print(
        f"B1: latency {args.latency:g} s, fps {args.fps}, max_in_flight min(N, {args.max_in_flight}), "
        f"emulator {'in this process' if args.in_process_emulator else 'in a subprocess'}, repeat {args.repeat}",
        flush=True,
    )

    runs: list[dict] = []
    with prefect_server() as server_pid:
        for n in ns:
            for attempt in range(args.repeat):
                for variant in variants:
                    last = attempt == args.repeat - 1
                    profile = cProfile.Profile() if args.profile and variant == "ours" and n == max(ns) and last else None
                    run = measure_bare(n, args) if variant == "bare" else measure_ours(n, args, server_pid, profile)
                    runs.append(run)
                    print(
                        f"  {variant:4} N={n:<4} wall {run['wall']:7.2f} s  CPU {run['cpu'] / n * 1000:6.1f} ms/job"
                        + (
                            f"  Prefect server {run['server_cpu'] / n * 1000:6.1f} ms/job (caught up {run['server_lag']:.1f} s later)"
                            if "server_cpu" in run else ""
                        )
                        + f"  emulator {run['emulator_cpu'] / n * 1000:5.1f} ms/job",
                        flush=True,
                    )
                    if profile:
                        profile.dump_stats(args.profile)
    sequential = measure_sequential(args) if args.sequential_n else None
    if sequential:
        runs.append(sequential)
        print(f"  sequential N={sequential['n']} wall {sequential['wall']:.2f} s", flush=True)

    def median_of(variant: str, n: int, key: str) -> float:
        values = [r[key] for r in runs if r["variant"] == variant and r["n"] == n]
        return statistics.median(values) if values else float("nan")

    def walls(variant: str, n: int) -> str:
        return "/".join(f"{r['wall']:.1f}" for r in runs if r["variant"] == variant and r["n"] == n)

    rows, checks = [], []
    for n in ns:
        bare, ours = median_of("bare", n, "wall"), median_of("ours", n, "wall")
        ratio = ours / bare
        rows.append([
            n, walls("bare", n), walls("ours", n), f"{ratio:.2f}",
            f"{median_of('bare', n, 'cpu') / n * 1000:.1f}", f"{median_of('ours', n, 'cpu') / n * 1000:.1f}",
            f"{median_of('ours', n, 'server_cpu') / n * 1000:.1f}", f"{median_of('ours', n, 'server_lag'):.1f}",
            f"{median_of('bare', n, 'emulator_cpu') / n * 1000:.1f} / {median_of('ours', n, 'emulator_cpu') / n * 1000:.1f}",
        ])
        if n >= 100 and not math.isnan(ratio):
            checks.append(f"ours/bare wall at N={n}: {ratio:.2f} (target <= 1.25) -> {verdict(ratio <= 1.25)}")
    print()
    print(table(
        ["N", "bare wall s", "ours wall s", "ours/bare (median)", "bare CPU ms/job", "ours CPU ms/job",
         "Prefect server CPU ms/job (ours)", "server caught up s", "emulator CPU ms/job (bare / ours)"],
        rows,
    ))
    if sequential and 100 in ns and "ours" in variants:
        per_job = sequential["wall"] / sequential["n"]
        estimate = per_job * 100
        speedup = estimate / median_of("ours", 100, "wall")
        print(
            f"\nsequential: {sequential['n']} jobs in {sequential['wall']:.1f} s ({per_job:.2f} s/job) -> N=100 "
            f"extrapolated linearly: {estimate:.0f} s; ours at N=100: {median_of('ours', 100, 'wall'):.1f} s"
        )
        checks.append(f"speed-up vs sequential at N=100: {speedup:.0f}x (target >= 50x) -> {verdict(speedup >= 50)}")
    ours_cpu = [median_of("ours", n, "cpu") / n for n in ns if "ours" in variants]
    if len(ours_cpu) > 1:
        per_n = ", ".join(f"N={n}: {c * 1000:.0f}" for n, c in zip(ns, ours_cpu))
        checks.append(f"ours CPU ms/job by N: {per_n} (max/min {max(ours_cpu) / min(ours_cpu):.2f})")
    print("\n" + "\n".join(checks))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
