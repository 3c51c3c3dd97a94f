"""The Omni create body (`POST /v1/videos`, multipart form), validated before sending."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class OmniVideoRequest(BaseModel):
    """An Omni text-to-video request.

    Args:
        prompt: What the video shows.
        model: The Omni model; only `omni-fast` is offered.
        seconds: Clip length, as a string: `"4"`, `"8"` or `"12"`.
        aspect_ratio: `16:9`, `9:16` or `1:1` (the API renders `1:1` landscape today).
        resolution: `720p` or `1080p` (the API renders `1080p` as 720p today).

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
    seconds: Literal["4", "8", "12"] = "4"
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    resolution: Literal["720p", "1080p"] = "720p"

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_string(cls, value: Any) -> Any:
        # The API wants a string; a user writing seconds=8 means "8".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def to_form(self) -> dict[str, str]:
        """The multipart form fields, exactly as the create page lists them."""
        return self.model_dump()
