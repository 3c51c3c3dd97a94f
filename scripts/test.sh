#!/usr/bin/env bash
# The whole test suite (real Prefect engine, emulator on loopback; no internet needed).
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m pytest "$@"
