"""``helixgate demo``: the whole product on embedded defaults, offline, in one command.

It starts the three services and a worker in this process on a free loopback port with a
temporary data directory, builds a small tool image offline, publishes and signs it in
TRS, uploads sample data to DRS, runs a three-step workflow (CWL, or the same workflow in
WDL with ``--language wdl``) through WES and prints the evidence; then shows a tampered input
and an unsigned image refused before any task runs. Exit status 0 only when every one of
those things happened as expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

from helixgate.errors import HelixGateError
from helixgate.platform import Platform

SAMPLE = b"".join(
    line + b"\n"
    for line in (b"brca1 chr17 43044295", b"tp53 chr17 7668402", b"egfr chr7 55019017", b"brca1 chr17 43044295")
)


class DemoFailure(HelixGateError):
    """Something the demo expected did not happen."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Printer:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.failures: list[str] = []

    def step(self, title: str) -> None:
        self.out(f"\n== {title}")

    def info(self, text: str) -> None:
        self.out(f"   {text}")

    def check(self, ok: bool, text: str) -> None:
        self.out(f"   [{'ok' if ok else 'FAILED'}] {text}")
        if not ok:
            self.failures.append(text)


@contextlib.contextmanager
def embedded_platform(data_dir: Path, port: int, scope: str) -> Iterator[Platform]:
    """All services in this process and two worker slots in a sandboxed child process that
    holds no key (as ``serve all``); stopped and cleaned on exit."""
    import uvicorn

    from helixgate.config import load_settings
    from helixgate_app.server import build_app
    from helixgate_app.services import ROLES, build_platform
    from helixgate_app.worker_process import WorkerProcess

    settings = load_settings(
        env={}, data_dir=str(data_dir), port=port, lease_seconds=15, container_scope=scope, bootstrap_admin="admin"
    )
    platform = build_platform(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(platform, ROLES["all"]),
            host="127.0.0.1",
            port=port,
            log_level="error",
            access_log=False,
            proxy_headers=False,
        )
    )
    thread = threading.Thread(target=server.run, name="hg-demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise DemoFailure("the embedded server did not start")
        time.sleep(0.05)
    # the demo prints its own evidence: the workers' log lines would only interleave with it
    pool = WorkerProcess(platform, concurrency=2, log_level=logging.CRITICAL + 1)
    pool.start()
    try:
        yield platform
    finally:
        pool.stop(timeout=10)
        server.should_exit = True
        thread.join(10)
        platform.close()


def run_demo(out: Callable[[str], None] = print, keep: bool = False, language: str = "cwl") -> int:
    import logging

    import docker

    from helixgate.images import build_busybox_image
    from helixgate.sdk import HelixGate
    from helixgate_app.demo_assets import LANGUAGES, PRIMARY, WORKFLOW_TYPE, workflow_files, workflow_inputs
    from wes_server.containers import ContainerRunner

    logging.basicConfig(handlers=[logging.NullHandler()], force=True)  # the demo prints its own evidence
    if language not in LANGUAGES:
        raise DemoFailure(f"unknown workflow language {language!r}; the demo speaks {', '.join(LANGUAGES)}")
    wtype, primary = WORKFLOW_TYPE[language], PRIMARY[language]
    p = Printer(out)
    tmp = Path(tempfile.mkdtemp(prefix="helixgate-demo-"))
    scope = f"demo-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    client = docker.from_env()
    images: list[str] = []
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any engine problem ends the demo with one line
        raise DemoFailure(f"the Docker engine is not reachable ({type(exc).__name__}); run scripts/demo.sh") from None
    try:
        with embedded_platform(tmp / "data", port, scope) as platform:
            url = f"http://127.0.0.1:{port}"
            host = f"127.0.0.1:{port}"
            issuer = platform.issuer
            if issuer is None:  # the embedded settings enable it
                raise DemoFailure("the demo needs the built-in token issuer")
            users = platform.users
            for name, role in (("dana", "tool-developer"), ("sam", "data-steward"), ("alice", "analyst")):
                users.ensure(name, roles=(role,))
            dev, steward, alice = (HelixGate.connect(url, issuer.issue(n, 1800)) for n in ("dana", "sam", "alice"))
            p.step(f"HelixGate running on {url} (data in {tmp / 'data'})")
            p.info("users: dana (tool-developer), sam (data-steward), alice (analyst)")

            # ---- a tool, built offline, published and signed
            p.step("Tool developer publishes a signed tool")
            image_ref = f"helixgate-demo/textkit:{tag}"
            image_id = build_busybox_image(client, "helixgate-demo/textkit", tag, labels={"helixgate.demo": scope})
            images.append(image_id)
            p.info(f"built image {image_ref} offline: {image_id}")
            tool = dev.create_tool("helixgate-demo", f"textkit-{tag}", description="upper-case, de-duplicate, count")
            version = dev.publish_version(
                tool["id"],
                "1.0.0",
                workflow_files(image_ref, language),
                [image_ref],
                primary=primary,
                descriptor_type=wtype,
            )
            record = dev.version_record(tool["id"], "1.0.0")
            sig = record["signature"]
            p.check(bool(version.get("signed")), f"version {tool['id']}:1.0.0 signed={version.get('signed')}")
            pinned = record["images"][0]["image_name"]
            p.info(f"image pinned: {pinned} ({sig['digest_kind']} digest {sig['subject_digest']})")
            p.info(f"signed by: {sig['signer']} ({sig['signer_kind']})")
            for f in record["files"]:
                p.info(f"descriptor {f['path']}: sha256 {f['checksum']['checksum']}")

            # ---- data, hashed by the server
            p.step("Data steward uploads a dataset and grants alice read access")
            dataset = steward.create_dataset("variants")
            steward.grant(dataset["id"], "alice")
            local_sha = hashlib.sha256(SAMPLE).hexdigest()
            obj = steward.upload(SAMPLE, name="genes.txt", dataset_id=dataset["id"], sha256=local_sha)
            server_sha = next(c["checksum"] for c in obj["checksums"] if c["type"] == "sha-256")
            p.check(server_sha == local_sha, f"drs://{host}/{obj['id']} sha-256 {server_sha} (computed by the server)")

            # ---- the verified run
            p.step(f"Analyst runs the three-step {wtype} workflow from TRS on the DRS object")
            params = workflow_inputs(f"drs://{host}/{obj['id']}", language)
            run_id = alice.submit_run(f"trs://{host}/{tool['id']}/1.0.0", params, workflow_type=wtype)
            state = alice.wait(run_id, timeout=300)
            p.check(state == "COMPLETE", f"run {run_id} ended {state}")
            for task in alice.run_tasks(run_id):
                p.info(f"task {task['id']} exit {task.get('exit_code', '-')}")
                for line in task.get("system_logs") or []:
                    p.info(f"  {line}")
            outputs = alice.run_log(run_id)["outputs"]
            for name, value in sorted(outputs.items()):
                if isinstance(value, dict) and value.get("class") == "File":
                    oid = value["location"].rsplit("/", 1)[-1]
                    data = b"".join(alice.download(oid))
                    ok = "sha256$" + hashlib.sha256(data).hexdigest() == value["checksum"]
                    p.check(ok, f"output {name}: {value['location']} {value['checksum']}")
                    p.info(f"  content: {data.decode(errors='replace').strip()!r}")

            # ---- tampering refused before any task
            p.step("A tampered input is refused before any task runs")
            bad = steward.upload(SAMPLE, name="genes-copy.txt", dataset_id=dataset["id"])
            _corrupt_blob(platform, bad["id"])
            p.info(f"flipped one byte of the encrypted blob of drs://{host}/{bad['id']} on disk")
            run2 = alice.submit_run(
                f"trs://{host}/{tool['id']}/1.0.0",
                workflow_inputs(f"drs://{host}/{bad['id']}", language),
                workflow_type=wtype,
            )
            state2 = alice.wait(run2, timeout=300)
            tasks2 = alice.run_tasks(run2)
            p.check(state2 != "COMPLETE" and not tasks2, f"run {run2} ended {state2} with {len(tasks2)} tasks started")
            for line in alice.run_log(run2)["run_log"]["system_logs"]:
                p.info(f"reason: {line}")

            p.step("An unsigned image is refused before any task runs")
            unsigned_ref = f"helixgate-demo/unsigned:{tag}"
            images.append(
                build_busybox_image(
                    client,
                    "helixgate-demo/unsigned",
                    tag,
                    labels={"helixgate.demo": scope},
                    extra_files={"/etc/motd": b"not published\n"},
                )
            )
            files = {k: v.encode() for k, v in workflow_files(unsigned_ref, language).items()}
            run3 = alice.submit_run(primary, params, attachments=files, workflow_type=wtype)
            state3 = alice.wait(run3, timeout=300)
            ran = [t for t in alice.run_tasks(run3) if t.get("exit_code") is not None]
            p.check(state3 != "COMPLETE" and not ran, f"run {run3} ended {state3}; no task started a container")
            for line in alice.run_log(run3)["run_log"]["system_logs"]:
                p.info(f"reason: {line}")

            p.step("Audit trail")
            report = platform.audit.verify()
            p.check(report.ok, f"hash chain verified over {report.records_checked} records")
            security = [r for r in platform.audit.query(category="security", page_size=50)[0] if r.outcome != "success"]
            p.info(f"{len(security)} security events recorded, e.g.:")
            for rec in security[:3]:
                p.info(f"  {rec.to_cef()[:160]}")
    finally:
        # the demo's own scope: every container left is an orphan
        leftovers = ContainerRunner(client, scope=scope).remove_orphans(lambda runs: dict.fromkeys(runs))
        for image in images:
            with contextlib.suppress(Exception):
                client.images.remove(image, force=True)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        client.close()
    p.step("Result")
    p.check(not leftovers, f"containers left behind: {len(leftovers)}")
    if p.failures:
        p.info(f"{len(p.failures)} expectation(s) failed")
        return 1
    p.info("everything ran verified; tampering and an unsigned image were refused before any task")
    return 0


def _corrupt_blob(platform: Platform, object_id: str) -> None:
    """Flip one byte of the stored ciphertext (what an attacker with disk access could do)."""
    from sqlalchemy import text

    with platform.db.engine.connect() as conn:
        location = conn.execute(text("SELECT location FROM drs_objects WHERE id = :i"), {"i": object_id}).scalar_one()
    blob = next(Path(platform.settings.data_dir).rglob(f"{location}.blob"))
    raw = bytearray(blob.read_bytes())
    raw[-20] ^= 0x01
    blob.write_bytes(bytes(raw))
