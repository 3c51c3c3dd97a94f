"""Read a batch of requests from a list, or a JSONL/CSV file at any fsspec URL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from prefect_comet._files import CHUNK_BYTES, filesystem_for, open_url, short_hash, uri_for
from prefect_comet.api.families import VideoRequest

_REQUEST = TypeAdapter(VideoRequest)
# Optional per-line column naming the job's idempotency key; not a request field.
KEY_FIELD = "idempotency_key"


class BatchItem(BaseModel):
    """One request of a batch with the key it was given, if any."""

    request: VideoRequest
    idempotency_key: str | None = None


def load_batch(source: Sequence[Any] | str) -> list[BatchItem]:
    """Validate every request of a batch before any of them is sent.

    Args:
        source: A list of requests (models or dicts), or the URL of a `.jsonl` or `.csv`
            file (one request per line/row; an `idempotency_key` column is optional; empty
            CSV cells are left out).

    Returns:
        The validated items, in order.

    Raises:
        ValueError: Naming the line (or list index), the field and the rule of every
            invalid request.

    Example:
        ```python
        items = load_batch("s3://bucket/prompts/2026-11-24.jsonl")
        ```
    """
    rows = _read_rows(source) if isinstance(source, str) else [(i, row) for i, row in enumerate(source)]
    items, problems = [], []
    for where, row in rows:
        key = None
        if isinstance(row, dict) and KEY_FIELD in row:
            row = dict(row)
            key = row.pop(KEY_FIELD) or None
        try:
            items.append(BatchItem(request=_REQUEST.validate_python(row), idempotency_key=key))
        except ValidationError as error:
            problems.append(f"{where}: {error}")
    if problems:
        raise ValueError(f"{len(problems)} invalid request(s) in the batch:\n" + "\n".join(problems))
    return items


def file_batch_key(url: str) -> str:
    """A batch key from a request file's location and content.

    Running the same file again gives the same key (its jobs resume, nothing is paid again);
    a changed file, or another file, gives a new key (a new batch).

    Args:
        url: The JSONL or CSV file, at any fsspec URL or local path.

    Returns:
        A key like `file-3f2a9c1d0b7e4a56`.

    Example:
        ```python
        file_batch_key("s3://bucket/prompts/2026-11-24.jsonl")
        ```
    """
    fs, path = filesystem_for(url)
    content = hashlib.sha256()
    with fs.open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            content.update(chunk)
    return f"file-{short_hash(f'{uri_for(fs, path)}|{content.hexdigest()}', 16)}"


def _read_rows(url: str) -> list[tuple[str, Any]]:
    with open_url(url, "rt", encoding="utf-8") as file:
        text = file.read()
    if url.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        return [
            (f"{url} row {number}", {k: v for k, v in row.items() if v not in ("", None)})
            for number, row in enumerate(reader, start=2)
        ]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                rows.append((f"{url} line {number}", json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{url} line {number}: not valid JSON ({error.msg})") from None
    return rows
