"""The worker's side of service credentials: the credential file's rules, token caching, and
how a refusal or an absent core is reported (never with the credential)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helixgate.config import load_settings
from helixgate.errors import ConfigurationError, UpstreamError
from helixgate.service_credentials import (
    ClientCredentialsTokenSource,
    read_credential_file,
    worker_token_source,
    write_credential_file,
)
from tests.fixtures.live import free_port

CREDENTIAL = "hgsc1." + "a" * 32 + "." + "B" * 43


class _TokenServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer: tuple[int, dict[str, Any]] = (
            200,
            {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 300},
        )
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                outer.requests.append(
                    {"auth": self.headers.get("Authorization"), "body": self.rfile.read(length).decode()}
                )
                status, body = outer.answer
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oidc/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def token_server() -> Iterator[_TokenServer]:
    srv = _TokenServer()
    yield srv
    srv.server.shutdown()
    srv.server.server_close()


def test_tokens_are_fetched_with_basic_client_auth_and_cached(token_server: _TokenServer) -> None:
    now = [0.0]
    source = ClientCredentialsTokenSource(token_server.url, "helixgate-wes", CREDENTIAL, clock=lambda: now[0])
    assert source() == "tok-1" and source() == "tok-1"
    assert len(token_server.requests) == 1
    req = token_server.requests[0]
    assert req["body"] == "grant_type=client_credentials" and req["auth"].startswith("Basic ")
    token_server.answer = (200, {"access_token": "tok-2", "token_type": "Bearer", "expires_in": 300})
    now[0] = 300 * 0.7  # renewed before it expires
    assert source() == "tok-2" and len(token_server.requests) == 2
    assert CREDENTIAL not in repr(source)


def test_a_refusal_names_the_error_never_the_credential(token_server: _TokenServer) -> None:
    token_server.answer = (401, {"error": "invalid_client", "error_description": "client authentication failed"})
    source = ClientCredentialsTokenSource(token_server.url, "helixgate-wes", CREDENTIAL)
    with pytest.raises(UpstreamError) as exc:
        source()
    assert "HTTP 401 invalid_client" in exc.value.message and CREDENTIAL not in exc.value.message


def test_an_absent_core_is_waited_for_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}/oidc/token"  # nobody listens
    source = ClientCredentialsTokenSource(url, "helixgate-wes", CREDENTIAL, patience=0.5)
    with pytest.raises(UpstreamError, match="unreachable: ConnectionError") as exc:
        source()
    assert CREDENTIAL not in exc.value.message


def test_credential_files_are_created_private_and_must_stay_so(tmp_path: Path) -> None:
    path = tmp_path / "cred"
    write_credential_file(path, CREDENTIAL)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_credential_file(path) == CREDENTIAL
    with pytest.raises(FileExistsError):
        write_credential_file(path, CREDENTIAL)  # never over an existing credential
    os.chmod(path, 0o640)
    with pytest.raises(ConfigurationError, match="accessible by other users"):
        read_credential_file(path)


def test_a_worker_without_any_credential_is_refused_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIXGATE_SERVICE_CREDENTIAL", raising=False)
    settings = load_settings(env={}, data_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="service_credential_file"):
        worker_token_source(settings)
    external = load_settings(env={}, data_dir=str(tmp_path), service_token_file=str(tmp_path / "t"))
    (tmp_path / "t").write_text("idp-token\n")
    assert worker_token_source(external)() == "idp-token"
