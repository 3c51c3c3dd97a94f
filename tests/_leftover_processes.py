"""After the whole suite, no process it started may still run: the suite checks, and fails if one does.

Every process a test starts inherits `SESSION_MARK` from the test process's environment (the
helpers that build a subprocess's environment copy `os.environ`), so a leftover is found even
after its parent died and it was re-parented. Plugged in from conftest.py.
"""

from __future__ import annotations

import os
import time
import uuid

import psutil
import pytest

# Not a PREFECT_* name: helpers that give a subprocess a clean Prefect environment drop those.
SESSION_MARK = "COMET_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex
GRACE_SECONDS = 15.0  # processes stopped at the last teardown may need a moment to exit
# Helpers Python's multiprocessing keeps for this very process (Dask starts them): they end when
# it ends, so they are not leftovers of a test.
_INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def started_by_this_session() -> list[psutil.Process]:
    """Live processes (other than this one) that carry this session's mark."""
    mark, found = os.environ[SESSION_MARK], []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.environ().get(SESSION_MARK) != mark:
                continue
            if process.status() == psutil.STATUS_ZOMBIE or _helper_of_this_process(process):
                continue
            found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _helper_of_this_process(process: psutil.Process) -> bool:
    command = " ".join(process.cmdline())
    return process.ppid() == os.getpid() and any(helper in command for helper in _INTERPRETER_HELPERS)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + GRACE_SECONDS
    while (leftovers := started_by_this_session()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not leftovers:
        return
    described = []
    for process in leftovers:
        try:
            described.append(f"  pid {process.pid}: {' '.join(process.cmdline())[:200]}")
            process.kill()
        except psutil.NoSuchProcess:
            continue
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = "processes started by the suite were still running at its end (now killed):\n" + "\n".join(described)
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
