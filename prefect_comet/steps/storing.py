"""Where a download becomes a final file: temporary name, read back, measured, then moved.

Also the one check of "is it stored and still valid" (`verified`), and the JSON sidecar
written beside every stored job (`stored_for_key` finds a key's video through it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime

import fsspec

from prefect_comet._files import filesystem_for, safe_name, sha256_of, uri_for, write_atomically
from prefect_comet.api.client import CometClient
from prefect_comet.api.families import provider_for
from prefect_comet.api.provider import DownloadSource
from prefect_comet.exceptions import InvalidContentError
from prefect_comet.media.mismatches import output_mismatches
from prefect_comet.media.poster import store_poster
from prefect_comet.media.probe import VideoProbe, probe_video
from prefect_comet.models import StoredVideo, VideoJob
from prefect_comet.options import DEFAULTS
from prefect_comet.steps.downloading import download
from prefect_comet.steps.partial_files import claim_partial, let_go
from prefect_comet.steps.storage_errors import storage_error

SIDECAR_SCHEMA = "prefect-comet/video-sidecar@1"
_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9._-]+")
async def store_videos(
    client: CometClient,
    job: VideoJob,
    destination: str,
    *,
    max_bytes: int = DEFAULTS.max_video_bytes,
) -> StoredVideo:
    """Store every result file of a finished job under `destination`.

    Each file is streamed to a temporary name, checked (MP4 signature, size, decodable
    frame when PyAV is installed) and only then moved to its final name, so a reader
    never sees a partial file. A JSON sidecar records the request, ids, timings and
    what was measured. Storing an already stored, verified job again is a no-op.

    Args:
        client: The API client.
        job: A job whose status is succeeded.
        destination: An fsspec URL or local folder.
        max_bytes: Refuse result files larger than this.

    Returns:
        The first video, with further files of the job in `extras`.

    Raises:
        StorageError: The disk is full or the destination cannot be written.
    """
    try:
        return await _store_videos(client, job, destination, max_bytes)
    except OSError as error:
        failure = storage_error(error, destination, job.task_id)
        if failure is None:
            raise
        raise failure from error


async def _store_videos(client: CometClient, job: VideoJob, destination: str, max_bytes: int) -> StoredVideo:
    fs, root = filesystem_for(destination)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    stem = safe_name(job.task_id, unsafe=_UNSAFE_IN_PATH, joiner="_", max_chars=100)
    sidecar_path = f"{root}/{stem}.json"
    stored = verified(_read_sidecar(fs, sidecar_path))
    if stored is not None:
        return stored

    sources = await provider_for(job).download_sources(client, job)
    if not sources:
        raise InvalidContentError(
            "The job completed but offers no video to download.", task_id=job.task_id
        )
    started = time.monotonic()
    videos = [
        await _store_one(client, fs, root, _file_name(stem, sources, index), source, job, max_bytes)
        for index, source in enumerate(sources)
    ]
    sidecar_uri = uri_for(fs, sidecar_path)
    videos = [video.model_copy(update={"metadata_uri": sidecar_uri}) for video in videos]
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "provider": job.provider,
        "task_id": job.task_id,
        "external_task_id": job.external_task_id,
        "idempotency_key": job.idempotency_key,
        "model": job.model,
        "request": job.request,
        "timings": {
            "created_at": _iso(job.created_at),
            "completed_at": _iso(job.completed_at),
            "stored_at": datetime.now(UTC).isoformat(),
            "download_seconds": round(time.monotonic() - started, 3),
        },
        "videos": [video.model_dump(mode="json", exclude={"extras"}) for video in videos],
    }
    write_atomically(fs, sidecar_path, json.dumps(sidecar, indent=2).encode())
    return videos[0].model_copy(update={"extras": videos[1:]})


async def _store_one(
    client: CometClient,
    fs: fsspec.AbstractFileSystem,
    root: str,
    name: str,
    source: DownloadSource,
    job: VideoJob,
    max_bytes: int,
) -> StoredVideo:
    final = f"{root}/{name}"
    partial = await asyncio.to_thread(claim_partial, fs, root, name)
    try:
        downloaded = await download(
            client,
            source.urls,
            lambda: fs.open(partial.path, "wb"),
            task_id=job.task_id,
            max_bytes=max_bytes,
            prefix=partial.prefix,
        )
        # Read back what storage holds before it becomes visible: a bad write never lands.
        # CPU and disk work runs off the event loop, so other jobs keep polling meanwhile.
        if await asyncio.to_thread(sha256_of, fs, partial.path) != downloaded.sha256:
            raise InvalidContentError(
                f"Storage at {uri_for(fs, final)} did not keep the downloaded bytes intact.",
                task_id=job.task_id,
            )
        probe = await asyncio.to_thread(_probe, fs, partial.path, job.task_id)
        fs.mv(partial.path, final)
    finally:
        let_go(fs, partial)
    uri = uri_for(fs, final)
    width, height, duration = (probe.width, probe.height, probe.duration_seconds) if probe else (None, None, None)
    return StoredVideo(
        uri=uri,
        sha256=downloaded.sha256,
        size_bytes=downloaded.size_bytes,
        task_id=job.task_id,
        provider=job.provider,
        model=job.model,
        width=width,
        height=height,
        duration_seconds=duration,
        codec=probe.codec if probe else None,
        fps=probe.fps if probe else None,
        poster_uri=await asyncio.to_thread(store_poster, uri),
        mismatches=[]
        if source.output.watermarked
        else output_mismatches(job.provider, job.request, width=width, height=height, duration_seconds=duration),
        video_id=source.output.video_id,
        watermarked=source.output.watermarked,
        external_task_id=job.external_task_id,
        cost_units=job.cost_units,
    )


def _probe(fs: fsspec.AbstractFileSystem, path: str, task_id: str) -> VideoProbe | None:
    with fs.open(path, "rb") as file:
        return probe_video(file, task_id=task_id)


def _file_name(stem: str, sources: list[DownloadSource], index: int) -> str:
    """`task.mp4`, then `task-2.mp4` for a second video, `task-watermarked.mp4` for copies."""
    output = sources[index].output
    ordinal = sum(1 for s in sources[: index + 1] if s.output.watermarked == output.watermarked)
    name = stem if ordinal == 1 else f"{stem}-{ordinal}"
    return f"{name}-watermarked.mp4" if output.watermarked else f"{name}.mp4"


def _read_sidecar(fs: fsspec.AbstractFileSystem, sidecar_path: str) -> StoredVideo | None:
    """The stored job a sidecar records, or None when there is none or it is unreadable."""
    if not fs.exists(sidecar_path):
        return None
    with fs.open(sidecar_path, "rb") as file:
        return _stored_in(file.read())


def _stored_in(sidecar: bytes) -> StoredVideo | None:
    """The stored job in a sidecar's bytes, or None when they are not a readable sidecar."""
    try:
        videos = [StoredVideo.model_validate(v) for v in json.loads(sidecar)["videos"]]
    except (ValueError, KeyError, TypeError):
        return None
    return videos[0].model_copy(update={"extras": videos[1:]}) if videos else None


def stored_for_key(destination: str, key: str) -> StoredVideo | None:
    """The verified video a sidecar under `destination` records for idempotency key `key`.

    The way back to a stored video when its ledger record is damaged: every sidecar names
    the key its job was created under.

    Example:
        ```python
        stored = stored_for_key("s3://bucket/videos", "nightly-3")
        ```
    """
    fs, root = filesystem_for(destination)
    for path in sorted(fs.glob(f"{root.rstrip('/')}/*.json")):
        try:
            sidecar = fs.cat_file(path)
            named = json.loads(sidecar).get("idempotency_key")
        except (OSError, ValueError, AttributeError):
            continue
        if named == key and (stored := verified(_stored_in(sidecar))) is not None:
            return stored
    return None


def verified(stored: StoredVideo | None) -> StoredVideo | None:
    """`stored` when every one of its files still exists and hashes as recorded, else None.

    The one answer to "is it stored and still valid", for the ledger's record and the sidecar.

    Example:
        ```python
        if verified(record.stored) is not None:
            ...  # nothing to pay for, nothing to download
        ```
    """
    if stored is None:
        return None
    for video in [stored, *stored.extras]:
        fs, path = filesystem_for(video.uri)
        if not fs.exists(path) or sha256_of(fs, path) != video.sha256:
            return None
    return stored


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
