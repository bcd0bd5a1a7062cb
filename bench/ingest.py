"""Ingest: a DRS upload (stream over HTTP, SHA-256, AES-256-GCM, fsync, commit) of a large file
through a real ``helixgate serve`` process, against ``hashlib.sha256`` over the same file.

Also measured, to locate the cost: the HTTP floor (the same client uploading to a bare ASGI
app under the same uvicorn that only hashes the body, ``bench/http_floor.py``), the storage
layer alone in this process (``LocalStorage.put``: hash + encrypt + write, no HTTP), and the
server's peak RSS during an upload (``VmHWM`` after resetting it through
``/proc/<pid>/clear_refs``).

    .venv/bin/python -m bench.ingest [--quick]
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import requests

from bench.common import (
    BenchContext,
    GiB,
    MiB,
    Options,
    Row,
    alternate,
    fmt_bytes,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    median,
    proc_status_kib,
    ratio,
    reset_peak_rss,
    run_standalone,
    start_http_floor,
    start_live_server,
    timed,
    write_random_file,
)

NAME = "ingest"
READ_CHUNK = MiB


def sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(READ_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def copy_hash_fsync(src: Path, dst: Path) -> str:
    """The durable-ingest floor without encryption: read, hash, write, fsync."""
    sha = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(READ_CHUNK):
            sha.update(block)
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    return sha.hexdigest()


def file_chunks(path: Path) -> Iterator[bytes]:
    """What ``HelixGate.upload_file`` sends: 1 MiB reads, chunked transfer encoding."""
    with open(path, "rb") as fh:
        while block := fh.read(READ_CHUNK):
            yield block


def sizes(opts: Options) -> tuple[int, int]:
    """(file size, repeats)."""
    return (128 * MiB, 2) if opts.quick else (1 * GiB, 3)


def run(opts: Options, ctx: BenchContext) -> list[Row]:
    from drs_store.local_storage import LocalStorage
    from helixgate.sdk import HelixGate

    size, repeats = sizes(opts)
    data = ctx.tmp / "input.bin"
    ctx.log(f"{NAME}: writing {fmt_bytes(size)} of random data")
    write_random_file(data, size)
    expected = sha256_of(data)  # also warms the page cache for both sides

    server = start_live_server(ctx, "server", workers=0)
    pid = server.process.pid
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    dataset = steward.create_dataset("bench-ingest")["id"]
    peaks: list[int] = []
    base_rss = proc_status_kib(pid, "VmRSS")
    can_reset = reset_peak_rss(pid)

    def upload() -> float:
        reset_peak_rss(pid)
        obj: dict[str, object] = {}
        seconds = timed(lambda: obj.update(steward.upload_file(data, dataset_id=dataset)))
        peaks.append(proc_status_kib(pid, "VmHWM"))
        checksums = obj.get("checksums") or []
        if {"type": "sha-256", "checksum": expected} not in checksums:  # type: ignore[operator]
            raise RuntimeError(f"upload stored a different checksum: {checksums}")
        return seconds

    def hashlib_pass() -> float:
        return timed(lambda: sha256_of(data))

    ctx.log(f"{NAME}: {repeats} upload(s) vs hashlib, interleaved")
    uploads, hashes = alternate(repeats, upload, hashlib_pass)

    floor_url = start_http_floor(ctx)

    def floor_upload(hashing: bool) -> Callable[[], float]:
        def go() -> float:
            answer: dict[str, object] = {}
            url = floor_url + ("?hash=1" if hashing else "")
            seconds = timed(lambda: answer.update(requests.post(url, data=file_chunks(data), timeout=600).json()))
            if answer.get("size") != size or (hashing and answer.get("sha256") != expected):
                raise RuntimeError(f"the HTTP baseline received something else: {answer}")
            return seconds

        return go

    ctx.log(f"{NAME}: {repeats} upload(s) vs the HTTP baselines (bare ASGI app), interleaved")
    floors: list[float] = []
    hashing_floors: list[float] = []
    uploads_again: list[float] = []
    for _ in range(repeats):
        floors.append(floor_upload(False)())
        uploads_again.append(upload())
        hashing_floors.append(floor_upload(True)())

    # the storage layer alone, in this process (no HTTP, no request parsing)
    storage = LocalStorage(ctx.tmp / "local-drs")

    def put() -> float:
        with open(data, "rb") as fh:
            return timed(lambda: storage.put(fh, expected_sha256=expected))

    def copy_pass() -> float:
        dst = ctx.tmp / "copy.bin"
        try:
            return timed(lambda: copy_hash_fsync(data, dst))
        finally:
            dst.unlink(missing_ok=True)

    puts, copies = alternate(repeats, put, copy_pass)
    t_up, t_hash, t_put, t_copy = median(uploads), median(hashes), median(puts), median(copies)
    t_up2, t_floor, t_hfloor = median(uploads_again), median(floors), median(hashing_floors)
    speed = ratio(t_hash, t_up)  # upload speed as a fraction of hashlib's
    peak = max(peaks) * 1024
    rss_note = "" if can_reset else " (VmHWM not resettable: lifetime peak)"
    b = f"ingest {fmt_bytes(size)}"
    return [
        Row(b, "DRS upload (HTTP, hash+encrypt+store) vs hashlib.sha256",
            f"{fmt_seconds(t_up)} ({fmt_rate(size, t_up)})",
            f"{fmt_seconds(t_hash)} ({fmt_rate(size, t_hash)})", f"{fmt_ratio(speed)} speed", "≥ 0.80× speed"),
        Row(b, "DRS upload vs HTTP transfer floor (same client and uvicorn, bare ASGI app: receive only)",
            f"{fmt_seconds(t_up2)} ({fmt_rate(size, t_up2)})", f"{fmt_seconds(t_floor)} ({fmt_rate(size, t_floor)})",
            f"{fmt_ratio(ratio(t_floor, t_up2))} speed"),
        Row(b, "DRS upload vs bare ASGI app hashing on the event loop (receive + sha256, nothing else)",
            f"{fmt_seconds(t_up2)}", f"{fmt_seconds(t_hfloor)} ({fmt_rate(size, t_hfloor)})",
            f"{fmt_ratio(ratio(t_hfloor, t_up2))} speed"),
        Row(b, "storage layer alone (LocalStorage.put, no HTTP) vs hashlib",
            f"{fmt_seconds(t_put)} ({fmt_rate(size, t_put)})", f"{fmt_seconds(t_hash)}",
            f"{fmt_ratio(ratio(t_hash, t_put))} speed"),
        Row(b, "DRS upload vs durable copy floor (read+sha256+write+fsync, no crypto)",
            f"{fmt_seconds(t_up)}", f"{fmt_seconds(t_copy)} ({fmt_rate(size, t_copy)})",
            f"{fmt_ratio(ratio(t_copy, t_up))} speed"),
        Row(b, f"server peak RSS during upload{rss_note}", fmt_bytes(peak), f"{fmt_bytes(base_rss * 1024)} before",
            f"+{fmt_bytes(peak - base_rss * 1024)}", "flat (independent of size)"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(NAME, run, argv, __doc__ or NAME)


if __name__ == "__main__":
    raise SystemExit(main())
