"""The job ledger: a durable record of every job by idempotency key, so none is lost or repeated.

The ledger is a folder of small JSON files in fsspec storage, by default beside the videos
(`<destination>/.comet-ledger/`): in a multi-machine deployment the destination is shared
storage, so every worker sees the same records.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, Field

from prefect_comet._files import short_hash, write_atomically
from prefect_comet.models import StoredVideo

LEDGER_FOLDER = ".comet-ledger"
LedgerState = Literal["creating", "created", "stored", "failed"]


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
        state: `creating` (sent, no task id yet), `created`, `stored` or `failed`.
        task_id: The server's task id, once known.
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
    stored: StoredVideo | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class JobLedger:
    """Read and write ledger records under an fsspec folder.

    Args:
        uri: The ledger folder, e.g. `s3://bucket/videos/.comet-ledger`.

    Example:
        ```python
        ledger = JobLedger.beside("s3://bucket/videos")
        record = ledger.get("nightly-2026-11-24-0")
        ```
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._fs, root = fsspec.core.url_to_fs(uri)
        self._root = root.rstrip("/")

    @classmethod
    def beside(cls, destination: str) -> JobLedger:
        """The ledger kept in the destination folder of the videos."""
        return cls(f"{destination.rstrip('/')}/{LEDGER_FOLDER}")

    def _path(self, key: str) -> str:
        # Keys are user text: hash them into a fixed, safe file name (never change how: a
        # record must be found again by every later run).
        return f"{self._root}/{short_hash(key, 40)}.json"

    def get(self, key: str) -> LedgerRecord | None:
        """The record for `key`, or None."""
        path = self._path(key)
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, "rb") as file:
            return LedgerRecord.model_validate_json(file.read())

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
        record = self.get(key)
        if record is not None:
            state = "stored" if stored is not None else "failed"
            self.put(record.model_copy(update={"state": state, "stored": stored, "error": error}))

    def forget(self, key: str) -> None:
        """Drop a record whose create provably never reached the server."""
        path = self._path(key)
        if self._fs.exists(path):
            self._fs.rm(path)
