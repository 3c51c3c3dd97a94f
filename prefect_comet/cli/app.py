"""The `prefect-comet` Typer app: global options, the subcommands, and one line per error."""

from __future__ import annotations

import importlib.metadata
import sys
import traceback
from typing import Annotated

import typer

from prefect_comet.cli import _common, batch, callbacks, emulator, generate, jobs, resume

app = typer.Typer(
    name="prefect-comet",
    help="CometAPI video generation from the terminal: prompts in, verified MP4s in your storage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("generate")(generate.generate)
app.command("batch")(batch.batch)
app.command("jobs")(jobs.jobs)
app.command("resume")(resume.resume)
app.command("emulator")(emulator.emulator)
app.command("callbacks")(callbacks.callbacks)


def _show_version(value: bool) -> None:
    if value:
        print(f"prefect-comet {importlib.metadata.version('prefect-comet')}")
        raise typer.Exit()


@app.callback()
def options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and every Prefect log line on the terminal.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """CometAPI video generation from the terminal: prompts in, verified MP4s in your storage.

    Exit codes: 0 done, 1 failed (API, job or storage), 2 bad input, 130 interrupted.
    """
    _common.GlobalOptions.debug = debug
    if not debug:
        _common.quiet_console()


def main() -> None:
    """The console script: run the app; an error ends it with one line on stderr and its exit code."""
    try:
        app()
    except Exception as error:
        code, message = _common.explain(error)
        if _common.GlobalOptions.debug:
            traceback.print_exc()
        _common.say("error", message, "bold red")
        sys.exit(code)
