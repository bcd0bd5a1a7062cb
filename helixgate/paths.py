"""The one rule for file paths that come from outside (tool versions, run attachments), and
writes/reads inside a directory that never follow a symbolic link.

The same rule applies at publish (TRS), at submission (WES) and when the worker materializes
files in a run directory: relative, '/'-separated, no ``..``, no empty or ``.`` segment, not
absolute, no backslash, no control characters. Materialization then creates each file with
``openat``-style calls (a directory file descriptor per segment, ``O_NOFOLLOW`` everywhere), so
a symbolic link planted in the run directory cannot redirect a write outside it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from helixgate.errors import BadRequest, IntegrityError

MAX_PATH_LENGTH = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def check_relative_path(path: object, what: str = "file path") -> str:
    """Return ``path`` when it obeys the rule; raise BadRequest naming what is wrong otherwise."""
    if not isinstance(path, str) or not path:
        raise BadRequest(f"{what} must be a non-empty string")
    shown = path[:120]
    if len(path) > MAX_PATH_LENGTH:
        raise BadRequest(f"{what} {shown!r}... is longer than {MAX_PATH_LENGTH} characters")
    if "\x00" in path:
        raise BadRequest(f"{what} {shown!r} contains a NUL byte")
    if "\\" in path:
        raise BadRequest(f"{what} {shown!r} contains a backslash: use '/' as the separator")
    if _CONTROL.search(path):
        raise BadRequest(f"{what} {shown!r} contains control characters")
    if path.startswith("/") or _DRIVE.match(path):
        raise BadRequest(f"{what} {shown!r} is absolute: paths must be relative")
    parts = path.split("/")
    if any(p == ".." for p in parts):
        raise BadRequest(f"{what} {shown!r} leaves its directory ('..' is not allowed)")
    if any(p in ("", ".") for p in parts):
        raise BadRequest(f"{what} {shown!r} has an empty or '.' segment: write it in canonical form")
    return path


class PathEscape(IntegrityError):
    """A path that would leave its directory (traversal, absolute path or a planted symlink):
    a security event, never a plain bad request, when it is found at materialization."""


def _escape(root: Path, rel: str, reason: str) -> PathEscape:
    return PathEscape(
        f"path {rel[:200]!r} escapes {root}: {reason}",
        subject=rel[:200],
        expected=f"a regular file inside {root}",
        actual=reason,
    )


def write_inside(root: Path, rel: str, data: bytes, *, mode: int = 0o600) -> Path:
    """Create ``root/rel`` holding ``data``; never follows a symlink, never leaves ``root``.

    ``rel`` is re-checked with the path rule (a violation here is a ``PathEscape``); every
    parent is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to the previous one and the
    file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so neither a symlinked directory
    nor a pre-existing file or link at the destination can redirect the write.
    """
    try:
        check_relative_path(rel)
    except BadRequest as exc:
        raise _escape(root, rel, exc.message) from None
    parts = rel.split("/")
    fds = [os.open(root, _DIR_FLAGS)]
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o700, dir_fd=fds[-1])
            except FileExistsError:
                pass
            try:
                fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
            except OSError as exc:  # ELOOP / ENOTDIR: a symlink or a file where a directory belongs
                raise _escape(root, rel, f"segment {part!r} is not a plain directory ({exc.strerror})") from None
        try:
            fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=fds[-1])
        except FileExistsError:
            raise _escape(root, rel, "something already exists at the destination") from None
        except OSError as exc:
            raise _escape(root, rel, f"cannot create the file ({exc.strerror})") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    finally:
        for d in reversed(fds):
            os.close(d)
    return root / rel


def open_regular_nofollow(path: str, what: str) -> int:
    """Open ``path`` for reading only if it is a regular file with a single link and the last
    component is not a symlink. Returns the file descriptor; raises IntegrityError otherwise.

    A symlink or a hard link cannot be told apart from the file the producing task wrote,
    except by these checks: both are refused, the caller never reads through them.
    """
    if os.path.realpath(path) != os.path.abspath(path):
        raise IntegrityError(
            f"{what} lies under a symbolic link: refusing to read through it",
            subject=what,
            expected=os.path.abspath(path),
            actual=os.path.realpath(path),
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        st = None
        try:
            st = os.lstat(path)
        except OSError:
            pass
        reason = "a symbolic link" if st is not None and stat.S_ISLNK(st.st_mode) else exc.strerror
        raise IntegrityError(
            f"{what} is {reason}: refusing to read through it",
            subject=what,
            expected="a regular file written by its producer",
            actual=str(reason),
        ) from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "not a regular file"
    elif st.st_nlink != 1:
        problem = f"a hard link ({st.st_nlink} names share its bytes)"
    if problem is not None:
        os.close(fd)
        raise IntegrityError(
            f"{what} is {problem}: refusing to read through it",
            subject=what,
            expected="a regular file with one link",
            actual=problem,
        )
    return fd
