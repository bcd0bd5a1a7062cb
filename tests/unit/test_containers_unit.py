"""Pure logic of the task-container runner and the offline image builder (no engine needed)."""

from __future__ import annotations

import io
import socket
import struct
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helixgate.errors import BadRequest, Forbidden, UpstreamError
from helixgate.images import _digest_from_push_stream, busybox_rootfs_tar
from wes_server.containers import (
    CappedSink,
    FrameDemuxer,
    LocalImage,
    PinnedRef,
    TaskContainerSpec,
    _pump,
    check_spec,
    parse_engine_time,
    parse_pinned_ref,
    refuse_docker_socket,
)

HEX = "ab" * 32
IMAGE_ID = f"sha256:{HEX}"


def make_spec(tmp_path: Path, **overrides: Any) -> TaskContainerSpec:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    fields: dict[str, Any] = {
        "run_id": "run-1",
        "task_id": "main/step_1",
        "image_id": IMAGE_ID,
        "command": ["true"],
        "output_dir": str(out),
        "stdout_path": str(tmp_path / "stdout"),
        "stderr_path": str(tmp_path / "stderr"),
    }
    fields.update(overrides)
    return TaskContainerSpec(**fields)


# -- pinned references --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (IMAGE_ID, PinnedRef(None, IMAGE_ID)),
        (f"127.0.0.1:5000/tools/bwa@{IMAGE_ID}", PinnedRef("127.0.0.1:5000/tools/bwa", IMAGE_ID)),
        (
            f"quay.io/biocontainers/samtools:1.19--h50ea8bc_0@{IMAGE_ID}",
            PinnedRef("quay.io/biocontainers/samtools", IMAGE_ID),
        ),
        (f"busybox@{IMAGE_ID}", PinnedRef("busybox", IMAGE_ID)),
        (f"localhost:5000/a/b-c_d@{IMAGE_ID}", PinnedRef("localhost:5000/a/b-c_d", IMAGE_ID)),
    ],
)
def test_pinned_refs_parse(ref: str, expected: PinnedRef) -> None:
    assert parse_pinned_ref(ref) == expected
    assert str(expected) == (f"{expected.repository}@{IMAGE_ID}" if expected.repository else IMAGE_ID)


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "busybox:latest",
        "127.0.0.1:5000/tools/bwa:1.0",
        f"sha256:{HEX[:-1]}",
        f"busybox@sha256:{HEX.upper()}",
        f"busybox@sha512:{HEX}{HEX}",
        f"Busybox@{IMAGE_ID}",
        f"busybox@{IMAGE_ID} ",
        "",
    ],
)
def test_unpinned_refs_are_refused(ref: str) -> None:
    with pytest.raises(BadRequest):
        parse_pinned_ref(ref)


# -- spec validation ----------------------------------------------------------------------------


def test_a_valid_spec_gives_the_task_uid(tmp_path: Path) -> None:
    assert check_spec(make_spec(tmp_path)) == (65534, 65534)
    assert check_spec(make_spec(tmp_path, user="1000:2000")) == (1000, 2000)


@pytest.mark.parametrize(
    "overrides",
    [
        {"image_id": "busybox:latest"},
        {"image_id": f"127.0.0.1:5000/x@{IMAGE_ID}"},
        {"image_id": HEX},
        {"command": []},
        {"command": "echo hi"},
        {"command": ["echo", "a\0b"]},
        {"run_id": ""},
        {"run_id": "run 1"},
        {"task_id": "../x\n"},
        {"workdir": "work"},
        {"workdir": "/"},
        {"workdir": "/work/../etc"},
        {"workdir": "/proc/self"},
        {"workdir": "/tmp"},
        {"env": {"BAD-NAME": "x"}},
        {"env": {"A": "x\0y"}},
        {"user": "nobody"},
        {"user": "65534"},
        {"cpus": 0.0},
        {"cpus": float("nan")},
        {"memory_bytes": 1024},
        {"pids_limit": 0},
        {"time_limit": 0},
        {"time_limit": float("inf")},
        {"log_cap_bytes": -1},
        {"tmpfs_bytes": 10},
        {"output_dir": "relative/out"},
        {"output_dir": "/nonexistent/helixgate/out"},
        {"stdout_path": "/nonexistent/helixgate/stdout"},
    ],
)
def test_invalid_specs_are_refused(tmp_path: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        check_spec(make_spec(tmp_path, **overrides))


def test_same_file_for_stdout_and_stderr_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        check_spec(make_spec(tmp_path, stderr_path=str(tmp_path / "stdout")))


@pytest.mark.parametrize("user", ["0:0", "0:65534", "65534:0"])
def test_root_is_refused(tmp_path: Path, user: str) -> None:
    with pytest.raises(Forbidden):
        check_spec(make_spec(tmp_path, user=user))


def test_input_mount_rules(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert check_spec(make_spec(tmp_path, inputs=[(str(data), "/inputs/data")]))
    for target in ("/work", "/tmp", "/proc/x", "/etc", "inputs", "/inputs/../etc", "/"):
        with pytest.raises(BadRequest):
            check_spec(make_spec(tmp_path, inputs=[(str(data), target)]))
    with pytest.raises(BadRequest):
        check_spec(make_spec(tmp_path, inputs=[(str(data), "/a"), (str(data), "/a")]))
    with pytest.raises(BadRequest):
        check_spec(make_spec(tmp_path, inputs=[(str(tmp_path / "missing"), "/a")]))


def test_env_values_never_appear_in_the_repr(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, env={"API_TOKEN": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(spec)


# -- the Docker socket ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/var/run/docker.sock", "/run/docker.sock", "/run", "/var/run", "/var", "/", "/run/"])
def test_docker_socket_and_its_parents_are_refused(path: str) -> None:
    with pytest.raises(Forbidden):
        refuse_docker_socket(path)


def test_docker_host_socket_any_socket_and_symlinks_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = tmp_path / "engine" / "d.sock"
    sock_path.parent.mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        with pytest.raises(Forbidden):
            refuse_docker_socket(str(sock_path))
        link = tmp_path / "innocent"
        link.symlink_to(sock_path.parent)
        monkeypatch.setenv("DOCKER_HOST", f"unix://{sock_path}")
        with pytest.raises(Forbidden):
            refuse_docker_socket(str(link))
        with pytest.raises(Forbidden):
            check_spec(make_spec(tmp_path, inputs=[(str(link), "/mnt/in")]))
    finally:
        server.close()
    refuse_docker_socket(str(tmp_path / "out-of-the-way"))  # unrelated paths pass


# -- output capture --------------------------------------------------------------------------------


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_capped_sink_truncates_and_counts() -> None:
    buf = io.BytesIO()
    sink = CappedSink(buf, 5)
    sink.write(b"abc")
    assert not sink.truncated
    sink.write(memoryview(b"defgh"))
    sink.write(b"ij")
    assert buf.getvalue() == b"abcde"
    assert (sink.written, sink.seen, sink.truncated) == (5, 10, True)
    zero = CappedSink(io.BytesIO(), 0)
    zero.write(b"")
    assert not zero.truncated


def test_demuxer_separates_streams_across_arbitrary_chunk_boundaries() -> None:
    stream = frame(1, b"out-1\n") + frame(2, b"err-1\n") + frame(1, b"") + frame(1, b"x" * 70000) + frame(0, b"in")
    for chunk in (1, 3, 7, 8, 9, 4096, len(stream)):
        out, err = io.BytesIO(), io.BytesIO()
        demux = FrameDemuxer(CappedSink(out, 1 << 20), CappedSink(err, 1 << 20))
        for i in range(0, len(stream), chunk):
            demux.feed(stream[i:i + chunk])
        assert out.getvalue() == b"out-1\n" + b"x" * 70000
        assert err.getvalue() == b"err-1\n"


def test_pump_reads_until_eof() -> None:
    a, b = socket.socketpair()
    out, err = io.BytesIO(), io.BytesIO()
    a.sendall(frame(1, b"hello") + frame(2, b"oops"))
    a.close()
    try:
        assert _pump(b, FrameDemuxer(CappedSink(out, 100), CappedSink(err, 100)), time.monotonic() + 5)
    finally:
        b.close()
    assert (out.getvalue(), err.getvalue()) == (b"hello", b"oops")


def test_pump_stops_at_the_deadline_without_eof() -> None:
    a, b = socket.socketpair()
    try:
        a.sendall(frame(1, b"partial"))
        out = io.BytesIO()
        t0 = time.monotonic()
        assert not _pump(b, FrameDemuxer(CappedSink(out, 100), CappedSink(io.BytesIO(), 100)), t0 + 0.2)
        assert 0.15 <= time.monotonic() - t0 < 2
        assert out.getvalue() == b"partial"
    finally:
        a.close()
        b.close()


# -- engine values ---------------------------------------------------------------------------------


def test_engine_timestamps() -> None:
    assert parse_engine_time("2024-05-01T12:34:56.123456789Z") == datetime(2024, 5, 1, 12, 34, 56, 123456, UTC)
    assert parse_engine_time("2024-05-01T12:34:56Z") == datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)
    assert parse_engine_time("2024-05-01T14:34:56.5+02:00") == datetime(2024, 5, 1, 12, 34, 56, 500000, UTC)
    assert parse_engine_time("0001-01-01T00:00:00Z") is None
    assert parse_engine_time("") is None
    assert parse_engine_time("yesterday") is None


def test_local_image_manifest_digest() -> None:
    image = LocalImage(
        id=IMAGE_ID,
        repo_tags=("r/x:1",),
        repo_digests=(f"127.0.0.1:5000/r/x@sha256:{'cd' * 32}", f"other/x@sha256:{'ef' * 32}"),
        created="",
        size=1,
        architecture="amd64",
        os="linux",
    )
    assert image.manifest_digest("127.0.0.1:5000/r/x") == f"sha256:{'cd' * 32}"
    assert image.manifest_digest("127.0.0.1:5000/r") is None


# -- offline image builder -------------------------------------------------------------------------


def test_rootfs_holds_busybox_applets_and_extra_files() -> None:
    data = busybox_rootfs_tar({"/opt/run.sh": b"#!/bin/sh\necho hi\n", "data/ref.fa": b">chr1\nACGT\n"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    for applet in ("bin/sh", "bin/ls", "bin/cat", "usr/bin/wc", "usr/bin/sort", "usr/bin/tr", "usr/bin/head",
                   "usr/bin/md5sum", "usr/bin/sha256sum", "usr/bin/wget", "bin/touch", "bin/echo", "bin/sleep"):
        assert members[applet].issym() and members[applet].linkname == "/bin/busybox", applet
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert members["opt/run.sh"].mode == 0o755 and members["data/ref.fa"].mode == 0o644
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())
    # Deterministic: the same inputs give the same layer bytes.
    assert busybox_rootfs_tar({"/opt/run.sh": b"#!/bin/sh\necho hi\n", "data/ref.fa": b">chr1\nACGT\n"}) == data


@pytest.mark.parametrize("path", ["../escape", "/", "."])
def test_rootfs_refuses_escaping_paths(path: str) -> None:
    with pytest.raises(BadRequest):
        busybox_rootfs_tar({path: b"x"})


def test_push_stream_digest() -> None:
    digest = f"sha256:{'cd' * 32}"
    stream: list[dict[str, Any]] = [{"status": "Pushed"}, {"aux": {"Tag": "t", "Digest": digest, "Size": 1}}]
    assert _digest_from_push_stream(stream, "x") == digest
    assert _digest_from_push_stream([{"status": f"t: digest: {digest} size: 528"}], "x") == digest
    assert _digest_from_push_stream([{"status": "Pushed"}], "x") is None
    with pytest.raises(UpstreamError):
        _digest_from_push_stream([{"errorDetail": {"message": "denied"}, "error": "denied"}], "x")


def test_capture_files_are_never_opened_through_a_link(tmp_path: Path) -> None:
    """The engine can write the job area: a link planted at a stdout name is not followed."""
    from wes_server.containers import _open_new

    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep")
    link = tmp_path / "stdout.txt"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        _open_new(str(link))
    assert victim.read_bytes() == b"keep"
    with _open_new(str(tmp_path / "fresh.txt")) as fh:
        fh.write(b"x")
    assert (tmp_path / "fresh.txt").read_bytes() == b"x"
