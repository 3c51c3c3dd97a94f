"""The emulator's query service: `GET /user/quota?key=...`, the price of each create, Kling's units."""

from __future__ import annotations

import httpx
import pytest
from emulator_helpers import KEY, KLING, LATENCY, kling_body, kling_done, omni_done, omni_form

from prefect_comet.testing.emulator import CometEmulator


def _quota(client: httpx.Client, key: str | None = KEY) -> httpx.Response:
    # No bearer header: the query service takes the key in the query string only.
    return httpx.get(f"{client.base_url}/user/quota", params={} if key is None else {"key": key}, timeout=10)


def test_the_quota_route_answers_the_documented_shape(client: httpx.Client, emu: CometEmulator) -> None:
    body = _quota(client).json()
    assert body == {
        "username": "emulator",
        "total_quota": 100.0,
        "total_used_quota": 0.0,
        "request_count": 0,
        "keys": [{"name": "emulator-key", "remain_quota": 100.0, "used_quota": 0.0}],
    }


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_a_wrong_or_missing_key_is_refused(client: httpx.Client, key: str | None) -> None:
    answer = _quota(client, key)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


def test_every_create_is_charged_and_lowers_the_balance(client: httpx.Client, emu: CometEmulator) -> None:
    omni = client.post("/v1/videos", files=omni_form()).json()["id"]
    kling = client.post(KLING, json=kling_body()).json()["data"]["task_id"]
    refused = client.post("/v1/videos", files=omni_form(model="nope"))  # refused: not charged
    assert refused.status_code == 400
    body = _quota(client).json()
    assert (body["total_quota"], body["total_used_quota"]) == (99.5, 0.5)
    assert body["keys"][0]["remain_quota"] == 99.5 and body["request_count"] == 3
    assert (emu.charged_usd, emu.balance_usd) == (0.5, 99.5)
    omni_done(client, omni)
    kling_done(client, kling)
    assert emu.charged_usd == 0.5  # polling is free


def test_an_unlimited_balance_answers_minus_one_and_a_custom_price_is_charged() -> None:
    with CometEmulator(api_key=KEY, latency=LATENCY, balance_usd=None, price_per_job_usd=1.5) as emu:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            client.post("/v1/videos", files=omni_form())
            body = _quota(client).json()
    assert (body["total_quota"], body["total_used_quota"], body["keys"][0]["remain_quota"]) == (-1, 1.5, -1)
    assert emu.balance_usd is None and emu.charged_usd == 1.5


def test_a_succeeded_kling_job_reports_its_units(client: httpx.Client) -> None:
    task_id = client.post(KLING, json=kling_body()).json()["data"]["task_id"]
    running = client.get(f"{KLING}/{task_id}").json()["data"]
    assert "final_unit_deduction" not in running
    assert kling_done(client, task_id)["data"]["final_unit_deduction"] == "1"


@pytest.mark.parametrize("units", [None, "2.5"])
def test_the_units_are_configurable_or_left_out(units: str | None) -> None:
    with CometEmulator(api_key=KEY, latency=LATENCY, kling_units_per_job=units) as emu:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as client:
            task_id = client.post(KLING, json=kling_body()).json()["data"]["task_id"]
            data = kling_done(client, task_id)["data"]
    assert data.get("final_unit_deduction") == units


def test_the_request_log_keeps_no_key(client: httpx.Client, emu: CometEmulator) -> None:
    _quota(client)
    _quota(client, "another-secret-key")
    httpx.get(f"{client.base_url}/user/quota?start_date=2026-01-01&key={KEY}", timeout=10)
    recorded = [r for r in emu.requests if r.route == "user.quota"]
    assert [r.query for r in recorded] == ["key=REDACTED", "key=REDACTED", "start_date=2026-01-01&key=REDACTED"]
    assert not any(KEY in repr(r) or "another-secret-key" in repr(r) for r in emu.requests)


def test_the_quota_route_takes_faults(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("user.quota", "http_500")
    emu.add_fault("user.quota", "malformed_json")
    assert _quota(client).status_code == 500
    with pytest.raises(ValueError):
        _quota(client).json()
    assert _quota(client).json()["total_quota"] == 100.0
    with pytest.raises(ValueError, match="does not apply"):
        emu.add_fault("user.quota", "hostile_id")


def test_a_negative_price_is_refused() -> None:
    with pytest.raises(ValueError, match="price_per_job_usd"):
        CometEmulator(price_per_job_usd=-1)
