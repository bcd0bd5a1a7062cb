"""Crash-safe writes of private files (keys, keyrings, wrapped data keys) and file locks.

Every key file in HelixGate is written the same way: a private (0600) temporary file in the
same directory, flushed and fsynced, then renamed into place (``replace``) or hard-linked
(``first_writer_wins``: concurrent first starts agree on one key), and the directory fsynced.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, *, mode: int = 0o600, first_writer_wins: bool = False) -> bool:
    """Atomically write ``data`` to ``path``; returns False when ``first_writer_wins`` and it existed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if first_writer_wins:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return True


@contextmanager
def file_lock(path: Path, *, exclusive: bool = True) -> Iterator[None]:
    """An advisory ``flock`` on ``path`` (created 0600), shared or exclusive, across processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock
