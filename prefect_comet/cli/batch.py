"""`prefect-comet batch`: a video for every request of a JSONL or CSV file, one line per outcome."""

from __future__ import annotations

from typing import Annotated

import typer

from prefect_comet.batch.flow import generate_videos
from prefect_comet.batch.inputs import file_batch_key, load_batch
from prefect_comet.cli._common import (
    BAD_INPUT,
    FAILED,
    Block,
    Destination,
    Emulator,
    Latency,
    Ledger,
    MaxSpend,
    PricePerJob,
    fail,
    prepare_run,
)
from prefect_comet.testing.terminal import report_batch, run_with_progress


def batch(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="JSONL or CSV file of requests (a path or any fsspec URL).")
    ],
    dest: Destination,
    batch_key: Annotated[
        str | None,
        typer.Option(
            "--batch-key",
            metavar="KEY",
            help="Jobs are keyed <KEY>-<index>: running again with the same key pays for nothing already "
            "created. (default: from the file's location and content)",
        ),
    ] = None,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", metavar="N", min=1, help="The most jobs running at once.")
    ] = 10,
    ledger: Ledger = None,
    block: Block = None,
    emulator: Emulator = False,
    latency: Latency = 3.0,
    max_spend_usd: MaxSpend = None,
    price_per_job_usd: PricePerJob = None,
) -> None:
    """Generate a video for every request in FILE; print one line per outcome and the manifest."""
    try:
        jobs = len(load_batch(file))  # every request is checked before anything starts
    except FileNotFoundError:
        fail(f"there is no request file at {file}", BAD_INPUT)
    key = batch_key or file_batch_key(file)
    credentials = prepare_run(dest, block=block, emulator=emulator)
    result = run_with_progress(
        lambda poll_interval: generate_videos(
            file,
            destination=dest,
            credentials=credentials,
            max_in_flight=max_in_flight,
            allow_partial=True,  # every outcome is printed; the exit code says whether one failed
            batch_key=key,
            ledger_uri=ledger,
            poll_interval_seconds=poll_interval,
            max_spend_usd=max_spend_usd,
            price_per_job_usd=price_per_job_usd,
        ),
        emulator=emulator,
        latency=latency,
        jobs=jobs,
    )
    report_batch(result)
    if result.failed_count:
        raise typer.Exit(FAILED)

