"""`prefect-comet generate`: one video from a prompt, with a progress bar, stored and verified."""

from __future__ import annotations

from typing import Annotated

import typer

from prefect_comet.api.families import VideoRequest
from prefect_comet.api.kling_request import KlingOmniVideoRequest
from prefect_comet.api.omni_request import OmniVideoRequest
from prefect_comet.cli._common import Block, Destination, Emulator, Latency, Ledger, MaxSpend, PricePerJob, prepare_run
from prefect_comet.flows import generate_video
from prefect_comet.options import DEFAULT_DESTINATION
from prefect_comet.testing.terminal import run_pipeline

# The demo's prompt (`bash scripts/demo.sh` runs `prefect-comet generate --emulator`).
DEFAULT_PROMPT = "Ocean waves rolling onto a sandy beach at golden hour"


def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What the video shows.")] = DEFAULT_PROMPT,
    kling: Annotated[bool, typer.Option("--kling", help="Use Kling Omni instead of Omni.")] = False,
    duration: Annotated[
        str | None,
        typer.Option(
            "--duration",
            metavar="SECONDS",
            help="Clip length. Omni: 4, 8 or 12 (default 4); Kling: 5 or 10 (default 5).",
        ),
    ] = None,
    aspect_ratio: Annotated[str, typer.Option("--aspect-ratio", help="Frame shape: 16:9, 9:16 or 1:1.")] = "16:9",
    dest: Destination = DEFAULT_DESTINATION,
    block: Block = None,
    emulator: Emulator = False,
    latency: Latency = 3.0,
    max_spend_usd: MaxSpend = None,
    price_per_job_usd: PricePerJob = None,
    ledger: Ledger = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="Idempotency key: a later run with the same key and ledger resumes this job, paying nothing "
            "again. (default: from the request and the run)",
        ),
    ] = None,
) -> None:
    """Generate one video from PROMPT and store it, verified (API key: --block or COMETAPI_KEY)."""
    request = _request(prompt, kling=kling, duration=duration, aspect_ratio=aspect_ratio)
    credentials = prepare_run(dest, block=block, emulator=emulator)
    run_pipeline(
        lambda poll_interval: generate_video(
            request,
            destination=dest,
            credentials=credentials,
            idempotency_key=key,
            ledger_uri=ledger,
            poll_interval_seconds=poll_interval,
            max_spend_usd=max_spend_usd,
            price_per_job_usd=price_per_job_usd,
        ),
        emulator=emulator,
        latency=latency,
    )


def _request(prompt: str, *, kling: bool, duration: str | None, aspect_ratio: str) -> VideoRequest:
    """The request, validated here: a value the rules refuse fails before anything starts."""
    fields = {"prompt": prompt, "aspect_ratio": aspect_ratio}
    if kling:
        return KlingOmniVideoRequest(**fields, **({"duration": duration} if duration else {}))
    return OmniVideoRequest(**fields, **({"seconds": duration} if duration else {}))

