"""Kling Omni create validation (rules R1-R17) and the output frame/duration it implies."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

FIELDS = {
    "model_name", "multi_shot", "shot_type", "prompt", "multi_prompt", "image_list", "element_list",
    "video_list", "sound", "mode", "aspect_ratio", "duration", "watermark_info", "callback_url",
    "external_task_id",
}  # fmt: skip
MODELS = ("kling-video-o1", "kling-v3-omni")
FRAMES = {"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1080, 1080)}
DURATIONS = tuple(str(n) for n in range(3, 16))
MAX_IMAGE_BYTES = 10 * 1024 * 1024
_REF = re.compile(r"<<<(image|element|video)_(\d+)>>>")

# Given a video URL: (width, height, seconds) when it is one of the emulator's own results.
BaseLookup = Callable[[str], "tuple[int, int, float] | None"]


class RuleError(Exception):
    """A rejected field; the message is `<field>: <rule>`."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")


@dataclass(frozen=True)
class KlingSpec:
    """What an accepted request will produce."""

    prompt: str  # every prompt text joined (behaviour markers are read from it)
    width: int
    height: int
    duration: float
    watermark: bool
    external_task_id: str | None


def validate(body: Any, base_lookup: BaseLookup) -> KlingSpec:
    """Check `body` against the rules; raise RuleError on the first violation."""
    if not isinstance(body, dict):
        raise RuleError("body", "must be a JSON object")
    for key in body:
        if key not in FIELDS:
            raise RuleError(key, "unknown field")
    model = _enum(body, "model_name", MODELS, "kling-video-o1")  # R2
    _enum(body, "mode", ("std", "pro"), "pro")  # R3
    sound = _enum(body, "sound", ("on", "off"), "off")  # R14
    images, elements, videos = (
        _items(body, "image_list"),
        _items(body, "element_list"),
        _items(body, "video_list"),
    )
    first_frame = _check_images(images)  # R6
    _check_elements(elements)  # R16
    base = _check_videos(videos)  # R8
    limit = 4 if videos else 7  # R7
    if len(images) + len(elements) > limit:
        raise RuleError(
            "image_list",
            f"images plus elements must be at most {limit}" + (" with a video_list" if videos else ""),
        )
    if videos and sound != "off":  # R9
        raise RuleError("sound", "must be off when video_list is present")
    if base is not None and any(image.get("type") for image in images):  # R10
        raise RuleError(
            "image_list", "first_frame/end_frame images are not allowed with a base video (refer_type base)"
        )
    aspect = _enum(body, "aspect_ratio", tuple(FRAMES), None)  # R11
    if aspect is None and first_frame is None and base is None:
        raise RuleError("aspect_ratio", "required unless a first_frame image or a base video sets the frame")
    duration = _duration(body, model, base is not None)  # R12
    prompts = _check_prompts(body, duration)  # R1, R4, R5
    counts = {"image": len(images), "element": len(elements), "video": len(videos)}
    for field, text in prompts:  # R13
        for kind, number in _REF.findall(text):
            if not 1 <= int(number) <= counts[kind]:
                raise RuleError(field, f"<<<{kind}_{number}>>> does not match any {kind}_list item")
    callback = body.get("callback_url")  # R15
    if callback is not None and not _is_http_url(callback):
        raise RuleError("callback_url", "must be an http(s) URL")
    external = body.get("external_task_id")
    if external is not None and (not isinstance(external, str) or not external.strip() or len(external) > 64):
        raise RuleError("external_task_id", "must be a non-empty string of at most 64 characters")
    watermark = _watermark(body.get("watermark_info"))  # R17
    width, height, seconds = _frame(aspect, first_frame, base, base_lookup, body.get("duration"))
    if base is None:
        seconds = float(duration)
    return KlingSpec(" ".join(text for _, text in prompts), width, height, seconds, watermark, external)


def _enum(body: dict[str, Any], field: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = body.get(field, default)
    if value is not None and value not in allowed:
        raise RuleError(field, f"must be one of {', '.join(allowed)}")
    return value


def _items(body: dict[str, Any], field: str) -> list[dict[str, Any]]:
    value = body.get(field, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise RuleError(field, "must be a list of objects")
    return value


def _only(item: dict[str, Any], where: str, keys: set[str]) -> None:
    for key in item:
        if key not in keys:
            raise RuleError(f"{where}.{key}", "unknown field")


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _check_images(images: list[dict[str, Any]]) -> str | tuple[int, int] | None:
    """R6. Returns the first_frame (its pixel size if inline, its URL if remote), or None."""
    seen: dict[str, Any] = {}
    for i, image in enumerate(images):
        where = f"image_list[{i}]"
        _only(image, where, {"image_url", "type"})
        kind = image.get("type")
        if kind is not None and kind not in ("first_frame", "end_frame"):
            raise RuleError(
                f"{where}.type", "must be first_frame or end_frame (omit it for a reference image)"
            )
        if kind in seen:
            raise RuleError(f"{where}.type", f"at most one {kind} image is allowed")
        source = _image_source(image.get("image_url"), f"{where}.image_url")
        if kind is not None:
            seen[kind] = source
    if "end_frame" in seen and "first_frame" not in seen:
        raise RuleError("image_list", "an end_frame image needs a first_frame image")
    return seen.get("first_frame")


def _image_source(value: Any, where: str) -> str | tuple[int, int]:
    """An image URL as given, or the pixel size of an inline base64 JPG/PNG."""
    if not isinstance(value, str) or not value:
        raise RuleError(where, "required: an http(s) URL or base64 JPG/PNG")
    if value.startswith(("http://", "https://")):
        if not _is_http_url(value):
            raise RuleError(where, "malformed URL")
        return value
    if value.startswith("data:"):
        raise RuleError(where, "base64 images must be sent without a data: prefix")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RuleError(where, "must be an http(s) URL or base64 of a JPG/PNG") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise RuleError(where, "image must be at most 10 MB")
    size = image_size(data)
    if size is None:
        raise RuleError(where, "base64 data is not a readable JPG/PNG")
    if not 1 / 2.5 <= size[0] / size[1] <= 2.5:
        raise RuleError(where, "image aspect ratio must be between 1:2.5 and 2.5:1")
    return size


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or JPEG SOF header, None if neither."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return (width, height) if width and height else None
        pos += 2 + length
    return None


def _check_elements(elements: list[dict[str, Any]]) -> None:
    """R16."""
    for i, element in enumerate(elements):
        _only(element, f"element_list[{i}]", {"element_id"})
        value = element.get("element_id")
        valid_int = isinstance(value, int) and not isinstance(value, bool)
        if not valid_int and not (isinstance(value, str) and value.strip()):
            raise RuleError(f"element_list[{i}].element_id", "required: a non-empty string or an integer")


def _check_videos(videos: list[dict[str, Any]]) -> str | None:
    """R8. Returns the base video's URL (refer_type base, the default), or None."""
    if len(videos) > 1:
        raise RuleError("video_list", "at most 1 video is allowed")
    for i, video in enumerate(videos):
        where = f"video_list[{i}]"
        _only(video, where, {"video_url", "refer_type", "keep_original_sound"})
        if not _is_http_url(video.get("video_url")):
            raise RuleError(f"{where}.video_url", "required: an http(s) URL")
        refer = _enum(video, "refer_type", ("base", "feature"), "base")
        _enum(video, "keep_original_sound", ("yes", "no"), None)
        if refer == "base":
            return str(video["video_url"])
    return None


def _duration(body: dict[str, Any], model: str | None, has_base: bool) -> str:
    """R12. The requested duration string (default "5")."""
    value = body.get("duration", "5")
    if not isinstance(value, str) or value not in DURATIONS:
        raise RuleError("duration", 'must be a string from "3" to "15"')
    if not has_base and model == "kling-video-o1" and value not in ("5", "10"):
        raise RuleError("duration", 'must be "5" or "10" for kling-video-o1')
    return value


def _check_prompts(body: dict[str, Any], duration: str) -> list[tuple[str, str]]:
    """R1, R4, R5. Returns (field, text) for every prompt given."""
    multi_shot, shot_type = body.get("multi_shot", False), body.get("shot_type")
    if not isinstance(multi_shot, bool):
        raise RuleError("multi_shot", "must be a boolean")
    if multi_shot and shot_type not in ("customize", "intelligence"):
        raise RuleError("shot_type", "must be customize or intelligence when multi_shot is true")
    if not multi_shot and shot_type is not None:
        raise RuleError("shot_type", "only allowed when multi_shot is true")
    prompts: list[tuple[str, str]] = []
    multi = body.get("multi_prompt")
    if shot_type == "customize":
        if multi is None:
            raise RuleError("multi_prompt", "required when shot_type is customize")
        prompts = _check_multi_prompt(multi, duration)
    elif multi is not None:
        raise RuleError("multi_prompt", "only allowed with multi_shot true and shot_type customize")
    prompt = body.get("prompt")
    if prompt is None and shot_type != "customize":
        raise RuleError("prompt", "required" + (" when shot_type is intelligence" if shot_type else ""))
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise RuleError("prompt", "must be a non-blank string")
        if len(prompt) > 2500:
            raise RuleError("prompt", "must be at most 2500 characters")
        prompts.insert(0, ("prompt", prompt))
    return prompts


def _check_multi_prompt(items: Any, duration: str) -> list[tuple[str, str]]:
    """R5: 1-6 storyboard items whose durations add up to the total."""
    if not isinstance(items, list) or not 1 <= len(items) <= 6:
        raise RuleError("multi_prompt", "must be a list of 1 to 6 items")
    prompts, total = [], 0
    for i, item in enumerate(items):
        where = f"multi_prompt[{i}]"
        if not isinstance(item, dict):
            raise RuleError(where, "must be an object")
        _only(item, where, {"index", "prompt", "duration"})
        index, text, seconds = item.get("index"), item.get("prompt"), item.get("duration")
        if not isinstance(index, int) or isinstance(index, bool):
            raise RuleError(f"{where}.index", "required: an integer")
        if not isinstance(text, str) or not text.strip() or len(text) > 512:
            raise RuleError(f"{where}.prompt", "required: 1 to 512 characters")
        if not isinstance(seconds, str) or not seconds.isdigit():
            raise RuleError(f"{where}.duration", "required: a string of digits")
        total += int(seconds)
        prompts.append((f"{where}.prompt", text))
    if total != int(duration):
        raise RuleError("multi_prompt", f"item durations add up to {total}, expected duration {duration}")
    return prompts


def _watermark(value: Any) -> bool:
    """R17."""
    if value is None:
        return False
    if not isinstance(value, dict) or set(value) - {"enabled"}:
        raise RuleError("watermark_info", "must be an object with only the field enabled")
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        raise RuleError("watermark_info.enabled", "must be a boolean")
    return enabled


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _follow(width: int, height: int) -> tuple[int, int]:
    """Same aspect as width x height with a short side of 1080 (even sizes)."""
    if width >= height:
        return _even(1080 * width / height), 1080
    return 1080, _even(1080 * height / width)


def _frame(
    aspect: str | None,
    first_frame: str | tuple[int, int] | None,
    base: str | None,
    base_lookup: BaseLookup,
    duration: Any,
) -> tuple[int, int, float]:
    """Output (width, height, seconds); seconds only matters with a base video."""
    seconds = float(duration) if isinstance(duration, str) else 5.0
    width, height = FRAMES[aspect or "16:9"]
    if base is not None:
        own = base_lookup(base)
        if own is not None:
            return (*_follow(own[0], own[1]), own[2])
    if isinstance(first_frame, tuple):
        width, height = _follow(*first_frame)
    return width, height, seconds
