"""TRS's in-process implementation of ``helixgate.ports.ToolPort``: the registry's own
tables read as the service identity, each descriptor re-checked against its recorded
checksum exactly as over HTTP, audited here once per call by TRS itself."""

from __future__ import annotations

from helixgate.audit import AuditTrail
from helixgate.errors import HelixGateError, NotFound
from helixgate.platform import Platform
from helixgate.ports import (
    CWL_DESCRIPTOR_TYPES,
    DescriptorFile,
    ImagePin,
    TrustMaterial,
    check_descriptor,
    require_primary,
)
from trs_registry.domain import TrsRegistry


class InProcessToolPort:
    def __init__(self, registry: TrsRegistry, audit: AuditTrail, service_user: str) -> None:
        self.registry = registry
        self.audit = audit
        self.service_user = service_user

    def _audit(self, action: str, target: str, outcome: str, status: int) -> None:
        self.audit.record(
            category="request",
            action=action,
            outcome=outcome,
            actor=self.service_user,
            service="trs",
            target=target[:200],
            details={"in_process": True, "status": status},
        )

    def descriptors(self, tool_id: str, version_id: str, language: str = "CWL") -> list[DescriptorFile]:
        target = f"{tool_id}:{version_id}"
        try:
            files = self.registry.version_files(tool_id, version_id, language, with_content=True)
        except HelixGateError as exc:
            self._audit("trs.descriptors.read", target, "failure", exc.status)
            raise
        self._audit("trs.descriptors.read", target, "success", 200)
        out = []
        for f in files:
            if f.info.file_type not in CWL_DESCRIPTOR_TYPES:
                continue
            actual = check_descriptor(tool_id, version_id, f.info.path, f.info.sha256, f.content)
            out.append(DescriptorFile(f.info.path, f.content, actual, f.info.file_type == "PRIMARY_DESCRIPTOR"))
        return require_primary(out, tool_id, version_id, language)

    def bundle(self, tool_id: str, version_id: str) -> str:
        target = f"{tool_id}:{version_id}"
        try:
            bundle = str(self.registry.bundle(tool_id, version_id))
        except NotFound:
            self._audit("trs.bundle.read", target, "failure", 404)
            return ""
        self._audit("trs.bundle.read", target, "success", 200)
        return bundle

    def trust_material(self) -> TrustMaterial:
        material = TrustMaterial.from_json(self.registry.trust_material())
        self._audit("trs.trust.read", "signing trust material", "success", 200)
        return material

    def image_pins(self, reference: str) -> list[ImagePin]:
        found = self.registry.find_image_pins(reference)
        self._audit("trs.images.find", reference, "success", 200)
        return [
            ImagePin(
                tool_id=ver.tool_id,
                version_id=ver.version_id,
                pinned_ref=ver.images[0].pinned_name,
                image_id=ver.images[0].config_digest,
                signed_digest=ver.signed_digest,
                digest_kind=ver.digest_kind,
            )
            for ver in found
        ]


def build(platform: Platform) -> InProcessToolPort:
    """The provider ``Platform.port(ToolPort)`` calls when TRS is served in this process."""
    registry = platform.domain(TrsRegistry)
    return InProcessToolPort(registry, platform.audit, platform.settings.service_user)
