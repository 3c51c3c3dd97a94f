"""The runnable pipelines in flows/, run as a user runs them (the first is the README demo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from prefect_comet.media.probe import probe_video

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, destination: Path, *args: str) -> tuple[str, Path]:
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # reuse the test server
    env.pop("COMETAPI_KEY", None)
    result = subprocess.run(
        [sys.executable, script, "--emulator", "--latency", "0.5", "--destination", str(destination), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("Stored video: "))
    return result.stdout, Path(line.removeprefix("Stored video: "))


def _frame(path: Path) -> tuple[int, int, float]:
    with path.open("rb") as file:
        probe = probe_video(file)
    return probe.width, probe.height, probe.duration_seconds


def test_demo_stores_a_1280x720_4s_mp4_and_prints_where(tmp_path):
    stdout, path = _run("flows/text_to_video.py", tmp_path / "videos")

    assert path.parent == tmp_path / "videos" and path.suffix == ".mp4"
    width, height, duration = _frame(path)
    assert (width, height) == (1280, 720) and abs(duration - 4.0) < 0.2
    assert "frame 1280x720" in stdout and "sha256 " in stdout


def test_image_to_video_follows_the_picture(tmp_path):
    stdout, path = _run("flows/image_to_video.py", tmp_path, "--duration", "10")

    width, height, duration = _frame(path)
    assert (width, height) == (1440, 1080) and abs(duration - 10.0) < 0.2  # the sample is 4:3


def test_batch_from_file_stores_every_line_and_a_manifest(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a kite"}\n{"prompt": "a boat", "aspect_ratio": "9:16"}\n')
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run(
        [sys.executable, "flows/batch_from_file.py", str(prompts), "--emulator", "--destination", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stored = [line.split()[-1] for line in result.stdout.splitlines() if " stored " in line]
    assert len(stored) == 2 and all(Path(path).exists() for path in stored)
    assert _frame(Path(stored[1]))[:2] == (720, 1280)
    assert "Manifest: " in result.stdout
