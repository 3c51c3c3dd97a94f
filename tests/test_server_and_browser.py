"""The real thing: `prefect server start`, a process worker, `prefect deploy`, the UI in Chromium.

Everything runs as an operator runs it: separate processes on loopback, the emulator CLI as
CometAPI, a credentials block saved through the API, the deployment from
deployments/prefect.yaml. Then the run's artifacts and events are read back from the server,
and headless Chromium checks what the UI shows and takes the screenshots in docs/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import pytest
import pytest_asyncio
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun
from prefect.deployments import run_deployment
from prefect.workers.process import ProcessWorker
from pydantic import SecretStr

from prefect_comet import CometAPICredentials
from tests._readback import plain, related_roles, wait_for_events
from tests._server import (
    PREFECT_CLI,
    ROOT,
    Background,
    free_port,
    http_ok,
    prefect_env,
    run_cli,
    wait_until,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(420)]

POOL = "comet-pool"  # as in deployments/prefect.yaml
BLOCK = "emulator"
PROMPT = "A red kite over the dunes, seen from below"
RUN_TIMEOUT = 150.0
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output"
DOCS = ROOT / "docs"


@dataclass
class DeployedRun:
    """A finished run of the `text-to-video` deployment, and the servers that ran it."""

    api_url: str
    ui_url: str
    api_key: str
    destination: Path
    flow_run: FlowRun
    deployment_id: UUID
    processes: dict[str, Background] = field(default_factory=dict)

    def client(self) -> PrefectClient:
        return PrefectClient(api=self.api_url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployed_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DeployedRun]:
    base = tmp_path_factory.mktemp("prefect-e2e")
    home, logs, destination = base / "home", base / "logs", base / "videos"
    home.mkdir()
    logs.mkdir()
    port, emulator_port = free_port(), free_port()
    api_url, ui_url = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    api_key = f"sk-e2e-{secrets.token_hex(8)}"
    # The worker looks for work every second instead of every 10, to keep the test short.
    env = prefect_env(home, api_url, PREFECT_WORKER_QUERY_SECONDS="1")
    processes: dict[str, Background] = {}
    try:
        processes["server"] = server = Background(
            "server", [*PREFECT_CLI, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, log_dir=logs,
        )
        processes["emulator"] = emulator = Background(
            "emulator",
            [sys.executable, "-m", "prefect_comet.testing.emulator", "--port", str(emulator_port),
             "--latency", "2", "--api-key", api_key],
            env=env, log_dir=logs,
        )
        wait_until(lambda: "listening on" in emulator.tail(), timeout=30, what="the emulator", process=emulator)
        wait_until(lambda: http_ok(f"{api_url}/health"), timeout=120, what="the Prefect API", process=server)
        wait_until(lambda: http_ok(ui_url), timeout=60, what="the Prefect UI", process=server)

        async with PrefectClient(api=api_url) as client:
            await CometAPICredentials(
                api_key=SecretStr(api_key), base_url=f"http://127.0.0.1:{emulator_port}"
            ).asave(BLOCK, client=client)
            await client.create_work_pool(
                WorkPoolCreate(
                    name=POOL, type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        run_cli(
            [*PREFECT_CLI, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", "--no-prompt"],
            env=env,
        )
        processes["worker"] = worker = Background(
            "worker", [*PREFECT_CLI, "worker", "start", "--pool", POOL, "--type", "process"],
            env=env, log_dir=logs,
        )
        async with PrefectClient(api=api_url) as client:
            deployment = await client.read_deployment_by_name("text-to-video/text-to-video")
            flow_run = await run_deployment(
                "text-to-video/text-to-video",
                client=client,
                parameters={
                    "prompt": PROMPT,
                    "aspect_ratio": "1:1",
                    "credentials_block": BLOCK,
                    "poll_interval_seconds": 0.2,
                    "destination": str(destination),
                },
                timeout=RUN_TIMEOUT,
                poll_interval=1,
            )
            if not (flow_run.state and flow_run.state.is_completed()):
                raise AssertionError(
                    f"The deployment run ended {flow_run.state!r} (or did not end within "
                    f"{RUN_TIMEOUT:g} s).\nFlow run logs:\n{await _run_logs(client, flow_run.id)}\n"
                    f"Worker log:\n{worker.tail(60)}"
                )
        yield DeployedRun(api_url, ui_url, api_key, destination, flow_run, deployment.id, processes)
    finally:
        for process in reversed(list(processes.values())):
            process.stop()


async def _run_logs(client: PrefectClient, flow_run_id: UUID) -> str:
    try:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    except Exception as error:  # diagnostics only
        return f"(could not read logs: {error!r})"
    return "\n".join(f"{log.level} {log.message}" for log in logs[-60:])


async def _run_and_subflow_ids(client: PrefectClient, flow_run_id: UUID) -> list[UUID]:
    """The run and its subflow runs (the `generate-video` subflow runs the tasks)."""
    children = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
    )
    return [flow_run_id, *(child.id for child in children)]


async def _run_artifacts(run: DeployedRun) -> dict[str, Artifact]:
    """Type-prefix ('video-progress', 'video-summary', 'video-file') -> artifact of the run."""
    async with run.client() as client:
        ids = await _run_and_subflow_ids(client, run.flow_run.id)
        found = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    by_kind: dict[str, Artifact] = {}
    for artifact in found:
        for kind in ("video-progress", "video-summary", "video-file"):
            if (artifact.key or "").startswith(f"{kind}-"):
                by_kind[kind] = artifact
    return by_kind


def _stored_task_id(run: DeployedRun) -> str:
    [sidecar] = [path for path in run.destination.glob("*.json")]
    return json.loads(sidecar.read_text())["task_id"]


async def test_the_deployment_run_stores_a_verified_video(deployed_run: DeployedRun) -> None:
    videos = sorted(deployed_run.destination.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000, list(deployed_run.destination.iterdir())
    sidecar = json.loads(videos[0].with_suffix(".json").read_text())
    assert sidecar["request"]["prompt"] == PROMPT and sidecar["request"]["aspect_ratio"] == "1:1"
    assert sidecar["videos"][0]["width"] == 1280 and sidecar["videos"][0]["height"] == 720


async def test_the_run_has_progress_summary_and_link_artifacts(deployed_run: DeployedRun) -> None:
    artifacts = await _run_artifacts(deployed_run)

    assert set(artifacts) == {"video-progress", "video-summary", "video-file"}, (
        f"artifacts of the run: {sorted(artifacts)} (are they wired into tasks.py?)"
    )
    progress, summary, link = (artifacts[kind] for kind in ("video-progress", "video-summary", "video-file"))
    assert progress.type == "progress" and progress.data == 100
    assert "1280x720" in summary.data, summary.data
    assert "**MISMATCH**" in summary.data  # 1:1 was requested, the file is 16:9
    assert PROMPT in summary.data and _stored_task_id(deployed_run) in summary.data
    assert str(deployed_run.destination) in link.data
    for artifact in artifacts.values():
        assert deployed_run.api_key not in f"{artifact.data} {artifact.description}"


async def test_the_run_emits_created_completed_and_persisted(deployed_run: DeployedRun) -> None:
    task_id = _stored_task_id(deployed_run)
    names = {"comet.video.created", "comet.video.completed", "comet.video.persisted"}
    async with deployed_run.client() as client:
        run_ids = await _run_and_subflow_ids(client, deployed_run.flow_run.id)
        seen = await wait_for_events(client, f"cometapi.video.omni.{task_id}", names, timeout=60)

    for name, event in seen.items():
        assert event.resource["comet.task-id"] == task_id, name
        assert related_roles(event)["flow-run"] in {f"prefect.flow-run.{i}" for i in run_ids}, name
        assert deployed_run.api_key not in json.dumps(plain(event)), name
    assert "task-run" in related_roles(seen["comet.video.created"])
    persisted = seen["comet.video.persisted"].payload
    assert persisted["uri"].endswith(f"{task_id}.mp4") and persisted["width"] == 1280


# -- the UI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium and Playwright, or a skip that says what is missing (CI installs both)."""
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install -e '.[dev]')")
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    return path


async def test_the_ui_shows_the_artifacts_and_the_run_form(chromium: str, deployed_run: DeployedRun) -> None:
    from playwright.async_api import async_playwright, expect

    artifacts = await _run_artifacts(deployed_run)
    assert "video-summary" in artifacts, "no summary artifact to look at (are artifacts wired into tasks.py?)"
    run_with_artifacts = artifacts["video-summary"].flow_run_id
    SCREENSHOTS.mkdir(exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)

            await page.goto(f"{deployed_run.ui_url}/runs/flow-run/{run_with_artifacts}")
            await page.locator("li#artifacts").click()
            cards = page.locator("#artifacts-content")
            await expect(cards).to_contain_text(artifacts["video-progress"].key)
            await expect(cards).to_contain_text(artifacts["video-summary"].key)
            await expect(cards).to_contain_text(PROMPT)  # the progress artifact's description
            await page.wait_for_timeout(1000)  # let the run graph finish drawing
            await page.screenshot(path=SCREENSHOTS / "flow-run.png")

            await cards.get_by_text(artifacts["video-progress"].key).click()
            await expect(page.locator("body")).to_contain_text("Progress: 100%")

            await page.goto(f"{deployed_run.ui_url}/artifacts/artifact/{artifacts['video-summary'].id}")
            await expect(page.locator("body")).to_contain_text("1280x720")
            await expect(page.locator("body")).to_contain_text("MISMATCH")
            poster = page.locator("img[alt=poster]")
            if await poster.count():  # present once persist_video makes posters
                await expect(poster).to_be_visible()
            await page.screenshot(path=SCREENSHOTS / "video-summary.png", full_page=True)

            await page.goto(f"{deployed_run.ui_url}/deployments/deployment/{deployed_run.deployment_id}/run")
            form = page.locator("body")
            for parameter in ("prompt", "aspect_ratio", "seconds", "resolution", "destination", "credentials_block"):
                await expect(form).to_contain_text(parameter)
            await expect(form).to_contain_text("What the video shows.")  # docstring descriptions
            await page.screenshot(path=SCREENSHOTS / "deployment-run-form.png")
        finally:
            await browser.close()

    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":  # refresh the README's pictures on demand
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(SCREENSHOTS / "flow-run.png", DOCS / "flow-run.png")
        shutil.copyfile(SCREENSHOTS / "video-summary.png", DOCS / "video-summary.png")
