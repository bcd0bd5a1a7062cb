"""DirectAppender: page-cache-bypassing appends with an ordinary-write fallback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from helixgate.fsutil import DirectAppender


def _append_all(path: Path, pieces: list[bytes], capacity: int) -> bool:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    out = DirectAppender(fd, capacity)
    try:
        for piece in pieces:
            view = out.reserve(len(piece))
            view[:] = piece
            out.commit(len(piece))
            if len(piece) % 3 == 0:
                out.flush()  # flushes at unaligned points carry the remainder forward
        out.finish()
        return out.direct
    finally:
        out.close()
        os.close(fd)


@pytest.mark.parametrize("sizes", [[16, 4096 * 3 + 5, 1, 70_000], [0], [4096, 4096], [12_345] * 20])
def test_bytes_land_in_order_whatever_the_alignment(tmp_path: Path, sizes: list[int]) -> None:
    pieces = [os.urandom(n) for n in sizes]
    target = tmp_path / "blob"
    _append_all(target, pieces, capacity=sum(sizes) + 1)
    assert target.read_bytes() == b"".join(pieces)


def test_uses_o_direct_where_the_filesystem_supports_it(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        out = DirectAppender(fd, 8192)
        supported = out.direct
        out.close()
    finally:
        os.close(fd)
    if not supported:  # e.g. a tmpfs /tmp: the fallback is what must work there
        assert _append_all(tmp_path / "b", [b"x" * 5000], 8192) is False
        return
    assert _append_all(tmp_path / "a", [b"x" * 8192], 16_384) is True  # whole blocks: direct to the end
    # an unaligned tail goes through the page cache (the whole blocks before it went direct)
    assert _append_all(tmp_path / "b", [b"y" * 10_000], 16_384) is False
    assert (tmp_path / "b").read_bytes() == b"y" * 10_000


def test_fallback_when_the_filesystem_refuses_o_direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    real = fcntl.fcntl

    def no_direct(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", no_direct)
    data = os.urandom(100_000)
    assert _append_all(tmp_path / "blob", [data], 200_000) is False
    assert (tmp_path / "blob").read_bytes() == data


def test_reserving_past_the_staging_buffer_is_refused(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "blob", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    out = DirectAppender(fd, 4096)
    try:
        with pytest.raises(ValueError, match="staging buffer full"):
            out.reserve(3 * 4096)
    finally:
        out.close()
        os.close(fd)


def test_a_failed_background_write_is_raised_by_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)  # every write fails (EBADF), in the writer thread
    out = DirectAppender(fd, 16_384)
    try:
        out.append(b"z" * 8192)
        out.flush()  # only starts the write
        with pytest.raises(OSError) as info:
            out.finish()
        assert info.value.errno == errno.EBADF
    finally:
        out.close()
        os.close(fd)
    assert path.read_bytes() == b""
