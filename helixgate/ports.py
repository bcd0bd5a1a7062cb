"""The typed ports between services: what WES needs of DRS (``DataPort``) and of TRS
(``ToolPort``), and the frozen values that cross them (no raw JSON at a service boundary).

Each port has two implementations that pass one contract suite (``tests/contract``): an
in-process one offered by the owning service (``drs_store.port``, ``trs_registry.port``),
which calls its own domain and writes its own audit record, and an HTTP one in the core
(``helixgate.ports_http``), a plain GA4GH client. Policy (which signed version covers an
image, how long trust material is cached) belongs to the caller, not to a port.

Every value that reaches a port from storage or the network is re-checked where it is
read: a descriptor's bytes against its recorded checksum, a download against the checksum
DRS computed. A failed check raises ``IntegrityError`` (expected vs actual).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from helixgate.errors import IntegrityError
from helixgate.integrity import check_sha256, normalize_sha256, sha256_bytes

CWL_DESCRIPTOR_TYPES = ("PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR")  # the file types of a language's descriptors
WORKFLOW_LANGUAGES = ("CWL", "WDL")  # TRS descriptor types WES can run


def sha256_from_checksums(checksums: object, subject: str) -> str:
    """The sha-256 value of a GA4GH checksum list (DRS) or single checksum object (TRS)."""
    items = [checksums] if isinstance(checksums, Mapping) else checksums if isinstance(checksums, list) else []
    for c in items:
        if isinstance(c, Mapping) and str(c.get("type", "")).lower() in ("sha-256", "sha256"):
            return normalize_sha256(str(c.get("checksum", "")))
    raise IntegrityError(f"{subject} carries no sha-256 checksum", subject=subject)


# ---------------------------------------------------------------- DRS
@dataclass(frozen=True)
class DataObject:
    """A DRS object as WES sees it; ``sha256`` is the checksum DRS computed while storing."""

    id: str
    self_uri: str
    name: str
    size: int
    sha256: str
    mime_type: str = ""

    @classmethod
    def from_drs_json(cls, raw: Mapping[str, object]) -> DataObject:
        """Read a DRS 1.5 ``DrsObject`` (what the API returns and the domain renders)."""
        object_id = str(raw.get("id") or "")
        size = raw.get("size")
        return cls(
            id=object_id,
            self_uri=str(raw.get("self_uri") or ""),
            name=str(raw.get("name") or ""),
            size=int(size) if isinstance(size, (int, float, str)) else 0,
            sha256=sha256_from_checksums(raw.get("checksums"), f"DRS object {object_id}"),
            mime_type=str(raw.get("mime_type") or ""),
        )


@dataclass(frozen=True)
class Download:
    """A verified download: the bytes at the destination hash to ``sha256`` (DRS's checksum)."""

    sha256: str
    size: int
    object: DataObject


@dataclass(frozen=True)
class Provenance:
    """How an output came to be (stored by DRS with the object)."""

    run_id: str
    task_id: str
    workflow: str
    input_checksums: Mapping[str, str] = field(default_factory=dict)
    image_digest: str = ""
    tool: str = ""

    def as_json(self) -> str:
        body: dict[str, object] = {
            "run_id": self.run_id,
            "task_id": self.task_id,
            "workflow": self.workflow,
            "input_checksums": dict(self.input_checksums),
        }
        if self.image_digest:
            body["image_digest"] = self.image_digest
            body["tool"] = self.tool
        return json.dumps(body)


@runtime_checkable
class DataPort(Protocol):
    """DRS as WES needs it. ``user`` is whom the service identity acts for: DRS applies that
    user's read and write rights and audits both identities."""

    def lookup(self, user: str, object_id: str) -> DataObject:
        """The object's metadata; NotFound/Forbidden exactly as DRS answers ``user``."""
        ...

    def unreadable(self, user: str, object_ids: Sequence[str]) -> list[str]:
        """The ids ``user`` may not read (unknown, hidden or forbidden), in the given order."""
        ...

    def download(self, user: str, object_id: str, dest: Path) -> Download:
        """Stream the object to ``dest`` (created exclusively via ``dest.part``) while hashing;
        refuse it (IntegrityError, nothing left at ``dest``) unless the hash is DRS's checksum."""
        ...

    def upload(
        self,
        user: str,
        stream: BinaryIO,
        *,
        name: str,
        sha256: str,
        provenance: Provenance,
        mime_type: str = "application/octet-stream",
    ) -> DataObject:
        """Store an output owned by ``user``; DRS refuses it (IntegrityError) unless the bytes
        hash to ``sha256``. The returned checksum is the one DRS computed."""
        ...


# ---------------------------------------------------------------- TRS
@dataclass(frozen=True)
class DescriptorFile:
    """A descriptor file whose bytes were hashed on arrival and equal TRS's recorded checksum."""

    path: str
    content: bytes
    sha256: str
    primary: bool


@dataclass(frozen=True)
class ImagePin:
    """What TRS's tables say about one signed version covering an image reference.
    Untrusted: the gate compares every field it uses with the version's verified statement."""

    tool_id: str
    version_id: str
    pinned_ref: str  # name@sha256:<manifest> or sha256:<image id>
    image_id: str  # sha256:<config digest>
    signed_digest: str
    digest_kind: str


@dataclass(frozen=True)
class TrustKey:
    key_id: str
    public_key_pem: str
    revoked: bool


@dataclass(frozen=True)
class TrustMaterial:
    """What a verifier needs to check the registry's bundles (public, no secrets):
    ``kind == "key"``: the registry's keyring; ``kind == "sigstore"``: a trust config JSON."""

    kind: str
    active_key_id: str = ""
    keys: tuple[TrustKey, ...] = ()
    trust_config_json: str = ""
    identities: tuple[tuple[str, str], ...] = ()  # (identity, OIDC issuer)

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> TrustMaterial:
        keys = raw.get("keys")
        idents = raw.get("identities")
        config = raw.get("trustConfig")
        return cls(
            kind=str(raw.get("kind") or ""),
            active_key_id=str(raw.get("activeKeyId") or ""),
            keys=tuple(
                TrustKey(str(k.get("keyId") or ""), str(k.get("publicKey") or ""), bool(k.get("revoked")))
                for k in (keys if isinstance(keys, list) else [])
                if isinstance(k, Mapping)
            ),
            trust_config_json=json.dumps(config, sort_keys=True) if config is not None else "",
            identities=tuple(
                (str(i.get("identity") or ""), str(i.get("issuer") or ""))
                for i in (idents if isinstance(idents, list) else [])
                if isinstance(i, Mapping)
            ),
        )

    def as_json(self) -> dict[str, object]:
        """The published shape (what ``helixgate.signing.build_trust_policy`` reads)."""
        if self.kind == "key":
            return {
                "kind": "key",
                "activeKeyId": self.active_key_id,
                "keys": [
                    {"keyId": k.key_id, "publicKey": k.public_key_pem, "revoked": k.revoked or None} for k in self.keys
                ],
            }
        body: dict[str, object] = {"kind": self.kind}
        if self.trust_config_json:
            body["trustConfig"] = json.loads(self.trust_config_json)
        if self.identities:
            body["identities"] = [{"identity": i, "issuer": s} for i, s in self.identities]
        return body


@runtime_checkable
class ToolPort(Protocol):
    """TRS as WES needs it (read-only, as the service identity)."""

    def descriptors(self, tool_id: str, version_id: str, language: str = "CWL") -> list[DescriptorFile]:
        """Every descriptor file of a version in ``language`` (CWL or WDL), each re-checked
        against TRS's recorded checksum; IntegrityError when one differs or there is no primary
        descriptor."""
        ...

    def bundle(self, tool_id: str, version_id: str) -> str:
        """The version's own signature bundle; "" when it has none (or no such version)."""
        ...

    def trust_material(self) -> TrustMaterial: ...

    def image_pins(self, reference: str) -> list[ImagePin]:
        """The signed versions whose primary image is ``reference``, newest first."""
        ...


def check_descriptor(tool_id: str, version_id: str, path: str, recorded: str, content: bytes) -> str:
    """Hash a descriptor's bytes on arrival and compare with the checksum TRS recorded."""
    actual = sha256_bytes(content)
    check_sha256(f"descriptor {path} of {tool_id}:{version_id}", recorded, actual)
    return actual


def require_primary(
    files: Sequence[DescriptorFile], tool_id: str, version_id: str, language: str = "CWL"
) -> list[DescriptorFile]:
    if not any(f.primary for f in files):
        raise IntegrityError(
            f"TRS version {tool_id}:{version_id} has no primary {language} descriptor", subject=tool_id
        )
    return list(files)


def receive_verified(chunks: Iterable[bytes], dest: Path, expected: str, subject: str) -> tuple[str, int]:
    """Write ``chunks`` to ``dest`` through ``dest.part`` (O_EXCL: never through a link planted
    at the name) while hashing; only bytes that hash to ``expected`` ever appear at ``dest``."""
    tmp = dest.with_name(dest.name + ".part")
    sha = hashlib.sha256()
    size = 0
    with open(tmp, "xb") as out:  # ours from here on: removed on any failure
        try:
            for chunk in chunks:
                sha.update(chunk)
                size += len(chunk)
                out.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    try:
        check_sha256(subject, expected, sha.hexdigest())
    except IntegrityError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)
    return sha.hexdigest(), size
