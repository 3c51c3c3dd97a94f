"""How a job is named in the Prefect UI: artifact keys and a one-line prompt."""

from __future__ import annotations

import re
from typing import Literal

from prefect_comet._files import safe_name
from prefect_comet.models import VideoJob

MAX_KEY_SLUG_CHARS = 60
SHORT_PROMPT_CHARS = 80

_KEY_UNSAFE = re.compile(r"[^a-z0-9]+")
# Prefect keys allow lowercase letters, numbers and dashes; ids like these map onto them as is.
_KEY_LOSSLESS = re.compile(r"[a-z0-9_-]+")


def artifact_slug(task_id: str) -> str:
    """Turn a task id into the part of an artifact key that names the job.

    Prefect keys allow lowercase letters, numbers and dashes only. Ids that lose
    information on the way (upper case, other characters) get a short hash suffix so
    two jobs never share a key.

    Args:
        task_id: The server's task id.

    Returns:
        A key-safe slug, e.g. `task-8f2c` for `task_8f2c`.

    Example:
        ```python
        artifact_slug("task_8f2c")  # "task-8f2c"
        artifact_slug("Task/8F2C")  # "task-8f2c-1b0e5f3a"
        ```
    """
    return safe_name(
        task_id,
        unsafe=_KEY_UNSAFE,
        joiner="-",
        max_chars=MAX_KEY_SLUG_CHARS,
        lowercase=True,
        kept_as_is=_KEY_LOSSLESS,
    )


ArtifactKind = Literal["progress", "summary", "file"]


def artifact_key(kind: ArtifactKind, task_id: str) -> str:
    """The key of a job's progress, summary or file-link artifact, e.g. `video-summary-task-8f2c`.

    Args:
        kind: Which artifact: `progress`, `summary` or `file`.
        task_id: The server's task id.

    Returns:
        The artifact key.

    Example:
        ```python
        artifact_key("summary", "task_1")  # "video-summary-task-1"
        ```
    """
    return f"video-{kind}-{artifact_slug(task_id)}"


def short_prompt(job: VideoJob, max_chars: int = SHORT_PROMPT_CHARS) -> str:
    """A one-line prompt of a job for titles and descriptions.

    Kling storyboards without a main prompt use their shots' prompts.

    Args:
        job: The job; its `request` holds the prompt as sent.
        max_chars: Longer prompts are cut and end in an ellipsis.

    Returns:
        The prompt on one line, or the task id when the request holds none.

    Example:
        ```python
        short_prompt(job)  # "Ocean waves rolling onto a sandy beach at golden hour"
        ```
    """
    prompt = job.request.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        shots = job.request.get("multi_prompt") or []
        prompt = " / ".join(
            str(shot.get("prompt")) for shot in shots if isinstance(shot, dict) and shot.get("prompt")
        )
    text = " ".join(str(prompt or "").split()) or job.task_id
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def markdown_line(text: str) -> str:
    """Text safe inside a markdown line: no HTML, no line breaks."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;")
