"""Where the poll cadence is decided: how long to sleep before the next look at a job."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect_comet.models import VideoJob
from prefect_comet.options import DEFAULTS
from prefect_comet.steps import learned_durations

# How long after the estimated end the look comes: a round trip's worth, so it sees the end.
END_MARGIN_SECONDS = 0.25
# Once past the estimated end, the shortest wait: an estimate a little early costs a few looks.
LATE_MIN_SECONDS = 1.0


@dataclass(frozen=True)
class PollPolicy:
    """How often to look at a running job.

    The interval starts short (fast jobs are seen quickly) and grows to a cap (long
    jobs cost few requests). Once the server's progress rises, the finish is estimated
    from its rate: the wait is half the estimated remaining time (up to `max_interval`),
    and within `initial_interval` of the end the look comes just after the estimated end,
    so the end is seen well within a second of it. Without progress, the estimate is how
    long finished jobs of the same kind took in this machine. Past the estimate, the wait
    is a quarter of the lateness (from a second up to `max_interval`).
    A server hint (`openai-poll-after-ms`) is the shortest wait (up to `max_interval`); while
    the server hints, the wait is at most `initial_interval` otherwise, like a plain poll loop.

    Args:
        initial_interval: Seconds before the second look.
        max_interval: Largest interval in seconds.
        backoff: Factor the interval grows by after each look.
        unknown_status_grace: Seconds an unknown status is tolerated before giving up.

    Example:
        ```python
        PollPolicy(initial_interval=5, max_interval=20)
        ```
    """

    initial_interval: float = DEFAULTS.poll_interval_seconds
    max_interval: float = DEFAULTS.max_poll_interval_seconds
    backoff: float = 1.5
    unknown_status_grace: float = 300.0


class PollCadence:
    """The waits between the looks at one job, following `PollPolicy`.

    Args:
        policy: The polling cadence.
        started: When we first looked, on the monotonic clock.

    Example:
        ```python
        cadence = PollCadence(PollPolicy(), time.monotonic())
        await asyncio.sleep(cadence.next_wait(seen, time.monotonic(), hint=None))
        ```
    """

    def __init__(self, policy: PollPolicy, started: float) -> None:
        self.policy = policy
        self.started = started
        self.interval = policy.initial_interval
        self._estimate = _FinishEstimate()

    def next_wait(self, seen: VideoJob, now: float, hint: float | None) -> float:
        """Seconds to sleep after seeing `seen` at `now`; never less than a server hint (up to the cap)."""
        self._estimate.observe(now, seen.progress)
        remaining = self._estimate.remaining(now)
        if remaining is None:
            remaining = _learned_remaining(seen, now - self.started)
        wait = _next_wait(self.policy, self.interval, remaining)
        if hint is not None:
            # The hint is the shortest wait the server asks for (capped: a hint of hours must not
            # mean no look until the deadline); while it hints, ours never passes the first interval.
            wait = max(min(max(hint, 0.0), self.policy.max_interval), min(wait, self.policy.initial_interval))
        self.interval = min(self.interval * self.policy.backoff, self.policy.max_interval)
        return wait


def _next_wait(policy: PollPolicy, interval: float, remaining: float | None) -> float:
    """Half the time left while far; just after the estimated end when near; a quarter of the lateness after it."""
    if remaining is None:
        return interval
    if remaining > policy.initial_interval:
        return min(remaining / 2, policy.max_interval)
    if remaining > 0:
        # Near the end a short interval would still look up to a whole interval late: look
        # right after the estimated end instead (the download then starts within a second).
        return remaining + END_MARGIN_SECONDS
    return min(max(-remaining / 4, LATE_MIN_SECONDS), policy.max_interval)


def _learned_remaining(job: VideoJob, since_first_look: float) -> float | None:
    """Seconds until a job of this kind typically ends (negative once late), or None."""
    typical = learned_durations.typical(job)
    if typical is None:
        return None
    elapsed = since_first_look
    if job.created_at is not None:
        # The server's creation time also counts the time before we looked (a resumed
        # job); a negative age means the clocks disagree, so our own count is safer.
        age = time.time() - job.created_at.timestamp()
        if age >= 0:
            elapsed = age
    return typical - elapsed


class _FinishEstimate:
    """Estimate when a job ends from how fast its progress has risen so far."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None
        self._latest: tuple[float, int] | None = None

    def observe(self, now: float, progress: int | None) -> None:
        if progress is None or progress <= 0:
            return
        if self._first is None:
            self._first = (now, progress)
        self._latest = (now, progress)

    def remaining(self, now: float) -> float | None:
        """Seconds until 100 % (negative once past it), or None while the rate is unknown."""
        if self._first is None or self._latest is None:
            return None
        (t0, p0), (t1, p1) = self._first, self._latest
        if p1 <= p0 or t1 <= t0:
            return None
        rate = (p1 - p0) / (t1 - t0)
        return (100 - p1) / rate - (now - t1)
