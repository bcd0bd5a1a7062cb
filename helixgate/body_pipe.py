"""Hand a large request body from the event loop to the handler's thread in big batches.

a2wsgi gives a WSGI handler the body one ASGI message (64-256 KiB) at a time, each fetched
by a blocking round trip to the event loop. For a 1 GiB upload that is thousands of thread
hand-offs, each waiting for the GIL while the loop is busy receiving: measured 5.9 s against
1.1 s for the bare transfer (docs/benchmarks.md, ingest). For the operations whose OpenAPI
declares ``x-helixgate-streaming-body: true`` this middleware lets the handler's thread read
the body as multi-MiB batches that the event loop assembles ahead of it.

* Reading starts only when the handler first reads, i.e. after authentication and
  authorization passed: nothing is read ahead for a refused request.
* At most ``depth`` batches wait for the handler: memory per upload stays bounded.
* A client that disconnects before the end of its body makes ``read`` raise
  ``BodyIncomplete``: a truncated body is never mistaken for a complete one.
* If anything downstream reads the body through ASGI ``receive`` before the handler touched
  the pipe, the pipe steps aside and the body flows the ordinary way.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from helixgate.errors import BadRequest

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

SCOPE_KEY = "helixgate.body_pipe"
BATCH_BYTES = 4 * 1024 * 1024
DEPTH = 2


class BodyIncomplete(BadRequest):
    """The client went away before sending its whole body."""


class BodyPipe:
    """A file-like reader (``read``) over a request body pumped by the event loop."""

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop, *, batch_bytes: int, depth: int) -> None:
        self._receive = receive
        self._loop = loop
        self._batch = batch_bytes
        self._slots = asyncio.Semaphore(depth)  # created on the loop; released from the reader thread
        self._batches: queue.SimpleQueue[bytearray | BaseException] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._state = "idle"  # idle -> started | bypassed
        self._task: asyncio.Task[None] | None = None
        self._pumped = asyncio.Event()
        self._gave_end = False
        # reader side (the handler's thread only)
        self._view: memoryview | None = None
        self._pos = 0
        self._done = False

    # ----------------------------------------------------------------- handler thread
    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative); fewer only at the end of the body."""
        self._start()
        want = sys.maxsize if size is None or size < 0 else size
        parts: list[memoryview] = []
        while want > 0 and not self._done:
            if self._view is None or self._pos == len(self._view):
                self._next_batch()
                continue
            take = min(want, len(self._view) - self._pos)
            parts.append(self._view[self._pos : self._pos + take])
            self._pos += take
            want -= take
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def _next_batch(self) -> None:
        item = self._batches.get()
        self._view, self._pos = None, 0
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if not item:
            self._done = True
            return
        self._loop.call_soon_threadsafe(self._slots.release)
        self._view = memoryview(item)

    def _start(self) -> None:
        with self._lock:
            if self._state == "started":
                return
            if self._state == "bypassed":
                raise RuntimeError("the request body was already read through ASGI receive")
            self._state = "started"
        self._loop.call_soon_threadsafe(self._spawn)

    # ----------------------------------------------------------------- event loop
    def _spawn(self) -> None:
        self._task = self._loop.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            batch = bytearray()
            more = True
            while more:
                message = await self._receive()
                if message.get("type") == "http.disconnect":
                    raise BodyIncomplete("the client disconnected before the request body was complete")
                batch += message.get("body", b"")
                more = bool(message.get("more_body", False))
                if batch and (len(batch) >= self._batch or not more):
                    await self._slots.acquire()
                    self._batches.put(batch)
                    batch = bytearray()
            self._batches.put(bytearray())  # empty: the end of the body
        except asyncio.CancelledError:
            self._batches.put(BodyIncomplete("the request ended before its body was read"))
            raise
        except BaseException as exc:  # the reader re-raises it in the handler's thread
            self._batches.put(exc)
        finally:
            self._pumped.set()

    async def downstream_receive(self) -> Message:
        """The ``receive`` the rest of the stack sees: the body belongs to the pipe once started."""
        with self._lock:
            if self._state == "idle":
                self._state = "bypassed"
            state = self._state
        if state == "bypassed":
            return await self._receive()
        if not self._gave_end:
            self._gave_end = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._pumped.wait()  # after the body, receive only reports a disconnect
        return await self._receive()

    async def aclose(self) -> None:
        """Stop pumping (the handler returned or failed): releases any batch held for it."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class BodyPipeMiddleware:
    """ASGI middleware: gives the listed ``(method, path)`` routes a ``BodyPipe`` in the scope."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Collection[tuple[str, str]],
        *,
        batch_bytes: int = BATCH_BYTES,
        depth: int = DEPTH,
    ) -> None:
        self.app = app
        self.routes = routes  # filled while the OpenAPI documents are resolved; read per request
        self.batch_bytes = batch_bytes
        self.depth = depth

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or (scope.get("method"), scope.get("path")) not in self.routes:
            await self.app(scope, receive, send)
            return
        pipe = BodyPipe(receive, asyncio.get_running_loop(), batch_bytes=self.batch_bytes, depth=self.depth)
        try:
            await self.app({**scope, SCOPE_KEY: pipe}, pipe.downstream_receive, send)
        finally:
            await pipe.aclose()


def pipe_from_environ(environ: MutableMapping[str, Any]) -> BodyPipe | None:
    """The pipe of the current WSGI request, when its route streams its body."""
    scope = environ.get("asgi.scope") or {}
    pipe = scope.get(SCOPE_KEY)
    return pipe if isinstance(pipe, BodyPipe) else None
