"""prefect-comet: CometAPI video generation as Prefect tasks and flows.

The files at this level are the public API; the folders hold the machinery, one per stage
of the data path (see docs/architecture.md).

Example:
    ```python
    from prefect_comet import OmniVideoRequest, generate_video

    stored = await generate_video(OmniVideoRequest(prompt="A red kite over dunes"))
    print(stored.uri, stored.width, stored.height)
    ```
"""

from prefect_comet.api.client import CometClient
from prefect_comet.api.kling_request import (
    KlingElement,
    KlingImage,
    KlingOmniVideoRequest,
    KlingShot,
    KlingVideo,
    KlingWatermark,
)
from prefect_comet.api.omni_request import OmniVideoRequest
from prefect_comet.api.quota import AccountBalance, KeyQuota
from prefect_comet.api.retries import RetryPolicy
from prefect_comet.batch.flow import generate_videos
from prefect_comet.credentials import CometAPICredentials
from prefect_comet.flows import generate_video
from prefect_comet.models import BatchResult, JobOutcome, StoredVideo, VideoJob, VideoOutput, VideoStatus
from prefect_comet.options import GenerationOptions
from prefect_comet.steps.abandoning import abandon_unstored_jobs
from prefect_comet.suspension.sweep import SweepReport
from prefect_comet.sweeper import comet_sweeper
from prefect_comet.tasks import check_balance, create_video, persist_video, wait_for_video
from prefect_comet.ui.progress import watch_progress

__version__ = "0.1.0"

__all__ = [
    "AccountBalance",
    "BatchResult",
    "CometAPICredentials",
    "CometClient",
    "GenerationOptions",
    "JobOutcome",
    "KeyQuota",
    "KlingElement",
    "KlingImage",
    "KlingOmniVideoRequest",
    "KlingShot",
    "KlingVideo",
    "KlingWatermark",
    "OmniVideoRequest",
    "RetryPolicy",
    "StoredVideo",
    "SweepReport",
    "VideoJob",
    "VideoOutput",
    "VideoStatus",
    "__version__",
    "abandon_unstored_jobs",
    "check_balance",
    "comet_sweeper",
    "create_video",
    "generate_video",
    "generate_videos",
    "persist_video",
    "wait_for_video",
    "watch_progress",
]
