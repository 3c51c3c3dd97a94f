"""A download's temporary file: one per live writer, and a dead writer's leftover is resumed.

On local disk each temporary file carries an exclusive `flock` while its writer lives; a
leftover whose lock is free belongs to a killed process, and its bytes are continued with a
`Range` request instead of downloading them again.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from prefect_comet.steps.downloading import Prefix, read_prefix

try:
    import fcntl
except ImportError:  # Windows: no flock, so leftovers are never adopted (each run starts fresh)
    fcntl = None


@dataclass
class PartialFile:
    """The temporary file one writer owns until it becomes the final file.

    On local disk `lock` is a descriptor holding an exclusive `flock` on it: a leftover whose
    lock is free belongs to a dead process and may be adopted; a held one is a live writer's.
    """

    path: str
    lock: int | None = None
    prefix: Prefix | None = None


def claim_partial(fs: fsspec.AbstractFileSystem, root: str, name: str) -> PartialFile:
    """A temporary file for `name` that no live writer uses: a dead run's leftover, or a new one.

    Of the leftovers whose lock is free the largest is adopted (resumed) and the others removed.
    """
    if not isinstance(fs, LocalFileSystem) or fcntl is None:
        # On object stores a killed upload leaves no partial object (a multipart upload only
        # commits at close), so there is nothing to resume: always start a fresh file.
        return PartialFile(_fresh_partial_path(root, name))
    adopted: PartialFile | None = None
    for path in _leftovers(root, name):
        lock = _lock_if_dead(path)
        if lock is None:
            continue
        if adopted is None:
            adopted = PartialFile(path, lock)
        else:
            _remove_locked(path, lock)
    if adopted is None:
        return _new_locked_partial(root, name)
    try:
        with open(adopted.path, "rb") as file:
            adopted.prefix = read_prefix(file, lambda: fs.open(adopted.path, "ab"))
    except BaseException:
        os.close(adopted.lock)
        raise
    return adopted


def _fresh_partial_path(root: str, name: str) -> str:
    return f"{root}/.{name}.partial-{uuid.uuid4().hex[:12]}"


def _leftovers(root: str, name: str) -> list[str]:
    """Temporary files of `name` already in `root`, largest first."""
    found = glob.glob(f"{glob.escape(root)}/.{glob.escape(name)}.partial-*")
    return sorted(found, key=_size_or_zero, reverse=True)


def _size_or_zero(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _lock_if_dead(path: str) -> int | None:
    """A descriptor holding `path`'s lock when no live process holds it, else None."""
    try:
        lock = os.open(path, os.O_RDWR)
    except OSError:
        return None  # gone meanwhile (moved into place or removed by its writer)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The lock is on the file, not the name: make sure the name still leads to it.
        if os.fstat(lock).st_ino == os.stat(path).st_ino:
            return lock
    except OSError:
        pass
    os.close(lock)
    return None


def _new_locked_partial(root: str, name: str) -> PartialFile:
    while True:
        path = _fresh_partial_path(root, name)
        lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return PartialFile(path, lock)
        except BlockingIOError:
            os.close(lock)  # another run adopted it before we locked it: it is theirs now


def _remove_locked(path: str, lock: int) -> None:
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        os.close(lock)


def let_go(fs: fsspec.AbstractFileSystem, partial: PartialFile) -> None:
    """Remove the temporary file if it was not moved into place, then release its lock."""
    if partial.lock is not None:
        with contextlib.suppress(OSError):
            _remove_locked(partial.path, partial.lock)
        return
    # Best effort: the error that got us here says more than a failed clean-up would.
    with contextlib.suppress(OSError):
        if fs.exists(partial.path):
            fs.rm(partial.path)
