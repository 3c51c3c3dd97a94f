"""The `prefect-comet` command, run as a person runs it: the installed console script, in its own process.

Every run points at the session's Prefect server and, for CometAPI, at the test's emulator.
An error must end the command with one line on stderr (`error: ...`), its exit code and no
traceback; every process a test starts is stopped in a `finally`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from prefect_comet import OmniVideoRequest, create_video
from prefect_comet.cli import _common
from prefect_comet.cli.app import app
from prefect_comet.media.probe import probe_video
from prefect_comet.steps.ledger import JobLedger, LedgerRecord
from tests._server import Background, wait_until
from tests.conftest import API_KEY

pytestmark = pytest.mark.timeout(300)

CLI = shutil.which("prefect-comet", path=str(Path(sys.executable).parent))
SUBCOMMANDS = ["generate", "batch", "jobs", "resume", "emulator", "callbacks"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The session's Prefect server, a Prefect home of the test's own, no CometAPI key unless given."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env.pop("COMETAPI_KEY", None)
    env.pop("COMETAPI_BASE_URL", None)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=PREFECT_API_URL.value(),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",  # tables and help on one line each, as in a wide terminal
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str], timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    assert CLI, "the prefect-comet console script is not installed: pip install -e ."
    # run() kills the command when the timeout passes or the test is interrupted.
    return subprocess.run(
        [CLI, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


def _api(emulator, tmp_path: Path, key: str = API_KEY, **extra: str) -> dict[str, str]:
    return _env(tmp_path, COMETAPI_BASE_URL=emulator.base_url, COMETAPI_KEY=key, **extra)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line the command printed on stderr, checked to be all there is."""
    output = f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _stored_path(stdout: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith("Stored video: "))
    return Path(line.removeprefix("Stored video: "))


def _frame(path: Path) -> tuple[int, int]:
    with path.open("rb") as file:
        probe = probe_video(file)
    return probe.width, probe.height


# -- every subcommand, against the emulator ---------------------------------------------------


def test_help_lists_every_subcommand_with_a_one_line_description(tmp_path, monkeypatch):
    result = _cli("--help", env=_env(tmp_path))

    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        line = next((line for line in result.stdout.splitlines() if re.search(rf"\b{name}\s{{2,}}\w", line)), None)
        assert line is not None, result.stdout
    monkeypatch.setattr(_common, "quiet_console", lambda: None)  # this process's logging stays as it is
    runner = CliRunner()
    for name in SUBCOMMANDS:  # in this process: five more interpreters would add nothing
        shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and "Usage: " in shown.output and f" {name} " in shown.output, shown.output


def test_generate_stores_an_mp4_and_prints_where(emulator, tmp_path):
    destination = tmp_path / "videos"

    result = _cli("generate", "A paper boat on a pond", "--dest", str(destination), env=_api(emulator, tmp_path))

    assert result.returncode == 0, result.stderr[-3000:]
    path = _stored_path(result.stdout)
    assert path.parent == destination and path.suffix == ".mp4" and path.is_file()
    assert _frame(path) == (1280, 720)
    assert "sha256 " in result.stdout and "Traceback" not in result.stderr


def test_batch_prints_one_line_per_outcome_and_the_manifest_and_fails_when_a_job_failed(emulator, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "A red kite"}\n{"prompt": "[fail] A blue boat", "aspect_ratio": "9:16"}\n')
    destination = tmp_path / "out"

    result = _cli("batch", str(prompts), "--dest", str(destination), env=_api(emulator, tmp_path))

    assert result.returncode == 1, result.stderr[-3000:]  # one job failed
    lines = result.stdout.splitlines()
    (stored,) = [line.split() for line in lines if re.match(r"\s*0 stored ", line)]
    assert Path(stored[-1]).is_file() and Path(stored[-1]).parent == destination
    assert any(re.match(r"\s*1 failed\s+GenerationFailedError: ", line) for line in lines), result.stdout
    manifest = next(line for line in lines if line.startswith("Manifest: ")).removeprefix("Manifest: ")
    assert Path(manifest).is_file() and len(Path(manifest).read_text().splitlines()) == 2
    assert "Traceback" not in result.stderr


def test_jobs_shows_each_key_with_its_state_and_skips_a_damaged_record(tmp_path):
    destination = tmp_path / "videos"
    ledger = JobLedger.beside(str(destination))
    ledger.put(LedgerRecord(key="kite-1", provider="omni", request_sha256="0" * 64, state="created", task_id="task_kite"))
    ledger.put(LedgerRecord(key="boat-2", provider="kling", request_sha256="1" * 64, state="unknown"))
    (Path(ledger.uri) / "broken.json").write_text("{not a record")
    env = _env(tmp_path)

    everything = _cli("jobs", "--dest", str(destination), env=env)
    unknown = _cli("jobs", "--ledger", ledger.uri, "--state", "unknown", env=env)

    assert everything.returncode == 0, everything.stderr
    rows = {line.split("│")[1].strip(): line for line in everything.stdout.splitlines() if line.count("│") > 2}
    assert " created " in rows["kite-1"] and "task_kite" in rows["kite-1"] and " omni " in rows["kite-1"]
    assert " unknown " in rows["boat-2"] and " kling " in rows["boat-2"]
    assert "2 jobs in the ledger at " in everything.stdout
    assert "skipped 1 damaged ledger record(s)" in everything.stderr and "broken.json" in everything.stderr
    assert unknown.returncode == 0 and "boat-2" in unknown.stdout and "kite-1" not in unknown.stdout


async def test_resume_finishes_a_job_created_but_not_stored_without_creating_another(emulator, credentials, tmp_path):
    destination = tmp_path / "videos"
    ledger = JobLedger.beside(str(destination))
    job = await create_video(
        OmniVideoRequest(prompt="Created, never stored"), credentials, idempotency_key="resume-me", ledger_uri=ledger.uri
    )
    assert ledger.get("resume-me").state == "created"

    result = await asyncio.to_thread(
        _cli, "resume", "resume-me", "--dest", str(destination), env=_api(emulator, tmp_path)
    )

    assert result.returncode == 0, result.stderr[-3000:]
    path = _stored_path(result.stdout)
    assert path == destination / f"{job.task_id}.mp4" and path.is_file()
    record = ledger.get("resume-me")
    assert record.state == "stored" and record.stored.uri == str(path)
    assert emulator.created_per_key() == {"resume-me": 1}  # resumed, not created again


@pytest.mark.parametrize("stop_with", ["SIGTERM", "SIGINT"])
def test_the_emulator_serves_on_a_free_port_and_exits_cleanly_on_a_signal(tmp_path, stop_with):
    # SIGINT as a background shell leaves it (ignored): the command must still stop on it.
    shell = f"trap '' INT; exec {CLI} emulator --port 0 --latency 0.2"
    server = Background("emulator", ["sh", "-c", shell], env=_env(tmp_path), log_dir=tmp_path)
    try:
        wait_until(lambda: "listening on http://" in server.log_path.read_text(), timeout=120,
                   what="the emulator's address", process=server)
        url = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", server.log_path.read_text()).group(1)
        answer = httpx.get(f"{url}/v1/videos/task_none", headers={"Authorization": "Bearer sk-any"}, timeout=10)
        assert answer.status_code == 404 and answer.json()

        server.process.send_signal(getattr(signal, stop_with))
        assert server.process.wait(timeout=30) == 0, server.tail()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/v1/videos/task_none", timeout=5)
    finally:
        server.stop()


# -- one line per error -----------------------------------------------------------------------


def test_no_key_is_one_line_and_exit_1(tmp_path):
    result = _cli("generate", "A red kite", "--dest", str(tmp_path / "videos"), env=_env(tmp_path))

    line = _one_error_line(result)
    assert result.returncode == 1
    assert line.startswith("error: No CometAPI key") and "COMETAPI_KEY" in line


async def test_a_wrong_key_is_one_line_and_exit_1_while_the_run_logs_it_to_prefect(emulator, tmp_path):
    prompt = f"Wrong key {uuid.uuid4().hex}"
    env = _api(emulator, tmp_path, key="sk-not-the-right-one")

    result = await asyncio.to_thread(_cli, "generate", prompt, "--dest", str(tmp_path / "videos"), env=env)

    line = _one_error_line(result)
    assert result.returncode == 1
    assert line.startswith("error: CometAPI answered HTTP 401") and "What to do: check the API key" in line
    assert "sk-not-the-right-one" not in result.stdout + result.stderr
    # The terminal got one line; the run's own logs, traceback included, are in Prefect.
    logs = await _logs_of_the_failed_run(prompt)
    assert any("AuthenticationError" in log and "Traceback" in log for log in logs), logs


async def _logs_of_the_failed_run(prompt: str) -> list[str]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["generate-omni-video"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=50,
        )
        (run,) = [run for run in runs if run.parameters.get("request", {}).get("prompt") == prompt]
        deadline = time.monotonic() + 15
        while True:  # logs arrive in batches
            logs = [log.message for log in await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
            if any("Finished in state Failed" in log for log in logs) or time.monotonic() > deadline:
                return logs
            await asyncio.sleep(0.5)


def test_a_request_the_rules_refuse_is_one_line_and_exit_2(tmp_path):
    env = _env(tmp_path, COMETAPI_KEY="sk-unused")

    result = _cli("generate", "A red kite", "--kling", "--duration", "7", "--dest", str(tmp_path / "v"), env=env)

    line = _one_error_line(result)
    assert result.returncode == 2
    assert line.startswith("error: invalid KlingOmniVideoRequest: duration: ") and "'5' or '10'" in line
    assert not (tmp_path / "v").exists()  # refused before anything started


def test_an_unwritable_destination_is_one_line_and_exit_1(emulator, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    destination = tmp_path / "notes.txt" / "videos"

    result = _cli("generate", "A red kite", "--dest", str(destination), env=_api(emulator, tmp_path))

    line = _one_error_line(result)
    assert result.returncode == 1
    assert f"Cannot write to {destination}" in line and "is a file, not a folder" in line and "What to do:" in line
    assert emulator.jobs == {}  # refused before paying


def test_an_s3_destination_without_s3fs_names_the_extra_to_install(emulator, tmp_path):
    missing = tmp_path / "no-s3fs" / "s3fs"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('s3fs is not installed here')\n")
    env = _api(emulator, tmp_path, PYTHONPATH=str(missing.parent))  # as on a machine without the s3 extra

    result = _cli("generate", "A red kite", "--dest", "s3://bucket/videos", env=env)

    line = _one_error_line(result)
    assert result.returncode == 1
    assert 'pip install "prefect-comet[s3]"' in line and "s3://bucket/videos" in line
    assert emulator.jobs == {}


def test_resume_without_a_task_id_is_one_line_saying_what_to_do(tmp_path):
    ledger = JobLedger.beside(str(tmp_path / "videos"))
    ledger.put(LedgerRecord(key="lost-1", provider="omni", request_sha256="0" * 64, state="unknown"))

    result = _cli("resume", "lost-1", "--ledger", ledger.uri, env=_env(tmp_path))

    line = _one_error_line(result)
    assert result.returncode == 1
    assert "'lost-1' has no task id" in line and "What to do:" in line


def test_a_port_in_use_is_one_line_naming_it_and_the_cure(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = _cli("emulator", "--port", str(port), env=_env(tmp_path), timeout=120)

    line = _one_error_line(result)
    assert result.returncode == 1
    assert f"port {port} " in line and "in use" in line and "--port 0" in line
