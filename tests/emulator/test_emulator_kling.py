"""Kling Omni routes (`/kling/v1/videos/omni-video`) over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from typing import Any

import httpx
import pytest
from emulator_helpers import KEY, KLING, LATENCY, kling_body, kling_done, probe
from PIL import Image

from prefect_comet.testing.emulator import CometEmulator

URL = "https://example.com/a.png"
VIDEO = "https://example.com/v.mp4"


def image_b64(width: int, height: int, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def create(client: httpx.Client, **fields: Any) -> httpx.Response:
    return client.post(KLING, json=kling_body(**fields))


def succeeded(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = create(client, **fields)
    assert response.status_code == 200, response.text
    body = kling_done(client, response.json()["data"]["task_id"])
    assert body["data"]["task_status"] == "succeed", body
    return body["data"]


REJECTED = [
    # (overrides, field the message must start with)
    ({"prompt": None}, "prompt"),
    ({"prompt": "  "}, "prompt"),
    ({"prompt": "x" * 2501}, "prompt"),
    ({"colour": "red"}, "colour"),
    ({"model_name": "kling-v9"}, "model_name"),
    ({"mode": "fast"}, "mode"),
    ({"multi_shot": True}, "shot_type"),
    ({"shot_type": "intelligence"}, "shot_type"),
    ({"multi_shot": True, "shot_type": "customize", "prompt": None}, "multi_prompt"),
    ({"multi_prompt": [{"index": 1, "prompt": "a", "duration": "5"}]}, "multi_prompt"),
    (
        {
            "multi_shot": True,
            "shot_type": "customize",
            "multi_prompt": [{"index": 1, "prompt": "a", "duration": "3"}],
        },
        "multi_prompt",
    ),
    ({"multi_shot": True, "shot_type": "intelligence", "prompt": None}, "prompt"),
    ({"image_list": [{"image_url": URL, "type": "middle"}]}, "image_list[0].type"),
    ({"image_list": [{"image_url": URL, "type": "end_frame"}]}, "image_list"),
    ({"image_list": [{"image_url": URL, "type": "first_frame"}] * 2}, "image_list[1].type"),
    (
        {"image_list": [{"image_url": "data:image/png;base64," + image_b64(400, 400)}]},
        "image_list[0].image_url",
    ),
    ({"image_list": [{"image_url": "bm90IGFuIGltYWdl"}]}, "image_list[0].image_url"),
    ({"image_list": [{"image_url": URL}] * 4, "element_list": [{"element_id": "e1"}] * 4}, "image_list"),
    (
        {
            "image_list": [{"image_url": URL}] * 5,
            "video_list": [{"video_url": VIDEO, "refer_type": "feature"}],
        },
        "image_list",
    ),
    ({"video_list": [{"video_url": VIDEO}, {"video_url": VIDEO}]}, "video_list"),
    ({"video_list": [{"video_url": "ftp://x/v.mp4"}]}, "video_list[0].video_url"),
    ({"video_list": [{"video_url": VIDEO, "refer_type": "style"}]}, "refer_type"),
    ({"video_list": [{"video_url": VIDEO, "keep_original_sound": "maybe"}]}, "keep_original_sound"),
    ({"video_list": [{"video_url": VIDEO}], "sound": "on"}, "sound"),
    (
        {"video_list": [{"video_url": VIDEO}], "image_list": [{"image_url": URL, "type": "first_frame"}]},
        "image_list",
    ),
    ({"aspect_ratio": None}, "aspect_ratio"),
    ({"aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"duration": "7"}, "duration"),
    ({"duration": 5}, "duration"),
    ({"duration": "16", "model_name": "kling-v3-omni"}, "duration"),
    ({"prompt": "use <<<image_1>>>"}, "prompt"),
    ({"prompt": "<<<element_2>>>", "element_list": [{"element_id": 7}]}, "prompt"),
    ({"sound": "loud"}, "sound"),
    ({"callback_url": "not a url"}, "callback_url"),
    ({"external_task_id": ""}, "external_task_id"),
    ({"external_task_id": "x" * 65}, "external_task_id"),
    ({"element_list": [{"element_id": ""}]}, "element_list[0].element_id"),
    ({"element_list": [{"element_id": True}]}, "element_list[0].element_id"),
    ({"watermark_info": {"enabled": True, "text": "x"}}, "watermark_info"),
    ({"watermark_info": {"enabled": "yes"}}, "watermark_info.enabled"),
]


@pytest.mark.parametrize(("overrides", "field"), REJECTED)
def test_create_validation(
    client: httpx.Client, emu: CometEmulator, overrides: dict[str, Any], field: str
) -> None:
    response = create(client, **overrides)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 1201 and body["request_id"]
    assert body["message"].startswith(f"{field}: "), body["message"]
    assert not emu.jobs


ACCEPTED = [
    {"model_name": "kling-v3-omni", "duration": "7", "mode": "std"},
    {"multi_shot": True, "shot_type": "intelligence"},
    {
        "prompt": None,
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [
            {"index": 1, "prompt": "a", "duration": "2"},
            {"index": 2, "prompt": "b", "duration": "3"},
        ],
    },
    {
        "image_list": [{"image_url": URL, "type": "first_frame"}, {"image_url": URL, "type": "end_frame"}],
        "aspect_ratio": None,
    },
    {
        "prompt": "<<<image_1>>> and <<<element_1>>>",
        "image_list": [{"image_url": URL}],
        "element_list": [{"element_id": 42}],
    },
    {
        "video_list": [{"video_url": VIDEO, "refer_type": "base", "keep_original_sound": "yes"}],
        "aspect_ratio": None,
        "duration": "3",
    },
    {
        "prompt": "<<<video_1>>>",
        "video_list": [{"video_url": VIDEO, "refer_type": "feature"}],
        "sound": "off",
    },
    {
        "callback_url": "http://127.0.0.1:9/hook",
        "external_task_id": "abc",
        "watermark_info": {"enabled": False},
    },
]


@pytest.mark.parametrize("overrides", ACCEPTED)
def test_create_accepts_valid_bodies(client: httpx.Client, overrides: dict[str, Any]) -> None:
    response = create(client, **overrides)
    assert response.status_code == 200, response.text


def test_create_answer_shape(client: httpx.Client, emu: CometEmulator) -> None:
    body = create(client, external_task_id="mine-1").json()
    assert (body["code"], body["message"]) == (0, "SUCCEED") and body["request_id"]
    data = body["data"]
    assert data["task_status"] == "submitted" and data["task_status_msg"] is None
    assert data["task_info"] == {"external_task_id": "mine-1"}
    assert abs(data["created_at"] / 1000 - time.time()) < 5 and data["updated_at"] == data["created_at"]
    assert emu.jobs[data["task_id"]].provider == "kling"


def test_auth_required(emu: CometEmulator) -> None:
    response = httpx.post(f"{emu.base_url}{KLING}", json=kling_body())
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_native_query_timeline_and_result(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = create(client).json()["data"]["task_id"]
    statuses = []
    while True:
        body = client.get(f"{KLING}/{task_id}").json()
        statuses.append(body["data"]["task_status"])
        if statuses[-1] == "succeed":
            break
        time.sleep(0.02)
    assert statuses[0] == "submitted" and "processing" in statuses
    data = body["data"]
    assert (
        body["code"] == 0
        and data["task_status_msg"] == ""
        and data["task_info"] == {}  # no external_task_id was supplied
    )
    [video] = data["task_result"]["videos"]
    assert video["id"].startswith("vid_") and video["duration"] == "5.0" and "watermark_url" not in video
    assert data["updated_at"] >= data["created_at"]
    mp4 = httpx.get(video["url"]).content
    assert probe(mp4)[:2] == (1920, 1080) and abs(probe(mp4)[2] - 5) <= 0.2
    assert hashlib.sha256(mp4).hexdigest() == emu.sha256(task_id)


def test_unknown_task_is_404_1203(client: httpx.Client) -> None:
    response = client.get(f"{KLING}/123")
    assert response.status_code == 404 and response.json()["code"] == 1203


def test_watermarked_copy_differs(client: httpx.Client, emu: CometEmulator) -> None:
    data = succeeded(client, watermark_info={"enabled": True}, aspect_ratio="1:1")
    [video] = data["task_result"]["videos"]
    plain, marked = httpx.get(video["url"]).content, httpx.get(video["watermark_url"]).content
    assert plain != marked
    assert probe(plain)[:2] == probe(marked)[:2] == (1080, 1080)
    task_id = data["task_id"]
    assert hashlib.sha256(marked).hexdigest() == emu.sha256(task_id, watermarked=True)
    assert emu.sha256(task_id, video["id"]) == hashlib.sha256(plain).hexdigest()


def test_frames_and_durations(client: httpx.Client) -> None:
    cases = [
        ({"aspect_ratio": "9:16", "duration": "10"}, (1080, 1920, 10)),
        (
            {
                "image_list": [{"image_url": image_b64(1000, 500), "type": "first_frame"}],
                "aspect_ratio": None,
            },
            (2160, 1080, 5),
        ),
        (
            {"image_list": [{"image_url": image_b64(600, 900, "JPEG"), "type": "first_frame"}]},
            (1080, 1620, 5),
        ),
    ]
    ids = [create(client, **fields).json()["data"]["task_id"] for fields, _ in cases]
    for task_id, (_, expected) in zip(ids, cases, strict=True):
        body = kling_done(client, task_id)
        [video] = body["data"]["task_result"]["videos"]
        width, height, seconds = probe(httpx.get(video["url"]).content)
        assert (width, height) == expected[:2] and abs(seconds - expected[2]) <= 0.2
        assert video["duration"] == f"{expected[2]:.1f}"


def test_base_video_from_this_emulator_sets_frame_and_duration(client: httpx.Client) -> None:
    source = succeeded(client, aspect_ratio="9:16", duration="10")["task_result"]["videos"][0]["url"]
    data = succeeded(
        client, video_list=[{"video_url": source, "refer_type": "base"}], aspect_ratio=None, duration="5"
    )
    [video] = data["task_result"]["videos"]
    assert video["duration"] == "10.0"
    assert probe(httpx.get(video["url"]).content)[:2] == (1080, 1920)


def test_wrapped_query_shape(emu: CometEmulator) -> None:
    with CometEmulator(api_key=KEY, latency=LATENCY, kling_wrapped=True) as wrapped:
        with httpx.Client(base_url=wrapped.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            task_id = create(client).json()["data"]["task_id"]
            first = client.get(f"{KLING}/{task_id}").json()
            assert first["code"] == "success" and first["data"]["status"] in ("SUBMITTED", "IN_PROGRESS")
            assert first["data"]["progress"].endswith("%")
            deadline = time.monotonic() + 10
            while (body := client.get(f"{KLING}/{task_id}").json())["data"]["status"] != "SUCCESS":
                assert time.monotonic() < deadline
                time.sleep(0.03)
            outer = body["data"]
            assert outer["task_id"] == task_id and outer["progress"] == "100%" and outer["fail_reason"] == ""
            inner = outer["data"]
            assert (inner["code"], inner["message"]) == (0, "HTTP_OK")
            assert inner["data"]["task_status"] == "succeed"
            assert httpx.get(inner["data"]["task_result"]["videos"][0]["url"]).status_code == 200
            failed = create(client, prompt="boom [fail]").json()["data"]["task_id"]
            time.sleep(LATENCY + 0.05)
            outer = client.get(f"{KLING}/{failed}").json()["data"]
            assert outer["status"] == "FAILURE" and "[fail]" in outer["fail_reason"]


def test_parallel_limit(emu: CometEmulator) -> None:
    with CometEmulator(api_key=KEY, latency=LATENCY, kling_parallel_limit=2) as limited:
        with httpx.Client(base_url=limited.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            first = create(client).json()["data"]["task_id"]
            assert create(client).status_code == 200
            over = create(client, external_task_id="third")
            assert over.status_code == 429
            assert over.json()["code"] == 1303 and "parallel" in over.json()["message"]
            assert len(limited.jobs) == 2 and limited.created_per_key() == {}
            kling_done(client, first)
            time.sleep(0.1)  # let the second one finish too
            assert create(client, external_task_id="third").status_code == 200


def test_external_task_id_lookup_and_duplicate(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = create(client, external_task_id="order-7").json()["data"]["task_id"]
    found = client.get(KLING, params={"external_task_id": "order-7"}).json()
    assert found["data"]["task_id"] == task_id and found["data"]["task_info"]["external_task_id"] == "order-7"
    missing = client.get(KLING, params={"external_task_id": "nope"})
    assert missing.status_code == 404 and missing.json()["code"] == 1203
    duplicate = create(client, external_task_id="order-7")
    assert duplicate.status_code == 400 and duplicate.json()["code"] == 1201
    assert "duplicate" in duplicate.json()["message"]
    assert emu.created_per_key() == {"order-7": 1}
    assert [r.route for r in emu.requests[1:3]] == ["kling.query", "kling.query"]


def test_prompt_markers(client: httpx.Client) -> None:
    failed = create(client, prompt="x [fail]").json()["data"]["task_id"]
    hang = create(client, prompt="x [hang]").json()["data"]["task_id"]
    unknown = create(
        client,
        prompt=None,
        multi_shot=True,
        shot_type="customize",
        multi_prompt=[{"index": 1, "prompt": "y [unknown]", "duration": "5"}],
    ).json()["data"]["task_id"]
    body = kling_done(client, failed)
    assert body["code"] == 0 and body["data"]["task_status"] == "failed"
    assert body["data"]["task_status_msg"] == "Emulated generation failure (prompt asked for [fail])"
    assert "task_result" not in body["data"]
    assert client.get(f"{KLING}/{hang}").json()["data"]["task_status"] == "processing"
    assert client.get(f"{KLING}/{unknown}").json()["data"]["task_status"] == "mystery"
