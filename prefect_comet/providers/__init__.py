"""API families, one module each, behind the `VideoProvider` interface."""

from __future__ import annotations

from typing import Union

from prefect_comet.models import VideoJob
from prefect_comet.providers.base import DownloadSource, VideoProvider
from prefect_comet.providers.kling import KlingProvider
from prefect_comet.providers.kling_request import KlingOmniVideoRequest
from prefect_comet.providers.omni import OmniProvider, OmniVideoRequest

PROVIDERS: dict[str, VideoProvider] = {
    provider.name: provider for provider in (OmniProvider(), KlingProvider())
}

VideoRequest = Union[OmniVideoRequest, KlingOmniVideoRequest]


def provider_for(subject: VideoRequest | VideoJob) -> VideoProvider:
    """The provider that handles a request or a job.

    Example:
        ```python
        provider_for(OmniVideoRequest(prompt="A red kite")).name  # "omni"
        ```
    """
    name = subject.provider
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ValueError(f"provider: unknown API family {name!r}; known: {sorted(PROVIDERS)}") from None


__all__ = ["DownloadSource", "PROVIDERS", "VideoProvider", "VideoRequest", "provider_for"]
