"""`KlingOmniVideoRequest`: every documented Kling Omni rule fails before any request."""

from __future__ import annotations

import base64
import io
import json
import pathlib
from typing import Any

import pytest
from pydantic import ValidationError

from prefect_comet.api import kling_images as _images
from prefect_comet.api.kling_request import (
    KlingElement,
    KlingImage,
    KlingOmniVideoRequest,
    KlingShot,
    KlingVideo,
    KlingWatermark,
)

Image = pytest.importorskip("PIL.Image")

IMG = "https://example.com/ref.png"
VID = "https://example.com/clip.mp4"
PROMPT = "A paper boat drifts across a calm pond at sunrise"
DROP = object()  # marks a key removed from the base body


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG = image_bytes(400, 300)
GIF = image_bytes(400, 300, "GIF")
SMALL_PNG = image_bytes(299, 400)
THIN_PNG = image_bytes(1000, 300)


def body(**changes: Any) -> dict[str, Any]:
    """A valid text-to-video body with some fields changed (DROP removes one)."""
    merged = {"prompt": PROMPT, "aspect_ratio": "16:9", **changes}
    return {key: value for key, value in merged.items() if value is not DROP}


def img(type: str | None = None, url: Any = IMG) -> dict[str, Any]:
    return {"image_url": url, "type": type}


def shot(index: int, duration: Any, prompt: str = "A shot of the boat") -> dict[str, Any]:
    return {"index": index, "prompt": prompt, "duration": duration}


def customize(**changes: Any) -> dict[str, Any]:
    """A valid customised multi-shot body (3 s + 3 s = 6 s on kling-v3-omni)."""
    storyboard = {
        "prompt": DROP,
        "model_name": "kling-v3-omni",
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [shot(1, "3"), shot(2, "3")],
        "duration": "6",
    }
    return body(**{**storyboard, **changes})


def messages(error: ValidationError) -> list[str]:
    return [detail["msg"] for detail in error.errors()]


# (body, field path the message starts with, words of the rule)
INVALID = [
    # R1 prompt
    pytest.param(
        body(prompt=DROP),
        "prompt",
        "required (1 to 2500 characters)",
        id="R1-prompt-missing",
    ),
    pytest.param(body(prompt=""), "prompt", "must not be empty or blank", id="R1-prompt-empty"),
    pytest.param(body(prompt=" \n "), "prompt", "must not be empty or blank", id="R1-prompt-blank"),
    pytest.param(
        body(prompt="x" * 2501),
        "prompt",
        "at most 2500 characters, got 2501",
        id="R1-prompt-too-long",
    ),
    pytest.param(
        body(prompt=DROP, multi_shot=True, shot_type="customize"),
        "multi_prompt",
        "required (1 to 6 shots) when shot_type is 'customize'",
        id="R1-customize-without-shots",
    ),
    # R2 model_name, R3 mode, R14 sound
    pytest.param(
        body(model_name="kling-v2-master"),
        "model_name",
        "'kling-video-o1' or 'kling-v3-omni'",
        id="R2-model-name",
    ),
    pytest.param(body(mode="ultra"), "mode", "'std' or 'pro'", id="R3-mode"),
    pytest.param(body(sound="loud"), "sound", "'on' or 'off'", id="R14-sound"),
    # R4 multi_shot / shot_type
    pytest.param(
        body(multi_shot=True),
        "shot_type",
        "required when multi_shot is true",
        id="R4-multi-shot-without-type",
    ),
    pytest.param(
        body(shot_type="intelligence"),
        "shot_type",
        "only allowed when multi_shot is true",
        id="R4-type-without-multi-shot",
    ),
    pytest.param(
        body(multi_shot=True, shot_type="random"),
        "shot_type",
        "'customize' or 'intelligence'",
        id="R4-shot-type-enum",
    ),
    # R5 storyboard
    pytest.param(
        customize(multi_prompt=[]),
        "multi_prompt",
        "required (1 to 6 shots)",
        id="R5-empty-multi-prompt",
    ),
    pytest.param(
        customize(multi_prompt=[shot(i, "2") for i in range(1, 8)], duration="14"),
        "multi_prompt",
        "at most 6 shots, got 7",
        id="R5-seven-shots",
    ),
    pytest.param(
        customize(multi_prompt=[shot(1, "3", "x" * 513), shot(2, "3")]),
        "multi_prompt[0].prompt",
        "at most 512 characters, got 513",
        id="R5-shot-prompt-too-long",
    ),
    pytest.param(
        customize(multi_prompt=[shot(1, "3"), shot(2, "3", " ")]),
        "multi_prompt[1].prompt",
        "must not be empty or blank",
        id="R5-shot-prompt-blank",
    ),
    pytest.param(
        customize(multi_prompt=[shot(1, "0"), shot(2, "6")]),
        "multi_prompt[0].duration",
        "positive whole number of seconds",
        id="R5-shot-duration-zero",
    ),
    pytest.param(
        customize(multi_prompt=[shot(1, "2.5"), shot(2, "3.5")]),
        "multi_prompt[0].duration",
        "positive whole number of seconds",
        id="R5-shot-duration-not-digits",
    ),
    pytest.param(
        customize(multi_prompt=[shot(1, "3"), shot(2, "4")]),
        "multi_prompt",
        "shot durations must add up to duration '6', got 7",
        id="R5-durations-sum",
    ),
    pytest.param(
        customize(multi_prompt=[{"index": 1, "prompt": "a"}]),
        "multi_prompt[0].duration",
        "Field required",
        id="R5-shot-missing-duration",
    ),
    pytest.param(
        body(multi_shot=True, shot_type="intelligence", multi_prompt=[shot(1, "5")]),
        "multi_prompt",
        "only allowed when multi_shot is true and shot_type is 'customize'",
        id="R5-multi-prompt-with-intelligence",
    ),
    pytest.param(
        body(multi_prompt=[shot(1, "5")]),
        "multi_prompt",
        "only allowed when multi_shot is true",
        id="R5-multi-prompt-without-multi-shot",
    ),
    pytest.param(
        body(prompt=DROP, multi_shot=True, shot_type="intelligence"),
        "prompt",
        "required when shot_type is 'intelligence'",
        id="R5-intelligence-without-prompt",
    ),
    # R6 frames
    pytest.param(
        body(image_list=[img("first_frame"), img("first_frame")]),
        "image_list[1].type",
        "at most one first_frame image",
        id="R6-two-first-frames",
    ),
    pytest.param(
        body(image_list=[img("first_frame"), img("end_frame"), img("end_frame")]),
        "image_list[2].type",
        "at most one end_frame image",
        id="R6-two-end-frames",
    ),
    pytest.param(
        body(image_list=[img(), img("end_frame")]),
        "image_list[1].type",
        "an end_frame image needs a first_frame image",
        id="R6-end-without-first",
    ),
    pytest.param(
        body(image_list=[img("middle_frame")]),
        "image_list[0].type",
        "'first_frame' or 'end_frame'",
        id="R6-type-enum",
    ),
    # R7 reference count
    pytest.param(
        body(image_list=[img()] * 5, element_list=[{"element_id": "1"}] * 3),
        "image_list",
        "image_list and element_list together allow at most 7 items, got 8",
        id="R7-eight-references",
    ),
    pytest.param(
        body(
            image_list=[img()] * 3,
            element_list=[{"element_id": "1"}] * 2,
            video_list=[{"video_url": VID, "refer_type": "feature"}],
        ),
        "image_list",
        "at most 4 items when video_list is given, got 5",
        id="R7-five-references-with-video",
    ),
    # R8 video_list
    pytest.param(
        body(video_list=[{"video_url": VID}, {"video_url": VID}]),
        "video_list",
        "at most 1 video, got 2",
        id="R8-two-videos",
    ),
    pytest.param(
        body(video_list=[{"video_url": "ftp://example.com/clip.mp4"}]),
        "video_list[0].video_url",
        "must be an http(s) URL",
        id="R8-video-ftp-url",
    ),
    pytest.param(
        body(video_list=[{"video_url": "clip.mp4"}]),
        "video_list[0].video_url",
        "must be an http(s) URL",
        id="R8-video-local-path",
    ),
    pytest.param(
        body(video_list=[{"video_url": VID, "refer_type": "style"}]),
        "video_list[0].refer_type",
        "'base' or 'feature'",
        id="R8-refer-type-enum",
    ),
    pytest.param(
        body(video_list=[{"video_url": VID, "keep_original_sound": "maybe"}]),
        "video_list[0].keep_original_sound",
        "'yes' or 'no'",
        id="R8-keep-sound-enum",
    ),
    # R9 sound with video
    pytest.param(
        body(video_list=[{"video_url": VID}], sound="on"),
        "sound",
        "must be 'off' when video_list is given",
        id="R9-sound-on-with-video",
    ),
    # R10 base video and frames
    pytest.param(
        body(video_list=[{"video_url": VID}], image_list=[img(), img("first_frame")]),
        "image_list[1].type",
        "first_frame images are not allowed with a base video",
        id="R10-first-frame-with-base-video",
    ),
    # R11 aspect ratio
    pytest.param(
        body(aspect_ratio=DROP),
        "aspect_ratio",
        "required ('16:9', '9:16' or '1:1') unless a first_frame",
        id="R11-aspect-missing",
    ),
    pytest.param(
        body(
            aspect_ratio=DROP,
            image_list=[img()],
            video_list=[{"video_url": VID, "refer_type": "feature"}],
        ),
        "aspect_ratio",
        "unless a first_frame image or a base video sets the frame",
        id="R11-aspect-missing-feature-video",
    ),
    pytest.param(
        body(aspect_ratio="4:3"),
        "aspect_ratio",
        "'16:9', '9:16' or '1:1'",
        id="R11-aspect-enum",
    ),
    # R12 duration
    pytest.param(
        body(model_name="kling-video-o1", duration="7"),
        "duration",
        "kling-video-o1 allows '5' or '10' without a base video, got '7'",
        id="R12-o1-seven",
    ),
    pytest.param(
        body(duration=7),
        "duration",
        "kling-video-o1 (the default when model_name is omitted) allows '5' or '10'",
        id="R12-default-model-int",
    ),
    pytest.param(
        body(image_list=[img("first_frame")], duration="3"),
        "duration",
        "allows '5' or '10' without a base video, got '3'",
        id="R12-o1-first-frame-three",
    ),
    pytest.param(
        body(model_name="kling-v3-omni", duration="16"),
        "duration",
        "from '3' to '15', got '16'",
        id="R12-v3-sixteen",
    ),
    pytest.param(
        body(video_list=[{"video_url": VID}], duration="2"),
        "duration",
        "from '3' to '15', got '2'",
        id="R12-base-video-two",
    ),
    pytest.param(body(duration="five"), "duration", "from '3' to '15'", id="R12-not-a-number"),
    pytest.param(body(duration=True), "duration", "valid string", id="R12-bool"),
    # R13 references
    pytest.param(
        body(prompt="The cat in <<<image_2>>>", image_list=[img()]),
        "prompt",
        "<<<image_2>>> refers to image_list item 2 (1-based), but image_list has 1 item(s)",
        id="R13-image-out-of-range",
    ),
    pytest.param(
        body(prompt="Wearing <<<element_1>>>"),
        "prompt",
        "but element_list has 0 item(s)",
        id="R13-element-missing",
    ),
    pytest.param(
        body(prompt="Start from <<<image_0>>>", image_list=[img()]),
        "prompt",
        "<<<image_0>>> refers to image_list item 0 (1-based)",
        id="R13-zero-based",
    ),
    pytest.param(
        customize(multi_prompt=[shot(1, "3"), shot(2, "3", "Then <<<video_1>>> plays")]),
        "multi_prompt[1].prompt",
        "<<<video_1>>> refers to video_list item 1",
        id="R13-video-in-shot",
    ),
    # R15 callback_url / external_task_id
    pytest.param(
        body(callback_url="example.com/hook"),
        "callback_url",
        "must be an http(s) URL",
        id="R15-callback-no-scheme",
    ),
    pytest.param(
        body(callback_url="ftp://example.com/hook"),
        "callback_url",
        "must be an http(s) URL",
        id="R15-callback-ftp",
    ),
    pytest.param(
        body(external_task_id=""),
        "external_task_id",
        "must be 1 to 64 characters, got 0",
        id="R15-external-id-empty",
    ),
    pytest.param(
        body(external_task_id="x" * 65),
        "external_task_id",
        "must be 1 to 64 characters, got 65",
        id="R15-external-id-long",
    ),
    pytest.param(
        body(external_task_id="my job"),
        "external_task_id",
        "whitespace or control characters",
        id="R15-external-id-space",
    ),
    pytest.param(
        body(external_task_id="job\x07"),
        "external_task_id",
        "whitespace or control characters",
        id="R15-external-id-control",
    ),
    # R16 element_id
    pytest.param(
        body(element_list=[{"element_id": ""}]),
        "element_list[0].element_id",
        "must not be empty",
        id="R16-element-empty",
    ),
    pytest.param(
        body(element_list=[{"element_id": 7}, {"element_id": " "}]),
        "element_list[1].element_id",
        "must not be empty",
        id="R16-element-blank",
    ),
    pytest.param(
        body(element_list=[{}]),
        "element_list[0].element_id",
        "Field required",
        id="R16-element-missing",
    ),
    # R17 watermark_info and unknown fields
    pytest.param(
        body(watermark_info={"enabled": True, "position": "top-left"}),
        "watermark_info.position",
        "unknown field; KlingWatermark accepts only: enabled",
        id="R17-watermark-extra",
    ),
    pytest.param(
        body(seconds="5"),
        "seconds",
        "unknown field; KlingOmniVideoRequest accepts only",
        id="extra-top-level-field",
    ),
    pytest.param(
        body(image_list=[{"image_url": IMG, "role": "first"}]),
        "image_list[0].role",
        "unknown field; KlingImage accepts only: image_url, type",
        id="extra-image-field",
    ),
    # Images given as data
    pytest.param(
        body(image_list=[img(), img(url=GIF)]),
        "image_list[1].image_url",
        "must be a JPG or PNG image, got GIF",
        id="image-gif-bytes",
    ),
    pytest.param(
        body(image_list=[img(url=base64.b64encode(image_bytes(400, 300, "WEBP")).decode())]),
        "image_list[0].image_url",
        "must be a JPG or PNG image, got WEBP",
        id="image-webp-base64",
    ),
    pytest.param(
        body(image_list=[img(url=SMALL_PNG)]),
        "image_list[0].image_url",
        "each side must be at least 300 px, got 299x400",
        id="image-too-small",
    ),
    pytest.param(
        body(image_list=[img(url=THIN_PNG)]),
        "image_list[0].image_url",
        "aspect ratio must be between 1:2.5 and 2.5:1, got 1000x300",
        id="image-too-thin",
    ),
    pytest.param(
        body(image_list=[img(url="not base64 at all!")]),
        "image_list[0].image_url",
        "not valid base64",
        id="image-garbage-string",
    ),
    pytest.param(
        body(image_list=[img(url="data:text/plain;base64,aGVsbG8=")]),
        "image_list[0].image_url",
        "a data: URL must look like 'data:image/png;base64,<data>'",
        id="image-data-url-not-image",
    ),
    pytest.param(
        body(image_list=[img(url="frames/missing-start.png")]),
        "image_list[0].image_url",
        "file not found: 'frames/missing-start.png'",
        id="image-missing-file-str",
    ),
    pytest.param(
        body(image_list=[img(url=b"")]),
        "image_list[0].image_url",
        "image data is empty",
        id="image-empty-bytes",
    ),
]


@pytest.mark.parametrize(("request_body", "field", "rule"), INVALID)
def test_invalid_request_names_field_and_rule(
    request_body: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        KlingOmniVideoRequest(**request_body)

    found = messages(caught.value)
    assert any(m.startswith(f"{field}: ") and rule in m for m in found), found
    assert f"{field}: " in str(caught.value)


def test_invalid_table_covers_every_rule() -> None:
    ids = [param.id for param in INVALID]
    assert len(ids) >= 30
    for rule in [f"R{n}-" for n in range(1, 18)]:
        assert any(i.startswith(rule) for i in ids), rule


def test_error_loc_is_the_field_path_too() -> None:
    with pytest.raises(ValidationError) as caught:
        KlingOmniVideoRequest(**body(image_list=[img("first_frame"), img("first_frame")]))

    (error,) = caught.value.errors()
    assert error["loc"] == ("image_list", 1, "type")
    assert error["type"] == "kling_rule"
    assert error["msg"] == "image_list[1].type: at most one first_frame image is allowed"


def test_all_cross_field_problems_are_reported_together() -> None:
    with pytest.raises(ValidationError) as caught:
        KlingOmniVideoRequest(
            video_list=[{"video_url": VID, "refer_type": "feature"}], sound="on", duration="7"
        )

    assert [e["loc"] for e in caught.value.errors()] == [
        ("prompt",), ("sound",), ("aspect_ratio",), ("duration",)
    ]


def test_documented_example_message() -> None:
    with pytest.raises(ValidationError) as caught:
        KlingOmniVideoRequest(**body(model_name="kling-video-o1", duration="7"))

    assert messages(caught.value) == [
        "duration: kling-video-o1 allows '5' or '10' without a base video, got '7'"
    ]


# Valid requests, one per input mode, with the exact JSON body.


@pytest.fixture
def frames(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    first = tmp_path / "first.png"
    end = tmp_path / "end.jpg"
    first.write_bytes(image_bytes(1280, 720))
    end.write_bytes(image_bytes(1280, 720, "JPEG"))
    return first, end


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_text_to_video_payload() -> None:
    request = KlingOmniVideoRequest(
        model_name="kling-v3-omni", prompt=PROMPT, mode="std", aspect_ratio="9:16", duration=12
    )

    assert request.provider == "kling"
    assert request.to_payload() == {
        "model_name": "kling-v3-omni",
        "prompt": PROMPT,
        "multi_shot": False,
        "sound": "off",
        "mode": "std",
        "aspect_ratio": "9:16",
        "duration": "12",
    }


def test_defaults_payload_omits_model_name() -> None:
    assert KlingOmniVideoRequest(prompt=PROMPT, aspect_ratio="1:1").to_payload() == {
        "prompt": PROMPT,
        "multi_shot": False,
        "sound": "off",
        "mode": "pro",
        "aspect_ratio": "1:1",
        "duration": "5",
    }


def test_first_and_end_frame_from_local_files(frames: tuple[pathlib.Path, pathlib.Path]) -> None:
    first, end = frames
    request = KlingOmniVideoRequest(
        prompt="The boat in <<<image_1>>> sails until it matches <<<image_2>>>",
        image_list=[
            KlingImage.from_file(first, type="first_frame"),
            KlingImage(image_url=str(end), type="end_frame"),
        ],
        duration="10",
        sound="on",
    )

    payload = request.to_payload()
    assert payload == {
        "prompt": "The boat in <<<image_1>>> sails until it matches <<<image_2>>>",
        "multi_shot": False,
        "image_list": [
            {"image_url": b64(first.read_bytes()), "type": "first_frame"},
            {"image_url": b64(end.read_bytes()), "type": "end_frame"},
        ],
        "sound": "on",
        "mode": "pro",
        "duration": "10",
    }
    sent = payload["image_list"]
    assert not any(item["image_url"].startswith("data:") for item in sent)
    assert base64.b64decode(sent[0]["image_url"], validate=True) == first.read_bytes()
    assert base64.b64decode(sent[1]["image_url"], validate=True) == end.read_bytes()
    json.dumps(payload)


def test_image_inputs_as_path_bytes_data_url_base64_and_url(
    frames: tuple[pathlib.Path, pathlib.Path],
) -> None:
    first, end = frames
    expected = b64(end.read_bytes())
    wrapped = base64.encodebytes(end.read_bytes()).decode()  # 76-char lines

    data_url = f"data:image/jpeg;base64,{expected}"
    for value in (end, str(end), end.read_bytes(), data_url, expected, wrapped):
        assert KlingImage(image_url=value).image_url == expected
    shouting = f"DATA:IMAGE/PNG;BASE64,{b64(first.read_bytes())}"
    assert KlingImage(image_url=shouting).image_url == b64(first.read_bytes())
    assert KlingImage(image_url=IMG).image_url == IMG


def test_element_guided_payload() -> None:
    request = KlingOmniVideoRequest(
        prompt="<<<element_1>>> walks past <<<element_2>>> in the style of <<<image_1>>>",
        image_list=[KlingImage(image_url=IMG)],
        element_list=[KlingElement(element_id=829412), {"element_id": "abc-7"}],
        aspect_ratio="16:9",
    )

    assert request.to_payload() == {
        "prompt": "<<<element_1>>> walks past <<<element_2>>> in the style of <<<image_1>>>",
        "multi_shot": False,
        "image_list": [{"image_url": IMG}],
        "element_list": [{"element_id": "829412"}, {"element_id": "abc-7"}],
        "sound": "off",
        "mode": "pro",
        "aspect_ratio": "16:9",
        "duration": "5",
    }


def test_video_transformation_payload() -> None:
    # A base video sets frame and length: no aspect_ratio, and "8" is fine even on kling-video-o1.
    request = KlingOmniVideoRequest(
        model_name="kling-video-o1",
        prompt="Turn <<<video_1>>> into a watercolour painting",
        video_list=[KlingVideo(video_url=VID, keep_original_sound="yes")],
        duration="8",
    )

    assert request.to_payload() == {
        "model_name": "kling-video-o1",
        "prompt": "Turn <<<video_1>>> into a watercolour painting",
        "multi_shot": False,
        "video_list": [{"video_url": VID, "refer_type": "base", "keep_original_sound": "yes"}],
        "sound": "off",
        "mode": "pro",
        "duration": "8",
    }


def test_feature_video_with_four_references() -> None:
    request = KlingOmniVideoRequest(
        prompt="Move like <<<video_1>>>",
        image_list=[KlingImage(image_url=IMG, type="first_frame"), KlingImage(image_url=IMG)],
        element_list=[KlingElement(element_id="1"), KlingElement(element_id="2")],
        video_list=[KlingVideo(video_url=VID, refer_type="feature")],
    )

    payload = request.to_payload()
    assert payload["video_list"] == [{"video_url": VID, "refer_type": "feature"}]
    assert "aspect_ratio" not in payload  # the first frame sets it


def test_multi_shot_customize_payload() -> None:
    request = KlingOmniVideoRequest(
        model_name="kling-v3-omni",
        multi_shot=True,
        shot_type="customize",
        multi_prompt=[
            KlingShot(index=1, prompt="A paper boat is set on the water", duration=3),
            {"index": 2, "prompt": "It drifts into the sunrise", "duration": "4"},
        ],
        aspect_ratio="16:9",
        duration=7,
    )

    assert request.to_payload() == {
        "model_name": "kling-v3-omni",
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [
            {"index": 1, "prompt": "A paper boat is set on the water", "duration": "3"},
            {"index": 2, "prompt": "It drifts into the sunrise", "duration": "4"},
        ],
        "sound": "off",
        "mode": "pro",
        "aspect_ratio": "16:9",
        "duration": "7",
    }


def test_multi_shot_intelligence_payload() -> None:
    request = KlingOmniVideoRequest(
        model_name="kling-v3-omni",
        prompt=PROMPT,
        multi_shot=True,
        shot_type="intelligence",
        aspect_ratio="16:9",
        duration="15",
        sound="on",
    )

    assert request.to_payload() == {
        "model_name": "kling-v3-omni",
        "prompt": PROMPT,
        "multi_shot": True,
        "shot_type": "intelligence",
        "sound": "on",
        "mode": "pro",
        "aspect_ratio": "16:9",
        "duration": "15",
    }


def test_watermark_callback_and_external_id_payload() -> None:
    request = KlingOmniVideoRequest(
        prompt=PROMPT,
        aspect_ratio="16:9",
        watermark_info=KlingWatermark(enabled=True),
        callback_url="https://hooks.example.com/kling?token=abc",
        external_task_id="x" * 64,
    )

    assert request.to_payload() == {
        "prompt": PROMPT,
        "multi_shot": False,
        "sound": "off",
        "mode": "pro",
        "aspect_ratio": "16:9",
        "duration": "5",
        "watermark_info": {"enabled": True},
        "callback_url": "https://hooks.example.com/kling?token=abc",
        "external_task_id": "x" * 64,
    }
    default_watermark = KlingOmniVideoRequest(**body(watermark_info={})).to_payload()
    assert default_watermark["watermark_info"] == {"enabled": False}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"prompt": "x" * 2500}, id="prompt-2500"),
        pytest.param({"model_name": "kling-v3-omni", "duration": "3"}, id="v3-three"),
        pytest.param(
            {"image_list": [img()] * 4, "element_list": [{"element_id": "1"}] * 3},
            id="seven-references",
        ),
        pytest.param(
            {"video_list": [{"video_url": VID}], "duration": "3"}, id="base-video-any-duration"
        ),
        pytest.param({"image_list": [img(url=image_bytes(750, 300))]}, id="aspect-exactly-2.5"),
        pytest.param({"image_list": [img(url=image_bytes(300, 300))]}, id="side-exactly-300"),
        pytest.param(
            {"prompt": "<<<image_1>>> then <<<image_1>>>", "image_list": [img()]},
            id="repeated-reference",
        ),
    ],
)
def test_boundaries_are_accepted(changes: dict[str, Any]) -> None:
    KlingOmniVideoRequest(**body(**changes))


def test_customize_may_also_carry_a_six_shot_storyboard() -> None:
    six = [shot(i, "2", "x" * 512) for i in range(1, 7)]
    request = KlingOmniVideoRequest(**customize(multi_prompt=six, duration="12"))
    assert len(request.to_payload()["multi_prompt"]) == 6


# Image checks


def test_standalone_image_error_names_field_and_rule() -> None:
    with pytest.raises(ValidationError) as caught:
        KlingImage(image_url=GIF)
    assert messages(caught.value) == ["image_url: must be a JPG or PNG image, got GIF"]


def test_gif_file_rejected(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "anim.gif"
    path.write_bytes(GIF)
    expected = r"image_list\[0\]\.image_url: must be a JPG or PNG image, got GIF"
    with pytest.raises(ValidationError, match=expected):
        KlingOmniVideoRequest(**body(image_list=[{"image_url": path}]))


def test_missing_file_names_the_path(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope" / "start.png"
    with pytest.raises(ValidationError) as caught:
        KlingImage.from_file(missing, type="first_frame")
    assert messages(caught.value) == [f"image_url: file not found: '{missing}'"]


def test_directory_is_not_an_image(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValidationError, match="not a regular file"):
        KlingImage(image_url=tmp_path)


def test_file_over_10_mb_rejected_without_reading_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "huge.png"
    with big.open("wb") as handle:
        handle.write(PNG)
        handle.truncate(10 * 1024 * 1024 + 1)  # sparse: nothing real to read
    opened: list[pathlib.Path] = []

    def no_reading(self: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self)
        raise RuntimeError("the file must not be read")

    monkeypatch.setattr(pathlib.Path, "open", no_reading)
    monkeypatch.setattr(pathlib.Path, "read_bytes", no_reading)

    with pytest.raises(ValidationError) as caught:
        KlingImage.from_file(big)
    assert opened == []
    (message,) = messages(caught.value)
    assert message.startswith("image_url: must be at most 10 MB")
    assert "10,485,761 bytes" in message and str(big) in message


def test_bytes_over_10_mb_rejected() -> None:
    with pytest.raises(ValidationError, match="image_url: must be at most 10 MB"):
        KlingImage(image_url=PNG + b"\0" * (10 * 1024 * 1024))


def test_corrupt_header_rejected() -> None:
    with pytest.raises(ValidationError, match="image_url: could not read the image header"):
        KlingImage(image_url=b"\x89PNG\r\n\x1a\n" + b"garbage")


def test_unknown_format_rejected() -> None:
    with pytest.raises(ValidationError, match="must be a JPG or PNG image, got an unrecognised"):
        KlingImage(image_url=b"hello world")


def test_data_url_prefix_stripped(frames: tuple[pathlib.Path, pathlib.Path]) -> None:
    first, _ = frames
    raw = first.read_bytes()
    request = KlingOmniVideoRequest(
        prompt=PROMPT,
        image_list=[{"image_url": f"data:image/png;base64,{b64(raw)}", "type": "first_frame"}],
    )

    sent = request.to_payload()["image_list"][0]["image_url"]
    assert sent == b64(raw)
    assert base64.b64decode(sent, validate=True) == raw


def test_data_url_with_bad_base64_rejected() -> None:
    with pytest.raises(ValidationError, match="image_url: the data: URL does not carry valid"):
        KlingImage(image_url="data:image/png;base64,@@@")


def test_without_pillow_only_format_and_size_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_images, "_PILImage", None)
    assert KlingImage(image_url=SMALL_PNG).image_url == b64(SMALL_PNG)
    with pytest.raises(ValidationError, match="got GIF"):
        KlingImage(image_url=GIF)


def test_url_images_are_not_fetched_or_changed() -> None:
    url = "https://cdn.example.com/a%20b.png?sig=1"
    assert KlingImage(image_url=url, type="first_frame").image_url == url


def test_request_round_trips_through_json() -> None:
    # Prefect stores parameters as JSON: the stored base64 must validate again unchanged.
    request = KlingOmniVideoRequest(
        **customize(callback_url="https://example.com/hook", image_list=[img(url=PNG)])
    )
    again = KlingOmniVideoRequest.model_validate_json(request.model_dump_json())
    assert again.to_payload() == request.to_payload()
    assert again.image_list[0].image_url == b64(PNG)
