"""One side of a race: create, wait for and store the jobs of fixed keys, each at a set instant.

Run as `python -m tests.race_create LEDGER_URI DESTINATION START_AT OUT_JSON` with
`COMETAPI_KEY` and `COMETAPI_BASE_URL` set. Job `i` (key `race-i`) starts at wall-clock time
`START_AT + i * STAGGER`; two processes given the same START_AT start each key at the same
instant, on the same ledger. It calls the steps directly (no Prefect run), so nothing spreads
the two sides apart. What each key ended as goes to OUT_JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from prefect_comet import CometAPICredentials, KlingOmniVideoRequest, OmniVideoRequest
from prefect_comet.api.families import VideoRequest
from prefect_comet.steps.create_once import create_once
from prefect_comet.steps.ledger import JobLedger
from prefect_comet.steps.poll_cadence import PollPolicy
from prefect_comet.steps.storing import store_videos
from prefect_comet.steps.waiting import poll_until_terminal

ROUNDS = 20
STAGGER = 0.25  # seconds between rounds


def request_for(index: int) -> VideoRequest:
    """Omni for even rounds, Kling for odd ones (Kling refuses a duplicate external_task_id)."""
    if index % 2:
        return KlingOmniVideoRequest(prompt=f"A paper boat, take {index}", aspect_ratio="16:9")
    return OmniVideoRequest(prompt=f"A red kite, take {index}")


async def one(index: int, ledger: JobLedger, destination: str, start_at: float) -> dict[str, object]:
    await asyncio.sleep(max(0.0, start_at + index * STAGGER - time.time()))
    key = f"race-{index}"
    try:
        async with CometAPICredentials.from_env().get_client() as client:
            job = await create_once(client, request_for(index), idempotency_key=key, ledger=ledger)
            job = await poll_until_terminal(
                client, job, timeout_seconds=120, policy=PollPolicy(initial_interval=0.1, max_interval=0.3)
            )
            stored = await store_videos(client, job, destination)
        ledger.record_outcome(key, stored=stored)
    except Exception as error:  # reported, so the test can show what went wrong on which side
        return {"error": f"{type(error).__name__}: {error}"}
    return {"task_id": stored.task_id, "sha256": stored.sha256, "uri": stored.uri}


async def main(ledger_uri: str, destination: str, start_at: float) -> dict[str, object]:
    ledger = JobLedger(ledger_uri)
    results = await asyncio.gather(*(one(index, ledger, destination, start_at) for index in range(ROUNDS)))
    return {f"race-{index}": result for index, result in enumerate(results)}


if __name__ == "__main__":
    ledger_uri, destination, start_at, out = sys.argv[1:]
    outcome = asyncio.run(main(ledger_uri, destination, float(start_at)))
    with open(out, "w") as file:
        json.dump(outcome, file, indent=2)
