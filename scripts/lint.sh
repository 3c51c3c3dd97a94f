#!/usr/bin/env bash
# Lint and import order (ruff, configured in pyproject.toml); CI runs it before the tests.
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/ruff check .
