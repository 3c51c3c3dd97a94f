"""Kling Omni, every input mode, through the real Prefect engine against the emulator."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime

import fsspec
import pytest

from prefect_comet import (
    KlingElement,
    KlingImage,
    KlingOmniVideoRequest,
    KlingShot,
    KlingVideo,
    KlingWatermark,
    generate_video,
)
from prefect_comet.exceptions import BadRequestError, GenerationFailedError
from tests.conftest import API_KEY, FAST
from tests.test_kling_request import INVALID

Image = pytest.importorskip("PIL.Image")
PROMPT = "A paper boat drifts across a calm pond at sunrise"


def _png(path, width: int, height: int):
    Image.new("RGB", (width, height), (40, 120, 200)).save(path, format="PNG")
    return path


def _sha256(uri: str) -> str:
    with fsspec.open(uri, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def _sidecar(uri: str) -> dict:
    with fsspec.open(uri, "rb") as file:
        return json.load(file)


async def _generate(request, credentials, destination="memory://kling", **kwargs):
    return await generate_video(request, destination=destination, credentials=credentials, **FAST, **kwargs)


async def test_text_to_video(emulator, credentials):
    stored = await _generate(KlingOmniVideoRequest(prompt=PROMPT, aspect_ratio="16:9"), credentials)

    assert (stored.provider, stored.width, stored.height) == ("kling", 1920, 1080)
    assert stored.duration_seconds == pytest.approx(5.0, abs=0.2)
    assert stored.video_id and stored.extras == []
    assert stored.sha256 == emulator.sha256(stored.task_id) == _sha256(stored.uri)
    created = _sidecar(stored.metadata_uri)["timings"]["created_at"]
    assert created[:4] == str(datetime.now(UTC).year)  # Kling stamps are milliseconds


async def test_first_and_end_frame_from_local_files(emulator, credentials, tmp_path):
    request = KlingOmniVideoRequest(
        prompt="The boat sails from <<<image_1>>> to <<<image_2>>>",
        image_list=[
            KlingImage.from_file(_png(tmp_path / "first.png", 600, 800), type="first_frame"),
            KlingImage(image_url=_png(tmp_path / "last.png", 600, 800), type="end_frame"),
        ],
        duration="10",
    )

    stored = await _generate(request, credentials)

    assert (stored.width, stored.height) == (1080, 1440)  # follows the 3:4 first frame
    assert stored.duration_seconds == pytest.approx(10.0, abs=0.2)
    sent = json.loads(next(r for r in emulator.requests if r.route == "kling.create").body)
    assert not sent["image_list"][0]["image_url"].startswith(("data:", "http"))
    recorded = _sidecar(stored.metadata_uri)["request"]["image_list"][0]["image_url"]
    assert recorded.startswith("<base64 image")  # the sidecar keeps a fingerprint, not megabytes


async def test_element_guided(emulator, credentials):
    request = KlingOmniVideoRequest(
        prompt="<<<element_1>>> walks past <<<element_2>>>",
        element_list=[KlingElement(element_id="101"), KlingElement(element_id=202)],
        aspect_ratio="9:16",
    )
    stored = await _generate(request, credentials)
    assert (stored.width, stored.height) == (1080, 1920)


async def test_video_transformation_follows_the_base_video(emulator, credentials):
    source = await _generate(KlingOmniVideoRequest(prompt=PROMPT, aspect_ratio="1:1", duration="10"), credentials)
    request = KlingOmniVideoRequest(
        prompt="Make <<<video_1>>> look like a watercolour",
        video_list=[KlingVideo(video_url=emulator.signed_url(source.task_id), refer_type="base", keep_original_sound="no")],
        sound="off",
    )

    stored = await _generate(request, credentials)

    assert stored.duration_seconds == pytest.approx(10.0, abs=0.2)
    assert (stored.width, stored.height) == (1080, 1080)


@pytest.mark.parametrize(
    "storyboard",
    [
        {"shot_type": "customize", "duration": "10", "multi_prompt": [
            KlingShot(index=1, prompt="The boat leaves the shore", duration="4"),
            KlingShot(index=2, prompt="The boat reaches the reeds", duration="6"),
        ]},
        {"shot_type": "intelligence", "prompt": PROMPT, "duration": "5"},
    ],
    ids=["customize", "intelligence"],
)
async def test_multi_shot(emulator, credentials, storyboard):
    request = KlingOmniVideoRequest(multi_shot=True, aspect_ratio="16:9", **storyboard)
    stored = await _generate(request, credentials)
    assert stored.duration_seconds == pytest.approx(float(storyboard["duration"]), abs=0.2)


async def test_watermark_persists_both_files(emulator, credentials, tmp_path):
    request = KlingOmniVideoRequest(
        prompt=PROMPT, aspect_ratio="16:9", watermark_info=KlingWatermark(enabled=True),
        external_task_id="order-42",
    )

    stored = await _generate(request, credentials, destination=str(tmp_path))

    copy = stored.extras[0]
    assert [stored.watermarked, copy.watermarked] == [False, True]
    assert copy.uri.endswith("-watermarked.mp4") and copy.sha256 != stored.sha256
    assert stored.sha256 == emulator.sha256(stored.task_id) == _sha256(stored.uri)
    assert copy.sha256 == emulator.sha256(stored.task_id, watermarked=True) == _sha256(copy.uri)
    sidecar = _sidecar(stored.metadata_uri)
    assert sidecar["external_task_id"] == stored.external_task_id == "order-42"
    assert [v["video_id"] for v in sidecar["videos"]] == [stored.video_id, copy.video_id]
    assert API_KEY not in json.dumps(sidecar) and "signature=" not in json.dumps(sidecar)


async def test_wrapped_response_shape(credentials):
    from prefect_comet.testing.emulator import CometEmulator

    with CometEmulator(api_key=API_KEY, latency=0.3, kling_wrapped=True) as emu:
        wrapped = credentials.model_copy(update={"base_url": emu.base_url})
        stored = await _generate(KlingOmniVideoRequest(prompt=PROMPT, aspect_ratio="16:9"), wrapped)
        assert stored.sha256 == emu.sha256(stored.task_id)
    assert (stored.width, stored.height) == (1920, 1080)


async def test_failed_task_raises_with_task_status_msg(emulator, credentials):
    with pytest.raises(GenerationFailedError, match="Emulated generation failure") as caught:
        await _generate(KlingOmniVideoRequest(prompt="boat [fail]", aspect_ratio="16:9"), credentials)
    assert caught.value.task_id in emulator.jobs


async def test_parallel_task_limit_is_answered_by_backing_off(credentials):
    from prefect_comet.testing.emulator import CometEmulator

    with CometEmulator(api_key=API_KEY, latency=3.0, kling_parallel_limit=1) as emu:
        limited = credentials.model_copy(update={"base_url": emu.base_url})
        # Both flows start together, so whichever creates second meets the first job running
        # (waiting for the first job to exist raced against a slow second flow start).
        stored = await asyncio.gather(
            _generate(KlingOmniVideoRequest(prompt=PROMPT, aspect_ratio="16:9"), limited),
            _generate(KlingOmniVideoRequest(prompt=f"{PROMPT} again", aspect_ratio="16:9"), limited),
        )
        refused = [r for r in emu.requests if r.route == "kling.create"][1:-1]
    assert [s.sha256 for s in stored] == [emu.sha256(s.task_id) for s in stored]
    assert len(emu.jobs) == 2 and refused  # the second create met 1303 and backed off


async def test_server_side_rejection_is_a_typed_error(emulator, credentials):
    # external_task_id must be unique per account: the second create is refused (1201).
    request = KlingOmniVideoRequest(prompt=PROMPT, aspect_ratio="16:9", external_task_id="dup-1")
    await _generate(request, credentials)
    with pytest.raises(BadRequestError, match="1201"):
        await _generate(request, credentials)


@pytest.mark.parametrize(("request_body", "field", "rule"), INVALID)
async def test_invalid_requests_never_reach_the_server(emulator, credentials, request_body, field, rule):
    request_body = {"mode": "pro", **request_body}  # a Kling-only field: read as a Kling request
    with pytest.raises(Exception) as caught:
        await generate_video(request=request_body, destination="memory://never", credentials=credentials, **FAST)
    assert field in str(caught.value) and rule in str(caught.value)
    assert emulator.requests == []


async def test_a_plain_dict_with_kling_fields_is_a_kling_request(emulator, credentials):
    stored = await _generate({"prompt": PROMPT, "aspect_ratio": "1:1", "duration": "5"}, credentials)
    assert (stored.provider, stored.width, stored.height) == ("kling", 1080, 1080)
