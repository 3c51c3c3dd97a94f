"""The README's examples are code that runs, not prose that drifts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _python_blocks(section: str) -> list[str]:
    body = README.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_quick_start_is_one_block_of_two_commands():
    body = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
    assert len(blocks) == 1
    assert blocks[0].split() == ["bash", "scripts/demo.sh", "bash", "scripts/test.sh"]


def test_kling_input_mode_examples_are_valid_requests(tmp_path, monkeypatch):
    image = pytest.importorskip("PIL.Image")
    image.new("RGB", (640, 480)).save(tmp_path / "first.png")
    monkeypatch.chdir(tmp_path)
    (block,) = _python_blocks("## Kling Omni: every input mode")
    exec(compile(block, "README.md", "exec"), {})
