"""BodyPipe: a request body handed from the event loop to the handler's thread in batches.

The event loop runs in a background thread here, as under uvicorn; the test body plays the
handler's thread (a2wsgi's executor in production)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helixgate.body_pipe import SCOPE_KEY, BodyIncomplete, BodyPipe, BodyPipeMiddleware, pipe_from_environ


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


class FakeReceive:
    """ASGI ``receive`` over a list of messages; counts calls and body bytes handed out."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = list(messages)
        self.calls = 0
        self.delivered = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if not self.messages:
            await asyncio.sleep(3600)  # like a client that sends nothing more
        message = self.messages.pop(0)
        self.delivered += len(message.get("body", b""))
        return message


def body_messages(data: bytes, piece: int) -> list[dict[str, Any]]:
    parts = [data[i : i + piece] for i in range(0, len(data), piece)] or [b""]
    return [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]


def make_pipe(loop: asyncio.AbstractEventLoop, receive: FakeReceive, batch: int, depth: int = 2) -> BodyPipe:
    async def build() -> BodyPipe:
        return BodyPipe(receive, asyncio.get_running_loop(), batch_bytes=batch, depth=depth)

    return asyncio.run_coroutine_threadsafe(build(), loop).result(timeout=10)


def test_reads_return_exactly_what_was_asked_and_the_whole_body(loop: asyncio.AbstractEventLoop) -> None:
    data = os.urandom(1_000_003)
    pipe = make_pipe(loop, FakeReceive(body_messages(data, 65_536)), batch=256 * 1024)
    got = [pipe.read(300_000) for _ in range(3)]
    assert [len(g) for g in got] == [300_000] * 3  # full reads across batch boundaries
    rest = pipe.read()
    assert b"".join(got) + rest == data
    assert pipe.read(10) == b"" and pipe.read() == b""


def test_nothing_is_received_before_the_handler_reads(loop: asyncio.AbstractEventLoop) -> None:
    receive = FakeReceive(body_messages(b"x" * 100, 10))
    pipe = make_pipe(loop, receive, batch=64)
    time.sleep(0.1)
    assert receive.calls == 0  # an unauthorized request never makes us read its body
    assert pipe.read() == b"x" * 100


def test_read_ahead_is_bounded_by_depth(loop: asyncio.AbstractEventLoop) -> None:
    batch, depth, piece = 64 * 1024, 2, 16 * 1024
    receive = FakeReceive(body_messages(os.urandom(4 * 1024 * 1024), piece))
    pipe = make_pipe(loop, receive, batch=batch, depth=depth)
    assert len(pipe.read(1)) == 1  # starts the pump; then the reader stalls
    time.sleep(0.3)
    # the batch being read + `depth` queued + the one being assembled when the slot wait began
    assert receive.delivered <= (depth + 2) * batch, receive.delivered
    assert receive.delivered < 4 * 1024 * 1024
    assert len(pipe.read()) == 4 * 1024 * 1024 - 1


def test_a_disconnect_before_the_end_is_an_error_not_a_short_body(loop: asyncio.AbstractEventLoop) -> None:
    messages = body_messages(os.urandom(200_000), 50_000)[:2]  # more_body=True on both
    messages.append({"type": "http.disconnect"})
    pipe = make_pipe(loop, FakeReceive(messages), batch=1024 * 1024)
    with pytest.raises(BodyIncomplete, match="disconnected"):
        pipe.read()


def test_a_body_already_read_through_receive_bypasses_the_pipe(loop: asyncio.AbstractEventLoop) -> None:
    receive = FakeReceive(body_messages(b"abc", 10))
    pipe = make_pipe(loop, receive, batch=64)
    message = asyncio.run_coroutine_threadsafe(pipe.downstream_receive(), loop).result(timeout=10)
    assert message["body"] == b"abc"  # the ordinary path, untouched
    with pytest.raises(RuntimeError, match="already read"):
        pipe.read()


def test_downstream_sees_an_empty_body_once_the_pipe_owns_it(loop: asyncio.AbstractEventLoop) -> None:
    receive = FakeReceive([*body_messages(b"abc", 10), {"type": "http.disconnect"}])
    pipe = make_pipe(loop, receive, batch=64)
    assert pipe.read() == b"abc"
    first = asyncio.run_coroutine_threadsafe(pipe.downstream_receive(), loop).result(timeout=10)
    assert first == {"type": "http.request", "body": b"", "more_body": False}
    after = asyncio.run_coroutine_threadsafe(pipe.downstream_receive(), loop).result(timeout=10)
    assert after["type"] == "http.disconnect"


def test_close_stops_a_pump_waiting_for_a_reader_that_left(loop: asyncio.AbstractEventLoop) -> None:
    receive = FakeReceive(body_messages(os.urandom(1024 * 1024), 16 * 1024))
    pipe = make_pipe(loop, receive, batch=64 * 1024, depth=1)
    pipe.read(1)
    time.sleep(0.1)
    calls = receive.calls
    asyncio.run_coroutine_threadsafe(pipe.aclose(), loop).result(timeout=10)
    time.sleep(0.1)
    assert receive.calls == calls  # nothing more is pulled from the client
    assert receive.delivered < 1024 * 1024


def test_middleware_gives_only_listed_routes_a_pipe(loop: asyncio.AbstractEventLoop) -> None:
    data = os.urandom(300_000)
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pipe = pipe_from_environ({"asgi.scope": scope})
        seen[(scope["method"], scope["path"])] = pipe
        if pipe is not None:  # the handler reads in a worker thread, as a2wsgi runs it
            digest = await asyncio.get_running_loop().run_in_executor(
                None, lambda: hashlib.sha256(pipe.read()).hexdigest()
            )
            seen["digest"] = digest

    middleware = BodyPipeMiddleware(app, {("POST", "/upload")}, batch_bytes=64 * 1024)

    async def call(method: str, path: str) -> None:
        async def send(message: Any) -> None:
            pass

        scope = {"type": "http", "method": method, "path": path, "headers": []}
        await middleware(scope, FakeReceive(body_messages(data, 10_000)), send)

    for method, path in (("POST", "/upload"), ("POST", "/other"), ("GET", "/upload")):
        asyncio.run_coroutine_threadsafe(call(method, path), loop).result(timeout=30)
    assert seen["digest"] == hashlib.sha256(data).hexdigest()
    assert isinstance(seen[("POST", "/upload")], BodyPipe)
    assert seen[("POST", "/other")] is None and seen[("GET", "/upload")] is None
    assert SCOPE_KEY and pipe_from_environ({"asgi.scope": {SCOPE_KEY: "not a pipe"}}) is None
