"""The job ledger: a durable record of every job by idempotency key, so none is lost or repeated.

The ledger is a folder of small JSON files in fsspec storage, by default beside the videos
(`<destination>/.comet-ledger/`): in a multi-machine deployment it is shared storage, so every
worker sees the same records. The first record of a key is its claim, created exclusively:
of two processes that start the same key at once, exactly one writes it and sends the create.
That relies on what the storage guarantees: a hard link on local disks (atomic, and refused
when the name exists) and a conditional write (`If-None-Match: *`) on S3. Other fsspec
backends get a check-then-write that is not exclusive, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field, ValidationError

from prefect_comet._files import filesystem_for, short_hash, uri_for, write_atomically
from prefect_comet._logging import run_logger
from prefect_comet.exceptions import LedgerDamagedError
from prefect_comet.models import StoredVideo, VideoStatus

LEDGER_FOLDER = ".comet-ledger"
# Notes of confirmed callbacks: a file per key of their own, so the receiver never rewrites
# a record the flow writes at the same time.
CALLBACK_FOLDER = "callbacks"
# How far along a status is: a note never goes back (callbacks arrive out of order).
_STATUS_RANK = {VideoStatus.RUNNING: 1, VideoStatus.SUCCEEDED: 2, VideoStatus.FAILED: 2}
LedgerState = Literal["creating", "unknown", "created", "stored", "failed", "abandoned"]
# A create answers within seconds and the client's own retries last about two minutes at
# most; a `creating` record unchanged for longer belongs to a run that died.
CLAIM_TIMEOUT_SECONDS = 300.0
# Backends whose exclusive create ("xb") is checked atomically by the store itself.
_EXCLUSIVE_PROTOCOLS = {"s3", "s3a", "memory"}
_warned_inexact: set[str] = set()


def request_fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of a request's canonical JSON: the same request always gives the same value."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class LedgerRecord(BaseModel):
    """What is known of the job created under one idempotency key.

    Args:
        key: The idempotency key.
        provider: The API family.
        request_sha256: Fingerprint of the request the key was first used for.
        state: `creating` (being sent, no task id yet), `unknown` (sent, no answer came),
            `created`, `stored`, `failed`, or `abandoned` (created, then its run was cancelled
            or crashed before storing it: the job may still render and bill; a run with the
            same key, or `prefect-comet resume KEY`, collects it without paying again).
        task_id: The server's task id, once known.
        flow_run_id: The flow run that created the job or last resumed it (None outside a run):
            when that run is cancelled or crashes, its unstored jobs are found by this.
        stored: The stored video, once persisted.
        error: Why the job failed.
        created_at: When the record was first written.
        updated_at: When the record last changed.
    """

    key: str
    provider: str
    request_sha256: str
    state: LedgerState
    task_id: str | None = None
    flow_run_id: str | None = None
    stored: StoredVideo | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class JobLedger:
    """Read and write ledger records under an fsspec folder.

    Args:
        uri: The ledger folder, e.g. `s3://bucket/videos/.comet-ledger`.
        claim_timeout_seconds: How long a `creating` record may stay unchanged before it
            counts as left behind by a run that died.

    Example:
        ```python
        ledger = JobLedger.beside("s3://bucket/videos")
        record = ledger.get("nightly-2026-11-24-0")
        ```
    """

    def __init__(self, uri: str, *, claim_timeout_seconds: float = CLAIM_TIMEOUT_SECONDS) -> None:
        self.uri = uri
        self.claim_timeout_seconds = claim_timeout_seconds
        self._fs, root = filesystem_for(uri)
        self._root = root.rstrip("/")

    @classmethod
    def beside(cls, destination: str) -> JobLedger:
        """The ledger kept in the destination folder of the videos."""
        return cls(f"{destination.rstrip('/')}/{LEDGER_FOLDER}")

    @classmethod
    def of(cls, destination: str, ledger_uri: str | None) -> JobLedger:
        """A flow's ledger: at `ledger_uri` when given, else beside the videos."""
        return cls(ledger_uri) if ledger_uri else cls.beside(destination)

    def _path(self, key: str) -> str:
        # Keys are user text: hash them into a fixed, safe file name (never change how: a
        # record must be found again by every later run).
        return f"{self._root}/{short_hash(key, 40)}.json"

    @property
    def location(self) -> str:
        """The ledger's folder as an absolute URI (a local path made absolute), the same from any directory."""
        return uri_for(self._fs, self._root)

    @property
    def exclusive(self) -> bool:
        """Whether a claim here is exclusive across processes and machines."""
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        return isinstance(self._fs, LocalFileSystem) or bool(_EXCLUSIVE_PROTOCOLS & set(protocols))

    def get(self, key: str) -> LedgerRecord | None:
        """The record for `key`, or None.

        Raises:
            LedgerDamagedError: The record's file is empty, truncated or not a record of `key`.
        """
        path = self._path(key)
        try:
            # One whole read: an object store answers it from one version of the record, even
            # while another run replaces it.
            data = self._fs.cat_file(path)
        except (FileNotFoundError, NotADirectoryError):  # no folder there, so no record either
            return None
        try:
            record = LedgerRecord.model_validate_json(data)
        except ValidationError as error:
            raise self._damaged(path, key, f"{len(data)} bytes that are not a ledger record") from error
        if record.key != key:
            raise self._damaged(path, key, f"it holds the record of another key, {record.key!r}")
        return record

    def records(self, *, skipped: list[str] | None = None) -> Iterator[LedgerRecord]:
        """Every readable record in the ledger's folder, in no particular order.

        A damaged file (empty, truncated, not a record, or the record of a key that is not
        its own) is skipped: its URI is appended to `skipped` when given, else it is logged
        as a warning. A ledger that was never written has no records.

        Args:
            skipped: Collects the URIs of the damaged files that were skipped.

        Example:
            ```python
            damaged: list[str] = []
            unfinished = [r for r in ledger.records(skipped=damaged) if r.state != "stored"]
            ```
        """
        try:
            names = self._fs.ls(self._root, detail=False)
        except FileNotFoundError:
            return
        # Only final record names: a `.partial-*` file is a write still under way.
        paths = sorted(name for name in names if name.endswith(".json"))
        # One call: object stores fetch the files concurrently.
        contents = self._fs.cat(paths, on_error="return") if paths else {}
        for path in paths:
            data = contents.get(path)
            if isinstance(data, FileNotFoundError):  # removed (forgotten) since it was listed
                continue
            try:
                if not isinstance(data, bytes):
                    raise ValueError(f"unreadable: {data!r}")
                record = LedgerRecord.model_validate_json(data)
                if self._path(record.key).rsplit("/", 1)[-1] != path.rsplit("/", 1)[-1]:
                    raise ValueError(f"it holds the record of key {record.key!r}, filed under another name")
            except (ValidationError, ValueError) as error:
                shown = uri_for(self._fs, path)
                if skipped is None:
                    run_logger("prefect_comet.ledger").warning(
                        "Skipped the damaged ledger record %s: %s", shown, str(error).splitlines()[0]
                    )
                else:
                    skipped.append(shown)
                continue
            yield record

    def claim(self, record: LedgerRecord) -> bool:
        """Write the first record of a key, unless one exists: True when this call wrote it.

        Exclusive where the storage guarantees it (see `exclusive`): of several processes
        claiming one key at once, exactly one gets True.

        Example:
            ```python
            if ledger.claim(LedgerRecord(key=key, provider="omni", request_sha256=fp, state="creating")):
                ...  # this process, and no other, sends the create
            ```
        """
        record = record.model_copy(update={"updated_at": datetime.now(UTC)})
        data = record.model_dump_json(indent=2).encode()
        path = self._path(record.key)
        self._fs.makedirs(self._root, exist_ok=True)
        try:
            if isinstance(self._fs, LocalFileSystem):
                _link_new(path, data)
            elif self.exclusive:
                with self._fs.open(path, "xb") as file:
                    file.write(data)
            else:
                self._warn_inexact()
                if self._fs.exists(path):
                    return False
                write_atomically(self._fs, path, data)
        except FileExistsError:
            return False
        return True

    def put(self, record: LedgerRecord) -> LedgerRecord:
        """Write a record atomically (temporary name, then move) and return it."""
        record = record.model_copy(update={"updated_at": datetime.now(UTC)})
        self._fs.makedirs(self._root, exist_ok=True)
        write_atomically(self._fs, self._path(record.key), record.model_dump_json(indent=2).encode())
        return record

    def record_outcome(self, key: str, *, stored: StoredVideo | None = None, error: str | None = None) -> None:
        """Mark the job for `key` as stored (with its video) or failed (with the reason).

        Example:
            ```python
            ledger.record_outcome("nightly-0", stored=stored)
            ```
        """
        try:
            record = self.get(key)
        except LedgerDamagedError as damaged:  # the video's sidecar still names the key
            run_logger("prefect_comet.ledger").warning("Could not record the outcome: %s", damaged)
            return
        if record is not None:
            state = "stored" if stored is not None else "failed"
            self.put(record.model_copy(update={"state": state, "stored": stored, "error": error}))

    def note_callback(self, key: str, task_id: str, status: VideoStatus | str) -> bool:
        """Note what a confirmed callback said of the key's job, beside its record (never in it).

        The note is a file of its own under `<ledger>/callbacks/`, written atomically; a later
        note of the same task never moves it back (a running one does not replace a finished one).

        Args:
            key: The job's idempotency key.
            task_id: The task id the API confirmed.
            status: The status the API confirmed.

        Returns:
            Whether the note was written.

        Example:
            ```python
            ledger.note_callback("kite-1", "task_8f2c", VideoStatus.SUCCEEDED)
            ```
        """
        status = VideoStatus(status)
        earlier = self.callback_note(key)
        if earlier is not None and earlier.get("task_id") == task_id and _rank(earlier.get("status")) > _rank(status):
            return False
        note = {"key": key, "task_id": task_id, "status": status.value, "noted_at": datetime.now(UTC).isoformat()}
        self._fs.makedirs(f"{self._root}/{CALLBACK_FOLDER}", exist_ok=True)
        write_atomically(self._fs, self._note_path(key), json.dumps(note, indent=2).encode())
        return True

    def callback_note(self, key: str) -> dict[str, str] | None:
        """The note of the last confirmed callback for `key` (`key`, `task_id`, `status`, `noted_at`), or None.

        Example:
            ```python
            note = ledger.callback_note("kite-1")  # {"status": "succeeded", ...}
            ```
        """
        try:
            note = json.loads(self._fs.cat_file(self._note_path(key)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError:  # a damaged note says nothing; the next callback rewrites it
            return None
        return note if isinstance(note, dict) and note.get("key") == key else None

    def _note_path(self, key: str) -> str:
        return f"{self._root}/{CALLBACK_FOLDER}/{short_hash(key, 40)}.json"

    def forget(self, key: str) -> None:
        """Drop a record whose create provably never reached the server (the key is free again)."""
        try:
            self._fs.rm(self._path(key))
        except FileNotFoundError:
            pass

    def _damaged(self, path: str, key: str, what: str) -> LedgerDamagedError:
        shown = uri_for(self._fs, path)
        return LedgerDamagedError(
            f"The ledger record {shown} of idempotency key {key!r} is damaged: {what}. Nothing was "
            "sent. What to do: if the video was stored, its sidecar (<task id>.json beside the "
            "videos) names the key and a run with destination set returns it; otherwise find the "
            "task in the CometAPI dashboard and resume it with wait_for_video, or delete the "
            "damaged file to create the job anew (this may pay twice).",
            path=shown,
            key=key,
        )

    def _warn_inexact(self) -> None:
        if self.uri not in _warned_inexact:
            _warned_inexact.add(self.uri)
            run_logger("prefect_comet.ledger").warning(
                "The ledger at %s is on storage whose exclusive create is not known to be atomic: "
                "two runs that start the same key at the same moment could both pay. Keep each key "
                "on one worker, or keep the ledger on a local disk or S3 (ledger_uri=...).",
                self.uri,
            )


def _rank(status: object) -> int:
    """How far along a status is (0 for queued, unknown or an unreadable word)."""
    try:
        return _STATUS_RANK.get(VideoStatus(status), 0)
    except ValueError:
        return 0


def _link_new(path: str, data: bytes) -> None:
    """Create `path` with `data`, atomically and only if it does not exist (local disks).

    The bytes go to a temporary file first, so no reader ever sees half a record; `link`
    then gives it the final name and fails when that name exists.
    """
    temporary = f"{path}.partial-{uuid.uuid4().hex[:12]}"
    with open(temporary, "wb") as file:
        file.write(data)
    try:
        os.link(temporary, path)
    finally:
        os.unlink(temporary)
