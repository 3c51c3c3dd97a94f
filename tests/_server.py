"""Real processes for end-to-end tests: a Prefect server, the emulator, a worker.

Every process gets its own session (process group), its output goes to a log file under
the test's folder, and `stop()` ends the group: a worker's flow-run children go with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PREFECT_CLI = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago.

    Example:
        ```python
        port = free_port()
        ```
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prefect_env(home: Path, api_url: str, **extra: str) -> dict[str, str]:
    """The environment of every process that talks to the test's Prefect server.

    Inherited PREFECT_* settings are dropped, so nothing points at another server.

    Args:
        home: PREFECT_HOME (profiles, SQLite database, UI build) for this test only.
        api_url: The server's API URL, `http://127.0.0.1:PORT/api`.
        extra: More variables.

    Returns:
        A full environment for `subprocess`.

    Example:
        ```python
        env = prefect_env(tmp_path / "home", "http://127.0.0.1:4200/api")
        ```
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env.pop("COMETAPI_KEY", None)
    env.pop("COMETAPI_BASE_URL", None)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Background:
    """A subprocess in its own process group, logging to a file.

    Example:
        ```python
        server = Background("server", [...], env=env, log_dir=tmp_path)
        try:
            ...
        finally:
            server.stop()
        ```
    """

    def __init__(
        self, name: str, args: Sequence[str], *, env: dict[str, str], log_dir: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            list(args), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def tail(self, lines: int = 40) -> str:
        """The last lines of the process's output, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def exited(self) -> bool:
        """True when the process has ended."""
        return self.process.poll() is not None

    def stop(self, grace_seconds: float = 10.0) -> None:
        """End the process group: SIGTERM, then SIGKILL after `grace_seconds`."""
        try:
            for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
                if self.process.poll() is not None:
                    break
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
            # Children that outlived the leader (a flow run's engine) share its group.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        finally:
            self._log.close()


def wait_until(
    ready: Callable[[], bool], *, timeout: float, what: str, process: Background | None = None
) -> None:
    """Poll `ready()` until it is true; fail with a clear message after `timeout` seconds.

    Args:
        ready: The check; exceptions count as not ready.
        timeout: Seconds to wait at most.
        what: What is awaited, for the failure message.
        process: The process that should make it true; its exit fails at once.

    Example:
        ```python
        wait_until(lambda: http_ok(url), timeout=60, what="the Prefect API", process=server)
        ```
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except Exception:
            pass
        if process is not None and process.exited():
            raise AssertionError(
                f"{process.name} exited (code {process.process.returncode}) before {what} was "
                f"ready:\n{process.tail()}"
            )
        if time.monotonic() > deadline:
            log = f"\n{process.name} log:\n{process.tail()}" if process else ""
            raise AssertionError(f"{what} not ready within {timeout:g} s{log}")
        time.sleep(0.25)


def http_ok(url: str) -> bool:
    """True when a GET of `url` answers 200.

    Example:
        ```python
        http_ok("http://127.0.0.1:4200/api/health")
        ```
    """
    return httpx.get(url, timeout=2.0).status_code == 200


def run_cli(args: Sequence[str], *, env: dict[str, str], timeout: float = 120.0) -> str:
    """Run a command to completion; fail with its output when it does not succeed.

    Returns:
        Its standard output and error.

    Example:
        ```python
        run_cli([*PREFECT_CLI, "deploy", "--name", "text-to-video"], env=env)
        ```
    """
    result = subprocess.run(
        list(args), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout,
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output[-4000:]}"
    return output
