"""Compare what a stored video is with what was asked for (frame shape, size, duration).

The API docs warn that the rendered frame can differ from the request (Omni renders 1:1
as landscape and 1080p as 720p today), so the measured file is compared, not trusted.
"""

from __future__ import annotations

from typing import Any

# Short side of the frame each Omni resolution asks for.
_OMNI_SHORT_SIDE = {"720p": 720, "1080p": 1080}
_SHAPES = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0}
_DURATION_TOLERANCE = 0.5
_RATIO_TOLERANCE = 0.03


def output_mismatches(
    provider: str,
    request: dict[str, Any],
    *,
    width: int | None,
    height: int | None,
    duration_seconds: float | None,
) -> list[str]:
    """Every way the measured video differs from the request, in plain words.

    Args:
        provider: `omni` or `kling`.
        request: The request as recorded on the job.
        width: Measured frame width (None when not measured).
        height: Measured frame height.
        duration_seconds: Measured duration.

    Returns:
        One sentence per difference; empty when the video is what was asked for.

    Example:
        ```python
        output_mismatches("omni", {"aspect_ratio": "1:1", "resolution": "720p", "seconds": "4"},
                          width=1280, height=720, duration_seconds=4.0)
        # ["frame: asked for 720x720 (1:1, 720p), got 1280x720"]
        ```
    """
    problems = []
    if width and height:
        problems += _frame_problems(provider, request, width, height)
    wanted = _requested_seconds(provider, request)
    if wanted is not None and duration_seconds is not None:
        if abs(duration_seconds - wanted) > _DURATION_TOLERANCE:
            problems.append(f"duration: asked for {wanted:g} s, got {duration_seconds:g} s")
    return problems


def _frame_problems(provider: str, request: dict[str, Any], width: int, height: int) -> list[str]:
    ratio = request.get("aspect_ratio")
    if ratio not in _SHAPES or _sets_own_frame(request):
        return []
    if provider == "omni":
        resolution = request.get("resolution", "720p")
        short = _OMNI_SHORT_SIDE.get(resolution)
        if short is None:
            return []
        shape = _SHAPES[ratio]
        wanted = (round(short * shape), short) if shape >= 1 else (short, round(short / shape))
        if (width, height) != wanted:
            return [f"frame: asked for {wanted[0]}x{wanted[1]} ({ratio}, {resolution}), got {width}x{height}"]
        return []
    # Kling exposes no size, only the shape.
    if abs(width / height - _SHAPES[ratio]) > _RATIO_TOLERANCE * _SHAPES[ratio]:
        return [f"frame: asked for a {ratio} frame, got {width}x{height}"]
    return []


def _sets_own_frame(request: dict[str, Any]) -> bool:
    images = request.get("image_list") or []
    videos = request.get("video_list") or []
    return any(i.get("type") == "first_frame" for i in images) or any(
        v.get("refer_type", "base") == "base" for v in videos
    )


def _requested_seconds(provider: str, request: dict[str, Any]) -> float | None:
    value = request.get("seconds") if provider == "omni" else request.get("duration")
    if provider != "omni" and (request.get("video_list") or []):
        return None  # a base video sets the length
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
