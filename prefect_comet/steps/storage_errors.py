"""What a failed write to storage means and what to do, and `ensure_writable`, checked before paying."""

from __future__ import annotations

import contextlib
import errno
import uuid

from prefect_comet._files import filesystem_for, redact_url
from prefect_comet.exceptions import StorageError

# OS errors that mean "this destination cannot take the file", with what they mean and the cure.
_NO_SPACE = ("there is no space left", "free space there")
_NO_ACCESS = ("writing there is not allowed", "fix the permissions (or choose another destination)")
_NOT_A_FOLDER = ("a part of the path is a file, not a folder", "fix the destination path")
_STORAGE_ERRNOS = {
    errno.ENOSPC: _NO_SPACE,
    errno.EDQUOT: _NO_SPACE,
    errno.EFBIG: _NO_SPACE,
    errno.EACCES: _NO_ACCESS,
    errno.EPERM: _NO_ACCESS,
    errno.EROFS: ("the storage is read-only", "make it writable (or choose another destination)"),
    errno.ENOTDIR: _NOT_A_FOLDER,
    errno.EEXIST: _NOT_A_FOLDER,
    errno.EISDIR: ("a folder is in the way of the file", "move that folder away"),
    errno.ENOENT: ("a folder on the path does not exist", "create it (for S3: the bucket)"),
}
# Object stores (s3fs) raise these classes with a message but no errno.
_STORAGE_CLASSES = {
    PermissionError: errno.EACCES,
    FileNotFoundError: errno.ENOENT,
    NotADirectoryError: errno.ENOTDIR,
    FileExistsError: errno.EEXIST,
    IsADirectoryError: errno.EISDIR,
}


def ensure_writable(destination: str) -> None:
    """Check that videos can be written under `destination`, before anything is paid for.

    Creates the folder when needed, then writes and removes a tiny probe file.

    Args:
        destination: An fsspec URL or local folder.

    Raises:
        StorageError: The folder cannot be made or written to; the message says what to do.

    Example:
        ```python
        ensure_writable("s3://my-bucket/videos")  # raises StorageError before a paid create
        ```
    """
    try:
        fs, root = filesystem_for(destination)
        root = root.rstrip("/")
        fs.makedirs(root, exist_ok=True)
        probe = f"{root}/.comet-probe-{uuid.uuid4().hex}"
        try:
            with fs.open(probe, "wb") as file:
                file.write(b"ok")
        finally:
            with contextlib.suppress(OSError):
                if fs.exists(probe):
                    fs.rm(probe)
    except OSError as error:
        problem = unusable_destination(error, destination)
        if problem is None:
            raise
        raise problem from error


def unusable_destination(error: OSError, where: str) -> StorageError | None:
    """The one-line StorageError an OS error met at `where` stands for, before anything is paid, or None.

    Example:
        ```python
        unusable_destination(NotADirectoryError(20, "Not a directory"), "notes.txt/videos")
        ```
    """
    meaning = _meaning(error)
    if meaning is None:
        return None
    what, cure = meaning
    return StorageError(
        f"Cannot write to {_one_line(redact_url(where))}: {what}. "
        f"What to do: {cure}, then run again (this check comes before any paid create)."
    )


def storage_error(error: OSError, where: str, task_id: str) -> StorageError | None:
    """The one-line StorageError an OS error stands for while storing a paid job, or None."""
    meaning = _meaning(error)
    if meaning is None:
        return None
    what, cure = meaning
    return StorageError(
        f"Cannot store the video at {_one_line(redact_url(where))}: {what}. What to do: {cure}, then run again "
        "with the same idempotency key (or persist_video with this job): nothing is paid again.",
        task_id=task_id,
    )


def _meaning(error: OSError) -> tuple[str, str] | None:
    """What a storage OS error means (with its errno name) and its cure, or None for other errors."""
    number = error.errno
    if number not in _STORAGE_ERRNOS:
        number = next((n for cls, n in _STORAGE_CLASSES.items() if isinstance(error, cls)), None)
    if number is None:
        return None
    what, cure = _STORAGE_ERRNOS[number]
    return f"{what} ({errno.errorcode[number]})", cure


def _one_line(location: str) -> str:
    """A location as it is shown in a one-line message: line breaks in a name are escaped."""
    return location.replace("\r", "\\r").replace("\n", "\\n")
