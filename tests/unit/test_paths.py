"""The one path rule and the writes/reads that never follow a link (helixgate.paths)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helixgate.errors import BadRequest, IntegrityError
from helixgate.paths import PathEscape, check_relative_path, open_regular_nofollow, write_inside


@pytest.mark.parametrize(
    "path, message",
    [
        ("../x.cwl", "leaves its directory"),
        ("a/../../x.cwl", "leaves its directory"),
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\x1bb", "control characters"),
        ("a//b", "empty or '.' segment"),
        ("./b", "empty or '.' segment"),
        ("", "non-empty"),
    ],
)
def test_the_rule_refuses(path: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_relative_path(path)


def test_the_rule_accepts_nested_relative_paths() -> None:
    assert check_relative_path("tools/sort v2.cwl") == "tools/sort v2.cwl"


def test_write_inside_creates_nested_files(tmp_path: Path) -> None:
    dest = write_inside(tmp_path, "a/b/c.cwl", b"x")
    assert dest.read_bytes() == b"x" and dest == tmp_path / "a/b/c.cwl"


def test_write_inside_refuses_traversal_as_an_escape(tmp_path: Path) -> None:
    with pytest.raises(PathEscape, match="escapes"):
        write_inside(tmp_path / "run", "../outside.cwl", b"x")
    assert not (tmp_path / "outside.cwl").exists()


def test_write_inside_never_follows_a_planted_directory_symlink(tmp_path: Path) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "lib").symlink_to(outside)
    with pytest.raises(PathEscape, match="not a plain directory"):
        write_inside(run, "lib/x.cwl", b"x")
    assert list(outside.iterdir()) == []


def test_write_inside_never_follows_a_planted_file_symlink(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    (run / "x.cwl").symlink_to(target)
    with pytest.raises(PathEscape, match="already exists"):
        write_inside(run, "x.cwl", b"evil")
    assert target.read_bytes() == b"keep"


def test_open_regular_nofollow_refuses_symlinks_and_hard_links(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"data")
    fd = open_regular_nofollow(str(real), "real")
    os.close(fd)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(IntegrityError, match="symbolic link"):
        open_regular_nofollow(str(tmp_path / "link"), "link")
    os.link(real, tmp_path / "hard")
    with pytest.raises(IntegrityError, match="hard link"):
        open_regular_nofollow(str(tmp_path / "hard"), "hard")
    (tmp_path / "d").symlink_to(tmp_path)
    with pytest.raises(IntegrityError, match="under a symbolic link"):
        open_regular_nofollow(str(tmp_path / "d" / "real"), "via dir")
