"""`prefect-comet jobs`: a table of what a job ledger knows, to see what is in flight or unknown."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from prefect_comet._files import redact_url
from prefect_comet.cli._common import Destination, Ledger, ledger_for, say
from prefect_comet.options import DEFAULT_DESTINATION
from prefect_comet.steps.ledger import LedgerRecord

STATE_STYLES = {"creating": "cyan", "unknown": "bold yellow", "created": "cyan", "stored": "green", "failed": "red",
                "abandoned": "bold magenta"}


class State(str, Enum):
    """A ledger record's state (see `LedgerRecord.state`)."""

    creating = "creating"
    unknown = "unknown"
    created = "created"
    stored = "stored"
    failed = "failed"
    abandoned = "abandoned"


def jobs(
    ledger: Ledger = None,
    dest: Destination = DEFAULT_DESTINATION,
    state: Annotated[State | None, typer.Option("--state", help="Show only the jobs in this state.")] = None,
) -> None:
    """Show every job a ledger knows: key, state, task id, provider, age and where it is stored."""
    the_ledger = ledger_for(ledger, dest)
    damaged: list[str] = []
    records = sorted(
        (record for record in the_ledger.records(skipped=damaged) if state is None or record.state == state.value),
        key=lambda record: record.created_at,
    )
    if damaged:
        say("warning", f"skipped {len(damaged)} damaged ledger record(s): {', '.join(damaged)}", "yellow")
    where = f"in the ledger at {redact_url(the_ledger.uri)}"
    what = f"{state.value} job" if state else "job"
    if not records:
        print(f"No {what}s {where}.")
        return
    plural = "" if len(records) == 1 else "s"
    print(f"{len(records)} {what}{plural} {where}:")
    table = Table()
    table.add_column("key", overflow="fold")
    table.add_column("state")
    table.add_column("task id", overflow="fold")
    table.add_column("provider")
    table.add_column("age", justify="right")
    table.add_column("stored at / error", overflow="fold")
    now = datetime.now(UTC)
    for record in records:
        # Text cells: keys and errors are user and server text, never markup.
        table.add_row(
            Text(record.key),
            Text(record.state, style=STATE_STYLES[record.state]),
            Text(record.task_id or "-"),
            Text(record.provider),
            age(now, record.created_at),
            Text(_where(record)),
        )
    console = Console()
    if not console.is_terminal:  # piped: wide enough that keys and paths stay whole on their line
        console.width = 240
    console.print(table)
    if any(record.state in ("created", "abandoned") and record.task_id for record in records):
        print("Finish a created or abandoned job (no new payment): prefect-comet resume KEY")
    if any(record.state in ("creating", "unknown") for record in records):
        print(
            "A creating/unknown job has no task id: its create may have reached CometAPI unanswered. "
            "Look for it in the CometAPI dashboard before creating it again."
        )


def age(now: datetime, then: datetime) -> str:
    """How long ago `then` was, in the largest whole unit: `42 s`, `12 min`, `5 h`, `3 d`."""
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _where(record: LedgerRecord) -> str:
    if record.stored is not None:
        return redact_url(record.stored.uri)
    if record.error:  # what happened; what to do is in the manifest and the run's logs
        return " ".join(record.error.split(" What to do:", 1)[0].split())
    return "-"
