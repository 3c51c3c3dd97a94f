"""How each job is created, waited for and stored: the one place every default is written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

IfOutcomeUnknown = Literal["fail", "recreate"]
# "poll": the run waits in a coroutine. "suspend": a deployment run suspends (its process
# exits) while its jobs render and is resumed when they are done.
WaitMode = Literal["poll", "suspend"]
# Where videos go when no destination is given: a folder under the working directory.
DEFAULT_DESTINATION = "./videos"


class GenerationOptions(BaseModel):
    """The tuning of every job, shared by `generate_video`, `generate_videos` and the tasks.

    The flows take these as plain parameters (so the Prefect UI shows them in the run form)
    and default each one to the value written here.

    Args:
        if_outcome_unknown: When a create may have reached the server unanswered and the job
            cannot be found by key: `"fail"` (raise, pay nothing twice) or `"recreate"`.
        timeout_seconds: How long to wait for each generation.
        poll_interval_seconds: The first poll interval; it grows towards the cap.
        max_poll_interval_seconds: The largest poll interval.
        max_video_bytes: Refuse result files larger than this.
        strict_output: Fail when the stored video's frame or duration differs from the request.
        per_job_artifacts: Publish each job's progress, summary and link artifacts.
        wait: `"poll"` (wait in the run) or `"suspend"` (a deployment run suspends while
            its jobs render, freeing its worker; resumed when they are done).
        callback_base_url: The public URL of a `prefect-comet callbacks` receiver: Kling
            jobs then carry a per-job `callback_url`, and a waiting job wakes on its callback.
        callback_poll_interval_seconds: With callbacks, the slow poll that stays the source
            of truth (callbacks can be lost).
        create_rate_limit: The name of a Prefect global concurrency limit with slot decay;
            each paid create takes a slot, so every flow and worker of an account together
            stays under it (e.g. 500 creates a day).

    Example:
        ```python
        options = GenerationOptions(timeout_seconds=600)
        options.max_poll_interval_seconds  # 15.0
        ```
    """

    model_config = ConfigDict(frozen=True)

    if_outcome_unknown: IfOutcomeUnknown = "fail"
    timeout_seconds: float = Field(default=1800.0, gt=0)
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    max_poll_interval_seconds: float = Field(default=15.0, gt=0)
    max_video_bytes: int = Field(default=8 << 30, gt=0)
    strict_output: bool = False
    # Per-job artifacts cost server writes; a batch shows its manifest table instead.
    per_job_artifacts: bool = True
    wait: WaitMode = "poll"
    callback_base_url: str | None = None
    # Few enough requests that a two-minute job costs at most five looks with callbacks.
    callback_poll_interval_seconds: float = Field(default=40.0, gt=0)
    create_rate_limit: str | None = None

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> GenerationOptions:
        """The options among a flow's parameters (other names are ignored).

        Args:
            parameters: A flow's arguments by name, e.g. its `locals()`.

        Returns:
            The options those parameters set.

        Example:
            ```python
            GenerationOptions.from_parameters({"timeout_seconds": 60, "destination": "./v"})
            ```
        """
        return cls(**{name: parameters[name] for name in cls.model_fields if name in parameters})


DEFAULTS = GenerationOptions()
