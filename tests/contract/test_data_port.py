"""The ``DataPort`` contract: the in-process implementation (``drs_store.port``) and the HTTP
one (``helixgate.ports_http``) behave identically on the same deployment, and each call is
audited by DRS (the service that acted), naming the service identity and the user it acts
for; WES writes nothing for them."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from helixgate.errors import Forbidden, IntegrityError, NotFound
from helixgate.ports import DataObject, DataPort, Provenance
from helixgate.ports_http import HttpDataPort
from helixgate.sdk import HelixGate
from tests.contract.conftest import IMPLEMENTATIONS, TEXT, Deployment, sha

pytestmark = [pytest.mark.integration]
MISSING = "0" * 32


def test_platform_picks_the_in_process_port_only_when_drs_is_served_here(deployment: Deployment) -> None:
    from drs_store.port import InProcessDataPort

    p = deployment.platform
    p.served = frozenset({"drs"})
    assert isinstance(p.port(DataPort), InProcessDataPort)
    p.served = frozenset()
    assert isinstance(p.port(DataPort), HttpDataPort)


def test_both_implementations_return_the_same_object(deployment: Deployment) -> None:
    found = {impl: deployment.data_port(impl).lookup("ann", deployment.readable_id) for impl in IMPLEMENTATIONS}
    assert found["in-process"] == found["http"]
    obj = found["http"]
    assert (obj.id, obj.name, obj.size, obj.sha256) == (deployment.readable_id, "reads.txt", len(TEXT), sha(TEXT))
    assert obj.self_uri == f"drs://{deployment.server.url.split('://')[1]}/{deployment.readable_id}"


def test_lookup_on_behalf_of_a_user_found_missing_forbidden(deployment: Deployment, impl: str) -> None:
    port = deployment.data_port(impl)
    assert port.lookup("ann", deployment.readable_id).sha256 == sha(TEXT)
    with pytest.raises(NotFound, match=f"object not found: {MISSING}"):
        port.lookup("ann", MISSING)
    with pytest.raises(Forbidden, match=f"ann may not read object {deployment.secret_id}"):
        port.lookup("ann", deployment.secret_id)
    with pytest.raises(Forbidden, match="user mallory is not registered or not active"):
        port.lookup("mallory", deployment.readable_id)


def test_unreadable_names_exactly_the_refused_ids_each_audited_once_by_drs(deployment: Deployment, impl: str) -> None:
    port = deployment.data_port(impl)
    ids = [deployment.readable_id, deployment.secret_id, MISSING]
    before = deployment.last_seq()
    assert port.unreadable("ann", ids) == [deployment.secret_id, MISSING]
    assert port.unreadable("bob", [deployment.readable_id]) == [deployment.readable_id]
    records = deployment.records_since(before)
    # one request record per object; a refusal is also a security event
    assert [(r.service, r.action, r.target, r.on_behalf_of, r.outcome) for r in records] == [
        ("drs", "drs.GetObject", deployment.readable_id, "ann", "success"),
        ("drs", "auth.denied", deployment.secret_id, "ann", "denied"),
        ("drs", "drs.GetObject", deployment.secret_id, "ann", "denied"),
        ("drs", "drs.GetObject", MISSING, "ann", "failure"),
        ("drs", "auth.denied", deployment.readable_id, "bob", "denied"),
        ("drs", "drs.GetObject", deployment.readable_id, "bob", "denied"),
    ]
    assert {r.actor for r in records} == {deployment.service_user}


def test_download_is_verified_and_audited_once(deployment: Deployment, impl: str, tmp_path: Path) -> None:
    port = deployment.data_port(impl)
    dest = tmp_path / "reads.txt"
    before = deployment.last_seq()
    got = port.download("ann", deployment.readable_id, dest)
    assert dest.read_bytes() == TEXT
    assert (got.sha256, got.size, got.object.id) == (sha(TEXT), len(TEXT), deployment.readable_id)
    assert os.listdir(tmp_path) == ["reads.txt"]  # no .part left
    reads = [r for r in deployment.records_since(before) if r.action == "drs.object.read"]
    assert len(reads) == 1 and reads[0].service == "drs" and reads[0].target == deployment.readable_id
    assert "ann" in (reads[0].actor, reads[0].on_behalf_of)
    assert not [r for r in deployment.records_since(before) if r.service == "wes"]


def test_download_refuses_what_the_user_may_not_read(deployment: Deployment, impl: str, tmp_path: Path) -> None:
    port = deployment.data_port(impl)
    before = deployment.last_seq()
    with pytest.raises(Forbidden):
        port.download("ann", deployment.secret_id, tmp_path / "s")
    with pytest.raises(NotFound):
        port.download("ann", MISSING, tmp_path / "m")
    assert os.listdir(tmp_path) == []
    denied = [r for r in deployment.records_since(before) if r.category == "security"]
    assert [(r.service, r.action, r.target, r.on_behalf_of) for r in denied] == [
        ("drs", "auth.denied", deployment.secret_id, "ann")
    ]


def test_download_never_writes_through_a_link_planted_at_the_part_file(
    deployment: Deployment, impl: str, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "reads.txt.part").symlink_to(victim)
    with pytest.raises(FileExistsError):
        deployment.data_port(impl).download("ann", deployment.readable_id, tmp_path / "reads.txt")
    assert victim.read_bytes() == b"keep" and not (tmp_path / "reads.txt").exists()


def test_download_of_tampered_bytes_is_an_integrity_failure_and_stays_refused(
    deployment: Deployment, impl: str, tmp_path: Path
) -> None:
    object_id = deployment.upload(b"to be tampered\n" * 10)
    from drs_store.models import ObjectRow

    with deployment.platform.db.session() as s:
        row = s.get(ObjectRow, object_id)
        assert row is not None and row.location
        location = row.location
    blob = Path(deployment.server.data_dir) / "drs" / "objects" / location[:2] / f"{location}.blob"
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    port = deployment.data_port(impl)
    for attempt in ("first", "quarantined"):
        with pytest.raises(IntegrityError) as info:
            port.download("steward", object_id, tmp_path / attempt)
        assert info.value.subject == f"input drs://{deployment.server.url.split('://')[1]}/{object_id}", attempt
        assert "refused by DRS" in info.value.message, attempt
    assert os.listdir(tmp_path) == []


def test_upload_returns_the_server_computed_checksum_and_is_audited_once(deployment: Deployment, impl: str) -> None:
    port = deployment.data_port(impl)
    content = f"output of {impl}\n".encode()
    prov = Provenance(run_id="r1", task_id="001-t", workflow="wf.cwl", input_checksums={"/in": sha(TEXT)})
    before = deployment.last_seq()
    obj = port.upload("ann", io.BytesIO(content), name="out.txt", sha256=sha(content), provenance=prov)
    assert isinstance(obj, DataObject)
    assert (obj.sha256, obj.size, obj.name) == (sha(content), len(content), "out.txt")
    assert port.lookup("ann", obj.id) == obj  # owned by the user it was written for
    with pytest.raises(Forbidden):
        port.lookup("bob", obj.id)
    created = [r for r in deployment.records_since(before) if r.action == "drs.object.create"]
    assert [(r.service, r.actor, r.on_behalf_of, r.target) for r in created] == [
        ("drs", deployment.service_user, "ann", obj.id)
    ]
    assert created[0].details["provenance"]["run_id"] == "r1"
    stored = HelixGate.connect(deployment.server.url, deployment.server.user("ann", "analyst")).get_object(obj.id)
    assert stored["provenance"] == {
        "run_id": "r1",
        "task_id": "001-t",
        "workflow": "wf.cwl",
        "input_checksums": {"/in": sha(TEXT)},
    }


def test_upload_with_a_wrong_checksum_is_refused(deployment: Deployment, impl: str) -> None:
    port = deployment.data_port(impl)
    prov = Provenance(run_id="r1", task_id="001-t", workflow="wf.cwl")
    with pytest.raises(IntegrityError, match="refused by DRS"):
        port.upload("ann", io.BytesIO(b"actual bytes"), name="bad.txt", sha256=sha(b"other bytes"), provenance=prov)


def test_nothing_is_read_once_the_service_identity_is_deactivated(deployment: Deployment, impl: str) -> None:
    users, service = deployment.platform.users, deployment.service_user
    port = deployment.data_port(impl)
    users.set_active(service, False)
    try:
        with pytest.raises(Forbidden, match=f"{service} is not"):
            port.lookup("ann", deployment.readable_id)
    finally:
        users.set_active(service, True)
    assert port.lookup("ann", deployment.readable_id).id == deployment.readable_id
