"""The Kling Omni create body (`POST /kling/v1/videos/omni-video`), validated before sending.

Kling checks most of its rules only after a task was queued, so every rule the docs
state is checked here, and each error reads `<field path>: <rule>`, for example::

    duration: kling-video-o1 allows '5' or '10' without a base video, got '7'
    image_list[1].type: at most one first_frame image is allowed

Errors are ordinary pydantic `ValidationError`s; their `loc` is the same field path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from prefect_comet.api.kling_images import is_http_url, normalize_image

_Loc = tuple[str | int, ...]
_Problem = tuple[_Loc, str]

DEFAULT_MODEL = "kling-video-o1"
MAX_PROMPT_CHARS = 2500
MAX_SHOT_PROMPT_CHARS = 512
MAX_SHOTS = 6
MAX_REFERENCES = 7
MAX_REFERENCES_WITH_VIDEO = 4
MAX_EXTERNAL_ID_CHARS = 64
DURATIONS = tuple(str(seconds) for seconds in range(3, 16))
O1_DURATIONS = ("5", "10")

_REFERENCE = re.compile(r"<<<(image|element|video)_(\d+)>>>")


class _KlingModel(BaseModel):
    """Shared config; restates every error as `<field path>: <rule>`."""

    model_config = ConfigDict(extra="forbid")

    def _rule_problems(self) -> list[_Problem]:
        """Rules spanning several fields, as (location, rule); single fields use validators."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _report_path_and_rule(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            model = handler(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            raise _restate(
                cls, [(e["loc"], _rule_of(cls, e), e["type"], e["input"]) for e in errors]
            ) from None
        problems = model._rule_problems()
        if problems:
            raise _restate(
                cls, [(loc, rule, "kling_rule", _lookup(model, loc)) for loc, rule in problems]
            )
        return model


class KlingImage(_KlingModel):
    """One `image_list` item: a reference image, optionally the first or last frame.

    Args:
        image_url: An http(s) URL (sent as is), or the image itself as `bytes`, a
            `pathlib.Path`, a `str` naming an existing file, a `data:image/...;base64,`
            URL or bare base64. Those are checked now (JPG/PNG, at most 10 MB and, with
            Pillow installed, at least 300 px a side and between 1:2.5 and 2.5:1) and
            stored as standard base64 without a `data:` prefix, as Kling wants.
        type: `first_frame`, `end_frame`, or None for a plain reference image.

    Example:
        ```python
        first = KlingImage.from_file("frames/start.png", type="first_frame")
        styled = KlingImage(image_url="https://example.com/style.jpg")
        ```
    """

    image_url: str
    type: Literal["first_frame", "end_frame"] | None = None

    @field_validator("image_url", mode="before")
    @classmethod
    def _normalise_image(cls, value: Any) -> str:
        return normalize_image(value)

    @classmethod
    def from_file(
        cls, path: str | Path, type: Literal["first_frame", "end_frame"] | None = None
    ) -> KlingImage:
        """Read and check a local JPG/PNG file (at most 10 MB)."""
        return cls(image_url=Path(path), type=type)


class KlingElement(_KlingModel):
    """One `element_list` item: a Kling element (a saved subject) to guide the video.

    Args:
        element_id: The element's id; an int is accepted and sent as a string.

    Example:
        ```python
        KlingElement(element_id=829412)  # referenced in the prompt as <<<element_1>>>
        ```
    """

    element_id: str

    @field_validator("element_id", mode="before")
    @classmethod
    def _int_as_string(cls, value: Any) -> Any:
        return _int_to_str(value)

    @field_validator("element_id")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class KlingVideo(_KlingModel):
    """The `video_list` item: a reference clip (MP4/MOV, 3-10 s) to transform or learn from.

    Args:
        video_url: An http(s) URL of the clip.
        refer_type: `base` edits this clip (the output follows its length and frame);
            `feature` only borrows its features.
        keep_original_sound: `yes` or `no`: keep the clip's own audio.

    Example:
        ```python
        KlingVideo(video_url="https://example.com/clip.mp4", keep_original_sound="yes")
        ```
    """

    video_url: str
    refer_type: Literal["base", "feature"] = "base"
    keep_original_sound: Literal["yes", "no"] | None = None

    @field_validator("video_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)


class KlingShot(_KlingModel):
    """One `multi_prompt` item: a shot of a customised multi-shot video.

    Args:
        index: The shot's sequence number.
        prompt: What this shot shows, 1-512 characters.
        duration: Seconds, as a positive whole number string; an int is accepted.
            All shots together must last the request's `duration`.

    Example:
        ```python
        KlingShot(index=1, prompt="A paper boat is set on the water", duration="2")
        ```
    """

    index: int
    prompt: str
    duration: str

    @field_validator("prompt")
    @classmethod
    def _prompt_length(cls, value: str) -> str:
        return _check_prompt(value, MAX_SHOT_PROMPT_CHARS)

    @field_validator("duration", mode="before")
    @classmethod
    def _int_as_string(cls, value: Any) -> Any:
        return _int_to_str(value)

    @field_validator("duration")
    @classmethod
    def _positive_seconds(cls, value: str) -> str:
        if not (value.isascii() and value.isdigit() and int(value) > 0):
            raise ValueError(
                f"must be a positive whole number of seconds such as '3', got {value!r}"
            )
        return value


class KlingWatermark(_KlingModel):
    """`watermark_info`: whether to also get watermarked result URLs.

    Args:
        enabled: True to receive a `watermark_url` next to each result's `url`.

    Example:
        ```python
        KlingWatermark(enabled=True)
        ```
    """

    enabled: bool = False


class KlingOmniVideoRequest(_KlingModel):
    """A Kling Omni create request; every documented rule is checked on construction.

    Args:
        model_name: `kling-video-o1` or `kling-v3-omni`; None omits it (the route
            default, `kling-video-o1`).
        prompt: Up to 2500 characters; may reference `<<<image_N>>>`, `<<<element_N>>>`
            and `<<<video_N>>>` (1-based). Optional only for a customised multi-shot.
        multi_shot: Generate several shots; needs `shot_type`.
        shot_type: `customize` (shots from `multi_prompt`) or `intelligence` (from `prompt`).
        multi_prompt: 1-6 shots for `customize`; their durations add up to `duration`.
        image_list: Reference images; at most one `first_frame` and one `end_frame`.
        element_list: Kling elements; images and elements total at most 7 (4 with a video).
        video_list: At most one reference video; then `sound` must be `off`.
        sound: `on` or `off`: generate audio.
        mode: `std` (faster, cheaper) or `pro` (higher quality).
        aspect_ratio: `16:9`, `9:16` or `1:1`; required unless a first frame or a base
            video sets the frame.
        duration: Seconds as a string (an int is accepted). Without a base video,
            `kling-video-o1` takes `5` or `10` and `kling-v3-omni` `3` to `15`.
        watermark_info: Also return watermarked result URLs.
        callback_url: An http(s) URL notified on each status change.
        external_task_id: Your own id for the task, 1-64 visible characters, unique per
            account.

    Example:
        ```python
        from pathlib import Path

        request = KlingOmniVideoRequest(
            prompt="The boat in <<<image_1>>> drifts across a calm pond at sunrise",
            image_list=[KlingImage(image_url=Path("boat.png"), type="first_frame")],
            duration=10,
        )
        body = request.to_payload()  # JSON for POST /kling/v1/videos/omni-video
        ```
    """

    provider: ClassVar[str] = "kling"

    model_name: Literal["kling-video-o1", "kling-v3-omni"] | None = None
    prompt: str | None = None
    multi_shot: bool = False
    shot_type: Literal["customize", "intelligence"] | None = None
    multi_prompt: list[KlingShot] | None = None
    image_list: list[KlingImage] = []
    element_list: list[KlingElement] = []
    video_list: list[KlingVideo] = []
    sound: Literal["on", "off"] = "off"
    mode: Literal["std", "pro"] = "pro"
    aspect_ratio: Literal["16:9", "9:16", "1:1"] | None = None
    duration: str = "5"
    watermark_info: KlingWatermark | None = None
    callback_url: str | None = None
    external_task_id: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """The JSON body: None values and empty lists are left out."""
        body = self.model_dump(mode="json", exclude_none=True)
        return {key: value for key, value in body.items() if value != []}

    @field_validator("prompt")
    @classmethod
    def _prompt_length(cls, value: str | None) -> str | None:
        return None if value is None else _check_prompt(value, MAX_PROMPT_CHARS)

    @field_validator("duration", mode="before")
    @classmethod
    def _int_as_string(cls, value: Any) -> Any:
        return _int_to_str(value)

    @field_validator("duration")
    @classmethod
    def _known_duration(cls, value: str) -> str:
        if value not in DURATIONS:
            raise ValueError(f"must be a whole number of seconds from '3' to '15', got {value!r}")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_http_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("external_task_id")
    @classmethod
    def _external_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_EXTERNAL_ID_CHARS:
            raise ValueError(
                f"must be 1 to {MAX_EXTERNAL_ID_CHARS} characters, got {len(value)}"
            )
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("must not contain whitespace or control characters")
        return value

    def _rule_problems(self) -> list[_Problem]:
        return [
            *self._prompt_problems(),
            *self._image_problems(),
            *self._video_problems(),
            *self._frame_problems(),
            *self._reference_problems(),
        ]

    def _prompt_problems(self) -> list[_Problem]:
        problems: list[_Problem] = []
        customize = self.multi_shot and self.shot_type == "customize"
        if self.multi_shot and self.shot_type is None:
            problems.append(
                (("shot_type",), "required when multi_shot is true ('customize' or 'intelligence')")
            )
        if not self.multi_shot and self.shot_type is not None:
            problems.append((("shot_type",), "only allowed when multi_shot is true"))
        if self.prompt is None and self.shot_type == "intelligence":
            problems.append((("prompt",), "required when shot_type is 'intelligence'"))
        elif self.prompt is None and not customize:
            problems.append(
                (
                    ("prompt",),
                    f"required (1 to {MAX_PROMPT_CHARS} characters) unless multi_shot is true "
                    "with shot_type 'customize' and a multi_prompt",
                )
            )
        if customize:
            shots = self.multi_prompt or []
            if not shots:
                problems.append(
                    (
                        ("multi_prompt",),
                        f"required (1 to {MAX_SHOTS} shots) when shot_type is 'customize'",
                    )
                )
            elif len(shots) > MAX_SHOTS:
                problems.append((("multi_prompt",), f"at most {MAX_SHOTS} shots, got {len(shots)}"))
            total = sum(int(shot.duration) for shot in shots)
            if shots and total != int(self.duration):
                problems.append(
                    (
                        ("multi_prompt",),
                        f"shot durations must add up to duration '{self.duration}', got {total}",
                    )
                )
        elif self.multi_prompt is not None:
            problems.append(
                (
                    ("multi_prompt",),
                    "only allowed when multi_shot is true and shot_type is 'customize'",
                )
            )
        return problems

    def _image_problems(self) -> list[_Problem]:
        problems: list[_Problem] = []
        firsts = self._frame_indexes("first_frame")
        ends = self._frame_indexes("end_frame")
        for role, indexes in (("first_frame", firsts), ("end_frame", ends)):
            for index in indexes[1:]:
                problems.append(
                    (("image_list", index, "type"), f"at most one {role} image is allowed")
                )
        if ends and not firsts:
            problems.append(
                (("image_list", ends[0], "type"), "an end_frame image needs a first_frame image")
            )
        limit = MAX_REFERENCES_WITH_VIDEO if self.video_list else MAX_REFERENCES
        count = len(self.image_list) + len(self.element_list)
        if count > limit:
            when = " when video_list is given" if self.video_list else ""
            problems.append(
                (
                    ("image_list",),
                    f"image_list and element_list together allow at most {limit} items{when}, "
                    f"got {count}",
                )
            )
        return problems

    def _video_problems(self) -> list[_Problem]:
        problems: list[_Problem] = []
        if len(self.video_list) > 1:
            problems.append((("video_list",), f"at most 1 video, got {len(self.video_list)}"))
        if self.video_list and self.sound != "off":
            problems.append((("sound",), "must be 'off' when video_list is given"))
        if self._has_base_video():
            for index in self._frame_indexes("first_frame") + self._frame_indexes("end_frame"):
                kind = self.image_list[index].type
                problems.append(
                    (
                        ("image_list", index, "type"),
                        f"{kind} images are not allowed with a base video "
                        "(video_list refer_type 'base')",
                    )
                )
        return problems

    def _frame_problems(self) -> list[_Problem]:
        problems: list[_Problem] = []
        base_video = self._has_base_video()
        if self.aspect_ratio is None and not base_video and not self._frame_indexes("first_frame"):
            problems.append(
                (
                    ("aspect_ratio",),
                    "required ('16:9', '9:16' or '1:1') unless a first_frame image or a base "
                    "video sets the frame",
                )
            )
        model = self.model_name or DEFAULT_MODEL
        # A base video dictates the output length; Kling ignores `duration` then.
        if not base_video and model == "kling-video-o1" and self.duration not in O1_DURATIONS:
            default = " (the default when model_name is omitted)" if self.model_name is None else ""
            problems.append(
                (
                    ("duration",),
                    f"kling-video-o1{default} allows '5' or '10' without a base video, "
                    f"got '{self.duration}'",
                )
            )
        return problems

    def _reference_problems(self) -> list[_Problem]:
        problems: list[_Problem] = []
        counts = {
            "image": len(self.image_list),
            "element": len(self.element_list),
            "video": len(self.video_list),
        }
        texts: list[tuple[_Loc, str | None]] = [(("prompt",), self.prompt)]
        for index, shot in enumerate(self.multi_prompt or []):
            texts.append((("multi_prompt", index, "prompt"), shot.prompt))
        for loc, text in texts:
            seen: set[str] = set()
            for match in _REFERENCE.finditer(text or ""):
                kind, number = match.group(1), int(match.group(2))
                if match.group(0) in seen or 1 <= number <= counts[kind]:
                    continue
                seen.add(match.group(0))
                problems.append(
                    (
                        loc,
                        f"{match.group(0)} refers to {kind}_list item {number} (1-based), "
                        f"but {kind}_list has {counts[kind]} item(s)",
                    )
                )
        return problems

    def _frame_indexes(self, role: str) -> list[int]:
        return [i for i, image in enumerate(self.image_list) if image.type == role]

    def _has_base_video(self) -> bool:
        return any(video.refer_type == "base" for video in self.video_list)


def _check_prompt(value: str, limit: int) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters, got {len(value)}")
    return value


def _check_http_url(value: str) -> str:
    if not is_http_url(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ValueError(f"must be an http(s) URL, got {shown!r}")
    return value


def _int_to_str(value: Any) -> Any:
    # The API wants strings; a user writing duration=10 means "10". bool is not a number here.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _rule_of(cls: type[BaseModel], error: Any) -> str:
    ctx = error.get("ctx") or {}
    if "rule" in ctx:  # already restated by a nested model
        return str(ctx["rule"])
    if error["type"] == "value_error":
        return str(ctx["error"])
    if error["type"] == "extra_forbidden":
        return f"unknown field; {cls.__name__} accepts only: {', '.join(cls.model_fields)}"
    return str(error["msg"])


def _restate(cls: type[BaseModel], errors: list[tuple[_Loc, str, str, Any]]) -> ValidationError:
    details = []
    for loc, rule, kind, value in errors:
        path = _path(loc)
        template = "{path}: {rule}" if path else "{rule}"
        details.append(
            InitErrorDetails(
                type=PydanticCustomError(kind, template, {"path": path, "rule": rule}),
                loc=loc,
                input=value,
            )
        )
    return ValidationError.from_exception_data(cls.__name__, details)


def _path(loc: _Loc) -> str:
    """`("image_list", 1, "type")` as `image_list[1].type`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _lookup(model: BaseModel, loc: _Loc) -> Any:
    value: Any = model
    for part in loc:
        value = value[part] if isinstance(part, int) else getattr(value, part)
    return value
