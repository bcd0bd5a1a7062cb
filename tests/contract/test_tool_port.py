"""The ``ToolPort`` contract: the in-process implementation (``trs_registry.port``) and the
HTTP one (``helixgate.ports_http``) return the same verified descriptors, bundles, trust
material and image pins from the same registry, and refuse the same tampering. Each call is
audited by TRS as the service identity; WES writes nothing for them."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from helixgate.errors import IntegrityError, NotFound
from helixgate.ports import ImagePin, ToolPort
from helixgate.ports_http import HttpToolPort
from helixgate_app.demo_assets import workflow_files
from tests.contract.conftest import IMPLEMENTATIONS, Deployment
from trs_registry.domain import TrsRegistry
from trs_registry.models import ToolFileRow, ToolVersionRow
from wes_server.tools import SignedVersions

pytestmark = [pytest.mark.integration]


def _version_row(deployment: Deployment, s: sa.orm.Session, version_id: str) -> ToolVersionRow:
    return s.scalars(
        sa.select(ToolVersionRow).where(
            ToolVersionRow.tool_id == deployment.tool_id, ToolVersionRow.version_id == version_id
        )
    ).one()


def test_platform_picks_the_in_process_port_only_when_trs_is_served_here(deployment: Deployment) -> None:
    from trs_registry.port import InProcessToolPort

    p = deployment.platform
    p.served = frozenset({"trs"})
    assert isinstance(p.port(ToolPort), InProcessToolPort)
    p.served = frozenset()
    assert isinstance(p.port(ToolPort), HttpToolPort)


def test_both_implementations_answer_alike(deployment: Deployment) -> None:
    ports = {impl: deployment.tool_port(impl) for impl in IMPLEMENTATIONS}
    local, remote = ports["in-process"], ports["http"]
    assert local.descriptors(deployment.tool_id, "1.0.0") == remote.descriptors(deployment.tool_id, "1.0.0")
    wdl = (deployment.tool_id, "4.0.0", "WDL")
    assert local.descriptors(*wdl) == remote.descriptors(*wdl)
    assert local.bundle(deployment.tool_id, "1.0.0") == remote.bundle(deployment.tool_id, "1.0.0")
    assert local.trust_material() == remote.trust_material()
    assert local.image_pins(deployment.image_ref) == remote.image_pins(deployment.image_ref)


def test_descriptors_are_each_verified_against_the_recorded_checksum(deployment: Deployment, impl: str) -> None:
    files = deployment.tool_port(impl).descriptors(deployment.tool_id, "1.0.0")
    published = workflow_files(deployment.image_ref)
    assert {f.path: f.content.decode() for f in files} == published
    assert [f.path for f in files if f.primary] == ["workflow.cwl"]
    assert all(f.sha256 == hashlib.sha256(f.content).hexdigest() for f in files)
    with pytest.raises(NotFound):
        deployment.tool_port(impl).descriptors(deployment.tool_id, "9.9.9")


def test_descriptors_of_the_asked_language(deployment: Deployment, impl: str) -> None:
    port = deployment.tool_port(impl)
    files = port.descriptors(deployment.tool_id, "4.0.0", "WDL")
    assert {f.path: f.content.decode() for f in files} == workflow_files(deployment.image_ref, "wdl")
    assert [f.path for f in files if f.primary] == ["workflow.wdl"]
    assert all(f.sha256 == hashlib.sha256(f.content).hexdigest() for f in files)
    # a WDL-only version has no CWL descriptor, a CWL-only one no WDL descriptor
    with pytest.raises(NotFound, match="has no CWL descriptor"):
        port.descriptors(deployment.tool_id, "4.0.0")
    with pytest.raises(NotFound, match="has no WDL descriptor"):
        port.descriptors(deployment.tool_id, "1.0.0", "WDL")


def test_a_descriptor_edited_without_its_checksum_is_refused(deployment: Deployment, impl: str) -> None:
    with deployment.platform.db.session() as s:
        row = _version_row(deployment, s, "2.0.0")
        f = s.scalars(
            sa.select(ToolFileRow).where(ToolFileRow.version_pk == row.pk, ToolFileRow.path == "workflow.cwl")
        ).one()
        if not f.content.endswith(b"# edited\n"):
            f.content = bytes(f.content) + b"# edited\n"
        recorded = f.sha256
    with pytest.raises(IntegrityError) as info:
        deployment.tool_port(impl).descriptors(deployment.tool_id, "2.0.0")
    assert f"sha256 mismatch for descriptor workflow.cwl of {deployment.tool_id}:2.0.0" in info.value.message
    assert info.value.expected == recorded and info.value.actual != recorded


def test_bundle_of_a_signed_version_verifies_and_an_unsigned_one_is_empty(deployment: Deployment, impl: str) -> None:
    port = deployment.tool_port(impl)
    facts = SignedVersions(port, deployment.platform.settings).signed_version(deployment.tool_id, "1.0.0")
    assert (facts.tool_id, facts.version_id) == (deployment.tool_id, "1.0.0")
    assert facts.config_digest == deployment.image.image_id
    with deployment.platform.db.session() as s:
        _version_row(deployment, s, "3.0.0").bundle = ""
    assert port.bundle(deployment.tool_id, "3.0.0") == ""
    assert port.bundle(deployment.tool_id, "9.9.9") == ""


def test_trust_material_is_the_registrys_public_keyring(deployment: Deployment, impl: str) -> None:
    material = deployment.tool_port(impl).trust_material()
    assert material.kind == "key"
    assert material.active_key_id in {k.key_id for k in material.keys}
    assert all(k.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----") for k in material.keys)
    assert not any(k.revoked for k in material.keys)
    assert "PRIVATE" not in str(material)
    # what the registry itself publishes, key for key
    published = deployment.platform.domain(TrsRegistry).trust_material()
    assert material.active_key_id == published["activeKeyId"]
    assert [(k.key_id, k.public_key_pem) for k in material.keys] == [
        (k["keyId"], k["publicKey"]) for k in published["keys"]
    ]


def test_image_pins_name_each_signed_version_of_a_reference(deployment: Deployment, impl: str) -> None:
    port = deployment.tool_port(impl)
    pins = port.image_pins(deployment.image_ref)
    expected = ImagePin(
        tool_id=deployment.tool_id,
        version_id="1.0.0",
        pinned_ref=deployment.image.pinned_ref,
        image_id=deployment.image.image_id,
        signed_digest=deployment.image.digest,
        digest_kind="manifest",
    )
    assert expected in pins
    assert {p.tool_id for p in pins} == {deployment.tool_id}
    assert port.image_pins(deployment.image.pinned_ref) == pins
    assert port.image_pins("127.0.0.1:5000/helixgate-test/nothing-here:1") == []


def test_each_call_is_audited_by_trs_as_the_service_identity(deployment: Deployment, impl: str) -> None:
    port = deployment.tool_port(impl)
    # trust material is a public operation: over HTTP TRS does not authenticate it at all
    public = {deployment.service_user, "anonymous"}
    for call, actors in (
        (lambda: port.bundle(deployment.tool_id, "1.0.0"), {deployment.service_user}),
        (lambda: port.image_pins(deployment.image_ref), {deployment.service_user}),
        (port.trust_material, public),
    ):
        before = deployment.last_seq()
        call()
        ((record),) = deployment.records_since(before)
        assert (record.service, record.category) == ("trs", "request")
        assert record.actor in actors
    before = deployment.last_seq()
    port.descriptors(deployment.tool_id, "1.0.0")
    records = deployment.records_since(before)
    assert records and {(r.service, r.actor) for r in records} == {("trs", deployment.service_user)}
