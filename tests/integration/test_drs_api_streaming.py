"""The DRS API behind a real ASGI server (uvicorn on 127.0.0.1): uploads stream with flat
memory, a Content-Length above the limit is refused before the body is read, and a
download whose stored bytes were altered is cut short (the last piece never leaves)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
import uvicorn

from drs_store.models import ObjectRow
from tests.fixtures.app import Harness

pytestmark = pytest.mark.integration

BASE = "/ga4gh/drs/v1"
MIB = 1024 * 1024


@dataclass
class Live:
    h: Harness
    url: str


@pytest.fixture()
def live(harness_factory: Callable[..., Harness]) -> Iterator[Live]:
    h = harness_factory(services=("drs", "core"), max_upload_bytes=512 * MIB)
    server = uvicorn.Server(uvicorn.Config(h.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Live(h, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _body(total: int, piece: bytes) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = piece[: total - sent]
        sent += len(part)
        yield part


class _Sized:
    """A file-like body of known length: requests sends it with Content-Length, read in blocks.

    (Not an io.RawIOBase: requests would find tell() unsupported and fall back to chunked.)
    """

    def __init__(self, total: int, piece: bytes) -> None:
        self._parts = _body(total, piece)
        self._total = total
        self._pos = 0
        self._buf = b""

    def __len__(self) -> int:
        return self._total - self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        while (n is None or n < 0 or len(self._buf) < n) and (part := next(self._parts, None)) is not None:
            self._buf += part
        size = len(self._buf) if n is None or n < 0 else n
        out, self._buf = self._buf[:size], self._buf[size:]
        self._pos += len(out)
        return out


def _expected(total: int, piece: bytes) -> str:
    sha = hashlib.sha256()
    for part in _body(total, piece):
        sha.update(part)
    return sha.hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_memory_stays_flat(live: Live, chunked: bool) -> None:
    token = live.h.user("steward", "data-steward")
    total = 160 * MIB
    piece = os.urandom(MIB)
    digest = _expected(total, piece)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    tracemalloc.start()
    try:
        r = requests.post(
            f"{live.url}{BASE}/x-helixgate/objects",
            params={"name": "big.bin", "sha256": digest},
            data=_body(total, piece) if chunked else _Sized(total, piece),
            headers=headers,
            timeout=300,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 201, r.text
    assert r.request.headers.get("Content-Length") == (None if chunked else str(total))
    assert r.json()["size"] == total and r.json()["checksums"][0]["checksum"] == digest
    # A buffered body would cost >= 160 MiB; streaming costs a few chunks.
    assert peak < 48 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"


def test_content_length_above_the_limit_is_refused_before_reading(live: Live) -> None:
    token = live.h.user("steward", "data-steward")
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {BASE}/x-helixgate/objects?name=huge.bin HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {1024 * MIB}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"only a few bytes")  # the other GiB never comes
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - started < 5
    with live.h.platform.db.session() as s:
        assert s.query(ObjectRow).count() == 0


def test_download_of_altered_bytes_is_cut_short(live: Live) -> None:
    h = live.h
    token = h.user("steward", "data-steward")
    auth = {"Authorization": f"Bearer {token}"}
    data = os.urandom(20 * MIB + 10)  # several read batches: the first ones leave before the failure
    r = requests.post(
        f"{live.url}{BASE}/x-helixgate/objects",
        data=data,
        headers={**auth, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    object_id = r.json()["id"]
    url = requests.get(f"{live.url}{BASE}/objects/{object_id}/access/https", headers=auth, timeout=30).json()["url"]
    url = live.url + "/ga4gh" + url.split("/ga4gh", 1)[1]  # public_url is not this test server's port
    with h.platform.db.session() as s:
        row = s.get(ObjectRow, object_id)
        assert row is not None and row.location
        location = row.location
    blob = h.platform.settings.data_dir / "drs" / "objects" / location[:2] / f"{location}.blob"
    raw = bytearray(blob.read_bytes())
    raw[-30] ^= 0x01  # inside the last chunk: the first chunks stream out before the failure
    blob.write_bytes(bytes(raw))

    received = 0
    failed = False
    try:
        with requests.get(url, stream=True, timeout=60) as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_content(MIB):
                received += len(chunk)
    except requests.RequestException:
        failed = True
    assert failed or received < len(data)
    assert received < len(data)
    with h.platform.db.session() as s:
        row = s.get(ObjectRow, object_id)
        assert row is not None and row.quarantined_at is not None
    events, _ = h.platform.audit.query(category="security", action_prefix="drs.integrity.failure", target=object_id)
    assert events and events[0].actor == "steward"
    again = requests.get(url, timeout=30)
    assert again.status_code == 409 and "quarantined" in again.json()["msg"]
