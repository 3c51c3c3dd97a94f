"""Write small files so that a reader never sees half of one."""

from __future__ import annotations

import uuid

import fsspec


def write_atomically(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` under a temporary name beside `path`, then move it into place."""
    partial = f"{path}.partial-{uuid.uuid4().hex[:12]}"
    with fs.open(partial, "wb") as file:
        file.write(data)
    fs.mv(partial, path)
