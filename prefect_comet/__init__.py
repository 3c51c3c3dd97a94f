"""prefect-comet: CometAPI video generation as Prefect tasks and flows.

Example:
    ```python
    from prefect_comet import OmniVideoRequest, generate_video

    stored = await generate_video(OmniVideoRequest(prompt="A red kite over dunes"))
    print(stored.uri, stored.width, stored.height)
    ```
"""

from prefect_comet.batch import BatchResult, JobOutcome, generate_videos
from prefect_comet.client import CometClient
from prefect_comet.credentials import CometAPICredentials
from prefect_comet.flows import generate_video
from prefect_comet.models import StoredVideo, VideoJob, VideoOutput, VideoStatus
from prefect_comet.progress import watch_progress
from prefect_comet.providers.kling_request import (
    KlingElement,
    KlingImage,
    KlingOmniVideoRequest,
    KlingShot,
    KlingVideo,
    KlingWatermark,
)
from prefect_comet.providers.omni import OmniVideoRequest
from prefect_comet.retries import RetryPolicy
from prefect_comet.tasks import create_video, persist_video, wait_for_video

__all__ = [
    "BatchResult",
    "JobOutcome",
    "generate_videos",
    "CometAPICredentials",
    "CometClient",
    "KlingElement",
    "KlingImage",
    "KlingOmniVideoRequest",
    "KlingShot",
    "KlingVideo",
    "KlingWatermark",
    "OmniVideoRequest",
    "RetryPolicy",
    "StoredVideo",
    "VideoJob",
    "VideoOutput",
    "VideoStatus",
    "create_video",
    "generate_video",
    "persist_video",
    "wait_for_video",
    "watch_progress",
]
