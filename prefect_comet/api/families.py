"""The two API families, and which one handles a request (the `VideoRequest` union) or a job."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Tag

from prefect_comet.api.kling import KlingProvider
from prefect_comet.api.kling_request import KlingOmniVideoRequest
from prefect_comet.api.omni import OmniProvider
from prefect_comet.api.omni_request import OmniVideoRequest
from prefect_comet.api.provider import VideoProvider
from prefect_comet.models import VideoJob

PROVIDERS: dict[str, VideoProvider] = {
    provider.name: provider for provider in (OmniProvider(), KlingProvider())
}

# Fields only Kling requests have: they tell a plain dict's family (a flow parameter
# given as JSON), so a Kling request is never silently read as a valid Omni one.
_KLING_ONLY = set(KlingOmniVideoRequest.model_fields) - set(OmniVideoRequest.model_fields)


def _family(value: Any) -> str:
    if isinstance(value, BaseModel):
        return getattr(value, "provider", type(value).__name__)
    return "kling" if isinstance(value, dict) and _KLING_ONLY & set(value) else "omni"


VideoRequest = Annotated[
    Annotated[OmniVideoRequest, Tag("omni")] | Annotated[KlingOmniVideoRequest, Tag("kling")],
    Discriminator(_family),
]


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

