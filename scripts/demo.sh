#!/usr/bin/env bash
# The main job: generate a video against a local CometAPI emulator and store it in ./videos.
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python flows/text_to_video.py --emulator "$@"
