"""Requested versus measured output, per API family."""

from __future__ import annotations

import pytest

from prefect_comet.media.mismatches import output_mismatches

OMNI = {"aspect_ratio": "16:9", "resolution": "720p", "seconds": "4"}


@pytest.mark.parametrize(
    ("provider", "request_fields", "measured", "expected"),
    [
        ("omni", OMNI, (1280, 720, 4.0), []),
        ("omni", {**OMNI, "aspect_ratio": "9:16"}, (720, 1280, 4.04), []),
        ("omni", {**OMNI, "aspect_ratio": "1:1"}, (1280, 720, 4.0), ["frame: asked for 720x720 (1:1, 720p), got 1280x720"]),
        ("omni", {**OMNI, "resolution": "1080p"}, (1280, 720, 4.0), ["frame: asked for 1920x1080 (16:9, 1080p), got 1280x720"]),
        ("omni", {**OMNI, "seconds": "8"}, (1280, 720, 4.0), ["duration: asked for 8 s, got 4 s"]),
        ("kling", {"aspect_ratio": "16:9", "duration": "5"}, (1920, 1080, 5.0), []),
        ("kling", {"aspect_ratio": "1:1", "duration": "10"}, (1920, 1080, 10.0), ["frame: asked for a 1:1 frame, got 1920x1080"]),
        ("kling", {"duration": "5", "image_list": [{"type": "first_frame"}]}, (1440, 1080, 5.0), []),
        ("kling", {"aspect_ratio": "16:9", "duration": "5", "video_list": [{"refer_type": "base"}]}, (1080, 1080, 8.0), []),
        ("omni", OMNI, (None, None, None), []),  # not measured: nothing to compare
    ],
)
def test_mismatches(provider, request_fields, measured, expected):
    width, height, duration = measured
    assert output_mismatches(provider, request_fields, width=width, height=height, duration_seconds=duration) == expected
