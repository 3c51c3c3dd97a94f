"""`prefect-comet emulator`: serve a local CometAPI emulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from prefect_comet.testing.emulator import CometEmulator
from prefect_comet.testing.emulator.serving import serve_until_stopped
from prefect_comet.testing.emulator.state import KLING_WRAPPED_INNER, OMNI_FAILURE_FIELDS

DEFAULT_PORT = 8765

# The choices, as the emulator defines them.
KlingInner = Enum("KlingInner", {name: name for name in KLING_WRAPPED_INNER}, type=str)
OmniFailureField = Enum("OmniFailureField", {name: name for name in OMNI_FAILURE_FIELDS}, type=str)


def emulator(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The port; 0 picks a free one.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    latency: Annotated[
        float, typer.Option("--latency", metavar="SECONDS", min=0, help="Seconds from create to completion.")
    ] = 1.0,
    require_key: Annotated[
        str | None,
        typer.Option("--require-key", metavar="KEY", help="Accept only this bearer key. (default: any key)"),
    ] = None,
    kling_parallel_limit: Annotated[
        int | None,
        typer.Option("--kling-parallel-limit", metavar="N", min=1, help="Unfinished Kling jobs allowed (1303 beyond)."),
    ] = None,
    kling_wrapped: Annotated[
        bool, typer.Option("--kling-wrapped", help="Answer Kling queries in the wrapped gateway shape.")
    ] = False,
    kling_wrapped_inner: Annotated[
        KlingInner,
        typer.Option(
            "--kling-wrapped-inner", help="Wrapped Kling answers: where the inner object is until success."
        ),
    ] = KlingInner.always,
    omni_failure_field: Annotated[
        OmniFailureField, typer.Option("--omni-failure-field", help="Where a failed Omni job says why.")
    ] = OmniFailureField.error,
    content_redirect: Annotated[
        bool, typer.Option("--content-redirect", help="The Omni content route answers 302 to the file.")
    ] = False,
    fps: Annotated[int, typer.Option("--fps", min=1, help="Frames per second of the rendered videos.")] = 12,
    pad_to_bytes: Annotated[
        int | None, typer.Option("--pad-to-bytes", metavar="N", min=1, help="Pad result files to at least N bytes.")
    ] = None,
    callback_repeats: Annotated[
        int, typer.Option("--callback-repeats", metavar="N", min=1, help="POST each Kling callback N times.")
    ] = 1,
    callback_reorder: Annotated[
        bool, typer.Option("--callback-reorder", help="Send a Kling job's callbacks latest status first.")
    ] = False,
    callback_loss: Annotated[
        float,
        typer.Option("--callback-loss", metavar="P", min=0, max=1, help="Drop each Kling callback with probability P."),
    ] = 0.0,
) -> None:
    """Serve a local CometAPI emulator (Omni and Kling Omni) until Ctrl-C or SIGTERM."""
    emulated = CometEmulator(
        api_key=require_key,
        latency=latency,
        host=host,
        port=port,
        kling_parallel_limit=kling_parallel_limit,
        kling_wrapped=kling_wrapped or kling_wrapped_inner.value != "always",
        kling_wrapped_inner=kling_wrapped_inner.value,
        omni_failure_field=omni_failure_field.value,
        content_redirect=content_redirect,
        fps=fps,
        pad_to_bytes=pad_to_bytes,
        callback_repeats=callback_repeats,
        callback_reorder=callback_reorder,
        callback_loss=callback_loss,
    )

    def announce(line: str) -> None:
        print(line, flush=True)
        key = "<the --require-key>" if require_key else "anything"
        print(f"Use it with COMETAPI_BASE_URL={emulated.base_url} COMETAPI_KEY={key}; stop it with Ctrl-C.", flush=True)

    serve_until_stopped(emulated, announce=announce)
