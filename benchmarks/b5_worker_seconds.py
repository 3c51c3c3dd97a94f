"""B5: worker-process seconds held by a batch with wait="suspend" against the same batch with wait="poll".

One real stack (`tests/_deployments.py`): `prefect server start`, `prefect deploy --all` of
deployments/prefect.yaml (the `comet-sweeper` schedule paused), a process worker
(`PREFECT_WORKER_QUERY_SECONDS=1`) and an in-process emulator whose jobs render `--latency`
seconds (default 300). Two deployment runs of `batch-from-file`, one after the other, each with
`--jobs` Omni prompts (default 50), `max_in_flight = jobs`, the deployment's other defaults:

1. `wait: poll`: the run's process waits for its jobs, as today;
2. `wait: suspend` (another batch_key and destination): the run creates its jobs, publishes its
   waiting list and suspends (its process exits). While it is suspended, this script starts a
   `comet-sweeper` deployment run every `--sweep-every` seconds (default 60, production's
   cadence) on a grid anchored at the batch run's creation, as the unpaused schedule would;
   the sweep after the last job finished resumes it, and the resumed run (a new process for
   the same flow run) downloads and completes.

Measured: a thread reads /proc every 0.25 s and integrates the worker's live child processes
(count x dt). Each child is attributed to its flow run by the `PREFECT__FLOW_RUN_ID` in its
environment, so "batch" seconds are the batch run's own processes from start to exit (start-up
and exit included) and "sweeper" seconds are the sweeper runs' processes (one sweep serves
every suspended run of a workspace: reported separately and per sweep). The CPU of each
child (with its live descendants) is read at the same time (last value before it exited). As
a cross-check, seconds are also summed by the batch run's state at each sample (what the worker
held while it was Running, while it was Suspended). Wall time and the resume delay come from
the run's state history on the server and the emulator's job records (a job is finished when
its status first reads completed). Ratios are measured within one run of this script.

    .venv/bin/python benchmarks/b5_worker_seconds.py                   # 50 jobs of 300 s, sweeps every 60 s (~15 min)
    .venv/bin/python benchmarks/b5_worker_seconds.py --latency 60      # quicker
    .venv/bin/python benchmarks/b5_worker_seconds.py --latency 600 --jobs 50 --sweep-every 60

Target: the suspended batch holds <= 5 % of the worker-process seconds of the polling one.
Each run must complete with every video stored (ledger, SHA-256, manifest) from exactly one
create per key; otherwise the script says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import _common  # noqa: F401  (sets Prefect's environment first)
from _common import print_machine, table, verdict

if TYPE_CHECKING:
    from tests._deployments import Stack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stack and the checks are the deployment tests' own helpers
SAMPLE_SECONDS = 0.25
FINAL = ("Completed", "Failed", "Crashed", "Cancelled")
_TICK = os.sysconf("SC_CLK_TCK")


# -- sampling the worker's children -----------------------------------------------------------
@dataclass
class Child:
    """One child process of the worker, as the sampler saw it."""

    pid: int
    first_seen: float  # unix time
    last_seen: float
    run_id: str | None = None
    cpu: float = 0.0  # seconds, the process and its live descendants (last sample before it ended)
    tree: set[int] = field(default_factory=set)  # every process seen in its subtree, itself included


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, state, CPU seconds incl. reaped children) of every process, from /proc."""
    found: dict[int, tuple[int, str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (int(fields[1]), fields[0], sum(int(v) for v in fields[11:15]) / _TICK)
    return found


@dataclass
class Sampler:
    """Integrates the worker's live children (count x dt) every `interval` seconds, in a thread.

    `state` is set by the caller (the batch run's last read state), so seconds can also be summed
    by the state the batch run was in.
    """

    worker_pid: int
    interval: float = SAMPLE_SECONDS
    state: str = ""
    children: dict[int, Child] = field(default_factory=dict)
    seconds_by_run: dict[str, float] = field(default_factory=dict)
    seconds_by_state: dict[str, float] = field(default_factory=dict)
    current: list[int] = field(default_factory=list)
    samples: int = 0
    max_gap: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sampler:
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="worker-children-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def live(self) -> list[Child]:
        """The children of the last sample."""
        return [self.children[pid] for pid in self.current]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        from tests._deployments import flow_run_of  # imported by main() already: a lookup

        procs = _process_table()
        now, wall = time.monotonic(), time.time()
        dt, self._last = now - self._last, now
        self.max_gap = max(self.max_gap, dt)
        self.samples += 1
        kids = [pid for pid, (ppid, st, _) in procs.items() if ppid == self.worker_pid and st != "Z"]
        below: dict[int, list[int]] = {}
        for pid, (ppid, st, _) in procs.items():
            if st != "Z":
                below.setdefault(ppid, []).append(pid)
        for pid in kids:
            child = self.children.get(pid)
            if child is None:
                child = self.children[pid] = Child(pid, wall, wall)
            child.last_seen = wall
            tree, stack = [], [pid]
            while stack:
                tree.append(stack.pop())
                stack.extend(below.get(tree[-1], []))
            child.cpu = max(child.cpu, sum(procs[member][2] for member in tree))
            child.tree.update(tree)
            if child.run_id is None:  # the engine's environment names its flow run
                child.run_id = next(filter(None, map(flow_run_of, tree)), None)
            key = child.run_id or f"unknown pid {pid}"
            self.seconds_by_run[key] = self.seconds_by_run.get(key, 0.0) + dt
        self.current = kids
        if kids:
            self.seconds_by_state[self.state] = self.seconds_by_state.get(self.state, 0.0) + len(kids) * dt

    def of(self, run_ids: set[str]) -> list[Child]:
        return [c for c in self.children.values() if c.run_id in run_ids]


# -- one batch run ----------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one batch run held and how it went."""

    wait: str
    run_id: str
    final_state: str
    wall: float  # creation -> Completed, from the server's state history
    batch_seconds: float
    batch_cpu: float
    batch_processes: int
    batch_children: list[Child]
    sweep_children: dict[str, list[Child]]
    sweep_seconds: dict[str, float]
    sweeps: list[str]
    sweeper_seconds: float
    sweeper_cpu: float
    by_state: dict[str, float]
    other_seconds: dict[str, float]
    states: list[tuple[float, str]]
    last_job_done: float  # unix time
    sweep_times: list[float]  # unix time each sweep was started
    sweep_states: list[str]
    exited_after_final: float  # seconds from the final state to the batch run's last process gone
    problems: list[str]
    samples: int
    max_gap: float

    @property
    def total_seconds(self) -> float:
        return self.batch_seconds + self.sweeper_seconds

    def state_time(self, name: str, last: bool = False) -> float | None:
        times = [t for t, n in self.states if n == name]
        return (times[-1] if last else times[0]) if times else None

    def resumed_at(self) -> tuple[float, str] | None:
        """The first state after the last Suspended one (the resume), with its name."""
        last = max((i for i, (_, n) in enumerate(self.states) if n == "Suspended"), default=None)
        if last is None or last + 1 >= len(self.states):
            return None
        return self.states[last + 1]


def _write_prompts(folder: Path, name: str, jobs: int) -> Path:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{name} clip {i}: a kite over the sea"}) + "\n" for i in range(jobs)))
    return path


async def _trigger_sweep(stack: Stack) -> str:
    async with stack.client() as client:
        sweeper = await client.read_deployment_by_name("comet-sweeper/comet-sweeper")
        run = await client.create_flow_run_from_deployment(sweeper.id)
    return str(run.id)


async def run_batch(stack: Stack, *, wait: str, jobs: int, latency: float, sweep_every: float) -> Outcome:
    """Start one batch deployment run, watch it to the end, and account for the worker's children."""
    name = f"b5-{wait}"
    prompts = _write_prompts(stack.tmp, name, jobs)
    destination = stack.tmp / name
    sweeps: list[str] = []
    sweep_times: list[float] = []
    with Sampler(stack.worker_pid) as sampler:
        async with stack.client() as client:
            deployment = await client.read_deployment_by_name("batch-from-file/batch-from-file")
            created = time.monotonic()
            flow_run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters={
                    "prompts_uri": str(prompts), "destination": str(destination), "batch_key": name,
                    "max_in_flight": jobs, "wait": wait,
                },
            )
            run_id = str(flow_run.id)
            print(f"  {wait}: flow run {run_id} created", flush=True)
            deadline = created + latency + 900
            next_sweep = created + sweep_every
            state = ""
            while True:
                run = await client.read_flow_run(UUID(run_id))
                now = time.monotonic()
                seen = run.state.name if run.state else ""
                if seen != state:
                    print(f"  {wait}: +{now - created:6.1f} s {seen} (worker children: {len(sampler.live())})", flush=True)
                state = sampler.state = seen
                if state in FINAL:
                    break
                if now > deadline:
                    state = f"not final after {now - created:.0f} s ({state})"
                    break
                if wait == "suspend" and now >= next_sweep:
                    if state == "Suspended":
                        sweeps.append(await _trigger_sweep(stack))
                        sweep_times.append(time.time())
                        print(f"  {wait}: +{now - created:6.1f} s sweep {len(sweeps)} started", flush=True)
                    while next_sweep <= now:
                        next_sweep += sweep_every
                await asyncio.sleep(0.5)
            final_at = time.time()
            # Keep sampling until the run's processes and every sweep's have exited.
            sweep_states: list[str] = []
            settle = time.monotonic() + 120
            while time.monotonic() < settle:
                sweep_states = []
                for sweep_id in sweeps:
                    sweep_run = await client.read_flow_run(UUID(sweep_id))
                    sweep_states.append(sweep_run.state.name if sweep_run.state else "")
                ours = {run_id, *sweeps}
                if all(s in FINAL for s in sweep_states) and not [c for c in sampler.live() if c.run_id in ours]:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2 * SAMPLE_SECONDS)
            history = await client.read_flow_run_states(UUID(run_id))
    states = sorted((s.timestamp.timestamp(), s.name or "") for s in history if s.timestamp)
    batch = sampler.of({run_id})
    swept = sampler.of(set(sweeps))
    others = {k: v for k, v in sampler.seconds_by_run.items() if k != run_id and k not in sweeps}
    done_at = _last_job_done(stack, name, latency)
    return Outcome(
        wait=wait,
        run_id=run_id,
        final_state=state,
        wall=(dict((n, t) for t, n in states).get("Completed", final_at) - states[0][0]) if states else float("nan"),
        batch_seconds=sampler.seconds_by_run.get(run_id, 0.0),
        batch_cpu=sum(c.cpu for c in batch),
        batch_processes=len(batch),
        batch_children=sorted(batch, key=lambda c: c.first_seen),
        sweep_children={s: sampler.of({s}) for s in sweeps},
        sweep_seconds={s: sampler.seconds_by_run.get(s, 0.0) for s in sweeps},
        sweeps=sweeps,
        sweeper_seconds=sum(sampler.seconds_by_run.get(s, 0.0) for s in sweeps),
        sweeper_cpu=sum(c.cpu for c in swept),
        by_state=dict(sampler.seconds_by_state),
        other_seconds=others,
        states=states,
        last_job_done=done_at,
        sweep_times=sweep_times,
        sweep_states=sweep_states,
        exited_after_final=max((c.last_seen for c in batch), default=final_at) - final_at,
        problems=_check(stack, name, jobs, destination, state),
        samples=sampler.samples,
        max_gap=sampler.max_gap,
    )


def _last_job_done(stack: Stack, name: str, latency: float) -> float:
    """When the batch's last job first read completed (its due time, or later if still rendering)."""
    ends = [
        max(job.created_at + latency, job.ready_at or 0.0)
        for job in list(stack.emulator.jobs.values())
        if (job.idempotency_key or "").startswith(f"{name}-")
    ]
    return max(ends, default=float("nan"))


def _check(stack: Stack, name: str, jobs: int, destination: Path, state: str) -> list[str]:
    """What is wrong with the run's outcome: final state, stored videos, creates per key."""
    from tests._resilience import ledger_records, uri_sha256

    problems = [] if state == "Completed" else [f"the run ended {state}, not Completed"]
    keys = [f"{name}-{i}" for i in range(jobs)]
    per_key = stack.emulator.created_per_key()
    wrong = {key: per_key.get(key, 0) for key in keys if per_key.get(key, 0) != 1}
    if wrong:
        problems.append(f"creates per key not exactly 1 for {len(wrong)} keys: {dict(list(wrong.items())[:5])}")
    extra = sorted(k for k in per_key if k.startswith(f"{name}-") and k not in keys)
    if extra:
        problems.append(f"creates for unexpected keys: {extra[:5]}")
    records = ledger_records(destination)
    stored = [r for r in records if r.get("state") == "stored"]
    if len(stored) != jobs:
        problems.append(f"{len(stored)} of {jobs} ledger records stored ({sorted({r.get('state') for r in records})})")
    bad = 0
    for record in stored:
        uri = record["stored"]["uri"]
        try:
            digest = uri_sha256(uri)
        except OSError:
            digest = ""
        if not (digest == record["stored"]["sha256"] == stack.emulator.sha256(record["task_id"])):
            bad += 1
    if bad:
        problems.append(f"{bad} stored videos do not match the emulator's SHA-256")
    manifest = [json.loads(line) for p in destination.glob("*.jsonl") for line in p.read_text().splitlines() if line]
    if sorted(m.get("status") for m in manifest) != ["stored"] * jobs:
        problems.append(f"the manifest lists {len(manifest)} entries, {sum(m.get('status') == 'stored' for m in manifest)} stored")
    return problems


# -- report -----------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def report(poll: Outcome, suspend: Outcome, args: argparse.Namespace) -> bool:
    print()
    print(f"B5: {args.jobs} Omni jobs of {args.latency:g} s, max_in_flight {args.jobs}, sweeps every {args.sweep_every:g} s "
          f"while suspended; worker children sampled every {SAMPLE_SECONDS} s")
    print()
    rows = []
    for o in (poll, suspend):
        per_sweep = o.sweeper_seconds / len(o.sweeps) if o.sweeps else None
        rows.append([
            f"wait: {o.wait}", o.final_state, _f(o.wall), o.batch_processes, _f(o.batch_seconds), _f(o.batch_cpu),
            len(o.sweeps), _f(o.sweeper_seconds) if o.sweeps else "–", _f(per_sweep),
            _f(o.sweeper_cpu) if o.sweeps else "–", _f(o.total_seconds),
        ])
    print(table(
        ["variant", "state", "wall s", "batch processes", "batch process s", "batch CPU s", "sweeps",
         "sweeper process s", "per sweep s", "sweeper CPU s", "batch + sweeper s"],
        rows,
    ))
    batch_ratio = suspend.batch_seconds / poll.batch_seconds if poll.batch_seconds else float("nan")
    total_ratio = suspend.total_seconds / poll.batch_seconds if poll.batch_seconds else float("nan")
    ok = total_ratio <= 0.05
    print()
    print(table(
        ["ratio (suspend / poll)", "value", "target ≤ 5 %"],
        [
            ["batch run's processes only", f"{batch_ratio:.1%}", verdict(batch_ratio <= 0.05)],
            ["batch + its sweeper runs", f"**{total_ratio:.1%}**", verdict(ok)],
            ["wall time", f"{suspend.wall / poll.wall:.2f}", ""],
        ],
    ))

    # Where the suspended run's time went.
    print()
    created = suspend.states[0][0] if suspend.states else float("nan")
    resumed = suspend.resumed_at()
    suspended_at = suspend.state_time("Suspended")
    running_again = next((t for t, n in suspend.states if n == "Running" and resumed and t >= resumed[0]), None)
    completed = suspend.state_time("Completed")
    resuming_sweep = max((t for t in suspend.sweep_times if resumed and t <= resumed[0]), default=None)
    rows = [
        ["created → first Running", _f((poll.state_time("Running") or 0) - poll.states[0][0]) if poll.states else "–",
         _f((suspend.state_time("Running") or 0) - created)],
        ["created → Suspended (creates done, process exits)", "–", _f(suspended_at and suspended_at - created)],
        ["last job done (after creation)", _f(poll.last_job_done - poll.states[0][0]) if poll.states else "–",
         _f(suspend.last_job_done - created)],
        ["last job done → resuming sweep started", "–", _f(resuming_sweep and resuming_sweep - suspend.last_job_done)],
        ["resuming sweep started → resumed", "–", _f(resumed and resuming_sweep and resumed[0] - resuming_sweep)],
        ["**last job done → resumed**", "–", _f(resumed and resumed[0] - suspend.last_job_done)],
        ["resumed → Running (worker picks it up)", "–", _f(resumed and running_again and running_again - resumed[0])],
        ["last job done → Completed", _f((poll.state_time("Completed") or 0) - poll.last_job_done),
         _f(completed and completed - suspend.last_job_done)],
        ["Completed → the run's last process gone", _f(poll.exited_after_final), _f(suspend.exited_after_final)],
    ]
    print(table(["timeline s", "poll", "suspend"], rows))
    print()
    for o in (poll, suspend):
        by_state = ", ".join(f"{k or '(before the first read)'} {v:.1f}" for k, v in sorted(o.by_state.items()))
        print(f"wait: {o.wait}: worker child seconds by the batch run's state: {by_state}")
        print("  states: " + " → ".join(f"{n} +{t - o.states[0][0]:.1f}" for t, n in o.states))
        for c in o.batch_children:
            print(f"  batch process {c.pid}: seen +{c.first_seen - o.states[0][0]:.1f} s for {c.last_seen - c.first_seen:.1f} s, "
                  f"CPU {c.cpu:.1f} s, {len(c.tree)} process(es) in its tree")
        if o.sweeps:
            print(f"  sweeps: {len(o.sweeps)}, final states {sorted(set(o.sweep_states))}"
                  + (f"; resumed as '{resumed[1]}'" if o is suspend and resumed else ""))
            for i, sweep in enumerate(o.sweeps, 1):
                kids = o.sweep_children[sweep]
                print(f"    sweep {i}: {o.sweep_seconds[sweep]:.1f} process s, CPU {sum(c.cpu for c in kids):.1f} s, "
                      f"{len(kids)} worker child(ren), {sum(len(c.tree) for c in kids)} process(es) in their trees")
        if o.other_seconds:
            print(f"  other worker children (neither this run nor its sweeps): {o.other_seconds}")
        print(f"  {o.samples} samples, largest gap {o.max_gap:.2f} s")
    problems = [f"wait: {o.wait}: {p}" for o in (poll, suspend) for p in o.problems]
    print()
    if problems:
        print("FAILED checks:\n  " + "\n  ".join(problems))
    else:
        print(f"checks: both runs Completed, {args.jobs} stored videos each (ledger, SHA-256, manifest), "
              f"exactly one create per key")
    print()
    print(table(
        ["target", "result", ""],
        [["suspend holds ≤ 5 % of poll's worker-process seconds (batch + sweeper)", f"{total_ratio:.1%} "
          f"(batch only {batch_ratio:.1%})", verdict(ok)]],
    ))
    return not problems


async def _measure(stack: Stack, args: argparse.Namespace) -> tuple[Outcome, Outcome]:
    print("wait: poll", flush=True)
    poll = await run_batch(stack, wait="poll", jobs=args.jobs, latency=args.latency, sweep_every=args.sweep_every)
    print("wait: suspend", flush=True)
    suspend = await run_batch(stack, wait="suspend", jobs=args.jobs, latency=args.latency, sweep_every=args.sweep_every)
    return poll, suspend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=300.0, help="seconds each job renders")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--sweep-every", type=float, default=60.0, help="seconds between sweeps while suspended")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, videos)")
    args = parser.parse_args()
    print_machine()
    from tests._deployments import deployed_stack

    folder = Path(tempfile.mkdtemp(prefix="b5-"))
    ok = False
    try:
        started = time.monotonic()
        with deployed_stack(folder, latency=args.latency, secret="b5-" + secrets.token_hex(4)) as stack:
            print(f"stack up in {time.monotonic() - started:.0f} s (server, deploy, worker pid {stack.worker_pid})",
                  flush=True)
            try:
                poll, suspend = asyncio.run(_measure(stack, args))
            except BaseException:
                print(stack.processes["worker"].tail(60), file=sys.stderr)
                raise
            ok = report(poll, suspend, args)
            if not ok:
                print("\nworker log (last lines):\n" + stack.processes["worker"].tail(40))
    finally:
        if ok and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
