"""Hostile input against a real ``helixgate serve`` process and the real Docker engine:
tasks that attack their sandbox through a WES run, cross-user reads of task logs, TRS
archive and path handling, and request bodies that lie about or exceed their size."""

from __future__ import annotations

import hashlib
import io
import os
import select
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from helixgate.sdk import HelixGate
from tests.e2e.conftest import World, world  # noqa: F401 - the e2e world fixture
from tests.fixtures.docker_images import labelled_containers
from tests.fixtures.live import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WES = "/ga4gh/wes/v1"


def _tool(
    image: str, script: str, *, ram_mib: int | None = None, output_glob: str | None = None, capture: bool = True
) -> bytes:
    """A one-step CWL tool running ``script``; it exits 0 (and the run COMPLETEs) only if the attack worked."""
    reqs = f'  DockerRequirement: {{dockerPull: "{image}"}}\n'
    if ram_mib:
        reqs += f"  ResourceRequirement: {{ramMin: {ram_mib}, ramMax: {ram_mib}}}\n"
    outputs = f"  out: {{type: File, outputBinding: {{glob: {output_glob}}}}}\n" if output_glob else "  log: stdout\n"
    if not capture:
        outputs = "  []\n"  # stdout goes to the task log
    escaped = script.replace("'", "'\"'\"'")
    return f"""cwlVersion: v1.2
class: CommandLineTool
requirements:
{reqs}baseCommand: [sh, -c, '{escaped}']
inputs: []
outputs:
{outputs}""".encode()


class Listener:
    """A TCP listener on all interfaces that records any connection (a task reaching the host)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 - must be reachable from the docker bridge if the sandbox leaks
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture()
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def _containers(run_id: str) -> list[Any]:
    return labelled_containers(f"helixgate.run_id={run_id}")


def test_tasks_attacking_their_sandbox_fail_contained_through_wes(
    world: World,  # noqa: F811 - the e2e fixture imported above
    listener: Listener,
    tmp_path: Path,  # noqa: F811
) -> None:
    image = world.image.pinned_ref
    secret = tmp_path / f"host-secret-{uuid.uuid4().hex}"
    secret.write_text("HOST-SECRET-DO-NOT-LEAK\n")
    marker = f"/etc/pwned-{uuid.uuid4().hex[:8]}"
    attacks = {
        "network": _tool(
            image,
            f"wget -q -T 3 -O- http://172.17.0.1:{listener.port}/ && {{ echo ESCAPED; exit 0; }}; "
            f"wget -q -T 3 -O- http://93.184.216.34/ && {{ echo ESCAPED; exit 0; }}; exit 7",
        ),
        "rootfs": _tool(
            image,
            f"echo x > {marker} && {{ echo ESCAPED; exit 0; }}; "
            "touch /bin/pwned && { echo ESCAPED; exit 0; }; exit 7",
        ),
        "privileges": _tool(
            image,
            '[ "$(id -u)" = 0 ] && { echo ROOT; exit 0; }; '
            "mount -t tmpfs x /tmp 2>/dev/null && { echo ESCAPED; exit 0; }; "
            "mknod /tmp/sda b 8 0 2>/dev/null && { echo ESCAPED; exit 0; }; "
            "chroot / true 2>/dev/null && { echo ESCAPED; exit 0; }; "
            "ls /var/run/docker.sock 2>/dev/null && { echo ESCAPED; exit 0; }; exit 7",
        ),
        "pids": _tool(
            image,
            "i=0; while [ $i -lt 2000 ]; do sleep 60 & i=$((i+1)); done; "
            'n=$(ls /proc | grep -c "^[0-9]"); [ "$n" -ge 2000 ] && { echo ESCAPED; exit 0; }; exit 7',
        ),
        "memory": _tool(image, "exec tail /dev/zero", ram_mib=64),
        "symlink-output": _tool(image, f"ln -s {secret} out.txt; exit 0", output_glob="out.txt"),
    }
    runs = {
        name: world.analyst.submit_run("tool.cwl", {}, attachments={"tool.cwl": cwl}) for name, cwl in attacks.items()
    }
    states = {name: world.analyst.wait(run_id, timeout=240) for name, run_id in runs.items()}
    logs = {name: world.analyst.run_log(run_id) for name, run_id in runs.items()}
    assert states == {name: "EXECUTOR_ERROR" for name in attacks}, {n: logs[n]["run_log"] for n in attacks}
    for name, run_id in runs.items():
        stdout = requests.get(
            f"{world.server.url}{WES}/x-helixgate/runs/{run_id}/log/stdout",
            headers=world.analyst.api._headers(None),
            timeout=30,
        ).text
        assert "ESCAPED" not in stdout and "ROOT" not in stdout, (name, stdout)
        assert "HOST-SECRET" not in stdout
        assert _containers(run_id) == [], name
    memory_task = world.analyst.run_tasks(runs["memory"])[0]
    assert memory_task["exit_code"] == 137, memory_task
    # the host is fine: no connection reached it, its filesystem is untouched, the engine and server answer
    assert listener.connections == 0
    assert not Path(marker).exists()
    assert docker.from_env().ping()
    assert requests.get(f"{world.server.url}{WES}/service-info", timeout=10).status_code == 200
    # no output of the symlink run was published: the secret never became a DRS object
    assert logs["symlink-output"]["outputs"] in ({}, None)
    # a benign run still completes on the same workers afterwards
    ok = world.analyst.submit_run("tool.cwl", {}, attachments={"tool.cwl": _tool(image, "echo fine")})
    assert world.analyst.wait(ok, timeout=120) == "COMPLETE"
    verify = world.server.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr


def test_another_analyst_cannot_fetch_task_log_urls(world: World) -> None:  # noqa: F811
    image = world.image.pinned_ref
    run_id = world.analyst.submit_run(
        "tool.cwl", {}, attachments={"tool.cwl": _tool(image, "echo private-output", capture=False)}
    )
    assert world.analyst.wait(run_id, timeout=120) == "COMPLETE"
    task = world.analyst.run_tasks(run_id)[0]
    owner = world.analyst.api._headers(None)
    assert "private-output" in requests.get(task["stdout"], headers=owner, timeout=30).text
    bob = HelixGate.connect(world.server.url, world.server.user("bob", "analyst"))
    viewer = HelixGate.connect(world.server.url, world.server.user("vic", "viewer"))
    for intruder in (bob, viewer):
        h = intruder.api._headers(None)
        for url in (
            task["stdout"],
            task["stderr"],
            f"{world.server.url}{WES}/runs/{run_id}",
            f"{world.server.url}{WES}/x-helixgate/runs/{run_id}/log/stdout",
        ):
            r = requests.get(url, headers=h, timeout=30)
            assert r.status_code in (403, 404), (url, r.status_code)
            assert "private-output" not in r.text
    for url in (task["stdout"], f"{world.server.url}{WES}/runs/{run_id}"):
        assert requests.get(url, timeout=30).status_code == 401  # anonymous


def test_trs_zip_and_relative_paths_stay_inside_the_tool(world: World) -> None:  # noqa: F811
    base = f"{world.server.url}/ga4gh/trs/v2/tools/{world.tool_id}/versions/{world.version_id}/CWL"
    h = world.dev.api._headers(None)
    r = requests.get(f"{base}/files", params={"format": "zip"}, headers=h, timeout=30)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = z.namelist()
        assert names and all(not n.startswith("/") and ".." not in n.split("/") for n in names), names
        assert sum(i.file_size for i in z.infolist()) < 1024 * 1024  # our own archive is no bomb
    for rel in (
        "../../../../etc/passwd",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "workflow.cwl/../../../etc/passwd",
    ):
        r = requests.get(f"{base}/descriptor/{rel}", headers=h, timeout=30, allow_redirects=False)
        assert r.status_code in (400, 404), (rel, r.status_code)
        assert "root:" not in r.text


def _raw(server: LiveServer, head: bytes, body_chunks: Iterator[bytes], *, limit: int) -> tuple[int, int, bytes]:
    """Send a request by hand, stopping as soon as the server answers or hangs up;
    return (status, body bytes sent before that, the answer's head)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sent = 0
    answer = b""
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0] or sent >= limit:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        while b"\r\n\r\n" not in answer:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, sent, answer


def test_enormous_declared_multipart_is_413_without_reading_it(world: World) -> None:  # noqa: F811
    token = world.server.user("ann", "analyst")
    head = (
        f"POST {WES}/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1099511627776\r\n\r\n"
        '--XyZ\r\nContent-Disposition: form-data; name="workflow_attachment"; filename="big.cwl"\r\n\r\n'
    ).encode()
    status, sent, answer = _raw(world.server, head, iter([b"\0" * 65536] * 2000), limit=64 * 1024**2)
    assert status == 413, answer[:300]
    assert sent < 16 * 1024**2  # answered at once (socket buffers hold a few MiB), not after 1 TiB


def test_endless_chunked_multipart_is_cut_off_at_the_body_limit(world: World) -> None:  # noqa: F811
    """No Content-Length: the limit must hold while streaming, not after parsing."""
    token = world.server.user("ann", "analyst")
    head = (
        f"POST {WES}/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    first = b'--XyZ\r\nContent-Disposition: form-data; name="workflow_attachment"; filename="big.cwl"\r\n\r\n'

    def chunks() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(first), first)
        block = b"A" * 1024 * 1024
        while True:
            yield b"%x\r\n%s\r\n" % (len(block), block)

    limit = world.server.env.get("HELIXGATE_MAX_JSON_BYTES") or str(32 * 1024**2)
    status, sent, answer = _raw(world.server, head, chunks(), limit=4 * int(limit))
    assert status == 413, (sent, answer[:300])
    # cut off near the limit; kernel socket buffers let a few more MiB through before the reset
    assert sent <= int(limit) + 16 * 1024**2, sent


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_upload_cut_off_mid_body_stores_nothing(world: World, framing: str) -> None:  # noqa: F811
    """A client that disconnects part-way must not leave a (shorter) object behind."""
    token = world.server.user("steward", "data-steward")
    name = f"cut-{framing}-{uuid.uuid4().hex[:8]}"
    block = os.urandom(1024 * 1024)
    sent_blocks = 20  # several of the server's read batches
    framing_header = "Transfer-Encoding: chunked" if framing == "chunked" else f"Content-Length: {64 * len(block)}"
    head = (
        f"POST /ga4gh/drs/v1/x-helixgate/objects?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n{framing_header}\r\n\r\n"
    ).encode()
    piece = b"%x\r\n%s\r\n" % (len(block), block) if framing == "chunked" else block
    sock = socket.create_connection(("127.0.0.1", world.server.port), timeout=20)
    try:
        sock.sendall(head)
        for _ in range(sent_blocks):
            sock.sendall(piece)
    finally:
        sock.close()  # no terminating chunk / short of Content-Length
    steward = HelixGate.connect(world.server.url, token, verify=world.server.verify)
    prefix = hashlib.sha256(block * sent_blocks).hexdigest()
    deadline = time.monotonic() + 30
    leftovers: list[Path] = []
    while time.monotonic() < deadline:
        leftovers = list((world.server.data_dir / "drs" / "objects").glob("*/.*.tmp"))
        if not leftovers:
            break
        time.sleep(0.2)
    assert steward.find_objects(prefix) == []  # the bytes that did arrive were not stored as an object
    assert not leftovers, leftovers  # and their temporary file is gone
