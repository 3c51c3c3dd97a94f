"""A fixed batch of `generate_video` flows, for the crash test: killed mid-run, then run again.

Run from the repository root as `python -m tests.crash_batch DESTINATION RESULTS_JSON`, with
`PREFECT_API_URL`, `COMETAPI_KEY` and `COMETAPI_BASE_URL` in the environment. The keys are
fixed, so a second run resumes the first run's jobs instead of paying for new ones. The
stored videos are written to RESULTS_JSON (key -> StoredVideo) once every flow has finished.
"""

from __future__ import annotations

import asyncio
import json
import sys

from prefect_comet import KlingOmniVideoRequest, OmniVideoRequest, StoredVideo, generate_video
from tests._resilience import Starter

BATCH = {
    "crash-omni-1": OmniVideoRequest(prompt="A lighthouse in a storm"),
    "crash-omni-2": OmniVideoRequest(prompt="A lighthouse at dawn", aspect_ratio="9:16"),
    "crash-kling-1": KlingOmniVideoRequest(prompt="A paper boat in the rain", aspect_ratio="16:9"),
    "crash-kling-2": KlingOmniVideoRequest(prompt="A paper boat at night", aspect_ratio="1:1"),
}


async def run_batch(destination: str) -> dict[str, StoredVideo]:
    """Every job of the batch, concurrently, each under its fixed idempotency key."""
    starter = Starter(len(BATCH))
    stored = await asyncio.gather(*(
        starter.run(
            generate_video, request, destination=destination, idempotency_key=key,
            poll_interval_seconds=0.2, max_poll_interval_seconds=0.5,
        )
        for key, request in BATCH.items()
    ))
    return dict(zip(BATCH, stored))


def main(argv: list[str]) -> None:
    destination, results_path = argv
    stored = asyncio.run(run_batch(destination))
    with open(results_path, "w") as file:
        json.dump({key: video.model_dump(mode="json") for key, video in stored.items()}, file, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
