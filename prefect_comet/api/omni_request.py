"""The Omni create body (`POST /v1/videos`, multipart form), validated before sending.

The create page types `seconds` and `resolution` as free strings ("start with 4"; "720p,
1080p can be accepted"); only `model` and `aspect_ratio` are enums. So a value is refused
only when it cannot be one (`seconds="0"`, `"four"`, `resolution="720"`), and a well-formed
value the docs have not shown (`seconds="20"`, `resolution="480p"`) is sent with a warning.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What the docs and the answers quoted in them have shown working (OpenAI-videos-shaped
# routes take 4, 8 and 12 seconds; the create page names 720p and 1080p).
SEEN_SECONDS = ("4", "8", "12")
SEEN_RESOLUTIONS = ("720p", "1080p")
# The docs give no upper bound for `seconds`. This is ours, not CometAPI's: five times the
# longest length seen (12 s), to stop a slip such as "400" for "4" before it is paid for.
MAX_SECONDS = 60
_WHOLE_NUMBER = re.compile(r"[0-9]+")
# A frame height in pixels and a "p": 480p, 720p, 1080p, 1440p, 2160p, ...
_RESOLUTION = re.compile(r"[1-9][0-9]{2,3}p")


def checked_seconds(value: Any) -> str:
    """`seconds` as the API takes it: a whole number of seconds from 1 to `MAX_SECONDS`, as a string.

    Args:
        value: A string of digits, or an int.

    Returns:
        The number without leading zeros, e.g. `"8"` for `8` or `"08"`.

    Raises:
        ValueError: The value cannot be a length (`"0"`, `"-4"`, `"4.5"`, `"four"`) or is above
            `MAX_SECONDS`; the message names the field and the rule.

    Example:
        ```python
        checked_seconds(8)  # "8"; "20" is returned too, with a UserWarning
        ```
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _WHOLE_NUMBER.fullmatch(value) or int(value) < 1:
        raise ValueError(f"seconds must be a positive whole number of seconds, like '4', got {value!r}")
    if int(value) > MAX_SECONDS:
        raise ValueError(
            f"seconds must be at most {MAX_SECONDS} (prefect-comet's own limit; the API docs "
            f"name none), got {value!r}"
        )
    value = str(int(value))
    if value not in SEEN_SECONDS:
        warnings.warn(
            f"seconds={value!r}: the API docs show only {', '.join(SEEN_SECONDS)}; CometAPI may refuse it "
            "(HTTP 400) or render another length (the stored video is measured).",
            UserWarning,
            stacklevel=2,
        )
    return value


def checked_resolution(value: Any) -> str:
    """`resolution` as the API takes it: a frame height and `p`, like `720p`.

    Raises:
        ValueError: The value is not of that form (`"720"`, `"4k"`); the message says so.

    Example:
        ```python
        checked_resolution("1080p")  # "1080p"; "480p" is returned too, with a UserWarning
        ```
    """
    if not isinstance(value, str) or not _RESOLUTION.fullmatch(value):
        raise ValueError(
            f"resolution must be a frame height in pixels followed by 'p', like '720p' or '1080p', got {value!r}"
        )
    if value not in SEEN_RESOLUTIONS:
        warnings.warn(
            f"resolution={value!r}: the API docs show only {', '.join(SEEN_RESOLUTIONS)}; CometAPI may refuse it "
            "(HTTP 400) or render another frame (it renders 1080p as 720p today).",
            UserWarning,
            stacklevel=2,
        )
    return value


class OmniVideoRequest(BaseModel):
    """An Omni text-to-video request.

    Args:
        prompt: What the video shows.
        model: The Omni model; only `omni-fast` is offered.
        seconds: Clip length in whole seconds, as a string (an int is taken too): the docs show
            `"4"`, `"8"` and `"12"`; other lengths up to `MAX_SECONDS` are sent with a warning.
        aspect_ratio: `16:9`, `9:16` or `1:1` (the API renders `1:1` landscape today).
        resolution: `720p` or `1080p` (the API renders `1080p` as 720p today); another height
            like `480p` is sent with a warning.

    Example:
        ```python
        from prefect_comet import OmniVideoRequest

        request = OmniVideoRequest(prompt="Ocean waves at golden hour", aspect_ratio="9:16")
        ```
    """

    model_config = ConfigDict(extra="forbid")
    provider: ClassVar[str] = "omni"

    prompt: str = Field(description="What the video shows.")
    model: Literal["omni-fast"] = "omni-fast"
    seconds: str = Field(
        default="4",
        description=f"Clip length in whole seconds: 4, 8 or 12 as documented, at most {MAX_SECONDS}.",
    )
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    resolution: str = Field(default="720p", description="Frame height and p: 720p or 1080p as documented.")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> str:
        return checked_seconds(value)

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: Any) -> str:
        return checked_resolution(value)

    def to_form(self) -> dict[str, str]:
        """The multipart form fields, exactly as the create page lists them."""
        return self.model_dump()
