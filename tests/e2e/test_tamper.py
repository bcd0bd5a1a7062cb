"""An attacker with write access to the registry's and the data store's tables and files (but
not to the signing key) cannot make a task run anything but the signed and hashed: each
tamper class is refused before any container of the affected task is created, is recorded as
a security event, and the run log (or the 4xx answer) names what differed.

Tables are edited directly through SQLAlchemy on the live server's database; files in its
data directory. Container creation is observed through the engine's event stream, filtered
by the run label every task container carries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import docker
import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from drs_store.models import ObjectRow
from helixgate.client import ClientError
from helixgate_app.demo_assets import workflow_files
from tests.e2e.conftest import World
from tests.e2e.test_run_control import _slow_workflow, _wait_task, _world
from tests.fixtures.docker_images import TEST_LABEL, PushedImage, session_scope
from tests.fixtures.live import stop_server
from trs_registry.models import ImageRow, ToolVersionRow
from wes_server.containers import RUN_LABEL, TASK_LABEL
from wes_server.models import AttachmentRow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = b"banana\napple\ncherry\n"
EVIL_SORT = """cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {dockerPull: "IMAGE"}
baseCommand: [sh, -c, 'echo PWNED']
inputs:
  src: {type: File, inputBinding: {position: 1}}
outputs:
  out: {type: stdout}
stdout: sorted.txt
"""


# ---------------------------------------------------------------- helpers
def _session(server: Any) -> Session:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'helixgate.db'}")
    return Session(engine)


def _version_row(s: Session, tool_id: str, version_id: str) -> ToolVersionRow:
    return s.scalars(
        sa.select(ToolVersionRow).where(ToolVersionRow.tool_id == tool_id, ToolVersionRow.version_id == version_id)
    ).one()


def _trs_run(world: World, object_id: str, version: str | None = None) -> str:
    return world.analyst.submit_run(
        f"trs://{world.drs_host}/{world.tool_id}/{version or world.version_id}",
        {"text": {"class": "File", "location": world.drs_uri(object_id)}},
    )


def _created_containers(run_id: str, since: float) -> list[dict[str, str]]:
    """Labels of every container the engine created for ``run_id`` since ``since``."""
    client = docker.from_env()
    try:
        events = client.events(
            since=int(since) - 1,
            until=int(time.time()) + 1,
            decode=True,
            filters={"type": "container", "event": "create", "label": f"{RUN_LABEL}={run_id}"},
        )
        return [dict(e["Actor"]["Attributes"]) for e in events]
    finally:
        client.close()


def _security_events(server: Any, since_seq: int = 0) -> list[dict[str, Any]]:
    token = server.user("audrey", "auditor")
    r = requests.get(
        f"{server.url}/helixgate/v1/audit/events",
        headers=server.headers(token),
        params={"category": "security", "page_size": 500},
        timeout=30,
    )
    r.raise_for_status()
    return list(r.json()["events"])


def _has_event(server: Any, action: str, **details: str) -> bool:
    for e in _security_events(server):
        d = e.get("details") or {}
        if e["action"] == action and all(str(d.get(k)) == v or e.get(k) == v for k, v in details.items()):
            return True
    return False


def _run_text(world: World, run_id: str) -> str:
    log = world.analyst.run_log(run_id)
    lines = list(log["run_log"]["system_logs"])
    for t in world.analyst.run_tasks(run_id):
        lines.extend(t["system_logs"])
    return "\n".join(lines)


def _assert_refused_before_any_task(world: World, run_id: str, since: float) -> str:
    state = world.analyst.wait(run_id, timeout=300)
    text = _run_text(world, run_id)
    assert state == "EXECUTOR_ERROR", (state, text, world.server.log()[-3000:])
    assert all(t.get("exit_code") is None for t in world.analyst.run_tasks(run_id)), text
    assert _created_containers(run_id, since) == [], text
    assert _has_event(world.server, "integrity.failed", run_id=run_id), text
    return text


# ---------------------------------------------------------------- TRS tables
def test_descriptor_edited_with_its_recorded_checksum_is_refused_at_submission(world: World) -> None:
    import hashlib

    evil = EVIL_SORT.replace("IMAGE", world.image.pinned_ref).encode()
    with _session(world.server) as s:
        row = _version_row(s, world.tool_id, world.version_id)
        f = next(f for f in row.files if f.path == "sort.cwl")
        original = f.sha256
        f.content, f.sha256, f.size = evil, hashlib.sha256(evil).hexdigest(), len(evil)
        s.commit()
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    with pytest.raises(ClientError) as info:
        _trs_run(world, obj["id"])
    assert info.value.status == 422, info.value.message
    message = info.value.message
    assert "sha256 of descriptor sort.cwl differs from the signed statement" in message, message
    assert original in message and hashlib.sha256(evil).hexdigest() in message
    assert world.analyst.api.get_json("/ga4gh/wes/v1/runs")["runs"] == []
    assert _has_event(world.server, "integrity.failed", stage="submission")


def test_traversal_in_a_stored_descriptor_path_is_refused_at_submission(world: World) -> None:
    with _session(world.server) as s:
        row = _version_row(s, world.tool_id, world.version_id)
        next(f for f in row.files if f.path == "sort.cwl").path = "../../../sort.cwl"
        s.commit()
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    with pytest.raises(ClientError) as info:
        _trs_run(world, obj["id"])
    assert info.value.status == 422, info.value.message
    assert "leaves its directory" in info.value.message, info.value.message
    assert not list(Path(world.server.data_dir).parent.rglob("sort.cwl"))  # nothing written anywhere
    assert _has_event(world.server, "integrity.failed", stage="submission")


def test_edited_image_config_digest_pointing_at_another_local_image_is_refused(
    world: World, docker_client: Any, test_session_id: str
) -> None:
    from helixgate.images import build_busybox_image

    other = build_busybox_image(
        docker_client,
        "helixgate-test/never-published",
        f"np-{test_session_id}",
        labels={TEST_LABEL: test_session_id},
        extra_files={"/etc/never-published": b"1"},
    )
    with _session(world.server) as s:
        row = _version_row(s, world.tool_id, world.version_id)
        s.execute(sa.update(ImageRow).where(ImageRow.version_pk == row.pk).values(config_digest=other))
        s.commit()
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    since = time.time()
    run_id = _trs_run(world, obj["id"])
    text = _assert_refused_before_any_task(world, run_id, since)
    assert "image configuration digest recorded in TRS differs from the signed statement" in text, text
    assert f"expected {world.image.image_id}, got {other}" in text, text
    assert "equals the signed" not in text  # no task claims a verified image


def test_engine_tag_pointing_at_another_local_image_is_never_used(
    world: World, docker_client: Any, test_session_id: str
) -> None:
    """The published name:tag is re-tagged in the local engine onto an image nobody signed:
    tasks still run the image whose id the statement signs (created by id, never by tag)."""
    from helixgate.images import build_busybox_image, push_image

    tag = f"lt-{test_session_id}"
    repo = "helixgate-test/busybox"
    push_image(docker_client, world.image.image_id, "127.0.0.1:5000", repo, tag)
    ref = f"127.0.0.1:5000/{repo}:{tag}"
    world.dev.publish_version(world.tool_id, "4.0.0", workflow_files(ref), [ref], primary="workflow.cwl")
    evil = build_busybox_image(
        docker_client,
        repo,
        f"le-{test_session_id}",
        labels={TEST_LABEL: test_session_id},
        extra_files={"/etc/evil": b"1"},
    )
    docker_client.api.tag(evil, f"127.0.0.1:5000/{repo}", tag)  # the engine's tag now names evil
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    since = time.time()
    run_id = _trs_run(world, obj["id"], "4.0.0")
    assert world.analyst.wait(run_id, timeout=300) == "COMPLETE", _run_text(world, run_id)
    text = _run_text(world, run_id)
    assert f"local image id {world.image.image_id} equals the signed" in text
    assert evil not in text
    created = _created_containers(run_id, since)  # every container was created from the signed id
    assert len(created) == 3 and all(c.get("image") == world.image.image_id for c in created), created


def test_version_signed_with_another_versions_bundle_or_unsigned_is_refused_at_submission(world: World) -> None:
    ref = f"{world.image.repository}:{world.image.tag}"
    world.dev.publish_version(world.tool_id, "2.0.0", workflow_files(ref), [ref], primary="workflow.cwl")
    world.dev.publish_version(world.tool_id, "3.0.0", workflow_files(ref), [ref], primary="workflow.cwl")
    with _session(world.server) as s:
        signed = _version_row(s, world.tool_id, world.version_id)
        _version_row(s, world.tool_id, "2.0.0").bundle = signed.bundle  # another version's signature
        unsigned = _version_row(s, world.tool_id, "3.0.0")
        unsigned.bundle, unsigned.signed = "", False
        s.commit()
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    with pytest.raises(ClientError) as info:
        _trs_run(world, obj["id"], "2.0.0")
    assert info.value.status == 422
    assert "signed versionId does not match: expected '2.0.0', got '1.0.0'" in info.value.message
    with pytest.raises(ClientError) as info:
        _trs_run(world, obj["id"], "3.0.0")
    assert info.value.status == 422
    assert "has no signature of its own" in info.value.message
    assert world.analyst.api.get_json("/ga4gh/wes/v1/runs")["runs"] == []
    assert _has_event(world.server, "integrity.failed", stage="submission")


@pytest.mark.parametrize("tamper", ["descriptor", "path", "unsigned"])
def test_worker_refuses_tampering_between_submission_and_first_task(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str, tamper: str
) -> None:
    """The run is accepted while everything is intact; its WES attachment rows (descriptor
    bytes + checksum, or path) or its TRS signature are then edited before a worker starts:
    the worker checks again against the verified statement before cwltool reads a byte."""
    import hashlib

    env = {"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id)}
    api_only = live_server_factory(extra_env=env, workers=0)
    world = _world(api_only, pushed_busybox, test_session_id)
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    since = time.time()
    run_id = _trs_run(world, obj["id"])
    assert world.analyst.run_status(run_id) == "QUEUED"
    evil = EVIL_SORT.replace("IMAGE", world.image.pinned_ref).encode()
    with _session(api_only) as s:
        att = s.get(AttachmentRow, (run_id, "sort.cwl"))
        assert att is not None
        if tamper == "descriptor":
            att.content, att.sha256 = evil, hashlib.sha256(evil).hexdigest()
        elif tamper == "path":
            att.path = "../../../../evil.cwl"
        else:
            _version_row(s, world.tool_id, world.version_id).bundle = ""
        s.commit()
    stop_server(api_only)
    worker = live_server_factory(extra_env=env, data_dir=api_only.data_dir, port=api_only.port)
    world.server = worker
    text = _assert_refused_before_any_task(world, run_id, since)
    assert world.analyst.run_tasks(run_id) == []
    expected = {
        "descriptor": "sha256 of descriptor sort.cwl differs from the signed statement",
        "path": "leaves its directory",
        "unsigned": "has no signature of its own",
    }[tamper]
    assert expected in text, text
    assert not list(Path(worker.data_dir).rglob("evil.cwl"))


# ---------------------------------------------------------------- the run directory between tasks
@pytest.mark.parametrize("tamper", ["symlink-unknown", "symlink-known", "hardlink"])
def test_intermediate_replaced_by_a_link_is_refused(world: World, tmp_path: Path, tamper: str) -> None:
    obj = world.steward.upload(b"beta\nalpha\n", name="t.txt", dataset_id=world.dataset_id)
    since = time.time()
    run_id = world.analyst.submit_run(
        "wf.cwl",
        {"text": {"class": "File", "location": world.drs_uri(obj["id"])}},
        attachments=_slow_workflow(world.image.pinned_ref, 4),
    )
    _wait_task(world, run_id, "a", {"DONE"})
    workdir = Path(world.server.data_dir) / "wes" / "work" / run_id
    outs = list(workdir.rglob("a.txt"))
    assert len(outs) == 1, outs
    known = next(p for p in (workdir / "inputs").rglob("*") if p.is_file())  # the DRS input: checksum known
    target = outs[0]
    target.unlink()
    if tamper == "symlink-unknown":
        forged = tmp_path / "forged.txt"
        forged.write_bytes(b"FORGED\n")
        target.symlink_to(forged)
    elif tamper == "symlink-known":
        target.symlink_to(known)
    else:
        os.link(known, target)
    state = world.analyst.wait(run_id, timeout=180)
    text = _run_text(world, run_id)
    assert state == "EXECUTOR_ERROR", (state, text)
    tasks = {t["name"]: t for t in world.analyst.run_tasks(run_id)}
    # the gate refuses c's input, or (a link to outside the run) the sandboxed engine cannot
    # read it and stops before asking for c: either way c never runs
    assert "c" not in tasks or tasks["c"].get("exit_code") is None, text
    assert "hard link" in text if tamper == "hardlink" else "symbolic link" in text, text
    assert "a.txt" in text, text
    created = _created_containers(run_id, since)
    assert {c[TASK_LABEL] for c in created} == {tasks["a"]["id"], tasks["b"]["id"]}, created  # never c
    assert _has_event(world.server, "integrity.failed", run_id=run_id)


# ---------------------------------------------------------------- DRS tables and blobs
def _blob_files(server: Any, location: str) -> tuple[Path, Path]:
    folder = Path(server.data_dir) / "drs" / "objects" / location[:2]
    return folder / f"{location}.blob", folder / f"{location}.key"


@pytest.mark.parametrize("tamper", ["swapped-rows", "swapped-blobs", "missing-blob"])
def test_drs_tampering_is_refused_and_quarantines(world: World, tamper: str) -> None:
    a = world.steward.upload(TEXT, name="a.txt", dataset_id=world.dataset_id)
    b = world.steward.upload(b"zebra\nyak\n", name="b.txt", dataset_id=world.dataset_id)
    with _session(world.server) as s:
        ra, rb = s.get(ObjectRow, a["id"]), s.get(ObjectRow, b["id"])
        assert ra is not None and rb is not None and ra.location and rb.location
        loc_a, loc_b = ra.location, rb.location
        if tamper == "swapped-rows":  # location, size and checksum move together
            for col in ("location", "size", "sha256", "key_id"):
                va, vb = getattr(ra, col), getattr(rb, col)
                setattr(ra, col, vb)
                setattr(rb, col, va)
            s.commit()
    if tamper == "swapped-blobs":
        for pa, pb in zip(_blob_files(world.server, loc_a), _blob_files(world.server, loc_b)):
            da, db = pa.read_bytes(), pb.read_bytes()
            pa.write_bytes(db)
            pb.write_bytes(da)
    elif tamper == "missing-blob":
        _blob_files(world.server, loc_a)[0].unlink()
    since = time.time()
    run_id = _trs_run(world, a["id"])
    text = _assert_refused_before_any_task(world, run_id, since)
    assert world.analyst.run_tasks(run_id) == [], text
    assert f"drs://{world.drs_host}/{a['id']}" in text, text
    reason = "missing" if tamper == "missing-blob" else "failed authentication"
    assert reason in text, text
    meta = world.analyst.get_object(a["id"])
    assert meta.get("x-helixgate-quarantined") is True, meta
    assert _has_event(world.server, "drs.integrity.failure", target=a["id"])
    with pytest.raises(ClientError) as info:  # never served again, not a plain 404
        b"".join(world.analyst.download(a["id"]))
    assert info.value.status != 404
