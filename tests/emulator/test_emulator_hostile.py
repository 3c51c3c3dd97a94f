"""Hostile answers the emulator can give: bad ids, redirects, wrong bodies; and issued signatures."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from emulator_helpers import KEY, KLING, kling_body, kling_done, omni_done, omni_form

from prefect_comet.testing.emulator import FAULT_KINDS, CometEmulator

HOSTILE = "../../etc/passwd"


def completed_omni(client: httpx.Client) -> str:
    task_id = client.post("/v1/videos", files=omni_form()).json()["id"]
    assert omni_done(client, task_id)["status"] == "completed"
    return task_id


def test_new_kinds_are_listed_but_never_drawn_at_random() -> None:
    assert {"hostile_id", "redirect", "redirect_loop", "content_type", "not_mp4", "no_length"} <= FAULT_KINDS
    with CometEmulator(api_key=KEY, latency=0.1) as emu:
        emu.set_fault_rate(1.0, seed=1)
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            for _ in range(30):
                try:
                    client.get("/v1/videos/task_x")
                except httpx.TransportError:
                    pass
        drawn = {r.fault for r in emu.requests}
    assert drawn and not drawn & {"hostile_id", "redirect", "content_type", "not_mp4", "no_length"}


def test_hostile_id_on_omni_create_and_retrieve(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.create", "hostile_id", task_id=HOSTILE)
    body = client.post("/v1/videos", files=omni_form()).json()
    assert body["id"] == body["task_id"] == HOSTILE
    (real_id,) = emu.jobs  # the job was created all the same
    emu.add_fault("omni.retrieve", "hostile_id", task_id="a\x00b\nc")
    assert client.get(f"/v1/videos/{real_id}").json()["id"] == "a\x00b\nc"
    assert client.get(f"/v1/videos/{real_id}").json()["id"] == real_id  # consumed


def test_hostile_id_on_kling_keeps_video_ids(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("kling.create", "hostile_id")
    created = client.post(KLING, json=kling_body()).json()
    assert created["data"]["task_id"] == "../../x"
    (real_id,) = emu.jobs
    kling_done(client, real_id)
    emu.add_fault("kling.query", "hostile_id", task_id=HOSTILE)
    data = client.get(f"{KLING}/{real_id}").json()["data"]
    assert data["task_id"] == HOSTILE
    assert data["task_result"]["videos"][0]["id"].startswith("vid_")  # only task ids are replaced


@pytest.mark.parametrize("route", ["omni.content", "files"])
def test_redirect_to_any_location(client: httpx.Client, emu: CometEmulator, route: str) -> None:
    task_id = completed_omni(client)
    url = emu.signed_url(task_id) if route == "files" else f"/v1/videos/{task_id}/content"
    emu.add_fault(route, "redirect", location="file:///etc/passwd")
    response = client.get(url)
    assert (response.status_code, response.headers["location"]) == (302, "file:///etc/passwd")


def test_redirect_loop_never_ends(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = completed_omni(client)
    emu.add_fault("omni.content", "redirect_loop")
    with pytest.raises(httpx.TooManyRedirects):
        client.get(f"/v1/videos/{task_id}/content", follow_redirects=True)
    hops = [r.path for r in emu.requests if r.route == "redirect_loop"]
    assert hops[:3] == ["/redirect-loop/1", "/redirect-loop/2", "/redirect-loop/3"]


def test_content_type_with_and_without_a_body(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = completed_omni(client)
    url = f"/v1/videos/{task_id}/content"
    emu.add_fault("omni.content", "content_type", content_type="text/html")
    emu.add_fault("omni.content", "content_type", content_type="application/json", body='{"ok": true}')
    html = client.get(url)
    assert html.headers["content-type"] == "text/html"
    assert hashlib.sha256(html.content).hexdigest() == emu.sha256(task_id)  # the video, mislabelled
    json_body = client.get(url)
    assert (json_body.headers["content-type"], json_body.json()) == ("application/json", {"ok": True})


def test_not_mp4_has_the_same_length(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = completed_omni(client)
    emu.add_fault("files", "not_mp4")
    response = client.get(emu.signed_url(task_id))
    assert response.headers["content-type"] == "video/mp4"
    assert len(response.content) == emu.jobs[task_id].videos[0].size
    assert response.content.startswith(b"<!doctype html>")


def test_no_length_sends_chunked(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = completed_omni(client)
    emu.add_fault("omni.content", "no_length")
    response = client.get(f"/v1/videos/{task_id}/content")
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert hashlib.sha256(response.content).hexdigest() == emu.sha256(task_id)
    assert client.get(f"/v1/videos/{task_id}/content").headers["content-length"]  # consumed


def test_error_answers_stay_errors(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.content", "not_mp4")
    response = client.get("/v1/videos/task_missing/content")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_hostile_kinds_only_where_they_apply(emu: CometEmulator) -> None:
    for route, kind in [("omni.content", "hostile_id"), ("omni.create", "redirect"), ("kling.query", "not_mp4")]:
        with pytest.raises(ValueError):
            emu.add_fault(route, kind)


def test_issued_signatures_cover_answers_and_signed_url(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = completed_omni(client)
    video_url = client.get(f"/v1/videos/{task_id}").json()["video_url"]
    own = emu.signed_url(task_id)
    issued = emu.issued_signatures()
    for url in (video_url, own):
        assert httpx.URL(url).params["signature"] in issued
