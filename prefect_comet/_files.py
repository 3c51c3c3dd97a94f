"""File and URL helpers, one of each: atomic writes, SHA-256, URIs, safe names, URL redaction.

Every storage URL becomes a filesystem through `filesystem_for` (or `open_url`), so a missing
storage package (s3fs, gcsfs, adlfs) is reported with the extra that installs it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

# Reads and hashes go in steps of this size, so memory stays flat for any file.
CHUNK_BYTES = 1 << 20
# fsspec protocols served by an optional package: (the package, the prefect-comet extra with it).
STORAGE_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}


def filesystem_for(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of a storage URL or local path (`fsspec.core.url_to_fs`).

    Raises:
        ImportError: The package the URL's protocol needs is not installed; the message is one
            line naming the extra that installs it, e.g. `pip install "prefect-comet[s3]"`.

    Example:
        ```python
        fs, path = filesystem_for("s3://my-bucket/videos")
        ```
    """
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as error:
        needed = next(
            (STORAGE_EXTRAS[protocol] for protocol in _protocols(url) if protocol in STORAGE_EXTRAS), None
        )
        if needed is None:
            raise
        package, extra = needed
        raise ImportError(
            f"Cannot open {redact_url(url)}: {package} is not installed. What to do: "
            f'pip install "prefect-comet[{extra}]" (or pip install {package}), then run again.',
            name=package,
        ) from error


def open_url(url: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open a file at a storage URL or local path (like `fsspec.open(url, mode).open()`).

    Raises:
        ImportError: As `filesystem_for`: a missing storage package, named with its extra.

    Example:
        ```python
        with open_url("s3://my-bucket/prompts.jsonl", "rt", encoding="utf-8") as file:
            first = file.readline()
        ```
    """
    fs, path = filesystem_for(url)
    return fs.open(path, mode, **kwargs)


def _protocols(url: str) -> list[str]:
    """Every protocol of a (possibly chained, `simplecache::s3://...`) URL, lower-cased."""
    found = []
    for part in url.split("::"):
        protocol, _ = fsspec.core.split_protocol(part)
        if protocol:
            found.append(protocol.lower())
    return found


def write_atomically(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` under a temporary name beside `path`, then move it into place.

    A reader never sees half of the file.
    """
    partial = f"{path}.partial-{uuid.uuid4().hex[:12]}"
    with fs.open(partial, "wb") as file:
        file.write(data)
    fs.mv(partial, path)


def sha256_of(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Hex SHA-256 of a stored file, read in chunks."""
    hasher = hashlib.sha256()
    with fs.open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def uri_for(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI users see: a plain path on local disk, a full URL elsewhere."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def short_hash(text: str, chars: int = 8) -> str:
    """The first `chars` hex digits of the SHA-256 of `text`: a stable, safe stand-in."""
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def safe_name(
    text: str,
    *,
    unsafe: re.Pattern[str],
    joiner: str,
    max_chars: int,
    lowercase: bool = False,
    kept_as_is: re.Pattern[str] | None = None,
) -> str:
    """Make server text safe as a name (a path segment, an artifact key).

    Runs of `unsafe` characters become `joiner`. A name that lost anything on the way gets a
    short hash of the original, so two different texts never share a name.

    Args:
        text: The text, e.g. a task id.
        unsafe: What may not appear in the name.
        joiner: What a run of unsafe characters becomes.
        max_chars: The longest name kept without a hash.
        lowercase: Lower-case the name first.
        kept_as_is: Texts that count as unchanged even when cleaning altered them.

    Returns:
        The name, e.g. `x-3c2bb9c2` for `../../x`.

    Example:
        ```python
        safe_name("../../x", unsafe=re.compile(r"[^A-Za-z0-9._-]+"), joiner="_", max_chars=100)
        ```
    """
    cleaned = unsafe.sub(joiner, text.lower() if lowercase else text)
    cleaned = cleaned.strip("._-")[:max_chars].rstrip("._-")
    unchanged = cleaned == text or (
        kept_as_is is not None and kept_as_is.fullmatch(text) is not None and len(text) <= max_chars
    )
    if cleaned and unchanged:
        return cleaned
    return f"{cleaned}-{short_hash(text)}" if cleaned else f"task-{short_hash(text)}"


def redact_url(url: object) -> str:
    """Drop query string, fragment and user info: signed URLs carry secrets there.

    Works for URLs, fsspec URIs and local paths alike.

    Example:
        ```python
        redact_url("https://user:pw@cdn.example/v.mp4?signature=abc")  # "https://cdn.example/v.mp4"
        ```
    """
    text = str(url)
    parts = urlsplit(text)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive)
        return text.split("?", 1)[0].split("#", 1)[0]
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
