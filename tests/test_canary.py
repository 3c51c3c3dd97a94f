"""The canary: the API key and signed-URL secrets appear nowhere a run leaves traces.

End-to-end runs (Omni through a content redirect to signed `/files/...?signature=` URLs with
a resumed download, Kling with a watermarked copy, a failed generation, a refused download
from a signed URL) use the canary key. Then every place that keeps something is searched for
the key, for `signature=` and for each signature the emulator handed out: logs captured at
DEBUG from every logger (httpx included), the logs, flow runs, task runs, artifacts and events
read back from the Prefect server, persisted results, sidecars, ledger records, exceptions.

The balance's query service takes the key in its URL (`/user/quota?key=...`): a run that reads
the balance (the task, and a batch's budget), one whose query fails with a 500 and one that
cannot connect are searched the same way, manifests included.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventOccurredFilter
from prefect.logging.handlers import APILogHandler
from prefect.settings import (
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)

from prefect_comet import (
    AccountBalance,
    CometAPICredentials,
    KlingOmniVideoRequest,
    KlingWatermark,
    OmniVideoRequest,
    check_balance,
    generate_video,
    generate_videos,
)
from prefect_comet.exceptions import GenerationFailedError, InvalidContentError, ServerError
from prefect_comet.testing.emulator import CometEmulator
from tests._readback import wait_for_events
from tests.conftest import API_KEY, FAST

LOGGERS = ["", "httpx", "httpcore", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect_comet"]


async def test_no_secret_in_any_trace(credentials, tmp_path, caplog):
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    results = tmp_path / "results"
    destination = tmp_path / "videos"
    started = datetime.now(UTC) - timedelta(seconds=5)
    runs: dict[str, Any] = {}  # name -> final state

    with temporary_settings({PREFECT_RESULTS_PERSIST_BY_DEFAULT: True, PREFECT_LOCAL_STORAGE_PATH: results}):
        with CometEmulator(api_key=API_KEY, latency=0.2, content_redirect=True) as emu:
            canary = credentials.model_copy(update={"base_url": emu.base_url})

            async def run(name: str, request, **kwargs) -> None:
                runs[name] = await generate_video(
                    request, destination=str(destination), credentials=canary, idempotency_key=name,
                    return_state=True, **FAST, **kwargs,
                )

            emu.add_fault("files", "truncate")  # resumed with Range on the signed URL
            await run("omni-redirected", OmniVideoRequest(prompt="Waves behind a redirect"))
            await run("kling-watermarked", KlingOmniVideoRequest(
                prompt="A paper boat", aspect_ratio="16:9", watermark_info=KlingWatermark(enabled=True),
            ))
            await run("omni-failed", OmniVideoRequest(prompt="Waves that [fail]"))
            emu.add_fault("files", "content_type", content_type="text/html")
            await run("kling-refused", KlingOmniVideoRequest(prompt="A boat served as HTML", aspect_ratio="9:16"))

            signatures = emu.issued_signatures()
            signed_fetches = [r for r in emu.requests if r.route == "files" and "signature=" in r.query]
            auth_used = [r for r in emu.requests if r.headers.get("authorization") == "REDACTED"]

    outcomes = {name: await state.aresult(raise_on_failure=False) for name, state in runs.items()}
    assert [runs[n].is_completed() for n in runs] == [True, True, False, False]
    assert isinstance(outcomes["omni-failed"], GenerationFailedError)
    assert isinstance(outcomes["kling-refused"], InvalidContentError)
    # The secrets were really in play: signed URLs were fetched, the key was sent.
    assert len(signatures) >= 3 and len(signed_fetches) >= 4 and auth_used
    needles = {"api key": API_KEY, "signature=": "signature=", **{f"signature {s[:8]}": s for s in signatures}}

    # httpcore's own DEBUG lines are checked by test_httpcore_debug_lines_keep_signed_urls_out.
    records = [record for record in caplog.records if not record.name.startswith("httpcore")]
    assert {"httpx", "prefect.flow_runs", "prefect.task_runs"} <= {record.name for record in records}
    haystacks: dict[str, str] = {
        "captured logs": "\n".join(
            f"{caplog.handler.format(record)} {record.args!r} {record.exc_text or ''}" for record in records
        )
    }
    for name, outcome in outcomes.items():
        if isinstance(outcome, BaseException):
            haystacks[f"exception {name}"] = "\n".join(
                [str(outcome), repr(outcome), *traceback.format_exception(outcome)]
            )
        else:
            haystacks[f"result {name}"] = outcome.model_dump_json()
    flow_run_ids = [state.state_details.flow_run_id for state in runs.values()]
    haystacks.update(await _read_back_from_prefect(flow_run_ids, started))
    haystacks.update(_files("persisted result", results))
    assert [name for name in haystacks if name.startswith("persisted result")]  # results were persisted
    haystacks.update(_files("stored", destination, suffix=".json"))  # sidecars and ledger records
    stored_files = [name for name in haystacks if name.startswith("stored ")]
    assert any("/.comet-ledger/" in name for name in stored_files)  # ledger records
    assert any(".comet-ledger" not in name for name in stored_files)  # sidecars

    leaks = sorted(
        f"{needle_name} in {where}"
        for where, text in haystacks.items()
        for needle_name, needle in needles.items()
        if needle in text
    )
    assert leaks == [], leaks


async def test_no_balance_key_in_any_trace(credentials, tmp_path, caplog):
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    results = tmp_path / "results"
    destination = tmp_path / "videos"
    started = datetime.now(UTC) - timedelta(seconds=5)

    @flow
    async def spend_and_look(block: CometAPICredentials) -> AccountBalance:
        await check_balance(block)
        await generate_videos(  # the budget reads the balance before and after
            [KlingOmniVideoRequest(prompt="A boat", aspect_ratio="16:9"), OmniVideoRequest(prompt="A kite")],
            destination=str(destination), credentials=block, max_spend_usd=5.0, price_per_job_usd=0.25, **FAST,
        )
        return await check_balance(block)

    with temporary_settings({PREFECT_RESULTS_PERSIST_BY_DEFAULT: True, PREFECT_LOCAL_STORAGE_PATH: results}):
        with CometEmulator(api_key=API_KEY, latency=0.2) as emu:
            canary = credentials.model_copy(update={"base_url": emu.base_url, "query_base_url": emu.base_url})
            spent = await spend_and_look(canary, return_state=True)
            emu.add_fault("user.quota", "http_500", times=3)
            server_error = await spend_and_look(canary, return_state=True)
            quota_calls = [r for r in emu.requests if r.route == "user.quota"]
        # The emulator is gone: nothing listens on its port any more.
        refused = await spend_and_look(canary, return_state=True)

    states = {"spent": spent, "server error": server_error, "refused": refused}
    outcomes = {name: await state.aresult(raise_on_failure=False) for name, state in states.items()}
    assert isinstance(outcomes["spent"], AccountBalance) and outcomes["spent"].balance_usd == 99.5
    assert isinstance(outcomes["server error"], ServerError) and "HTTP 500" in str(outcomes["server error"])
    assert isinstance(outcomes["refused"], ServerError) and "Could not reach" in str(outcomes["refused"])
    assert len(quota_calls) >= 4 + 3 and all(r.query == "key=REDACTED" for r in quota_calls)

    records = [record for record in caplog.records if not record.name.startswith("httpcore")]
    assert any(record.name == "httpx" and "/user/quota" in record.getMessage() for record in records)
    haystacks: dict[str, str] = {
        "captured logs": "\n".join(
            f"{caplog.handler.format(record)} {record.args!r} {record.exc_text or ''}" for record in caplog.records
        )
    }
    for name, outcome in outcomes.items():
        if isinstance(outcome, BaseException):
            haystacks[f"exception {name}"] = "\n".join(
                [str(outcome), repr(outcome), *traceback.format_exception(outcome)]
            )
        else:
            haystacks[f"result {name}"] = outcome.model_dump_json()
    flow_run_ids = [state.state_details.flow_run_id for state in states.values()]
    async with get_client() as client:  # the batch runs as a subflow of the first run
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=flow_run_ids))
        )
    haystacks.update(await _read_back_from_prefect(flow_run_ids, started, min_task_runs=3, min_events=4))
    assert len(children) == 1  # the first run's batch (the others failed at their first look)
    haystacks.update({
        f"subflow {name}": text
        for name, text in (await _read_back_from_prefect([r.id for r in children], started, 2, 4)).items()
    })
    haystacks.update(_files("persisted result", results))
    haystacks.update(_files("stored", destination, suffix=".json"))  # sidecars and ledger records
    haystacks.update(_files("manifest", destination, suffix=".jsonl"))
    assert [name for name in haystacks if name.startswith("manifest")]
    assert [name for name in haystacks if name.startswith("persisted result")]

    needles = {"api key": API_KEY, "quota URL with its query": "quota?"}
    leaks = sorted(
        f"{needle_name} in {where}"
        for where, text in haystacks.items()
        for needle_name, needle in needles.items()
        if needle in text
    )
    assert leaks == [], leaks


async def _read_back_from_prefect(
    flow_run_ids: list, since: datetime, min_task_runs: int | None = None, min_events: int | None = None
) -> dict[str, str]:
    """Logs, flow runs, task runs, artifacts and events of these flow runs, as JSON text.

    By default each run has create, wait and persist task runs (one fewer for a failed one)
    and at least four events; `min_task_runs` and `min_events` set other floors (in all).
    """
    await APILogHandler.aflush()
    found: dict[str, str] = {}
    async with get_client() as client:
        for flow_run_id in flow_run_ids:
            flow_run = await client.read_flow_run(flow_run_id)
            terminal = "Completed" if flow_run.state and flow_run.state.is_completed() else "Failed"
            await wait_for_events(client, f"prefect.flow-run.{flow_run_id}", {f"prefect.flow-run.{terminal}"})
            found[f"flow run {flow_run_id}"] = flow_run.model_dump_json()
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
        )
        floor = 3 * len(flow_run_ids) - 3 if min_task_runs is None else min_task_runs
        assert len(task_runs) >= floor  # create, wait and persist per run
        found["task runs"] = json.dumps([task_run.model_dump(mode="json") for task_run in task_runs])
        deadline = time.monotonic() + 15
        while True:  # logs are shipped in batches: wait until the last run's end is there
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
            if any("Finished in state" in log.message for log in logs if log.flow_run_id == flow_run_ids[-1]):
                break
            assert time.monotonic() < deadline, "the flow runs' logs did not reach the server"
            await APILogHandler.aflush()
        found["prefect logs"] = json.dumps([log.model_dump(mode="json") for log in logs])
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
        found["artifacts"] = json.dumps([artifact.model_dump(mode="json") for artifact in artifacts])
        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=since),
            any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{run_id}" for run_id in flow_run_ids]),
        )
        page = await client.read_events(event_filter, limit=50)
        events = list(page.events)
        while page.next_page:
            page = await client.read_events_page(page.next_page)
            events.extend(page.events)
        assert len(events) >= (4 * len(flow_run_ids) if min_events is None else min_events)
        found["events"] = json.dumps([event.model_dump(mode="json") for event in events])
    return found


def _files(label: str, root: Path, suffix: str = "") -> dict[str, str]:
    """Every file under `root` (ending in `suffix`), as text."""
    return {
        f"{label} /{path.relative_to(root).as_posix()}": path.read_bytes().decode("utf-8", errors="replace")
        for path in sorted(root.rglob(f"*{suffix}"))
        if path.is_file()
    }


async def test_httpcore_debug_lines_keep_signed_urls_out(credentials, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="httpcore")
    with CometEmulator(api_key=API_KEY, latency=0.1, content_redirect=True) as emu:
        redirected = credentials.model_copy(update={"base_url": emu.base_url})
        await generate_video(
            OmniVideoRequest(prompt="Redirected"), destination=str(tmp_path), credentials=redirected, **FAST
        )
        signatures = emu.issued_signatures()
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("httpcore")]
    assert any("302" in line for line in lines)  # the redirect was logged
    assert [line for line in lines if "signature=" in line or any(s in line for s in signatures)] == []
