"""A small JPEG of a video's first frame, to show a stored video at a glance."""

from __future__ import annotations

import io
from typing import IO

from prefect.logging import get_logger

from prefect_comet._files import filesystem_for, redact_url, write_atomically

try:
    import av
    from PIL import Image
except ImportError:  # the core stays light; without the `media` extra there is no poster
    av = None
    Image = None

JPEG_QUALITY = 80

_logger = get_logger("prefect_comet.poster")


def poster_available() -> bool:
    """True when PyAV and Pillow are installed, so posters can be made.

    Returns:
        Whether `extract_poster` can return a JPEG.

    Example:
        ```python
        if poster_available():
            ...
        ```
    """
    return av is not None and Image is not None


def extract_poster(file: IO[bytes], *, max_width: int = 320) -> bytes | None:
    """Make a small JPEG of the first decodable frame of a video.

    Only the first frame is decoded, so this stays cheap for long videos.

    Args:
        file: A seekable binary file holding the video (any fsspec file works).
        max_width: The poster's largest width in pixels; smaller frames keep their size.

    Returns:
        The JPEG bytes, or None when PyAV/Pillow are missing or no frame decodes.

    Example:
        ```python
        with open("videos/task_1.mp4", "rb") as video:
            jpeg = extract_poster(video, max_width=240)
        ```
    """
    if not poster_available():
        return None
    try:
        with av.open(file, mode="r") as container:
            stream = container.streams.video[0]
            # One thread, no look-ahead: the first frame is all we want.
            stream.thread_type = "SLICE"
            frame = next(container.decode(stream), None)
            if frame is None:
                return None
            width = min(max_width, frame.width)
            height = max(1, round(frame.height * width / frame.width))
            # FFmpeg scales while converting to RGB: about 5x cheaper than a Pillow resize,
            # which matters in a batch where every job makes a poster.
            image = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_image()
    except (av.error.FFmpegError, IndexError, StopIteration, ValueError, OSError):
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def store_poster(video_uri: str, *, max_width: int = 320) -> str | None:
    """Write a poster JPEG beside a stored video (`clip.mp4` -> `clip.jpg`).

    A poster is a convenience: any trouble is logged and None returned, never raised.

    Args:
        video_uri: The stored video, an fsspec URL or local path.
        max_width: The poster's largest width in pixels.

    Returns:
        The poster's URI (same form as `video_uri`), or None when none was made.

    Example:
        ```python
        stored = stored.model_copy(update={"poster_uri": store_poster(stored.uri)})
        ```
    """
    try:
        fs, path = filesystem_for(video_uri)
        with fs.open(path, "rb") as file:
            jpeg = extract_poster(file, max_width=max_width)
        if jpeg is None:
            return None
        stem = path[: -len(".mp4")] if path.lower().endswith(".mp4") else path
        poster_path = f"{stem}.jpg"
        write_atomically(fs, poster_path, jpeg)
        return fs.unstrip_protocol(poster_path) if "://" in video_uri else poster_path
    except Exception as error:
        _logger.warning("Could not store a poster for %s: %r", redact_url(video_uri), error)
        return None
