"""S3 and SQS answering errors or never answering: bounded retries with backoff, then an
UpstreamError (HTTP 502 with a clear message) — never a hang, never a half-stored object."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from drs_store.s3_storage import S3Storage
from helixgate.db import Database
from helixgate.errors import UpstreamError
from helixgate_app.services import build_platform
from tests.fixtures.app import Harness, make_settings
from wes_server.queue import SqsRunQueue

pytestmark = pytest.mark.integration


class Failing:
    """A loopback endpoint answering every request with HTTP 500 (an S3/SQS outage), recording arrival times."""

    def __init__(self) -> None:
        self.times: list[float] = []
        failing = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _fail(self) -> None:
                failing.times.append(time.monotonic())
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                self.send_response(500)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _fail

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Blackhole:
    """Accepts TCP connections and never answers (a hung upstream)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.fixture()
def failing() -> Iterator[Failing]:
    f = Failing()
    yield f
    f.close()


@pytest.fixture()
def blackhole() -> Iterator[Blackhole]:
    b = Blackhole()
    yield b
    b.close()


@pytest.fixture()
def aws_creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _backoff_grows(times: list[float]) -> bool:
    gaps = [b - a for a, b in zip(times, times[1:])]
    return len(gaps) >= 2 and sum(gaps) > 0.05


def test_s3_errors_are_retried_a_bounded_number_of_times_then_upstream_error(
    failing: Failing, aws_creds: None
) -> None:
    storage = S3Storage("bucket-x", endpoint_url=failing.url, max_attempts=4)
    start = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        storage.put(BytesIO(b"data" * 1000))
    elapsed = time.monotonic() - start
    assert info.value.status == 502
    assert "S3" in info.value.message and "InternalError" in info.value.message
    assert len(failing.times) == 5  # the first try + max_attempts (botocore counts retries), then it gives up
    assert _backoff_grows(failing.times)
    assert elapsed < 30


def test_s3_that_never_answers_times_out_within_its_bounded_retries(blackhole: Blackhole, aws_creds: None) -> None:
    storage = S3Storage("bucket-x", endpoint_url=blackhole.url, max_attempts=2, connect_timeout=1, read_timeout=1)
    start = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        storage.put(BytesIO(b"data"))
    assert time.monotonic() - start < 15
    assert "failed after retries" in info.value.message and "Timeout" in info.value.message
    assert len(blackhole.accepted) == 3  # first try + 2 retries


def test_sqs_errors_are_retried_a_bounded_number_of_times_then_upstream_error(
    failing: Failing, aws_creds: None
) -> None:
    queue = SqsRunQueue(f"{failing.url}/123456789012/runs", endpoint_url=failing.url)
    start = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        queue.enqueue("run-1")
    assert time.monotonic() - start < 60
    assert info.value.status == 502 and "SQS send_message failed after retries" in info.value.message
    assert len(failing.times) == 6  # first try + the queue's 5 retries
    assert _backoff_grows(failing.times)


def _harness(tmp_path: Path, db: Database, **overrides: Any) -> Harness:
    return Harness(build_platform(make_settings(tmp_path / "data", db, **overrides)), ("wes", "trs", "drs", "core"))


def test_upload_during_an_s3_outage_is_a_clear_502_and_stores_nothing(
    tmp_path: Path, sqlite_database: Database, failing: Failing, aws_creds: None
) -> None:
    h = _harness(tmp_path, sqlite_database, storage_backend="s3", s3_bucket="bucket-x", s3_endpoint_url=failing.url)
    try:
        steward = h.auth("sue", "data-steward")
        r = h.client.post(
            "/ga4gh/drs/v1/x-helixgate/objects", params={"name": "x"},
            headers={**steward, "Content-Type": "application/octet-stream"}, content=b"x" * 10_000,
        )
        assert r.status_code == 502, r.text
        assert "S3" in r.json()["msg"] and r.json()["status_code"] == 502
        found = h.client.get("/ga4gh/drs/v1/x-helixgate/objects", headers=steward,
                             params={"checksum": "sha-256:" + "0" * 64})
        assert found.status_code in (200, 400)
        with sqlite_database.session() as s:
            from sqlalchemy import text

            assert s.execute(text("SELECT count(*) FROM drs_objects")).scalar_one() == 0
    finally:
        h.client.close()
        h.platform.close()


def test_submission_during_an_sqs_outage_is_a_clear_502_and_leaves_no_phantom_run(
    tmp_path: Path, sqlite_database: Database, failing: Failing, aws_creds: None
) -> None:
    h = _harness(tmp_path, sqlite_database, queue_backend="sqs", sqs_queue_url=f"{failing.url}/1/runs",
                 sqs_endpoint_url=failing.url)
    try:
        analyst = h.auth("ann", "analyst")
        wf = b"cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [echo]\ninputs: []\noutputs: []\n"
        files = [("workflow_url", (None, "wf.cwl")), ("workflow_type", (None, "CWL")),
                 ("workflow_type_version", (None, "v1.2")), ("workflow_attachment", ("wf.cwl", wf))]
        r = h.client.post("/ga4gh/wes/v1/runs", headers=analyst, files=files)
        assert r.status_code == 502, r.text
        assert "SQS" in r.json()["msg"]
        # the client was told the submission failed: no run may exist that will never be executed
        runs = h.client.get("/ga4gh/wes/v1/runs", headers=analyst).json()["runs"]
        assert [x["state"] for x in runs] == ["SYSTEM_ERROR"], runs  # accounted for, never silently pending
        log = h.client.get(f"/ga4gh/wes/v1/runs/{runs[0]['run_id']}", headers=analyst).json()
        assert any("could not be queued" in m for m in log["run_log"]["system_logs"])
    finally:
        h.client.close()
        h.platform.close()
