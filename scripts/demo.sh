#!/usr/bin/env bash
# The main job: generate a video against a local CometAPI emulator and store it in ./videos.
source "$(dirname "$0")/_venv.sh"
# Prefect's temporary server gives up after 20 s; a new database on a busy machine needs more.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}"
exec .venv/bin/python flows/text_to_video.py --emulator "$@"
