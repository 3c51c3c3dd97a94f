"""What the subcommands share: their common options, one-line errors and exit codes, a quiet console."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import Annotated, NoReturn

import prefect.context
import typer
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from prefect_comet._files import redact_url
from prefect_comet.credentials import CometAPICredentials
from prefect_comet.exceptions import BadRequestError, CometAPIError
from prefect_comet.options import DEFAULT_DESTINATION
from prefect_comet.steps.ledger import JobLedger
from prefect_comet.steps.storage_errors import ensure_writable

# Exit codes (the README lists them).
FAILED, BAD_INPUT, INTERRUPTED = 1, 2, 130
# A fresh Prefect database on a busy machine needs about 30 s; Prefect gives up after 20.
SERVER_STARTUP_SECONDS = "180"

stderr = Console(stderr=True, soft_wrap=True, highlight=False)

# The options several subcommands take, declared once.
Destination = Annotated[
    str, typer.Option("--dest", metavar="URL", help="Where videos go: a folder or any fsspec URL (s3://...).")
]
Ledger = Annotated[
    str | None,
    typer.Option("--ledger", metavar="URL", help="The job ledger's folder. (default: <dest>/.comet-ledger)"),
]
Block = Annotated[
    str | None,
    typer.Option("--block", metavar="NAME", help="A saved CometAPI Credentials block. (default: COMETAPI_KEY)"),
]
Emulator = Annotated[bool, typer.Option("--emulator", help="Run against a local CometAPI emulator: no key, no cost.")]
Latency = Annotated[
    float, typer.Option("--latency", metavar="SECONDS", help="With --emulator: how long a generation takes.")
]
MaxSpend = Annotated[
    float | None,
    typer.Option(
        "--max-spend-usd", metavar="USD", min=0,
        help="Refuse what would spend more (checked against the estimate and the account's balance first).",
    ),
]
PricePerJob = Annotated[
    float | None,
    typer.Option("--price-per-job-usd", metavar="USD", min=0, help="The price of one job, for the estimate."),
]


class GlobalOptions:
    """The global options, set by the app's callback before a subcommand runs."""

    debug = False


def one_line(text: str) -> str:
    """`text` on one line: every run of whitespace holding a newline becomes one space."""
    return re.sub(r"\s*\n\s*", " ", text).strip()


def say(prefix: str, message: str, style: str) -> None:
    """Print `prefix: message` as one line on stderr."""
    stderr.print(Text.assemble((f"{prefix}:", style), " ", one_line(message)))


def fail(message: str, code: int = FAILED) -> NoReturn:
    """Print `error: message` on stderr and end the command with `code`."""
    say("error", message, "bold red")
    raise typer.Exit(code)


def explain(error: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an error that ended a command.

    Bad input (a request the rules or the API refuse, a bad value) is 2; a failure of the
    API, the job or storage is 1; an interruption is 130.
    """
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    if isinstance(error, ValidationError):
        return BAD_INPUT, f"invalid {error.title}: {_fields(error)}"
    if isinstance(error, BadRequestError):
        return BAD_INPUT, str(error)
    if isinstance(error, CometAPIError):
        return FAILED, str(error) or type(error).__name__
    if isinstance(error, OSError):
        # An OSError made with a message of its own (errno, message) reads best without "[Errno n]".
        own = error.strerror if error.errno and error.strerror and not error.filename else None
        return FAILED, own or str(error) or type(error).__name__
    if isinstance(error, ValueError):
        return BAD_INPUT, str(error)
    hint = "" if GlobalOptions.debug else " (run with --debug to see the traceback)"
    return FAILED, f"{type(error).__name__}: {error}{hint}"


def _fields(error: ValidationError) -> str:
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"]
        problems.append(message if not where or message.startswith(f"{where}:") else f"{where}: {message}")
    return "; ".join(problems)


class _RunWarningsOnly(logging.Filter):
    """On the terminal, only the warnings of the run and of this package.

    A failure is the command's own `error:` line, and everything else (INFO lines,
    Prefect's own tracebacks) still reaches the Prefect API and its UI.
    """

    SHOWN = ("prefect.flow_runs", "prefect.task_runs", "prefect.prefect_comet", "prefect_comet")

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            logging.WARNING <= record.levelno < logging.ERROR
            and not record.exc_info
            and record.name.startswith(self.SHOWN)
        )


def quiet_console() -> None:
    """Keep Prefect's console logging to the run's warnings, and Python warnings to one line each.

    Only the handlers that write to the terminal get the filter: the handler that sends the
    run's logs to the Prefect API sees every record, as before.
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if _to_terminal(handler) and not any(isinstance(f, _RunWarningsOnly) for f in handler.filters):
                handler.addFilter(_RunWarningsOnly())
    warnings.showwarning = _warning_line


def _to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    terminal = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return isinstance(handler, logging.StreamHandler) and stream in terminal


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    say("warning", str(message), "yellow")


def start_prefect() -> None:
    """Check the configured Prefect API, or say that Prefect will start a temporary local one.

    Without PREFECT_API_URL, Prefect starts a server of its own for the run: its startup
    timeout is raised (unless set), and without --debug that server, a child process writing
    to this terminal, prints only critical lines.
    """
    if url := PREFECT_API_URL.value():
        _check_reachable(url)
        return
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", SERVER_STARTUP_SECONDS)
    if not GlobalOptions.debug:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if refresh is not None:  # settings are read at import; this reads the environment again
        refresh()
    print("Starting a local Prefect server…", flush=True)


def _check_reachable(url: str) -> None:
    """Fail in one line, before anything starts, when the configured Prefect API does not answer."""
    # One try: a server that is up answers at once, and one that is not would cost retries.
    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}), get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ConnectionError(
            f"The Prefect API at {redact_url(url)} does not answer ({problem}). What to do: start that "
            "server, or unset PREFECT_API_URL and the command starts a temporary local one."
        )


def prepare_run(destination: str, *, block: str | None, emulator: bool = False) -> CometAPICredentials | None:
    """Refuse at once what would fail the run, start Prefect, and load the credentials block.

    An unwritable destination or a missing key fails before Prefect starts (and long before
    anything is paid for).

    Returns:
        The saved block named `block`, or None: the run then reads COMETAPI_KEY (which
        `--emulator` sets).

    Raises:
        StorageError: The destination cannot be written.
        MissingAPIKeyError: No block, no emulator and no COMETAPI_KEY.
        ValueError: No block of that name.
    """
    ensure_writable(destination)
    if block is None and not emulator:
        CometAPICredentials.from_env()
    start_prefect()
    return CometAPICredentials.load(block) if block else None


def ledger_for(ledger: str | None, destination: str | None) -> JobLedger:
    """The ledger at `ledger`, else the one beside `destination` (default `./videos`)."""
    return JobLedger.of(destination or DEFAULT_DESTINATION, ledger)
