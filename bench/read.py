"""Read with re-verification: a streaming DRS download (object lookup, signed access URL,
then the server decrypts and re-hashes while streaming, releasing the last piece only after
the digest matched) against reading the plain file from the page cache — and against
reading it while hashing, which is what a client verifying its own copy would do.

    .venv/bin/python -m bench.read [--quick]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import requests

from bench.common import (
    BenchContext,
    GiB,
    MiB,
    Options,
    Row,
    fmt_bytes,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    median,
    ratio,
    run_standalone,
    start_http_floor,
    start_live_server,
    timed,
    write_random_file,
)

NAME = "read"
READ_CHUNK = MiB


def sizes(opts: Options) -> tuple[int, int]:
    """(file size, repeats)."""
    return (128 * MiB, 3) if opts.quick else (1 * GiB, 5)


def run(opts: Options, ctx: BenchContext) -> list[Row]:
    from helixgate.sdk import HelixGate

    size, repeats = sizes(opts)
    data = ctx.tmp / "input.bin"
    ctx.log(f"{NAME}: writing {fmt_bytes(size)} of random data")
    write_random_file(data, size)
    server = start_live_server(ctx, "server", workers=0)
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    dataset = steward.create_dataset("bench-read")["id"]
    obj = steward.upload_file(data, dataset_id=dataset)
    expected = next(c["checksum"] for c in obj["checksums"] if c["type"] == "sha-256")

    def download(check: bool = False) -> float:
        got = hashlib.sha256()
        received = 0

        def pull() -> None:
            nonlocal received
            for chunk in steward.download(obj["id"]):
                received += len(chunk)
                if check:
                    got.update(chunk)

        seconds = timed(pull)
        if received != size or (check and got.hexdigest() != expected):
            raise RuntimeError(f"download returned {received} bytes that do not match the object")
        return seconds

    def plain() -> float:
        def read() -> None:
            with open(data, "rb") as fh:
                while fh.read(READ_CHUNK):
                    pass

        return timed(read)

    def plain_hashed() -> float:
        def read() -> None:
            sha = hashlib.sha256()
            with open(data, "rb") as fh:
                while block := fh.read(READ_CHUNK):
                    sha.update(block)
            if sha.hexdigest() != expected:
                raise RuntimeError("the plain file changed under the benchmark")

        return timed(read)

    floor_url = start_http_floor(ctx, serve_file=data)

    def floor() -> float:
        """The same client code against a bare ASGI app streaming the plain file (no decrypt, no hash)."""
        received = 0

        def pull() -> None:
            nonlocal received
            with requests.get(floor_url, stream=True, timeout=600) as resp:
                resp.raise_for_status()
                for chunk in resp.iter_content(READ_CHUNK):
                    received += len(chunk)

        seconds = timed(pull)
        if received != size:
            raise RuntimeError(f"the HTTP floor sent {received} bytes, not {size}")
        return seconds

    download(check=True)  # untimed: proves the stream carries the object's bytes
    ctx.log(f"{NAME}: {repeats} download(s) vs plain reads and the HTTP floor, interleaved")
    downloads, plains, hashed, floors = [], [], [], []
    for _ in range(repeats):
        plains.append(plain())
        hashed.append(plain_hashed())
        floors.append(floor())
        downloads.append(download())
    t_dl, t_plain, t_hashed, t_floor = median(downloads), median(plains), median(hashed), median(floors)
    b = f"read {fmt_bytes(size)}"
    return [
        Row(b, "verified download (decrypt + re-hash on server, HTTP) vs plain read",
            f"{fmt_seconds(t_dl)} ({fmt_rate(size, t_dl)})", f"{fmt_seconds(t_plain)} ({fmt_rate(size, t_plain)})",
            f"{fmt_ratio(ratio(t_dl, t_plain))} time"),
        Row(b, "verified download vs plain read + client-side sha256", f"{fmt_seconds(t_dl)}",
            f"{fmt_seconds(t_hashed)} ({fmt_rate(size, t_hashed)})", f"{fmt_ratio(ratio(t_dl, t_hashed))} time"),
        Row(b, "verified download vs HTTP transfer floor (same client and uvicorn, bare ASGI app streaming the file)",
            f"{fmt_seconds(t_dl)}", f"{fmt_seconds(t_floor)} ({fmt_rate(size, t_floor)})",
            f"{fmt_ratio(ratio(t_dl, t_floor))} time"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(NAME, run, argv, __doc__ or NAME)


if __name__ == "__main__":
    raise SystemExit(main())
