"""The batch manifest: one JSON line per request saying what became of it, beside the videos."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect_comet._files import filesystem_for, uri_for, write_atomically
from prefect_comet.batch.inputs import BatchItem
from prefect_comet.exceptions import BudgetExceededError
from prefect_comet.models import JobOutcome, StoredVideo


def outcome_of(
    index: int,
    item: BatchItem,
    key: str,
    *,
    stored: StoredVideo | None = None,
    error: BaseException | None = None,
) -> JobOutcome:
    """The manifest line of one request: stored (with its video), skipped by the budget or failed (with the error).

    Example:
        ```python
        outcome_of(0, item, "nightly-0", stored=stored)
        ```
    """
    return JobOutcome(
        index=index,
        idempotency_key=key,
        provider=item.request.provider,
        prompt=getattr(item.request, "prompt", None),
        status="stored" if stored is not None else "skipped" if isinstance(error, BudgetExceededError) else "failed",
        stored=stored,
        error_type=type(error).__name__ if error else None,
        error=str(error) if error else None,
    )


def write_manifest(destination: str, run_id: str, outcomes: list[JobOutcome]) -> str:
    """Write `manifest-<UTC time>-<run>.jsonl` under `destination` atomically.

    Args:
        destination: Any fsspec URL or local folder (where the videos are).
        run_id: The flow run's id; its first 8 characters name the file.
        outcomes: Every request's outcome, in order.

    Returns:
        The manifest's URI.

    Example:
        ```python
        manifest_uri = write_manifest("s3://bucket/videos", run_id, outcomes)
        ```
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    fs, root = filesystem_for(destination)
    fs.makedirs(root, exist_ok=True)
    path = f"{root.rstrip('/')}/manifest-{stamp}-{run_id[:8]}.jsonl"
    lines = "".join(outcome.model_dump_json() + "\n" for outcome in outcomes)
    write_atomically(fs, path, lines.encode())
    return uri_for(fs, path)
