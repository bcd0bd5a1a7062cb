"""ApiClient retries idempotent requests on 502/503/504 and connection errors, never a POST."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helixgate.client import ApiClient, ClientError
from helixgate.errors import UpstreamError


class _Flaky(BaseHTTPRequestHandler):
    failures = 0  # answers 503 this many times, then 200
    seen: list[str] = []

    def _answer(self) -> None:
        type(self).seen.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        failing = len(type(self).seen) <= type(self).failures
        body = b'{"msg": "busy", "status_code": 503}' if failing else b'{"ok": true}'
        self.send_response(503 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture()
def flaky() -> Iterator[type[_Flaky]]:
    handler = type("Handler", (_Flaky,), {"failures": 0, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def test_get_is_retried_until_it_succeeds(flaky: type[_Flaky]) -> None:
    flaky.failures = 2
    client = ApiClient(flaky.url, retries=2)  # type: ignore[attr-defined]
    assert client.get_json("/x") == {"ok": True}
    assert flaky.seen == ["GET", "GET", "GET"]


def test_get_gives_up_after_its_retries_with_the_last_answer(flaky: type[_Flaky]) -> None:
    flaky.failures = 10
    client = ApiClient(flaky.url, retries=1)  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as info:
        client.get_json("/x")
    assert info.value.status == 503 and "busy" in info.value.message
    assert flaky.seen == ["GET", "GET"]


def test_post_is_never_sent_twice(flaky: type[_Flaky]) -> None:
    flaky.failures = 1
    client = ApiClient(flaky.url, retries=3)  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as info:
        client.post_json("/x", {"a": 1})
    assert info.value.status == 503
    assert flaky.seen == ["POST"]


def test_unreachable_server_is_an_upstream_error_naming_it() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = ApiClient(f"http://127.0.0.1:{port}", retries=1)
    with pytest.raises(UpstreamError, match=f"cannot reach http://127.0.0.1:{port}"):
        client.get_json("/x")
