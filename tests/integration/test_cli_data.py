"""`helixgate data ...` (data stewards) against a real `helixgate serve`: datasets, grants, upload +
verify round trip, retry after a lost response reuses the stored object, corruption in transit and
truncated streams detected locally, S3 registration on the moto server, one-line errors."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import boto3  # type: ignore[import-untyped]
import pytest

from helixgate.sdk import HelixGate
from tests.fixtures.live import LiveServer, free_port

pytestmark = pytest.mark.integration

DATA = b"HELIXGATE-MARKER line one\nline two\n" * 100


# ------------------------------------------------------------------ shared by the CLI tests
def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed with exit 1 and exactly one stderr line 'helixgate: error: ...' holding every needle."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("helixgate: error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def as_json(r: subprocess.CompletedProcess[str]) -> Any:
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


# ------------------------------------------------------------------ a fault-injecting TCP proxy
class FaultyProxy:
    """Forwards TCP connections to the server; can lose one upload's response or corrupt response bytes.

    ``drop_uploads``: for that many upload requests, the request reaches the server (which stores
    the object and answers), then the connection is closed before the client sees the answer.
    ``corrupt``: (old, new) replaced in every server -> client chunk (same length: a flipped byte).
    """

    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.drop_uploads = 0
        self.corrupt: tuple[bytes, bytes] | None = None
        self.dropped = 0
        self.sock = socket.create_server(("127.0.0.1", port or 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        dropping = threading.Event()

        def upstream_to_client() -> None:
            try:
                while data := upstream.recv(65536):
                    if dropping.is_set():  # the server answered the upload: lose the answer
                        break
                    if self.corrupt:
                        data = data.replace(*self.corrupt)
                    client.sendall(data)
            except OSError:
                pass
            finally:
                for s in (client, upstream):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()

        threading.Thread(target=upstream_to_client, daemon=True).start()
        try:
            while data := client.recv(65536):
                if data.startswith(b"POST /ga4gh/drs/v1/x-helixgate/objects"):
                    with self._lock:
                        if self.dropped < self.drop_uploads:
                            self.dropped += 1
                            dropping.set()
                upstream.sendall(data)
        except OSError:
            pass


@pytest.fixture()
def steward(live_server: LiveServer) -> tuple[LiveServer, str, str]:
    token = live_server.user("steward", "data-steward")
    dataset = as_json(live_server.cli("data", "dataset", "create", "reads", "--json", token=token))
    return live_server, token, dataset["id"]


def _write(tmp_path: Path, data: bytes = DATA, name: str = "reads.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ tests
def test_upload_show_verify_round_trip_and_grants(steward: tuple[LiveServer, str, str], tmp_path: Path) -> None:
    server, token, dataset_id = steward
    path = _write(tmp_path)
    sha = hashlib.sha256(DATA).hexdigest()

    r = server.cli("data", "upload", str(path), "--dataset", dataset_id, "--progress", "--json", token=token)
    up = as_json(r)
    assert "uploading reads.txt" in r.stderr  # progress on stderr with --progress, never on stdout
    obj = up["object"]
    assert up["reused"] is False and up["attempts"] == 1
    assert {"type": "sha-256", "checksum": sha} in obj["checksums"] and obj["size"] == len(DATA)
    uri = obj["self_uri"]

    shown = server.cli("data", "show", uri, token=token, check=True).stdout
    assert uri in shown and sha in shown and f"{len(DATA)} bytes" in shown
    assert as_json(server.cli("data", "show", obj["id"], "--json", token=token))["id"] == obj["id"]

    out = tmp_path / "copy.txt"
    verified = as_json(server.cli("data", "verify", uri, "-o", str(out), "--json", token=token))
    assert verified["verified"] is True and verified["sha256"] == sha and verified["size"] == len(DATA)
    assert out.read_bytes() == DATA
    human = server.cli("data", "verify", obj["id"], token=token, check=True).stdout
    assert f"verified {uri}" in human and sha in human

    # an analyst reads only through a grant on the dataset; revoking takes it away again
    ann = server.user("ann", "analyst")
    one_line_error(server.cli("data", "verify", uri, token=ann), "403")
    grant = as_json(server.cli("data", "grant", dataset_id, "ann", "--json", token=token))
    assert grant["username"] == "ann" and grant["dataset_id"] == dataset_id
    assert as_json(server.cli("data", "verify", uri, "--json", token=ann))["sha256"] == sha
    assert "revoked ann" in server.cli("data", "revoke", dataset_id, "ann", token=token, check=True).stdout
    one_line_error(server.cli("data", "verify", uri, token=ann), "403")
    # analysts cannot write data at all
    one_line_error(server.cli("data", "upload", str(path), token=ann), "403")


def test_upload_refuses_a_file_that_is_not_what_the_steward_expects(
    steward: tuple[LiveServer, str, str], tmp_path: Path
) -> None:
    server, token, dataset_id = steward
    path = _write(tmp_path)
    wrong = "ab" * 32
    line = one_line_error(
        server.cli("data", "upload", str(path), "--dataset", dataset_id, "--sha256", wrong, token=token), "mismatch"
    )
    assert wrong in line and hashlib.sha256(DATA).hexdigest() in line  # expected and actual
    hg = HelixGate.connect(server.url, token)
    assert hg.find_objects(hashlib.sha256(DATA).hexdigest()) == []  # nothing was sent


def test_upload_retry_after_lost_response_reuses_the_stored_object(
    steward: tuple[LiveServer, str, str], tmp_path: Path
) -> None:
    server, token, dataset_id = steward
    proxy = FaultyProxy(server.port)
    try:
        sha = hashlib.sha256(DATA).hexdigest()
        hg = HelixGate.connect(server.url, token)

        # without retries the lost response is an error, although the server stored the object
        proxy.drop_uploads = 1
        path = _write(tmp_path)
        one_line_error(
            server.cli(
                "data", "upload", str(path), "--dataset", dataset_id, "--retries", "0", "--url", proxy.url, token=token
            ),
            "cannot reach",
        )
        assert len(hg.find_objects(sha)) == 1

        # with retries: the second attempt finds the first attempt's object and reuses it
        other = DATA + b"second file\n"
        other_sha = hashlib.sha256(other).hexdigest()
        path2 = _write(tmp_path, other, "other.txt")
        proxy.drop_uploads, proxy.dropped = 1, 0
        r = server.cli(
            "data",
            "upload",
            str(path2),
            "--dataset",
            dataset_id,
            "--retries",
            "2",
            "--url",
            proxy.url,
            "--json",
            token=token,
        )
        up = as_json(r)
        assert proxy.dropped == 1
        assert up["reused"] is True and up["attempts"] == 2
        stored = hg.find_objects(other_sha)
        assert [o["id"] for o in stored] == [up["object"]["id"]]  # exactly one copy
        assert up["object"]["name"] == "other.txt"

        # an identical object uploaded earlier (not by this command) is not mistaken for a landed retry
        proxy.drop_uploads, proxy.dropped = 1, 0
        up2 = as_json(
            server.cli(
                "data",
                "upload",
                str(path2),
                "--dataset",
                dataset_id,
                "--retries",
                "2",
                "--url",
                proxy.url,
                "--json",
                token=token,
            )
        )
        assert up2["reused"] is True and up2["object"]["id"] != up["object"]["id"]
        assert len(hg.find_objects(other_sha)) == 2
    finally:
        proxy.close()


def test_verify_detects_corruption_in_transit(live_server_factory: Callable[..., LiveServer], tmp_path: Path) -> None:
    """Signed download URLs point at a proxy that flips a byte: the server sent the right bytes,
    the client receives wrong ones, and only the local check can notice."""
    server_port = free_port()
    proxy = FaultyProxy(server_port)
    try:
        server = live_server_factory(port=server_port, extra_env={"HELIXGATE_PUBLIC_URL": proxy.url})
        token = server.user("steward", "data-steward")
        obj = HelixGate.connect(server.url, token).upload(DATA, name="reads.txt")
        assert as_json(server.cli("data", "verify", obj["id"], "--json", token=token))["verified"] is True
        proxy.corrupt = (b"HELIXGATE-MARKER", b"HELIXGATE-MARKEX")
        out = tmp_path / "out.txt"
        line = one_line_error(server.cli("data", "verify", obj["self_uri"], "-o", str(out), token=token), "mismatch")
        assert hashlib.sha256(DATA).hexdigest() in line
        assert not out.exists() and list(tmp_path.glob(".out.txt*")) == []  # nothing unverified left behind
    finally:
        proxy.close()


def test_verify_fails_on_a_stream_the_server_cuts_short(steward: tuple[LiveServer, str, str]) -> None:
    server, token, dataset_id = steward
    obj = HelixGate.connect(server.url, token).upload(DATA, name="reads.txt", dataset_id=dataset_id)
    blobs = list(Path(server.data_dir).rglob("*.blob"))
    assert len(blobs) == 1, blobs
    raw = bytearray(blobs[0].read_bytes())
    raw[-20] ^= 0x01  # at-rest corruption: the server aborts the stream before its last piece
    blobs[0].write_bytes(bytes(raw))
    line = one_line_error(server.cli("data", "verify", obj["id"], token=token))
    assert "cut short" in line or "HTTP 409" in line or "HTTP 422" in line, line


def test_register_s3_object_in_place(
    live_server_factory: Callable[..., LiveServer], aws_env: str, tmp_path: Path
) -> None:
    bucket = f"hg-cli-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="incoming/sample.vcf", Body=DATA)
    try:
        server = live_server_factory(
            extra_env={
                "HELIXGATE_STORAGE_BACKEND": "s3",
                "HELIXGATE_S3_BUCKET": bucket,
                "HELIXGATE_S3_ENDPOINT_URL": aws_env,
            }
        )
        token = server.user("steward", "data-steward")
        ds = as_json(server.cli("data", "dataset", "create", "vcfs", "--json", token=token))
        obj = as_json(
            server.cli(
                "data",
                "register",
                f"s3://{bucket}/incoming/sample.vcf",
                "--name",
                "sample.vcf",
                "--dataset",
                ds["id"],
                "--json",
                token=token,
            )
        )
        assert {"type": "sha-256", "checksum": hashlib.sha256(DATA).hexdigest()} in obj["checksums"]
        assert as_json(server.cli("data", "verify", obj["self_uri"], "--json", token=token))["verified"] is True
        one_line_error(server.cli("data", "register", f"s3://{bucket}/missing", token=token), "404")
        one_line_error(server.cli("data", "register", "https://example.org/x", token=token), "s3://")
    finally:
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
        s3.delete_bucket(Bucket=bucket)


def test_data_errors_are_one_line(steward: tuple[LiveServer, str, str], tmp_path: Path) -> None:
    server, token, dataset_id = steward
    path = _write(tmp_path)
    one_line_error(server.cli("data", "show", "0" * 32, token="not-a-token"), "401")
    one_line_error(server.cli("data", "upload", str(path), token="not-a-token"), "401")
    one_line_error(server.cli("data", "show", "0" * 32, token=token), "404")
    one_line_error(server.cli("data", "verify", "drs://x/" + "0" * 32, token=token), "404")
    one_line_error(server.cli("data", "show", "not/an/id", token=token), "not a drs object id")
    one_line_error(server.cli("data", "grant", dataset_id, "nobody", token=token), "not registered")
    server.user("ann", "analyst")
    one_line_error(server.cli("data", "grant", "f" * 32, "ann", token=token), "404")
    one_line_error(server.cli("data", "upload", str(tmp_path / "missing.txt"), token=token), "missing.txt")
    down = closed_url()
    one_line_error(server.cli("data", "show", "0" * 32, "--url", down, token=token), f"cannot reach {down}")
    one_line_error(
        server.cli("data", "upload", str(path), "--retries", "1", "--url", down, token=token), f"cannot reach {down}"
    )
    one_line_error(server.cli("data", "dataset", "create", "x", "--url", down, token=token), "cannot reach")
