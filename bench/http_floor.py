"""HTTP baselines for ingest: a bare ASGI app under the same uvicorn as HelixGate.

No authentication, no database, no encryption. ``POST /`` only receives the body (the
transfer floor of this client, server stack and machine); ``POST /?hash=1`` also hashes it as
it arrives, on the event loop (the straightforward way to write an ASGI upload). ``GET /``
streams the plain file named by ``HELIXGATE_BENCH_FLOOR_FILE`` from the page cache in 8 MiB
pieces (the download transfer floor). ``bench.ingest`` and ``bench.read`` talk to it with the
same client code as to HelixGate.

    .venv/bin/python -m uvicorn bench.http_floor:app --port N
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        await _stream_file(send)
        return
    sha = hashlib.sha256() if b"hash=1" in scope.get("query_string", b"") else None
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        if sha is not None:
            sha.update(body)
        size += len(body)
        more = message.get("more_body", False)
    answer = json.dumps({"size": size, "sha256": sha.hexdigest() if sha else None}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _stream_file(send: Send) -> None:
    path = os.environ["HELIXGATE_BENCH_FLOOR_FILE"]
    size = os.path.getsize(path)
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    with open(path, "rb") as fh:
        while piece := fh.read(8 * 1024 * 1024):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
