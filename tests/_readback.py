"""Read artifacts and events back from a Prefect server, with bounded waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent


async def artifacts_with_key(client: PrefectClient, key: str) -> list[Artifact]:
    """Every version of the artifacts under `key`, newest first.

    Example:
        ```python
        [summary] = await artifacts_with_key(client, "video-summary-task-1")
        ```
    """
    return await client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
        sort=ArtifactSort.UPDATED_DESC,
    )


async def wait_for_events(
    client: PrefectClient,
    resource_id: str,
    names: set[str],
    *,
    timeout: float = 30.0,
) -> dict[str, ReceivedEvent]:
    """Poll the events API until every event in `names` was recorded for `resource_id`.

    Returns:
        Event name -> the newest such event.

    Example:
        ```python
        events = await wait_for_events(client, "cometapi.video.omni.task_1", {"comet.video.created"})
        ```
    """
    deadline = time.monotonic() + timeout
    seen: dict[str, ReceivedEvent] = {}
    while True:
        page = await client.read_events(
            EventFilter(
                event=EventNameFilter(name=sorted(names)),
                resource=EventResourceFilter(id=[resource_id]),
            ),
            limit=50,
        )
        for event in page.events:
            seen.setdefault(event.event, event)
        if names <= seen.keys():
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(
                f"events {sorted(names - seen.keys())} for {resource_id} not recorded within "
                f"{timeout:g} s (seen: {sorted(seen)})"
            )
        await asyncio.sleep(0.5)


def related_roles(event: ReceivedEvent) -> dict[str, str]:
    """Role -> resource id of an event's related resources.

    Example:
        ```python
        assert related_roles(event)["flow-run"] == f"prefect.flow-run.{flow_run_id}"
        ```
    """
    return {resource.role: resource.id for resource in event.related}


def plain(event: ReceivedEvent) -> dict[str, Any]:
    """The event as JSON-ready data, to search it for things that must not be there."""
    return event.model_dump(mode="json")
