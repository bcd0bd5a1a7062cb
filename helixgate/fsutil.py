"""Crash-safe writes of private files (keys, keyrings, wrapped data keys) and file locks.

Every key file in HelixGate is written the same way: a private (0600) temporary file in the
same directory, flushed and fsynced, then renamed into place (``replace``) or hard-linked
(``first_writer_wins``: concurrent first starts agree on one key), and the directory fsynced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
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


class DirectAppender:
    """Appends to a new file, bypassing the page cache (``O_DIRECT``) where the filesystem allows.

    Large objects written once and read rarely should not evict hot data, and on virtual
    machines fresh page-cache pages cost more than the device write itself (measured in
    docs/benchmarks.md: a 1 GiB buffered write + fsync took 2.2-3.1 s, the same through
    O_DIRECT 0.6-0.7 s). Callers fill the page-aligned staging buffer in place
    (``reserve`` + ``commit``), ``flush`` writes out the whole aligned blocks, and ``finish``
    writes the tail and fsyncs. Filesystems without O_DIRECT (tmpfs, some network mounts) get
    ordinary writes; nothing else changes.
    """

    ALIGN = 4096

    def __init__(self, fd: int, capacity: int) -> None:
        self._fd = fd
        self._buffer = mmap.mmap(-1, capacity + self.ALIGN)  # anonymous maps are page-aligned
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._direct = self._set_direct(True)

    @property
    def direct(self) -> bool:
        return self._direct

    def reserve(self, size: int) -> memoryview:
        """A writable view of the next ``size`` bytes of the staging buffer."""
        if self._filled + size > len(self._buffer):
            raise ValueError(f"staging buffer full: {self._filled} + {size} > {len(self._buffer)} bytes")
        return self._view[self._filled : self._filled + size]

    def commit(self, size: int) -> None:
        self._filled += size

    def append(self, data: bytes) -> None:
        self.reserve(len(data))[:] = data
        self.commit(len(data))

    def flush(self) -> None:
        """Write every whole aligned block; the remainder moves to the front of the buffer."""
        whole = self._filled - self._filled % self.ALIGN if self._direct else self._filled
        if whole:
            self._write(whole)
            rest = self._filled - whole
            self._view[:rest] = self._view[whole : self._filled]
            self._filled = rest

    def finish(self) -> None:
        """Write what is left (the unaligned tail through the page cache) and fsync."""
        self.flush()
        if self._filled:
            self._buffered()
            self._write(self._filled)
            self._filled = 0
        os.fsync(self._fd)

    def close(self) -> None:
        """Free the staging buffer (the caller owns and closes the file descriptor)."""
        self._view.release()
        with contextlib.suppress(BufferError):  # a view still referenced (by a traceback): freed by GC
            self._buffer.close()

    def _write(self, size: int) -> None:
        done = 0
        while done < size:
            try:
                done += os.write(self._fd, self._view[done:size])
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                self._buffered()  # accepted by fcntl, refused at write
            if self._direct and done % self.ALIGN:
                self._buffered()  # a short write broke the alignment

    def _buffered(self) -> None:
        if self._direct:
            self._set_direct(False)
            self._direct = False

    def _set_direct(self, on: bool) -> bool:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return False
        return on
