"""What a job cost and what the account holds: Kling's units on every view of a job, the balance.

Kling's `final_unit_deduction` is kept on the job and the stored video, and so reaches the
sidecar, the manifest, the summary and batch artifacts and the `comet.video.*` events (read
back from the real Prefect server); the balance comes from the query service (the emulator's).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import respx
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from pydantic import SecretStr

from prefect_comet import (
    AccountBalance,
    BatchResult,
    CometAPICredentials,
    JobOutcome,
    KlingOmniVideoRequest,
    OmniVideoRequest,
    StoredVideo,
    check_balance,
    generate_video,
    generate_videos,
)
from prefect_comet.api.client import CometClient
from prefect_comet.api.kling import KlingProvider
from prefect_comet.api.quota import read_balance
from prefect_comet.exceptions import AuthenticationError, ServerError
from prefect_comet.testing.emulator import CometEmulator
from prefect_comet.ui.labels import artifact_key
from prefect_comet.ui.summary import batch_cost_markdown
from tests._readback import artifacts_with_key, wait_for_events
from tests.conftest import API_KEY, FAST

BASE = "https://api.test"
KLING = f"{BASE}/kling/v1/videos/omni-video"


def _native(**extra: object) -> dict[str, object]:
    return {"task_id": "t-1", "task_status": "succeed", "task_info": {}, "task_result": {"videos": []}, **extra}


def _wrapped(outer_extra: dict[str, object], inner_extra: dict[str, object]) -> dict[str, object]:
    outer = {"task_id": "t-1", "status": "SUCCESS", "progress": "100%", "fail_reason": "", **outer_extra}
    return {**outer, "data": {"code": 0, "message": "HTTP_OK", "data": _native(**inner_extra)}}


@pytest.mark.parametrize(
    ("data", "units"),
    [
        (_native(final_unit_deduction="1"), 1.0),
        (_native(final_unit_deduction=" 2.5 "), 2.5),
        (_native(final_unit_deduction=3), 3.0),
        (_native(final_unit_deduction="0"), 0.0),
        (_native(), None),
        (_wrapped({}, {"final_unit_deduction": "4"}), 4.0),  # inside the wrapped answer
        (_wrapped({"final_unit_deduction": "5"}, {}), 5.0),  # outside it
        (_wrapped({"final_unit_deduction": "5"}, {"final_unit_deduction": "6"}), 6.0),  # the native one wins
    ],
)
@respx.mock
async def test_final_unit_deduction_is_read_wherever_kling_puts_it(data, units, caplog):
    respx.get(f"{KLING}/t-1").mock(return_value=httpx.Response(200, json={"code": 0, "data": data}))
    async with CometClient(BASE, "sk-x") as client:
        job, _ = await KlingProvider().retrieve(client, "t-1")
    assert job.cost_units == units
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("odd", ["free", "-1", "inf", "nan", "1e400", [1], {"units": 1}, True])
@respx.mock
async def test_an_odd_final_unit_deduction_is_dropped_with_a_warning(odd, caplog):
    respx.get(f"{KLING}/t-1").mock(
        return_value=httpx.Response(200, json={"code": 0, "data": _native(final_unit_deduction=odd)})
    )
    caplog.set_level(logging.WARNING, logger="prefect_comet.api")
    async with CometClient(BASE, "sk-x") as client:
        job, _ = await KlingProvider().retrieve(client, "t-1")
    assert job.cost_units is None and job.status.value == "succeeded"  # the job itself goes on
    [warning] = [r.getMessage() for r in caplog.records if r.name == "prefect_comet.api"]
    assert "final_unit_deduction" in warning and "t-1" in warning


def test_the_balance_answer_is_read_tolerantly(caplog):
    caplog.set_level(logging.WARNING, logger="prefect_comet.api")
    balance = AccountBalance.from_answer(
        {
            "username": "ada",
            "total_quota": "12.5",
            "total_used_quota": "lots",
            "request_count": 3.5,
            "keys": [
                {"name": "main", "remain_quota": -1, "used_quota": 2},
                "not a key",
                {"name": "query-only", "remain_quota": 0, "used_quota": float("inf")},
            ],
        }
    )
    assert (balance.username, balance.balance_usd, balance.used_usd, balance.request_count) == ("ada", 12.5, None, None)
    assert not balance.unlimited
    assert [(k.name, k.remain_usd, k.used_usd, k.unlimited) for k in balance.api_keys] == [
        ("main", None, 2.0, True), ("query-only", 0.0, None, False),
    ]
    warned = " ".join(r.getMessage() for r in caplog.records)
    for field in ("total_used_quota", "request_count", "keys[]", "keys[].used_quota"):
        assert field in warned
    unlimited = AccountBalance.from_answer({"total_quota": -1, "total_used_quota": 0, "keys": "nope"})
    assert unlimited.unlimited and unlimited.balance_usd is None and unlimited.api_keys == []


async def test_get_balance_reads_the_emulators_account_and_its_fall(emulator, credentials, tmp_path):
    block = credentials.model_copy(update={"query_base_url": emulator.base_url})
    before = await block.get_balance()
    assert (before.balance_usd, before.used_usd, before.username) == (100.0, 0.0, "emulator")
    await generate_video(OmniVideoRequest(prompt="A kite"), destination=str(tmp_path), credentials=block, **FAST)
    after = await block.get_balance()
    assert (after.balance_usd, after.used_usd) == (99.75, 0.25) == (emulator.balance_usd, emulator.charged_usd)
    assert after.api_keys[0].remain_usd == 99.75


async def test_a_wrong_key_and_a_failing_service_raise_typed_errors_without_the_url(emulator, credentials):
    wrong = CometAPICredentials(api_key=SecretStr("sk-wrong-key"), query_base_url=emulator.base_url)
    with pytest.raises(AuthenticationError) as refused:
        await wrong.get_balance()
    assert refused.value.status_code == 401 and "sk-wrong-key" not in str(refused.value)
    assert f"{emulator.base_url}/user/quota" in str(refused.value)
    emulator.add_fault("user.quota", "http_503", times=3)
    async with httpx.AsyncClient() as http:
        with pytest.raises(ServerError) as failing:
            await read_balance(http, emulator.base_url, API_KEY)
    assert failing.value.status_code == 503 and API_KEY not in str(failing.value) and "?" not in str(failing.value)
    assert failing.value.__cause__ is None and failing.value.__suppress_context__ is False
    assert len([r for r in emulator.requests if r.route == "user.quota"]) == 4  # 1 refused + 3 tries


async def test_a_key_echoed_by_the_service_is_cut_out_of_the_error():
    with respx.mock:
        respx.get("https://query.test/user/quota").mock(
            return_value=httpx.Response(401, json={"error": {"message": "invalid key sk-echoed-secret"}})
        )
        async with httpx.AsyncClient() as http:
            with pytest.raises(AuthenticationError) as caught:
                await read_balance(http, "https://query.test", "sk-echoed-secret")
    assert "sk-echoed-secret" not in str(caught.value) and "********" in str(caught.value)


async def test_the_query_base_url_follows_its_variable_when_left_at_the_default(emulator, monkeypatch):
    from prefect_comet import credentials as module

    monkeypatch.setattr(module, "_told", set())
    monkeypatch.setenv("COMETAPI_QUERY_BASE_URL", emulator.base_url)
    block = CometAPICredentials(api_key=SecretStr(API_KEY))
    assert block.query_base_url == "https://query.cometapi.com"
    assert block.effective_query_base_url() == emulator.base_url
    assert (await block.get_balance()).balance_usd == 100.0
    pinned = CometAPICredentials(api_key=SecretStr(API_KEY), query_base_url="http://proxy.test")
    assert pinned.effective_query_base_url() == "http://proxy.test"


async def test_check_balance_logs_the_figures_and_never_the_url(emulator, credentials, caplog):
    block = credentials.model_copy(update={"query_base_url": emulator.base_url})
    caplog.set_level(logging.DEBUG)

    @flow
    async def look() -> AccountBalance:
        return await check_balance(block)

    balance = await look()
    assert balance.balance_usd == 100.0
    lines = [record.getMessage() for record in caplog.records]
    assert any("CometAPI balance: 100.00 USD; used: 0.00 USD over 0 requests" in line for line in lines)
    assert any("Key emulator-key: 100.00 USD left" in line for line in lines)
    assert not [line for line in lines if API_KEY in line or "key=" in line]


async def test_the_cost_of_a_kling_job_reaches_sidecar_summary_and_events(credentials, tmp_path):
    stored = await generate_video(
        KlingOmniVideoRequest(prompt="A paper boat", aspect_ratio="16:9"),
        destination=str(tmp_path), credentials=credentials, **FAST,
    )
    assert stored.cost_units == 1.0
    sidecar = json.loads(Path(stored.metadata_uri).read_text())
    assert [video["cost_units"] for video in sidecar["videos"]] == [1.0]
    async with get_client() as client:
        [summary] = await artifacts_with_key(client, artifact_key("summary", stored.task_id))
        seen = await wait_for_events(
            client, f"cometapi.video.kling.{stored.task_id}",
            {"comet.video.created", "comet.video.completed", "comet.video.persisted"},
        )
    assert "- **Cost**: 1 units" in summary.data
    assert "cost_units" not in seen["comet.video.created"].payload  # not known before it finished
    assert seen["comet.video.completed"].payload["cost_units"] == 1.0
    assert seen["comet.video.persisted"].payload["cost_units"] == 1.0


async def test_an_omni_job_says_its_cost_is_unknown(credentials, tmp_path):
    stored = await generate_video(
        OmniVideoRequest(prompt="A kite"), destination=str(tmp_path), credentials=credentials, **FAST
    )
    assert stored.cost_units is None
    async with get_client() as client:
        [summary] = await artifacts_with_key(client, artifact_key("summary", stored.task_id))
    assert "- **Cost**: unknown" in summary.data


async def test_the_costs_of_a_batch_reach_its_manifest_table_and_summary(tmp_path):
    with CometEmulator(api_key=API_KEY, latency=0.3, kling_units_per_job="2") as emu:
        block = CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emu.base_url)
        state = await generate_videos(
            [
                KlingOmniVideoRequest(prompt="A boat", aspect_ratio="16:9"),
                OmniVideoRequest(prompt="A kite"),
                KlingOmniVideoRequest(prompt="A swan", aspect_ratio="9:16"),
            ],
            destination=str(tmp_path), credentials=block, return_state=True, **FAST,
        )
    result: BatchResult = await state.aresult()
    assert [o.cost_units for o in result.outcomes] == [2.0, None, 2.0] and result.cost_units == 4.0
    manifest = [json.loads(line) for line in Path(result.manifest_uri).read_text().splitlines()]
    assert [line["cost_units"] for line in manifest] == [2.0, None, 2.0]
    assert [line["stored"]["cost_units"] for line in manifest] == [2.0, None, 2.0]
    async with get_client() as client:
        by_run = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
        [table] = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=by_run, key=ArtifactFilterKey(any_=["video-batch"]))
        )
        [summary] = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=by_run, key=ArtifactFilterKey(any_=["video-batch-cost"]))
        )
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["units"] for row in rows] == ["2", "", "2"]
    assert "| Jobs | 3 |" in summary.data and "| Stored | 3 |" in summary.data
    assert "| Units deducted | 4 units |" in summary.data


def _outcome(index: int, status: str, units: float | None = None) -> JobOutcome:
    stored = StoredVideo(uri=f"/v/{index}.mp4", sha256="ab" * 32, size_bytes=1, task_id=f"t{index}",
                         provider="kling", cost_units=units) if status == "stored" else None
    return JobOutcome(index=index, idempotency_key=f"k{index}", provider="kling", status=status, stored=stored,
                      error="the budget was reached" if status == "skipped" else None)


def test_the_batch_summary_shows_every_figure_and_unknown_for_the_missing_ones():
    outcomes = [_outcome(0, "stored", 1.0), _outcome(1, "stored", 0.5), _outcome(2, "failed"), _outcome(3, "skipped")]
    known = BatchResult(manifest_uri="/v/manifest.jsonl", outcomes=outcomes, spent_usd=0.5,
                        balance_before_usd=10.0, balance_after_usd=9.5)
    assert known.skipped_count == 1 and known.cost_units == 1.5
    text = batch_cost_markdown(known)
    for row in ("| Jobs | 4 |", "| Stored | 2 |", "| Failed | 1 |", "| Skipped (budget reached) | 1 |",
                "| Units deducted | 1.5 units |", "| Spent | 0.50 USD |", "| Balance before | 10.00 USD |",
                "| Balance after | 9.50 USD |"):
        assert row in text
    unknown = batch_cost_markdown(BatchResult(manifest_uri="/v/m.jsonl", outcomes=[_outcome(0, "failed")]))
    for row in ("| Units deducted | unknown |", "| Spent | unknown |", "| Balance before | unknown |",
                "| Balance after | unknown |"):
        assert row in unknown
