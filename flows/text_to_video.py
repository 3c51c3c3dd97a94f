"""Text-to-video pipeline: one prompt in, one verified MP4 in your storage.

Run it against the local emulator (no key, no network):

    python flows/text_to_video.py --emulator

or against CometAPI (key from COMETAPI_KEY or a saved block):

    COMETAPI_KEY=sk-... python flows/text_to_video.py "A paper boat on a pond" --destination s3://bucket/clips

As a deployment, `text_to_video` is the entrypoint (see deployments/prefect.yaml).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Literal

from prefect import flow

from prefect_comet import CometAPICredentials, OmniVideoRequest, StoredVideo, abandon_unstored_jobs, generate_video
from prefect_comet.api.omni_request import MAX_SECONDS, checked_resolution, checked_seconds
from prefect_comet.testing.terminal import add_run_arguments, run_pipeline

DEFAULT_PROMPT = "Ocean waves rolling onto a sandy beach at golden hour"


@flow(name="text-to-video", on_cancellation=[abandon_unstored_jobs], on_crashed=[abandon_unstored_jobs])
async def text_to_video(
    prompt: str = DEFAULT_PROMPT,
    seconds: int = 4,
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9",
    resolution: str = "720p",
    destination: str = "./videos",
    credentials_block: str | None = None,
    ledger_uri: str | None = None,
    poll_interval_seconds: float = 2.0,
    wait: Literal["poll", "suspend"] = "poll",
) -> StoredVideo:
    """Generate one Omni video from a prompt and store it under `destination`.

    Args:
        prompt: What the video shows.
        seconds: Clip length in whole seconds (the API docs show 4, 8 and 12; others warn).
        aspect_ratio: Frame shape requested.
        resolution: Resolution requested, like 720p or 1080p (others, like 480p, warn).
        destination: Any fsspec URL or local folder.
        credentials_block: Name of a saved CometAPI Credentials block; COMETAPI_KEY when empty.
        ledger_uri: The job ledger's folder (any fsspec URL); empty keeps it beside the videos.
        poll_interval_seconds: First poll interval in seconds.
        wait: "poll" keeps this run waiting; "suspend" suspends it while the video renders
            (the `comet-sweeper` deployment resumes it).
    """
    credentials = await CometAPICredentials.aload(credentials_block) if credentials_block else None
    request = OmniVideoRequest(
        prompt=prompt, seconds=seconds, aspect_ratio=aspect_ratio, resolution=resolution
    )
    # A subflow cannot suspend: the generation then runs as this deployment run itself.
    generate = generate_video.fn if wait == "suspend" else generate_video
    return await generate(
        request,
        destination=destination,
        credentials=credentials,
        ledger_uri=ledger_uri or None,
        poll_interval_seconds=poll_interval_seconds,
        wait=wait,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a video from a prompt.")
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument(
        "--seconds", default="4", type=_checked(checked_seconds),
        help=f"clip length in whole seconds, 1 to {MAX_SECONDS} (the API docs show 4, 8 and 12)",
    )
    parser.add_argument("--aspect-ratio", default="16:9", choices=["16:9", "9:16", "1:1"])
    parser.add_argument(
        "--resolution", default="720p", type=_checked(checked_resolution),
        help="frame height and p, like 720p or 1080p (the ones the API docs show)",
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    run_pipeline(
        lambda poll_interval: text_to_video(
            prompt=args.prompt,
            seconds=args.seconds,
            aspect_ratio=args.aspect_ratio,
            resolution=args.resolution,
            destination=args.destination,
            credentials_block=args.block,
            ledger_uri=args.ledger,
            poll_interval_seconds=poll_interval,
        ),
        emulator=args.emulator,
        latency=args.latency,
    )
    return 0


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type that refuses what the request would refuse, before anything starts."""

    def parse(text: str) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the request warns once, when it is made
            try:
                return check(text)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from None

    return parse


if __name__ == "__main__":
    sys.exit(main())
