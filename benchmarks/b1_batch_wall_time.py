"""B1: batch wall time and orchestration CPU of `generate_videos` against bare asyncio + httpx.

For each N, in one process run: a bare script (benchmarks/bare_httpx.py) and our flow do the
same work (create, poll, stream to local files with SHA-256, rename) at the same concurrency,
each against a fresh emulator subprocess with a fixed generation time. Two references:

- `plain`: what a user would write, one look every 2 s, fixed (no back-off, any hint ignored);
- `policy`: the same script polling with our poll policy (the reference before issue 17).

`--hint-ms N` makes the emulator send `openai-poll-after-ms: N` on every status answer (ours and
`policy` obey it, `plain` does not). Then the seed's sequential sample loop runs a few jobs and
is extrapolated linearly to N=100.

Per run, from the emulator's request log: status requests (`GET /v1/videos/{id}`) per job, ours
counting the one look after completion that fetches the download URLs; and the detection lag,
per job from when it became ready on the emulator to the first request for its file (content
route or signed URL), median and p95 ("seen": to the first status look that could see it done).
Our waits use the job durations learned by earlier runs of the same process (PREFECT_HOME is
fresh per benchmark process): the first ours run knows none and detects later; each run's line
says which it was.

    .venv/bin/python benchmarks/b1_batch_wall_time.py            # N = 10, 100, 500; plain and policy
    .venv/bin/python benchmarks/b1_batch_wall_time.py --suite issue17   # (a) policy, (b) plain, (c) plain + hint
    .venv/bin/python benchmarks/b1_batch_wall_time.py --ns 100 --reference plain --hint-ms 500
    .venv/bin/python benchmarks/b1_batch_wall_time.py --ns 100 --profile prof.out
    .venv/bin/python benchmarks/b1_batch_wall_time.py --ablate 100 [--reference plain]  # where our extra time goes

`--suite issue17` runs, for each N: the policy and plain references and ours without a hint, then
the plain reference and ours with the emulator hinting `--hint-ms` (default 500) ms; it reports
(a) ours/policy without a hint, (b) ours/plain without a hint, (c) ours/plain with the hint.

Targets: ours/plain wall <= 1.25 at N=100 and <= 1.10 at N=500, with the 0.5 s hint <= 1.25 at
N=100; ours/policy <= 1.25 at N >= 100; our detection lag median <= 1 s and p95 <= 2.5 s; our CPU
per job <= 2x the plain script's; >= 50x faster than sequential at N=100; CPU per job roughly
constant as N grows.
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
    EmulatorProcess,
    InProcessEmulator,
    completed_task_runs,
    credentials,
    emulator,
    own_cpu,
    percentile,
    prefect_server,
    print_machine,
    process_cpu,
    server_catch_up,
    table,
    verdict,
)
from bare_httpx import run_bare, run_sequential

REFERENCES = ("plain", "policy")
REFERENCE_LABELS = {"plain": "plain script (every 2 s)", "policy": "bare script (our poll policy)"}


def _emulator_options(args: argparse.Namespace, hint_ms: int | None) -> dict:
    return {"latency": args.latency, "fps": args.fps, "poll_after_ms": hint_ms}


def _request_log(emu: EmulatorProcess | InProcessEmulator) -> dict:
    """The emulator's CPU since it was ready (taken first: `stats` costs it some), status requests
    per job and detection lags, from its request log."""
    emulator_cpu = emu.cpu_used()
    stats = emu.stats()
    lags, seen = stats.detection_lags(), stats.seen_lags()
    return {
        "emulator_cpu": emulator_cpu,
        "status_per_job": stats.per_job("omni.retrieve"),
        "lag_median": statistics.median(lags) if lags else float("nan"),
        "lag_p95": percentile(lags, 95),
        "seen_median": statistics.median(seen) if seen else float("nan"),
        "seen_p95": percentile(seen, 95),
        "lags": [round(lag, 4) for lag in lags],
    }


def _durations_learned() -> bool:
    """Whether an earlier run of this process left learned job durations (comet-durations.json
    under PREFECT_HOME): our waits then expect the end, so the first ours run of a process, which
    knows nothing yet, detects later than the next ones."""
    from prefect.settings import PREFECT_HOME

    from prefect_comet.steps.learned_durations import FILE_NAME

    return (Path(PREFECT_HOME.value()) / FILE_NAME).exists()


def measure_bare(n: int, args: argparse.Namespace, reference: str = "policy", hint_ms: int | None = None) -> dict:
    folder = tempfile.mkdtemp(prefix=f"b1-{reference}-")
    try:
        with emulator(args.in_process_emulator, **_emulator_options(args, hint_ms)) as emu:
            cpu, started = own_cpu(), time.perf_counter()
            results = asyncio.run(
                run_bare(emu.base_url, API_KEY, n, folder, max_in_flight=min(n, args.max_in_flight), poll=reference)
            )
            wall, cpu = time.perf_counter() - started, own_cpu() - cpu
            log = _request_log(emu)
        assert len(results) == n and all(r.size > 0 for r in results)
        return {"variant": reference, "n": n, "hint_ms": hint_ms, "wall": wall, "cpu": cpu, **log}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure_ours(
    n: int,
    args: argparse.Namespace,
    server_pid: int | None,
    profile: cProfile.Profile | None,
    task_runs_per_job: int = 1,
    hint_ms: int | None = None,
) -> dict:
    from prefect_comet import OmniVideoRequest, generate_videos

    folder = tempfile.mkdtemp(prefix="b1-ours-")
    requests = [OmniVideoRequest(prompt=f"bench clip {index}") for index in range(n)]
    warm = _durations_learned()
    recorded_before = asyncio.run(completed_task_runs())
    try:
        with emulator(args.in_process_emulator, **_emulator_options(args, hint_ms)) as emu:
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
            log = _request_log(emu)
        assert result.stored_count == n, result.failed_count
        # The server records task runs from events after the flow returns: wait, and report the lag.
        lag = asyncio.run(server_catch_up(recorded_before + task_runs_per_job * n))
        server_cpu = (process_cpu(server_pid) - server_cpu) if server_pid else float("nan")
        return {
            "variant": "ours", "n": n, "hint_ms": hint_ms, "wall": wall, "cpu": cpu,
            "server_cpu": server_cpu, "server_lag": lag, "durations_learned": warm, **log,
        }  # fmt: skip
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


def run_ablation(args: argparse.Namespace, n: int, references: tuple[str, ...]) -> None:
    hint = f", emulator hint {args.hint_ms} ms" if args.hint_ms is not None else ""
    print(f"\nAblation at N={n} (cumulative; reference {', '.join(references)} first{hint}):", flush=True)
    rows, walls = [], {}
    with prefect_server() as server_pid, contextlib.ExitStack() as stack:
        bares = {reference: measure_bare(n, args, reference, args.hint_ms) for reference in references}
        for reference, bare in bares.items():
            walls[reference] = bare["wall"]
            print(f"  {reference}: wall {bare['wall']:.2f} s", flush=True)
        for reference, bare in bares.items():
            rows.append([
                REFERENCE_LABELS[reference], f"{bare['wall']:.2f}",
                *(f"{bare['wall'] / walls[other]:.2f}" for other in references), f"{bare['cpu'] / n * 1000:.1f}",
                "", f"{bare['lag_median']:.2f} / {bare['lag_p95']:.2f}", "",
            ])  # fmt: skip
        for label, step in ABLATION_STEPS:
            patched = _ablate(step, stack)
            ours = measure_ours(n, args, server_pid, None, 0 if step == "tasks" else 1, args.hint_ms)
            rows.append([
                label, f"{ours['wall']:.2f}", *(f"{ours['wall'] / walls[other]:.2f}" for other in references),
                f"{ours['cpu'] / n * 1000:.1f}", f"{ours['server_cpu'] / n * 1000:.1f}",
                f"{ours['lag_median']:.2f} / {ours['lag_p95']:.2f}", patched,
            ])  # fmt: skip
            print(f"  {label}: wall {ours['wall']:.2f} s, CPU {ours['cpu'] / n * 1000:.1f} ms/job", flush=True)
    print()
    print(table(
        ["variant", "wall s", *(f"/ {reference}" for reference in references), "CPU ms/job",
         "Prefect server CPU ms/job", "detection lag median / p95 s", "patched"],
        rows,
    ))  # fmt: skip


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


def _references(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if text is None:
        return default
    names = REFERENCES if text == "both" else tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in REFERENCES]
    if unknown or not names:
        raise SystemExit(f"--reference: expected plain, policy, plain,policy or both, not {text!r}")
    return tuple(dict.fromkeys(names))


def _hint_label(hint_ms: int | None) -> str:
    return f"hint {hint_ms} ms" if hint_ms is not None else "no hint"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="10,100,500", help="batch sizes, comma separated")
    parser.add_argument("--latency", type=float, default=10.0, help="emulator generation time (s)")
    parser.add_argument("--fps", type=int, default=1, help="emulator render fps (low: cheap renders)")
    parser.add_argument("--max-in-flight", type=int, default=100, help="concurrency of all (capped at N)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (N, variant); medians reported")
    parser.add_argument("--variants", default="bare,ours", help="which of bare (the references),ours to run")
    parser.add_argument(
        "--reference", default=None, metavar="plain|policy|both",
        help="the bare script(s) ours is compared with: plain (every 2 s), policy (our poll policy), "
        "or both, comma separated (default: both; policy for --ablate; ignored by --suite)",
    )  # fmt: skip
    parser.add_argument(
        "--hint-ms", type=int, default=None, metavar="N",
        help="the emulator sends openai-poll-after-ms: N on status answers (with --suite issue17: the "
        "hinted runs' N, default 500)",
    )  # fmt: skip
    parser.add_argument(
        "--suite", choices=("issue17",), default=None,
        help="issue17: (a) policy and (b) plain references without a hint, (c) plain with a hint",
    )  # fmt: skip
    parser.add_argument("--sequential-n", type=int, default=3, help="jobs run sequentially (0: skip)")
    parser.add_argument("--in-process-emulator", action="store_true", help="emulator thread in this process")
    parser.add_argument("--profile", default=None, help="write a cProfile of our largest run (first hint) here")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    parser.add_argument("--ablate", type=int, default=None, metavar="N", help="only the cost breakdown at N")
    args = parser.parse_args()
    if args.ablate:
        print_machine()
        run_ablation(args, args.ablate, _references(args.reference, ("policy",)))
        return
    ns = [int(n) for n in args.ns.split(",")]
    # Each configuration: the emulator's hint and the references run with it (ours runs with each).
    configs: list[tuple[int | None, tuple[str, ...]]]
    if args.suite == "issue17":
        configs = [(None, ("policy", "plain")), (args.hint_ms if args.hint_ms is not None else 500, ("plain",))]
    else:
        configs = [(args.hint_ms, _references(args.reference, REFERENCES))]
    wanted = args.variants.split(",")
    print_machine()
    print(
        f"B1: latency {args.latency:g} s, fps {args.fps}, max_in_flight min(N, {args.max_in_flight}), "
        f"emulator {'in this process' if args.in_process_emulator else 'in a subprocess'}, repeat {args.repeat}; "
        + "; ".join(f"{_hint_label(hint)}: {', '.join(refs)} vs ours" for hint, refs in configs),
        flush=True,
    )

    runs: list[dict] = []
    with prefect_server() as server_pid:
        for n in ns:
            for attempt in range(args.repeat):
                for index, (hint, refs) in enumerate(configs):
                    variants = [*(refs if "bare" in wanted else ()), *(("ours",) if "ours" in wanted else ())]
                    for variant in variants:
                        last = attempt == args.repeat - 1
                        profile = (
                            cProfile.Profile()
                            if args.profile and variant == "ours" and n == max(ns) and last and index == 0
                            else None
                        )
                        run = (
                            measure_ours(n, args, server_pid, profile, hint_ms=hint)
                            if variant == "ours"
                            else measure_bare(n, args, variant, hint)
                        )
                        runs.append(run)
                        print(
                            f"  {variant:6} N={n:<4} {_hint_label(hint):13} wall {run['wall']:7.2f} s"
                            f"  CPU {run['cpu'] / n * 1000:6.1f} ms/job"
                            + (
                                f"  Prefect server {run['server_cpu'] / n * 1000:6.1f} ms/job"
                                f" (caught up {run['server_lag']:.1f} s later)"
                                if "server_cpu" in run else ""
                            )
                            + ("" if "durations_learned" not in run else
                               "  (durations learned)" if run["durations_learned"] else "  (no durations learned yet)")
                            + f"  emulator {run['emulator_cpu'] / n * 1000:5.1f} ms/job"
                            f"  status {run['status_per_job']:.1f}/job"
                            f"  lag to download {run['lag_median']:.2f} / p95 {run['lag_p95']:.2f} s"
                            f" (seen {run['seen_median']:.2f} / {run['seen_p95']:.2f} s)",
                            flush=True,
                        )  # fmt: skip
                        if profile:
                            profile.dump_stats(args.profile)
    sequential = measure_sequential(args) if args.sequential_n else None
    if sequential:
        runs.append(sequential)
        print(f"  sequential N={sequential['n']} wall {sequential['wall']:.2f} s", flush=True)

    def median_of(variant: str, n: int, key: str, hint: int | None = None) -> float:
        values = [r[key] for r in runs if r["variant"] == variant and r["n"] == n and r.get("hint_ms") == hint]
        return statistics.median(values) if values else float("nan")

    def walls(variant: str, n: int, hint: int | None) -> str:
        return "/".join(
            f"{r['wall']:.1f}" for r in runs if r["variant"] == variant and r["n"] == n and r.get("hint_ms") == hint
        )

    def per_job_ms(variant: str, n: int, key: str, hint: int | None) -> str:
        return f"{median_of(variant, n, key, hint) / n * 1000:.1f}"

    def pair(reference: str, n: int, key: str, hint: int | None, digits: int = 2) -> str:
        return f"{median_of(reference, n, key, hint):.{digits}f} / {median_of('ours', n, key, hint):.{digits}f}"

    # In a suite, the names of the variants: (a), (b), (c) in the order of `configs`.
    pairs = [(hint, reference) for hint, refs in configs for reference in refs]
    letters = {pair: f"({chr(ord('a') + index)}) " for index, pair in enumerate(pairs)} if args.suite else {}
    rows, checks = [], []
    for n in ns:
        for hint, refs in configs:
            for reference in refs:
                ratio = median_of("ours", n, "wall", hint) / median_of(reference, n, "wall", hint)
                rows.append([
                    n, f"{letters.get((hint, reference), '')}{reference}, {_hint_label(hint)}",
                    walls(reference, n, hint), walls("ours", n, hint), f"{ratio:.2f}",
                    per_job_ms(reference, n, "cpu", hint), per_job_ms("ours", n, "cpu", hint),
                    per_job_ms("ours", n, "server_cpu", hint), f"{median_of('ours', n, 'server_lag', hint):.1f}",
                    pair(reference, n, "status_per_job", hint, 1),
                    pair(reference, n, "lag_median", hint), pair(reference, n, "lag_p95", hint),
                    f"{per_job_ms(reference, n, 'emulator_cpu', hint)} / {per_job_ms('ours', n, 'emulator_cpu', hint)}",
                ])  # fmt: skip
                if math.isnan(ratio) or n < 100:
                    continue
                name = f"ours/{reference} wall at N={n}, {_hint_label(hint)}: {ratio:.2f}"
                if reference == "plain" and hint is None:
                    target = 1.10 if n >= 500 else 1.25
                    checks.append(f"{name} (target <= {target:.2f}) -> {verdict(ratio <= target)}")
                elif reference == "plain" and n == 100:
                    checks.append(f"{name} (target <= 1.25) -> {verdict(ratio <= 1.25)}")
                elif reference == "policy" and hint is None:
                    checks.append(f"{name} (target <= 1.25) -> {verdict(ratio <= 1.25)}")
                else:
                    checks.append(f"{name} (no target)")
    print()
    print(table(
        ["N", "reference", "reference wall s", "ours wall s", "ours/reference (median)", "reference CPU ms/job",
         "ours CPU ms/job", "Prefect server CPU ms/job (ours)", "server caught up s",
         "status requests/job (reference / ours)", "detection lag median s (reference / ours)",
         "detection lag p95 s (reference / ours)", "emulator CPU ms/job (reference / ours)"],
        rows,
    ))  # fmt: skip
    for n in ns:
        for hint, refs in configs:
            median, p95 = median_of("ours", n, "lag_median", hint), median_of("ours", n, "lag_p95", hint)
            if not math.isnan(median):
                checks.append(
                    f"ours detection lag at N={n}, {_hint_label(hint)}: median {median:.2f} s (target <= 1), "
                    f"p95 {p95:.2f} s (target <= 2.5) -> {verdict(median <= 1.0 and p95 <= 2.5)}"
                )
            ours_cpu, plain_cpu = median_of("ours", n, "cpu", hint), median_of("plain", n, "cpu", hint)
            if "plain" in refs and not math.isnan(ours_cpu / plain_cpu):
                ratio = ours_cpu / plain_cpu
                checks.append(
                    f"ours CPU per job at N={n}, {_hint_label(hint)}: {ours_cpu / n * 1000:.1f} ms, "
                    f"{ratio:.2f}x the plain script's {plain_cpu / n * 1000:.1f} ms (target <= 2x) "
                    f"-> {verdict(ratio <= 2)}"
                )
    first_hint = configs[0][0]
    if sequential and 100 in ns and "ours" in wanted:
        per_job = sequential["wall"] / sequential["n"]
        estimate = per_job * 100
        ours_100 = median_of("ours", 100, "wall", first_hint)
        speedup = estimate / ours_100
        print(
            f"\nsequential: {sequential['n']} jobs in {sequential['wall']:.1f} s ({per_job:.2f} s/job) -> N=100 "
            f"extrapolated linearly: {estimate:.0f} s; ours at N=100 ({_hint_label(first_hint)}): {ours_100:.1f} s"
        )
        checks.append(f"speed-up vs sequential at N=100: {speedup:.0f}x (target >= 50x) -> {verdict(speedup >= 50)}")
    ours_cpu = [median_of("ours", n, "cpu", first_hint) / n for n in ns if "ours" in wanted]
    if len(ours_cpu) > 1:
        per_n = ", ".join(f"N={n}: {c * 1000:.0f}" for n, c in zip(ns, ours_cpu))
        spread = max(ours_cpu) / min(ours_cpu)
        checks.append(f"ours CPU ms/job by N ({_hint_label(first_hint)}): {per_n} (max/min {spread:.2f})")
    print("\n" + "\n".join(checks))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
