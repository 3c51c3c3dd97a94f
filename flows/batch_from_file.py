"""Batch pipeline: generate a video for every request in a JSONL or CSV file.

The file lives at any fsspec URL (`./prompts.jsonl`, `s3://bucket/prompts.jsonl`), one
request per line (`{"prompt": "..."}`; Kling fields such as `duration` make it a Kling
request). The scheduled deployment in deployments/prefect.yaml runs this flow.

    python flows/batch_from_file.py deployments/prompts.jsonl --emulator
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import nullcontext
from typing import Literal

from prefect import flow

from prefect_comet import BatchResult, CometAPICredentials, abandon_unstored_jobs, generate_videos
from prefect_comet.batch.inputs import file_batch_key
from prefect_comet.testing.terminal import emulated_api, report_batch


@flow(name="batch-from-file", on_cancellation=[abandon_unstored_jobs], on_crashed=[abandon_unstored_jobs])
async def batch_from_file(
    prompts_uri: str = "deployments/prompts.jsonl",
    destination: str = "./videos",
    credentials_block: str | None = None,
    max_in_flight: int = 10,
    allow_partial: bool = True,
    batch_key: str | None = None,
    ledger_uri: str | None = None,
    poll_interval_seconds: float = 2.0,
    wait: Literal["poll", "suspend"] = "poll",
    resume_batch_size: int | None = None,
    callback_base_url: str | None = None,
) -> BatchResult:
    """Generate and store a video for every request in a JSONL/CSV file.

    Args:
        prompts_uri: The JSONL or CSV file of requests, at any fsspec URL.
        destination: Any fsspec URL or local folder for the videos and the manifest.
        credentials_block: Name of a saved CometAPI Credentials block; COMETAPI_KEY when empty.
        max_in_flight: The most jobs running at once.
        allow_partial: Finish as completed when some jobs fail (the manifest lists them).
        batch_key: Leave empty to resume safely: the key then comes from the file's location
            and content, so running the same file again pays for nothing already created,
            and a changed file is a new batch. Set one to choose (e.g. one per day).
        ledger_uri: The job ledger's folder (any fsspec URL); empty keeps it beside the videos.
            Share one between runs whose destinations differ.
        poll_interval_seconds: First poll interval of each job.
        wait: "poll" keeps this run (and its worker's process) waiting for the jobs;
            "suspend" suspends it while they render (the `comet-sweeper` deployment resumes it).
        resume_batch_size: With "suspend", resume once this many rendering jobs are done.
        callback_base_url: Public URL of a `prefect-comet callbacks` receiver (Kling jobs).
    """
    credentials = await CometAPICredentials.aload(credentials_block) if credentials_block else None
    # A subflow cannot suspend: the batch then runs as this deployment run itself.
    batch = generate_videos.fn if wait == "suspend" else generate_videos
    return await batch(
        prompts_uri,
        destination=destination,
        credentials=credentials,
        max_in_flight=max_in_flight,
        allow_partial=allow_partial,
        batch_key=batch_key or file_batch_key(prompts_uri),
        ledger_uri=ledger_uri or None,
        poll_interval_seconds=poll_interval_seconds,
        wait=wait,
        resume_batch_size=resume_batch_size,
        callback_base_url=callback_base_url or None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a video for every request in a file.")
    parser.add_argument("prompts_uri", nargs="?", default="deployments/prompts.jsonl")
    parser.add_argument("--destination", default="./videos")
    parser.add_argument("--max-in-flight", type=int, default=10)
    parser.add_argument("--batch-key", help="default: from the file's location and content")
    parser.add_argument("--ledger", help="the job ledger's folder (default: beside the videos)")
    parser.add_argument("--emulator", action="store_true", help="run against a local emulator")
    args = parser.parse_args(argv)
    with emulated_api() if args.emulator else nullcontext():
        poll_interval = 0.25 if args.emulator else 2.0
        result = asyncio.run(
            batch_from_file(
                args.prompts_uri, args.destination, max_in_flight=args.max_in_flight,
                batch_key=args.batch_key, ledger_uri=args.ledger, poll_interval_seconds=poll_interval,
            )
        )
    report_batch(result)
    return 0 if result.failed_count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
