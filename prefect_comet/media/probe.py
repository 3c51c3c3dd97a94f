"""Measure a stored MP4: frame size, duration, codec, fps (needs the `media` extra, PyAV)."""

from __future__ import annotations

from typing import IO

from pydantic import BaseModel

from prefect_comet.exceptions import InvalidContentError

try:
    import av
except ImportError:  # the core stays light; without PyAV only the signature is checked
    av = None


class VideoProbe(BaseModel):
    """The measured properties of a video file.

    Args:
        width: Frame width in pixels.
        height: Frame height in pixels.
        duration_seconds: Duration of the container.
        codec: The video codec's name, e.g. `h264`.
        fps: Average frames per second.
    """

    width: int
    height: int
    duration_seconds: float | None
    codec: str
    fps: float | None


def probe_video(file: IO[bytes], *, task_id: str | None = None) -> VideoProbe | None:
    """Measure a video from an open binary file; None when PyAV is not installed.

    Args:
        file: A seekable binary file (any fsspec file works).
        task_id: The task, for error messages.

    Returns:
        The measured properties, or None without PyAV.

    Raises:
        InvalidContentError: The file holds no decodable video stream.

    Example:
        ```python
        with fsspec.open("memory://videos/task_1.mp4", "rb") as f:
            print(probe_video(f))
        ```
    """
    if av is None:
        return None
    try:
        with av.open(file, mode="r") as container:
            stream = container.streams.video[0]
            duration = (
                container.duration / av.time_base
                if container.duration
                else float(stream.duration * stream.time_base)
                if stream.duration and stream.time_base
                else None
            )
            return VideoProbe(
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                duration_seconds=round(duration, 3) if duration is not None else None,
                codec=stream.codec_context.name,
                fps=float(stream.average_rate) if stream.average_rate else None,
            )
    except (av.error.FFmpegError, IndexError) as error:
        raise InvalidContentError(
            f"The downloaded file holds no decodable video ({type(error).__name__}).",
            task_id=task_id,
        ) from error
