"""A Prefect server, the recipe's deployments, a process worker and an emulator: for deployment tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prefect.client.orchestration import PrefectClient

from prefect_comet.testing.emulator import CometEmulator
from tests._server import PREFECT_CLI, ROOT, Background, free_port, http_ok, prefect_env, wait_until


@dataclass
class Stack:
    """A Prefect server, a process worker, the recipe's deployments and an emulator."""

    api_url: str
    env: dict[str, str]
    emulator: CometEmulator
    tmp: Path
    processes: dict[str, Background] = field(default_factory=dict)

    @property
    def worker_pid(self) -> int:
        return self.processes["worker"].process.pid

    def client(self) -> PrefectClient:
        return PrefectClient(api=self.api_url)


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (zombies excluded), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def flow_run_of(pid: int) -> str | None:
    """The flow run a worker's child process runs (`PREFECT__FLOW_RUN_ID` in its environment)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def run_command(argv: list[str], env: dict[str, str], timeout: float = 180) -> str:
    """Run a command from the repository root; fail with its output when it fails."""
    ran = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, f"{argv}\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
    return ran.stdout


async def _pause(stack: Stack, name: str) -> None:
    async with stack.client() as client:
        await client.pause_deployment((await client.read_deployment_by_name(name)).id)


@contextlib.contextmanager
def deployed_stack(tmp: Path, *, latency: float, secret: str, **emulator_options: object) -> Iterator[Stack]:
    """Start everything, deploy `deployments/prefect.yaml` (the sweeper paused), stop it all after.

    Args:
        tmp: A folder for PREFECT_HOME, logs and videos.
        latency: Seconds each emulated job renders.
        secret: The callback secret in the worker's environment.
        emulator_options: More `CometEmulator` options.
    """
    (tmp / "home").mkdir(exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    api_key = f"sk-stack-{secrets.token_hex(6)}"
    with CometEmulator(api_key=api_key, latency=latency, **emulator_options) as emu:
        env = prefect_env(
            tmp / "home", api_url, PREFECT_SERVER_API_PORT=str(port), PREFECT_WORKER_QUERY_SECONDS="1",
            COMETAPI_KEY=api_key, COMETAPI_BASE_URL=emu.base_url, COMETAPI_CALLBACK_SECRET=secret,
        )
        stack = Stack(api_url, env, emu, tmp)
        try:
            stack.processes["server"] = Background("server", [*PREFECT_CLI, "server", "start"], env=env, log_dir=tmp)
            wait_until(lambda: http_ok(f"{api_url}/health"), timeout=180, what="the Prefect API",
                       process=stack.processes["server"])
            run_command([*PREFECT_CLI, "work-pool", "create", "comet-pool", "--type", "process"], env)
            run_command(
                [*PREFECT_CLI, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", "--no-prompt"], env
            )
            # The sweeper sweeps when the caller asks, not every minute.
            asyncio.run(_pause(stack, "comet-sweeper/comet-sweeper"))
            stack.processes["worker"] = Background(
                "worker", [*PREFECT_CLI, "worker", "start", "--pool", "comet-pool"], env=env, log_dir=tmp
            )
            wait_until(lambda: "started" in stack.processes["worker"].tail().lower(), timeout=120,
                       what="the worker", process=stack.processes["worker"])
            yield stack
        finally:
            for process in reversed(list(stack.processes.values())):
                process.stop()
