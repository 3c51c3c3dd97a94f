"""The real thing: the README's deployment recipe, command by command, then the UI in Chromium.

The commands are read from the README's emulator recipe (section "Deployments") and run as an
operator runs them: separate processes on loopback, the emulator CLI as CometAPI, the block
saved with `base_url` by the README's own line, the deployment from deployments/prefect.yaml,
`prefect deployment run ... --watch`. Only ports (free ones instead of 4200 and 8765), the
key (a canary instead of `anything`) and a few run parameters are changed, so the test fails
when the README drifts. Then the run's artifacts and events are read back from the server, and
headless Chromium checks what the UI shows and takes the screenshots in docs/.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import pytest
import pytest_asyncio
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun

from tests._readback import plain, related_roles, wait_for_events
from tests._server import (
    PREFECT_CLI,
    ROOT,
    Background,
    free_port,
    http_ok,
    prefect_env,
    wait_until,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(420)]

README = (ROOT / "README.md").read_text()
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


def readme_emulator_recipe() -> list[str]:
    """The lines of the README's emulator deployment recipe, as written (comments kept)."""
    section = README.split("\n## Deployments\n", 1)[1].split("\n## ", 1)[0]
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "prefect_comet.testing.emulator" in b]
    return [line for line in block.splitlines() if line.strip()]


def _command(line: str) -> list[str]:
    """A README line as argv: `prefect` and `python` become this interpreter's."""
    argv = shlex.split(line, comments=True)
    if argv[0] == "prefect":
        return [*PREFECT_CLI, *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"the README's recipe has a command this test cannot run: {line}")


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployed_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DeployedRun]:
    base = tmp_path_factory.mktemp("prefect-e2e")
    home, logs, destination = base / "home", base / "logs", base / "videos"
    home.mkdir()
    logs.mkdir()
    port, emulator_port = free_port(), free_port()
    api_url, ui_url = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    api_key = f"sk-e2e-{secrets.token_hex(8)}"
    # `prefect server start` takes its port from the environment; the worker looks for work
    # every second instead of every 10, to keep the test short.
    env = prefect_env(home, api_url, PREFECT_SERVER_API_PORT=str(port), PREFECT_WORKER_QUERY_SECONDS="1")
    processes: dict[str, Background] = {}
    flow_run_id: UUID | None = None
    try:
        for line in readme_emulator_recipe():
            line = (
                line.replace("127.0.0.1:4200", f"127.0.0.1:{port}")
                .replace("127.0.0.1:8765", f"127.0.0.1:{emulator_port}")
                .replace("--port 8765", f"--port {emulator_port}")
                .replace("api_key='anything'", f"api_key='{api_key}'")
            )
            if line.startswith("pip install"):
                continue  # this environment is installed already
            words, argv = shlex.split(line, comments=True), _command(line)
            if "in its own terminal" in line:
                name = "emulator" if "testing.emulator" in line else words[1]  # prefect <server|worker>
                processes[name] = Background(name, argv, env=env, log_dir=logs)
                if name == "emulator":
                    wait_until(lambda: "listening on" in processes["emulator"].tail(), timeout=30,
                               what="the emulator", process=processes["emulator"])
                if name == "server":
                    wait_until(lambda: http_ok(f"{api_url}/health"), timeout=120, what="the Prefect API",
                               process=processes["server"])
                    wait_until(lambda: http_ok(ui_url), timeout=60, what="the Prefect UI", process=processes["server"])
                continue
            if words[:3] == ["prefect", "deployment", "run"]:
                argv += [
                    "-p", "aspect_ratio=1:1", "-p", "poll_interval_seconds=0.2",
                    "-p", f"destination={destination}", "--watch-timeout", str(int(RUN_TIMEOUT)),
                ]
                ran = _run(argv, env, RUN_TIMEOUT + 60)
                found = re.search(r"UUID: ([0-9a-f-]{36})", ran.stdout)
                if ran.returncode != 0 or not found:
                    logs_text = await _run_logs_by_id(api_url, found.group(1)) if found else "(no flow run)"
                    raise AssertionError(
                        f"{line}\nended {ran.returncode}:\n{ran.stdout[-3000:]}\n{ran.stderr[-2000:]}\n"
                        f"Flow run logs:\n{logs_text}\nWorker log:\n{processes['worker'].tail(60) if 'worker' in processes else '(none)'}"
                    )
                flow_run_id = UUID(found.group(1))
                continue
            ran = _run(argv, env, 180)
            assert ran.returncode == 0, f"{line}\nended {ran.returncode}:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
        assert flow_run_id is not None, "the README's recipe never runs the deployment"
        async with PrefectClient(api=api_url) as client:
            deployment = await client.read_deployment_by_name("text-to-video/text-to-video")
            flow_run = await client.read_flow_run(flow_run_id)
            block = await client.read_block_document_by_name("comet", "cometapi-credentials")
        assert block.data["base_url"] == f"http://127.0.0.1:{emulator_port}"  # the README's block, with base_url
        yield DeployedRun(api_url, ui_url, api_key, destination, flow_run, deployment.id, processes)
    finally:
        for process in reversed(list(processes.values())):
            process.stop()


def _readme_prompt() -> str:
    [run] = [line for line in readme_emulator_recipe() if " deployment run " in line]
    argv = shlex.split(run, comments=True)
    return next(value.split("=", 1)[1] for flag, value in zip(argv, argv[1:]) if flag == "-p" and value.startswith("prompt="))


PROMPT = _readme_prompt()


async def _run_logs_by_id(api_url: str, flow_run_id: str) -> str:
    async with PrefectClient(api=api_url) as client:
        return await _run_logs(client, UUID(flow_run_id))


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


async def test_the_artifacts_are_on_the_generate_omni_video_subflow_run_as_the_readme_says(
    deployed_run: DeployedRun,
) -> None:
    artifacts = await _run_artifacts(deployed_run)
    async with deployed_run.client() as client:
        printed = await client.read_flow(deployed_run.flow_run.flow_id)
        holders = {artifact.flow_run_id for artifact in artifacts.values()}
        [holder_id] = holders
        holder = await client.read_flow_run(holder_id)
        holder_flow = await client.read_flow(holder.flow_id)
    assert printed.name == "text-to-video"
    assert (holder.name, holder_flow.name) == ("generate-omni-video", "generate-video")
    assert holder.parent_task_run_id is not None and holder.id != deployed_run.flow_run.id
    assert "`generate-omni-video`" in README and "(flow `generate-video`)" in README


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
