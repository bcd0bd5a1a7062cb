"""The API process is SIGKILLed while a large chunked upload streams into the data store:
no partial object becomes visible (no row, no blob), and the retried upload succeeds."""

from __future__ import annotations

import hashlib
import signal
import socket
import time
from typing import Any, Callable

import pytest

from helixgate.sdk import HelixGate
from tests.faults.conftest import db_count

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MiB = 1024 * 1024
SIZE = 96 * MiB


def _payload() -> bytes:
    block = hashlib.sha256(b"helixgate").digest() * (MiB // 32)
    return b"".join(block[i:] + block[:i] for i in range(SIZE // MiB))


def test_api_killed_mid_upload_leaves_no_partial_object_and_retry_succeeds(
    live_server_factory: Callable[..., Any], pg_url: str
) -> None:
    env = {"HELIXGATE_DATABASE_URL": pg_url}
    first = live_server_factory(extra_env=env, workers=0)
    token = first.user("steward", "data-steward")
    steward = HelixGate.connect(first.url, token)
    dataset = steward.create_dataset("big")
    data = _payload()
    digest = hashlib.sha256(data).hexdigest()

    sock = socket.create_connection(("127.0.0.1", first.port), timeout=30)
    sock.sendall(
        (
            f"POST /ga4gh/drs/v1/x-helixgate/objects?name=big.bin&dataset_id={dataset['id']}&sha256={digest}"
            " HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    sent = 0
    for offset in range(0, SIZE // 3, MiB):  # a third of the object, then the process dies
        chunk = data[offset : offset + MiB]
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    deadline = time.monotonic() + 30
    tmp_files: list[Any] = []
    while time.monotonic() < deadline and not tmp_files:  # the server is writing the partial object
        tmp_files = list(first.data_dir.rglob("*.tmp"))
        time.sleep(0.05)
    assert tmp_files, "the upload should be streaming into a temporary file"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    sock.close()

    assert db_count(pg_url, "SELECT count(*) FROM drs_objects") == 0  # no row for the partial upload
    assert list(first.data_dir.rglob("*.blob")) == []  # no committed blob either

    second = live_server_factory(extra_env=env, workers=0, data_dir=first.data_dir, port=first.port)
    steward.api.base_url = second.url
    found = steward.api.get_json("/ga4gh/drs/v1/x-helixgate/objects", params={"checksum": digest})
    assert found["objects"] == []
    obj = steward.upload(iter([data[i : i + 4 * MiB] for i in range(0, SIZE, 4 * MiB)]), name="big.bin",
                         dataset_id=dataset["id"], sha256=digest)
    assert obj["size"] == SIZE
    assert {"type": "sha-256", "checksum": digest} in obj["checksums"]
    h = hashlib.sha256()
    for chunk in steward.download(obj["id"]):
        h.update(chunk)
    assert h.hexdigest() == digest
    assert db_count(pg_url, "SELECT count(*) FROM drs_objects") == 1
    assert len(list(second.data_dir.rglob("*.blob"))) == 1
    verify = second.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
