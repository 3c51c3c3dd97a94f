"""`python -m prefect_comet.testing.emulator`: serve the emulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import errno
import sys

from .core import CometEmulator
from .serving import serve_until_stopped
from .state import KLING_WRAPPED_INNER, OMNI_FAILURE_FIELDS


def main(argv: list[str] | None = None) -> None:
    """Parse options, start the emulator, serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m prefect_comet.testing.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds from create to completion")
    parser.add_argument("--api-key", default=None, help="required key (default: accept any)")
    parser.add_argument("--kling-parallel-limit", type=int, default=None)
    parser.add_argument(
        "--kling-wrapped", action="store_true", help="wrapped gateway shape for Kling queries"
    )
    parser.add_argument(
        "--kling-wrapped-inner",
        choices=KLING_WRAPPED_INNER,
        default="always",
        help="wrapped Kling answers whose inner object, until success, is there, null or missing",
    )
    parser.add_argument(
        "--omni-failure-field",
        choices=OMNI_FAILURE_FIELDS,
        default="error",
        help="where a failed Omni job says why: the error object or a bare string field",
    )
    parser.add_argument("--content-redirect", action="store_true", help="content route answers 302")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--pad-to-bytes", type=int, default=None, help="pad result files to at least N bytes")
    parser.add_argument(
        "--poll-after-ms", type=int, default=None, help="Omni retrieve answers carry openai-poll-after-ms: N"
    )
    args = parser.parse_args(argv)
    emulator = CometEmulator(
        api_key=args.api_key,
        latency=args.latency,
        host=args.host,
        port=args.port,
        kling_parallel_limit=args.kling_parallel_limit,
        kling_wrapped=args.kling_wrapped or args.kling_wrapped_inner != "always",
        kling_wrapped_inner=args.kling_wrapped_inner,
        omni_failure_field=args.omni_failure_field,
        content_redirect=args.content_redirect,
        fps=args.fps,
        pad_to_bytes=args.pad_to_bytes,
        poll_after_ms=args.poll_after_ms,
    )
    try:
        serve_until_stopped(emulator, announce=lambda line: print(line, flush=True))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        sys.exit(f"error: {error.strerror}")


if __name__ == "__main__":
    main()
