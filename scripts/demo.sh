#!/usr/bin/env bash
# The main job: generate a video against a local CometAPI emulator and store it in ./videos.
source "$(dirname "$0")/_venv.sh"
# The prefect-comet command says what it does while Prefect starts, gives a temporary server time
# to set up a new database on a busy machine, and ends a known error with one line.
exec .venv/bin/prefect-comet generate --emulator "$@"
