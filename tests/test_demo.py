"""The README's first Quick start command: the demo pipeline against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from prefect_comet.probe import probe_video

ROOT = Path(__file__).resolve().parents[1]


def test_demo_stores_a_1280x720_4s_mp4_and_prints_where(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # reuse the test server
    env.pop("COMETAPI_KEY", None)
    result = subprocess.run(
        [sys.executable, "flows/text_to_video.py", "--emulator", "--latency", "0.5",
         "--destination", str(tmp_path / "videos")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stored_line = next(line for line in result.stdout.splitlines() if line.startswith("Stored video: "))
    path = Path(stored_line.removeprefix("Stored video: "))
    assert path.parent == tmp_path / "videos" and path.suffix == ".mp4"
    with path.open("rb") as file:
        probe = probe_video(file)
    assert (probe.width, probe.height) == (1280, 720)
    assert abs(probe.duration_seconds - 4.0) < 0.2
    assert "frame 1280x720" in result.stdout and "sha256 " in result.stdout
