"""The engine channel: JSON lines over one inherited socket between the worker
(``wes_server.engine_host``) and an engine process (``wes_server.engine`` for CWL,
``wes_server.wdl_engine`` for WDL). Standard library only: both engines import it."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

ENGINE_FD_ENV = "HELIXGATE_ENGINE_FD"  # the inherited socket to the worker
MAX_MESSAGE = 64 * 1024 * 1024


class Channel:
    """JSON lines over a socket; replies are matched to requests by id."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self._send_lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=str) + "\n").encode()
        with self._send_lock:
            self.sock.sendall(data)

    def recv(self) -> dict[str, Any] | None:
        line = self.reader.readline(MAX_MESSAGE)
        if not line:
            return None
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError("channel message is not an object")
        return value

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            rid = self._next
            event, box = self._waiting[rid] = (threading.Event(), [])
        self.send({**message, "id": rid})
        event.wait()
        return dict(box[0]) if box else {"status": "permanentFail", "error": "the worker went away"}

    def dispatch_replies(self) -> None:
        """Reader loop (a thread): route each reply to its waiting request."""
        while True:
            msg = self.recv()
            if msg is None:
                break
            entry = self._waiting.pop(int(msg.get("id", -1)), None)
            if entry is not None:
                entry[1].append(msg)
                entry[0].set()
        for event, _ in list(self._waiting.values()):
            event.set()
