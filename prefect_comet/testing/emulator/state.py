"""Emulator state: settings, jobs, their timeline, and rendering of their result files."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .faults import FaultPlan
from .files import Signer
from .models import EmulatedJob, EmulatedVideo, RecordedRequest
from .render import RenderCache, derive, shared_cache

PhaseName = Literal["queued", "running", "succeeded", "failed", "unknown"]
# Where a wrapped Kling answer keeps the native object until the job succeeded.
KlingWrappedInner = Literal["always", "null", "missing"]
# Where an Omni answer says why a job failed.
OmniFailureField = Literal["error", "fail_reason", "error_message"]
KLING_WRAPPED_INNER: tuple[KlingWrappedInner, ...] = ("always", "null", "missing")
OMNI_FAILURE_FIELDS: tuple[OmniFailureField, ...] = ("error", "fail_reason", "error_message")
QUEUED_FRACTION = 0.1  # share of the latency a job spends queued
# Native Kling statuses a query (and so a callback) can report.
KLING_STATUSES = ("submitted", "processing", "succeed", "failed", "mystery")


@dataclass(frozen=True)
class Settings:
    """Behaviour switches of one emulator (see CometEmulator for their meaning)."""

    api_key: str | None = None
    latency: float = 1.0
    kling_parallel_limit: int | None = None
    kling_wrapped: bool = False
    content_redirect: bool = False
    fps: int = 12
    pad_to_bytes: int | None = None
    url_ttl: float = 3600.0
    kling_wrapped_inner: KlingWrappedInner = "always"
    omni_failure_field: OmniFailureField = "error"
    callback_repeats: int = 1
    callback_reorder: bool = False
    callback_loss: float = 0.0
    callback_lose_statuses: frozenset[str] = frozenset()
    callback_delay: float = 0.0
    callback_seed: int = 0
    balance_usd: float | None = 100.0
    price_per_job_usd: float = 0.25
    kling_units_per_job: str | None = "1"
    poll_after_ms: int | None = None

    def __post_init__(self) -> None:
        if self.kling_wrapped_inner not in KLING_WRAPPED_INNER:
            raise ValueError(f"kling_wrapped_inner must be one of {KLING_WRAPPED_INNER}")
        if self.kling_wrapped_inner != "always" and not self.kling_wrapped:
            raise ValueError("kling_wrapped_inner only applies with kling_wrapped=True")
        if self.omni_failure_field not in OMNI_FAILURE_FIELDS:
            raise ValueError(f"omni_failure_field must be one of {OMNI_FAILURE_FIELDS}")
        if self.callback_repeats < 1:
            raise ValueError("callback_repeats must be at least 1")
        if not 0.0 <= self.callback_loss <= 1.0:
            raise ValueError("callback_loss must be between 0 and 1")
        if self.callback_delay < 0:
            raise ValueError("callback_delay must not be negative")
        if not set(self.callback_lose_statuses) <= set(KLING_STATUSES):
            raise ValueError(f"callback_lose_statuses must be Kling statuses: {KLING_STATUSES}")
        if self.price_per_job_usd < 0:
            raise ValueError("price_per_job_usd must not be negative")
        if self.poll_after_ms is not None and self.poll_after_ms < 0:
            raise ValueError("poll_after_ms must not be negative")


@dataclass(frozen=True)
class Phase:
    """Where a job is in its timeline: provider-neutral status, progress 0-100, since when."""

    name: PhaseName
    progress: int
    since: float


@dataclass(frozen=True)
class ResultFile:
    """A servable result file."""

    path: str
    size: int
    sha256: str


class EmulatorState:
    """Everything the routes share. Mutated only on the server's event loop thread."""

    def __init__(
        self,
        settings: Settings,
        workdir: str,
        faults: FaultPlan | None = None,
        cache: RenderCache | None = None,
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self.base_url = ""
        self.jobs: dict[str, EmulatedJob] = {}
        self.requests: list[RecordedRequest] = []
        self.bytes_served: Counter[str] = Counter()  # task_id -> result-file body bytes sent
        self.external_ids: dict[str, str] = {}  # Kling external_task_id -> task_id
        self.faults = faults or FaultPlan()
        self.job_hooks: list[Callable[[EmulatedJob], None]] = []  # called with each new job
        self.signer = Signer()
        self._cache = cache or shared_cache()
        self._executor = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="comet-render"
        )
        self._renders: set[asyncio.Future[None]] = set()
        self.charged_usd = 0.0  # what every create so far cost, at `price_per_job_usd`
        self.balance_usd = settings.balance_usd  # None: unlimited

    # -- auth --------------------------------------------------------------
    def authorized(self, authorization: str | None) -> bool:
        """Check an `Authorization: Bearer <key>` header."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return False
        return self.settings.api_key is None or secrets.compare_digest(key, self.settings.api_key)

    def key_matches(self, key: str | None) -> bool:
        """Check the key the query service takes in its query string (`?key=...`)."""
        key = (key or "").strip()
        if not key:
            return False
        return self.settings.api_key is None or secrets.compare_digest(key, self.settings.api_key)

    # -- jobs --------------------------------------------------------------
    def add_job(self, job: EmulatedJob) -> None:
        """Register a job and charge for it, start rendering its files if it will succeed,
        then run `job_hooks`."""
        self.charged_usd += self.settings.price_per_job_usd
        if self.balance_usd is not None:
            self.balance_usd -= self.settings.price_per_job_usd
        self.jobs[job.task_id] = job
        if job.external_task_id is not None:
            self.external_ids[job.external_task_id] = job.task_id
        if job.outcome == "succeed":
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._render, job)
            self._renders.add(future)
            future.add_done_callback(self._renders.discard)
        for hook in self.job_hooks:
            hook(job)

    def phase(self, job: EmulatedJob, now: float | None = None) -> Phase:
        """The job's phase at `now`: queued for the first 10% of the latency, then running
        with linear progress, then terminal (success also waits for its files)."""
        now = time.time() if now is None else now
        if job.outcome == "unknown":
            return Phase("unknown", 0, job.created_at)
        latency = self.settings.latency
        due = job.created_at + latency
        if now >= due and (job.outcome == "fail" or job.failure is not None):
            return Phase("failed", 99, max(due, job.ready_at or due))
        if now >= due and job.ready_at is not None:
            return Phase("succeeded", 100, max(due, job.ready_at))
        fraction = (now - job.created_at) / latency if latency > 0 else 1.0
        if fraction < QUEUED_FRACTION:
            return Phase("queued", 0, job.created_at)
        progress = int(99 * min(1.0, (fraction - QUEUED_FRACTION) / (1 - QUEUED_FRACTION)))
        return Phase("running", progress, job.created_at + QUEUED_FRACTION * latency)

    def unfinished(self, provider: str) -> int:
        """How many jobs of `provider` have not reached a terminal phase."""
        now = time.time()
        return sum(
            1
            for job in self.jobs.values()
            if job.provider == provider and self.phase(job, now).name not in ("succeeded", "failed")
        )

    def created_per_key(self) -> dict[str, int]:
        """Jobs created per idempotency key (Omni header / Kling external_task_id)."""
        return dict(Counter(job.idempotency_key for job in list(self.jobs.values()) if job.idempotency_key))

    # -- result files ------------------------------------------------------
    def file_url(
        self, job: EmulatedJob, video: EmulatedVideo, watermarked: bool = False, ttl: float | None = None
    ) -> str:
        """Signed URL of a result file."""
        name = f"{video.video_id}_wm" if watermarked else video.video_id
        path = f"/files/{job.task_id}/{name}.mp4"
        return self.signer.url(self.base_url, path, self.settings.url_ttl if ttl is None else ttl)

    def result_file(self, task_id: str, name: str) -> ResultFile | None:
        """The file `/files/{task_id}/{name}.mp4` names, once rendered."""
        job = self.jobs.get(task_id)
        for video in job.videos if job else []:
            if name == video.video_id:
                return ResultFile(video.path, video.size, video.sha256)
            if name == f"{video.video_id}_wm" and video.watermark_path and video.watermark_sha256:
                return ResultFile(
                    video.watermark_path, os.path.getsize(video.watermark_path), video.watermark_sha256
                )
        return None

    def own_job_for_url(self, url: str) -> EmulatedJob | None:
        """The job whose result file `url` points at, if it is one of ours."""
        parts = urlsplit(url)
        if not self.base_url or f"{parts.scheme}://{parts.netloc}" != self.base_url:
            return None
        segments = parts.path.split("/")
        if len(segments) == 4 and segments[1] == "files":
            return self.jobs.get(segments[2])
        return None

    def _render(self, job: EmulatedJob) -> None:
        """Worker thread: derive the job's unique files from the render cache."""
        try:
            video_id = f"vid_{secrets.token_hex(8)}"
            folder = os.path.join(self.workdir, job.task_id)
            os.makedirs(folder, exist_ok=True)
            video = self._derive(job, video_id, folder, "plain")
            if job.watermark:
                wm = self._derive(job, video_id, folder, "watermark")
                video.watermark_path, video.watermark_sha256 = wm.path, wm.sha256
            job.videos = [video]
        except Exception as exc:  # surfaced to clients as a failed generation
            job.failure = f"Emulated render failed: {exc}"
        job.ready_at = time.time()

    def _derive(
        self, job: EmulatedJob, video_id: str, folder: str, variant: Literal["plain", "watermark"]
    ) -> EmulatedVideo:
        source = self._cache.get(job.width, job.height, job.duration_seconds, self.settings.fps, variant)
        suffix = "_wm" if variant == "watermark" else ""
        path = os.path.join(folder, f"{video_id}{suffix}.mp4")
        size, sha = derive(source, path, f"{job.task_id}/{video_id}{suffix}", self.settings.pad_to_bytes)
        return EmulatedVideo(video_id, path, sha, size)

    def close(self) -> None:
        """Stop the render workers (waits for a render in flight)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
