"""Tool developers' pages, the logic: view models built from TRS answers, and the publish checks.

Plain functions over the public API's JSON (no Flask here), so they are unit-tested alone.
The publish checks are the CLI's (``helixgate tool publish``): descriptors are UTF-8 text of
bounded size, and after publishing the registry's recorded SHA-256 of every file must equal
the SHA-256 of what was sent (``helixgate.sdk.check_recorded_checksums``). A version's
verification status is re-computed here (``helixgate.sdk.verify_tool_version``): the
registry's bundle against its published trust material, the pinned digest and every
served file, trusting no flag the registry stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from helixgate.errors import BadRequest, HelixGateError

TEXT_LIMIT = 16 * 1024 * 1024  # per descriptor, as the CLI
TOTAL_LIMIT = 32 * 1024 * 1024
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,127}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
DESCRIPTOR_TYPES = ("CWL", "WDL")


def _str(value: Any) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------- tool list
@dataclass(frozen=True)
class ToolRow:
    id: str
    name: str
    organization: str
    description: str
    versions: int
    signed_versions: int
    latest: str


def tool_rows(tools: Iterable[Mapping[str, Any]]) -> list[ToolRow]:
    rows = []
    for t in tools:
        versions = [v for v in t.get("versions") or [] if isinstance(v, Mapping)]
        rows.append(
            ToolRow(
                id=_str(t.get("id")),
                name=_str(t.get("name")),
                organization=_str(t.get("organization")),
                description=_str(t.get("description")),
                versions=len(versions),
                signed_versions=sum(1 for v in versions if v.get("signed")),
                latest=_str(versions[-1].get("id")) if versions else "",
            )
        )
    return rows


# ---------------------------------------------------------------------------- one tool
@dataclass(frozen=True)
class VersionRow:
    id: str
    signed: bool
    verified: bool
    descriptor_types: str
    images: tuple[str, ...]


@dataclass(frozen=True)
class ToolPage:
    id: str
    name: str
    organization: str
    description: str
    owner: str
    versions: tuple[VersionRow, ...]
    can_publish: bool  # the API would accept a publish from this user (owner with trs:publish)


def can_publish(owner: str, me: Mapping[str, Any]) -> bool:
    """Only a tool's owner publishes its versions, and only with ``trs:publish`` (the registry's rule)."""
    return "trs:publish" in (me.get("permissions") or []) and bool(owner) and owner == me.get("username")


def tool_page(record: Mapping[str, Any], me: Mapping[str, Any]) -> ToolPage:
    meta = record.get("x_helixgate") or {}
    owner = _str(meta.get("owner"))
    versions = tuple(
        VersionRow(
            id=_str(v.get("id")),
            signed=bool(v.get("signed")),
            verified=bool(v.get("verified")),
            descriptor_types=", ".join(_str(d) for d in v.get("descriptor_type") or []),
            images=tuple(_str(i.get("image_name")) for i in v.get("images") or [] if isinstance(i, Mapping)),
        )
        for v in record.get("versions") or []
        if isinstance(v, Mapping)
    )
    return ToolPage(
        id=_str(record.get("id")),
        name=_str(record.get("name")),
        organization=_str(record.get("organization")),
        description=_str(record.get("description")),
        owner=owner,
        versions=versions,
        can_publish=can_publish(owner, me),
    )


# ---------------------------------------------------------------------------- one version
@dataclass(frozen=True)
class ImagePin:
    reference: str
    primary: bool
    pinned: str
    manifest_digest: str
    config_digest: str
    source: str


@dataclass(frozen=True)
class FileRow:
    path: str
    file_type: str
    size: int | None
    sha256: str


@dataclass(frozen=True)
class Verification:
    """The outcome of re-verifying a version in the UI's process."""

    status: str  # "verified" | "failed" | "unsigned"
    message: str
    signer: str = ""
    subject_digest: str = ""
    expected: str = ""
    actual: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "verified"


@dataclass(frozen=True)
class VersionPage:
    tool_id: str
    version_id: str
    publisher: str
    created_at: str
    descriptor_types: str
    signed: bool
    signer_kind: str
    signer: str
    subject_name: str
    subject_digest: str
    digest_kind: str
    signed_at: str
    publisher_signer: str
    images: tuple[ImagePin, ...]
    files: tuple[FileRow, ...]
    verification: Verification


def signer_text(signature: Mapping[str, Any]) -> str:
    signer = _str(signature.get("signer"))
    return f"registry key {signer}" if signature.get("signer_kind") == "key" else signer


def version_page(record: Mapping[str, Any], verification: Verification) -> VersionPage:
    sig = record.get("signature") or {}
    pub = record.get("publisher_signature") or {}
    images = tuple(
        ImagePin(
            reference=_str(i.get("reference")),
            primary=bool(i.get("primary")),
            pinned=_str(i.get("image_name")),
            manifest_digest=_str(i.get("manifest_digest")),
            config_digest=_str(i.get("config_digest")),
            source=_str(i.get("source")),
        )
        for i in record.get("images") or []
        if isinstance(i, Mapping)
    )
    files = tuple(
        FileRow(
            path=_str(f.get("path")),
            file_type=_str(f.get("file_type")),
            size=f.get("size") if isinstance(f.get("size"), int) else None,
            sha256=_str((f.get("checksum") or {}).get("checksum")),
        )
        for f in record.get("files") or []
        if isinstance(f, Mapping)
    )
    return VersionPage(
        tool_id=_str(record.get("tool_id")),
        version_id=_str(record.get("version_id")),
        publisher=_str(record.get("publisher")),
        created_at=_str(record.get("created_at")),
        descriptor_types=", ".join(_str(d) for d in record.get("descriptor_type") or []),
        signed=bool(sig.get("signed")),
        signer_kind=_str(sig.get("signer_kind")),
        signer=signer_text(sig),
        subject_name=_str(sig.get("subject_name")),
        subject_digest=_str(sig.get("subject_digest")),
        digest_kind=_str(sig.get("digest_kind")),
        signed_at=_str(sig.get("signed_at")),
        publisher_signer=_str(pub.get("signer")) if isinstance(pub, Mapping) else "",
        images=images,
        files=files,
        verification=verification,
    )


def verify_here(
    record: Mapping[str, Any],
    bundle: Callable[[], str],
    trust_material: Callable[[], Mapping[str, Any]],
) -> Verification:
    """Re-verify ``record`` (fetched with content) here; every failure is reported, never raised."""
    from helixgate.sdk import verify_tool_version

    if not (record.get("signature") or {}).get("signed"):
        return Verification("unsigned", "this version is not signed: no task may run it")
    try:
        result = verify_tool_version(record, bundle(), trust_material())
    except HelixGateError as exc:
        return Verification(
            "failed", exc.message, expected=_str(getattr(exc, "expected", "")), actual=_str(getattr(exc, "actual", ""))
        )
    return Verification(
        "verified",
        f"signature, pinned digest and {len(result.files)} file checksum(s) verified",
        signer=result.signer,
        subject_digest=result.subject_digest,
    )


# ---------------------------------------------------------------------------- image drift
@dataclass(frozen=True)
class ImageStatus:
    reference: str
    pinned: str
    current: str
    status: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "current"


def image_statuses(report: Mapping[str, Any]) -> list[ImageStatus]:
    return [
        ImageStatus(
            reference=_str(i.get("reference")),
            pinned=_str(i.get("pinned_digest")),
            current=_str(i.get("current_digest")),
            status=_str(i.get("status")),
            message=_str(i.get("message")),
        )
        for i in report.get("images") or []
        if isinstance(i, Mapping)
    ]


# ---------------------------------------------------------------------------- publish
@dataclass(frozen=True)
class PublishRequest:
    version_id: str
    descriptor_type: str
    images: tuple[str, ...]
    primary: str
    files: dict[str, str] = field(default_factory=dict)  # path -> content (the primary first)


def decode_descriptor(name: str, data: bytes) -> str:
    """The CLI's rule: UTF-8 text of at most ``TEXT_LIMIT`` bytes."""
    if len(data) > TEXT_LIMIT:
        raise BadRequest(f"{name}: {len(data)} bytes is too large for a descriptor (limit {TEXT_LIMIT})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not UTF-8 text") from None


def _file_path(name: str) -> str:
    """The file's name as the registry records it (browsers send the base name only)."""
    path = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not _FILE_NAME.match(path) or path in (".", ".."):
        raise BadRequest(f"file name {name[:120]!r}: use letters, digits, '.', '_' and '-'")
    return path


def parse_publish(
    version_id: str,
    descriptor_type: str,
    images_text: str,
    primary: tuple[str, bytes] | None,
    secondary: Sequence[tuple[str, bytes]],
) -> PublishRequest:
    """Validate the publish form; every problem is a BadRequest naming the field."""
    version_id = version_id.strip()
    if not _VERSION.match(version_id):
        raise BadRequest("version: a semantic version such as 1.0.0 is required")
    if descriptor_type not in DESCRIPTOR_TYPES:
        raise BadRequest(f"descriptor type must be one of {', '.join(DESCRIPTOR_TYPES)}")
    images = tuple(line.strip() for line in images_text.splitlines() if line.strip())
    if not images:
        raise BadRequest("images: at least one image reference is required (the first one is signed)")
    if len(images) > 20 or any(len(i) > 512 or any(c.isspace() for c in i) for i in images):
        raise BadRequest("images: at most 20 references of at most 512 characters, one per line")
    if primary is None or not primary[0]:
        raise BadRequest("primary descriptor: choose the file to publish")
    primary_path = _file_path(primary[0])
    files = {primary_path: decode_descriptor(primary_path, primary[1])}
    total = len(primary[1])
    for name, data in secondary:
        if not name:
            continue
        path = _file_path(name)
        if path in files:
            raise BadRequest(f"file {path} is given twice")
        files[path] = decode_descriptor(path, data)
        total += len(data)
    if total > TOTAL_LIMIT:
        raise BadRequest(f"the files add up to {total} bytes (limit {TOTAL_LIMIT})")
    return PublishRequest(version_id, descriptor_type, images, primary_path, files)


# ---------------------------------------------------------------------------- trust material
@dataclass(frozen=True)
class SigningKey:
    key_id: str
    created: str
    revoked: str  # when (or "yes"), "" while trusted
    active: bool


@dataclass(frozen=True)
class Trust:
    """What verifiers trust: the registry's public keys (``key``) or Sigstore identities."""

    kind: str
    keys: tuple[SigningKey, ...]
    identities: tuple[tuple[str, str], ...]  # (identity, issuer)


def trust_view(material: Mapping[str, Any]) -> Trust:
    active = _str(material.get("activeKeyId"))
    keys = tuple(
        SigningKey(
            key_id=_str(k.get("keyId")),
            created=_str(k.get("created")),
            revoked="" if not k.get("revoked") else ("yes" if k.get("revoked") is True else _str(k.get("revoked"))),
            active=_str(k.get("keyId")) == active,
        )
        for k in material.get("keys") or []
        if isinstance(k, Mapping)
    )
    identities = tuple(
        (_str(i.get("identity")), _str(i.get("issuer")))
        for i in material.get("identities") or []
        if isinstance(i, Mapping)
    )
    return Trust(_str(material.get("kind")), keys, identities)
