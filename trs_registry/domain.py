"""The tool registry's domain: tools, frozen versions, image pinning and signing.

``build(platform)`` makes one ``TrsRegistry`` per process. Publishing a version:

1. validate the request (semantic version id, file paths, sizes) -- ``validation``;
2. the caller must own the tool and the version id must be new (published versions are
   immutable: 409 on republish);
3. resolve every image reference here (``images.ImageResolver``), never trusting a
   client digest; the first image is the primary image, the signed subject;
4. SHA-256 every file;
5. when the tool requires it, verify the publisher's own Sigstore bundle for the primary
   image's digest against the tool's allowed identities;
6. sign the in-toto statement with the configured signer and verify the bundle at once
   (``signed`` is true only when it verifies), then store everything in one transaction.

Errors are HelixGateError subclasses; integrity and verification failures are
``IntegrityError``/``VerificationError`` (the API layer records them as security events),
and a refused publisher signature is ``PublisherSignatureRefused`` (403).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, defer, selectinload

from helixgate.config import Settings
from helixgate.db import Database, serialize_writers
from helixgate.errors import (
    BadRequest,
    ConfigurationError,
    Conflict,
    Forbidden,
    HelixGateError,
    NotFound,
    UpstreamError,
    VerificationError,
)
from helixgate.images import parse_reference, pinned_name
from helixgate.platform import Platform
from helixgate.signing import (
    KeySigner,
    Signer,
    SigstoreTrustPolicy,
    ToolVersionClaim,
    TrustPolicy,
    build_signer,
    build_trust_policy,
    load_trust_config,
    verify_publisher_bundle,
    verify_tool_bundle,
)
from trs_registry import validation as v
from trs_registry.images import ImageResolver, ResolvedImage
from trs_registry.models import (
    ImageRow,
    ToolAliasRow,
    ToolFileRow,
    ToolRow,
    ToolVersionRow,
    VersionAuthorRow,
    utcnow,
)

log = logging.getLogger("helixgate.trs")

SIGSTORE_TOKEN_TTL = 300
DEFAULT_SIGNING_IDENTITY = "helixgate-trs"


class PublisherSignatureRefused(Forbidden):
    """The tool's policy requires a publisher signature and the one sent is missing or invalid."""


# ---------------------------------------------------------------- read models
@dataclass(frozen=True)
class FileInfo:
    path: str
    file_type: str
    descriptor_type: str | None
    sha256: str
    size: int


@dataclass(frozen=True)
class FileContent:
    info: FileInfo
    content: bytes


@dataclass(frozen=True)
class ImageInfo:
    position: int
    reference: str
    source: str
    registry_host: str
    repository: str
    tag: str
    manifest_digest: str
    config_digest: str
    media_type: str
    size: int | None
    resolved_at: datetime

    @property
    def pinned_name(self) -> str:
        host = self.registry_host if self.source == "registry" else ""
        return pinned_name(host, self.repository, self.manifest_digest, self.config_digest)

    @property
    def pinned_digest(self) -> str:
        return self.manifest_digest if self.source == "registry" else self.config_digest


@dataclass(frozen=True)
class VersionInfo:
    tool_id: str
    version_id: str
    name: str
    authors: tuple[str, ...]
    is_production: bool
    verified: bool
    verified_source: tuple[str, ...]
    included_apps: tuple[str, ...]
    descriptor_type_versions: Mapping[str, list[str]]
    meta_version: int
    publisher: str
    signed: bool
    signer_kind: str
    signer: str
    signed_digest: str
    digest_kind: str
    signed_at: datetime | None
    has_publisher_bundle: bool
    publisher_signer: str
    created_at: datetime
    updated_at: datetime
    updated_by: str
    files: tuple[FileInfo, ...]
    images: tuple[ImageInfo, ...]

    @property
    def descriptor_types(self) -> list[str]:
        return sorted(
            {f.descriptor_type for f in self.files if f.file_type == "PRIMARY_DESCRIPTOR" and f.descriptor_type}
        )

    @property
    def has_containerfile(self) -> bool:
        return any(f.file_type == "CONTAINERFILE" for f in self.files)


@dataclass(frozen=True)
class ToolInfo:
    id: str
    organization: str
    name: str
    description: str
    toolclass: str
    owner: str
    aliases: tuple[str, ...]
    has_checker: bool
    checker_url: str
    required_publisher_identities: tuple[Mapping[str, str], ...]
    meta_version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str
    versions: tuple[VersionInfo, ...] = ()


@dataclass(frozen=True)
class ToolQuery:
    """The GET /tools filters (all optional, combined with AND)."""

    id: str | None = None
    alias: str | None = None
    tool_class: str | None = None
    descriptor_type: str | None = None
    registry: str | None = None
    organization: str | None = None
    name: str | None = None
    toolname: str | None = None
    description: str | None = None
    author: str | None = None
    checker: bool | None = None


@dataclass(frozen=True)
class ImageStatus:
    reference: str
    pinned_digest: str
    current_digest: str | None
    status: str  # current | drifted | missing | unreachable
    message: str = ""


@dataclass(frozen=True)
class DriftReport:
    tool_id: str
    version_id: str
    checked_at: datetime
    images: tuple[ImageStatus, ...]

    @property
    def current(self) -> bool:
        return all(i.status == "current" for i in self.images)

    @property
    def drifted(self) -> list[ImageStatus]:
        return [i for i in self.images if i.status == "drifted"]


@dataclass(frozen=True)
class RevocationResult:
    revoked_key_id: str
    active_key_id: str
    resigned: tuple[str, ...] = field(default_factory=tuple)  # "<tool>:<version>"
    unsigned: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- row -> model
def _file_info(row: ToolFileRow) -> FileInfo:
    return FileInfo(row.path, row.file_type, row.descriptor_type, row.sha256, row.size)


def _image_info(row: ImageRow) -> ImageInfo:
    return ImageInfo(
        row.position,
        row.reference,
        row.source,
        row.registry_host,
        row.repository,
        row.tag,
        row.manifest_digest,
        row.config_digest,
        row.media_type,
        row.size,
        row.resolved_at,
    )


def _version_info(row: ToolVersionRow) -> VersionInfo:
    return VersionInfo(
        tool_id=row.tool_id,
        version_id=row.version_id,
        name=row.name,
        authors=tuple(a.author for a in row.authors),
        is_production=row.is_production,
        verified=row.verified,
        verified_source=tuple(row.verified_source or ()),
        included_apps=tuple(row.included_apps or ()),
        descriptor_type_versions=dict(row.descriptor_type_versions or {}),
        meta_version=row.meta_version,
        publisher=row.publisher,
        signed=row.signed,
        signer_kind=row.signer_kind,
        signer=row.signer,
        signed_digest=row.signed_digest,
        digest_kind=row.digest_kind,
        signed_at=row.signed_at,
        has_publisher_bundle=bool(row.publisher_bundle),
        publisher_signer=row.publisher_signer,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
        files=tuple(_file_info(f) for f in row.files),
        images=tuple(_image_info(i) for i in row.images),
    )


def _tool_info(row: ToolRow, versions: list[ToolVersionRow] | None = None) -> ToolInfo:
    ordered = sorted(versions or [], key=lambda r: v.semver_key(r.version_id))
    return ToolInfo(
        id=row.id,
        organization=row.organization,
        name=row.name,
        description=row.description,
        toolclass=row.toolclass,
        owner=row.owner,
        aliases=tuple(a.alias for a in row.aliases),
        has_checker=row.has_checker,
        checker_url=row.checker_url,
        required_publisher_identities=tuple(dict(p) for p in row.required_publisher_identities or ()),
        meta_version=row.meta_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
        versions=tuple(_version_info(r) for r in ordered),
    )


def _version_query() -> sa.Select[ToolVersionRow]:
    # Listings never need file contents: load metadata only.
    return sa.select(ToolVersionRow).options(
        selectinload(ToolVersionRow.files).options(defer(ToolFileRow.content)),
        selectinload(ToolVersionRow.images),
        selectinload(ToolVersionRow.authors),
    )


def _is_unique_violation(exc: sa_exc.IntegrityError) -> bool:
    text = str(exc.orig).lower()
    return "unique" in text or "duplicate" in text


# ---------------------------------------------------------------- the registry
class TrsRegistry:
    """Tools, versions, image pinning and signing. Thread-safe; one per process."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        signer: Signer,
        resolver: ImageResolver,
        *,
        self_policy: Callable[[], TrustPolicy] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.signer = signer
        self.resolver = resolver
        self._self_policy = self_policy or self._default_policy
        self._sign_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TrsRegistry(signer={self.signer.kind!r})"

    def close(self) -> None:
        self.resolver.close()

    # ------------------------------------------------------------ trust
    def _default_policy(self) -> TrustPolicy:
        if isinstance(self.signer, KeySigner):
            return self.signer.policy()
        return build_trust_policy(self.settings, self.signer.trust_material())

    def trust_material(self) -> dict[str, Any]:
        """What a verifier needs to check this registry's bundles (public; no secrets)."""
        material = dict(self.signer.trust_material())
        if self.signer.kind == "sigstore":
            material["identities"] = [
                {"identity": self.settings.sigstore_identity, "issuer": self.settings.sigstore_oidc_issuer}
            ]
        return material

    def trust_policy(self) -> TrustPolicy:
        return self._self_policy()

    # ------------------------------------------------------------ tools
    def create_tool(self, actor: str, new: v.NewTool) -> ToolInfo:
        now = utcnow()
        with self.db.session() as s:
            serialize_writers(s, ToolAliasRow.__tablename__)  # ids and aliases: one namespace
            if s.get(ToolRow, new.id) is not None:
                raise Conflict(f"tool {new.id} already exists")
            if s.get(ToolAliasRow, new.id) is not None:
                # ids and aliases are one namespace: a lookup by either must name one tool
                raise Conflict(f"tool id {new.id} is already an alias of another tool")
            row = ToolRow(
                id=new.id,
                organization=new.organization,
                name=new.name,
                description=new.description,
                toolclass=new.toolclass,
                owner=actor,
                has_checker=new.has_checker,
                checker_url=new.checker_url,
                required_publisher_identities=[p.to_dict() for p in new.required_publisher_identities],
                meta_version=1,
                created_at=now,
                updated_at=now,
                updated_by=actor,
            )
            s.add(row)
            self._set_aliases(s, row, list(new.aliases))
            self._flush_unique(s, f"tool {new.id} or one of its aliases already exists")
            return _tool_info(row, [])

    def update_tool(self, actor: str, tool_id: str, edit: v.ToolEdit) -> tuple[ToolInfo, list[str]]:
        """Edit tool metadata; returns the tool and the names of the fields that changed."""
        fields = edit.fields()
        with self.db.session() as s:
            if "aliases" in fields:
                serialize_writers(s, ToolAliasRow.__tablename__)
            row = self._owned_tool(s, actor, tool_id, "edit")
            changed: list[str] = []
            for name, value in fields.items():
                if name == "aliases":
                    if sorted(value) != sorted(a.alias for a in row.aliases):
                        self._set_aliases(s, row, value)
                        changed.append(name)
                elif getattr(row, name) != value:
                    setattr(row, name, value)
                    changed.append(name)
            if changed:
                row.meta_version += 1
                row.updated_at = utcnow()
                row.updated_by = actor
                self._flush_unique(s, "an alias is already used by another tool")
            versions = list(s.scalars(_version_query().where(ToolVersionRow.tool_id == tool_id)))
            return _tool_info(row, versions), changed

    def _set_aliases(self, s: Session, row: ToolRow, aliases: list[str]) -> None:
        if row.id in aliases:
            raise Conflict(f"alias {row.id!r} is the tool's own id")
        squatted = s.scalars(sa.select(ToolRow.id).where(ToolRow.id.in_(aliases), ToolRow.id != row.id)).first()
        if squatted is not None:
            raise Conflict(f"alias {squatted!r} is the id of another tool")
        taken = s.scalars(
            sa.select(ToolAliasRow).where(ToolAliasRow.alias.in_(aliases), ToolAliasRow.tool_id != row.id)
        ).first()
        if taken is not None:
            raise Conflict(f"alias {taken.alias!r} is already used by tool {taken.tool_id}")
        row.aliases = [a for a in row.aliases if a.alias in aliases]
        existing = {a.alias for a in row.aliases}
        s.flush()
        row.aliases.extend(ToolAliasRow(alias=a, tool_id=row.id) for a in aliases if a not in existing)

    @staticmethod
    def _flush_unique(s: Session, message: str) -> None:
        try:
            s.flush()
        except sa_exc.IntegrityError as exc:
            if _is_unique_violation(exc):
                raise Conflict(message) from None
            raise

    def _owned_tool(self, s: Session, actor: str, tool_id: str, what: str) -> ToolRow:
        row = s.get(ToolRow, tool_id)
        if row is None:
            raise NotFound(f"tool not found: {tool_id}")
        if row.owner != actor:
            raise Forbidden(f"only the tool's owner may {what} tool {tool_id} (owner: {row.owner}, caller: {actor})")
        return row

    def get_tool(self, tool_id: str) -> ToolInfo:
        with self.db.session() as s:
            row = s.get(ToolRow, tool_id)
            if row is None:
                raise NotFound(f"tool not found: {tool_id}")
            versions = list(s.scalars(_version_query().where(ToolVersionRow.tool_id == tool_id)))
            return _tool_info(row, versions)

    def list_tools(self, query: ToolQuery, offset: int, limit: int) -> tuple[list[ToolInfo], int]:
        """One page of tools matching ``query`` (ordered by id) and the total number of matches."""
        cond = self._conditions(query)
        with self.db.session() as s:
            total = int(s.scalar(sa.select(sa.func.count()).select_from(ToolRow).where(*cond)) or 0)
            rows = list(s.scalars(sa.select(ToolRow).where(*cond).order_by(ToolRow.id).offset(offset).limit(limit)))
            by_tool: dict[str, list[ToolVersionRow]] = {r.id: [] for r in rows}
            if rows:
                for ver in s.scalars(_version_query().where(ToolVersionRow.tool_id.in_(list(by_tool)))):
                    by_tool[ver.tool_id].append(ver)
            return [_tool_info(r, by_tool[r.id]) for r in rows], total

    @staticmethod
    def _conditions(q: ToolQuery) -> list[Any]:
        cond: list[Any] = []

        def version_exists(*where: Any, via: Any = None) -> Any:
            sub = sa.select(sa.literal(1)).select_from(ToolVersionRow)
            if via is not None:
                sub = sub.join(via, via.version_pk == ToolVersionRow.pk)
            return sa.exists(sub.where(ToolVersionRow.tool_id == ToolRow.id, *where))

        if q.id is not None:
            cond.append(ToolRow.id == q.id)
        if q.alias is not None:
            cond.append(sa.exists().where(ToolAliasRow.tool_id == ToolRow.id, ToolAliasRow.alias == q.alias))
        if q.tool_class is not None:
            cond.append(ToolRow.toolclass == q.tool_class)
        if q.descriptor_type is not None:
            cond.append(
                version_exists(
                    ToolFileRow.descriptor_type == q.descriptor_type,
                    ToolFileRow.file_type == "PRIMARY_DESCRIPTOR",
                    via=ToolFileRow,
                )
            )
        if q.registry is not None:
            cond.append(version_exists(ImageRow.registry_host == q.registry, via=ImageRow))
        if q.organization is not None:
            cond.append(ToolRow.organization == q.organization)
        if q.name is not None:
            # "the name of the image": the repository, or its last path component
            cond.append(
                version_exists(
                    sa.or_(ImageRow.repository == q.name, ImageRow.repository.endswith("/" + q.name, autoescape=True)),
                    via=ImageRow,
                )
            )
        if q.toolname is not None:
            cond.append(ToolRow.name == q.toolname)
        if q.description is not None:
            cond.append(sa.func.lower(ToolRow.description).contains(q.description.lower(), autoescape=True))
        if q.author is not None:
            cond.append(version_exists(VersionAuthorRow.author == q.author, via=VersionAuthorRow))
        if q.checker is not None:
            cond.append(ToolRow.has_checker == q.checker)
        return cond

    # ------------------------------------------------------------ versions (read)
    def list_versions(self, tool_id: str) -> list[VersionInfo]:
        return list(self.get_tool(tool_id).versions)

    def get_version(self, tool_id: str, version_id: str) -> VersionInfo:
        with self.db.session() as s:
            return _version_info(self._version_row(s, tool_id, version_id, metadata_only=True))

    def resolve_version_id(self, tool_id: str, version_id: str) -> str:
        """``latest`` (what cwltool asks for when no version is given) -> the highest release version."""
        if version_id != "latest":
            return version_id
        versions = [ver.version_id for ver in self.list_versions(tool_id)]
        releases = [x for x in versions if "-" not in x.split("+")[0]] or versions
        if not releases:
            raise NotFound(f"tool {tool_id} has no versions")
        return max(releases, key=v.semver_key)

    def _version_row(self, s: Session, tool_id: str, version_id: str, *, metadata_only: bool) -> ToolVersionRow:
        q: sa.Select[ToolVersionRow] = _version_query() if metadata_only else sa.select(ToolVersionRow)
        row = s.scalars(q.where(ToolVersionRow.tool_id == tool_id, ToolVersionRow.version_id == version_id)).first()
        if row is None:
            if s.get(ToolRow, tool_id) is None:
                raise NotFound(f"tool not found: {tool_id}")
            raise NotFound(f"version {version_id} of tool {tool_id} not found")
        return row

    def version_files(
        self, tool_id: str, version_id: str, descriptor_type: str | None = None, *, with_content: bool = False
    ) -> list[FileContent]:
        """Files of a version; with ``descriptor_type`` only that language's files plus language-neutral ones.

        Raises NotFound when the version has no descriptor of ``descriptor_type``.
        """
        with self.db.session() as s:
            row = self._version_row(s, tool_id, version_id, metadata_only=not with_content)
            files = list(row.files)
            if descriptor_type is not None:
                if not any(f.file_type == "PRIMARY_DESCRIPTOR" and f.descriptor_type == descriptor_type for f in files):
                    raise NotFound(f"version {version_id} of tool {tool_id} has no {descriptor_type} descriptor")
                files = [f for f in files if f.descriptor_type in (descriptor_type, None)]
            return [FileContent(_file_info(f), bytes(f.content) if with_content else b"") for f in files]

    def descriptor(
        self, tool_id: str, version_id: str, descriptor_type: str, relative_path: str | None = None
    ) -> FileContent:
        """The primary descriptor of ``descriptor_type``, or the file at ``relative_path``."""
        with self.db.session() as s:
            ver = self._version_row(s, tool_id, version_id, metadata_only=True)
            metas = [f for f in ver.files if f.descriptor_type in (descriptor_type, None)]
            if not any(f.file_type == "PRIMARY_DESCRIPTOR" and f.descriptor_type == descriptor_type for f in metas):
                raise NotFound(f"version {version_id} of tool {tool_id} has no {descriptor_type} descriptor")
            if relative_path is None:
                wanted = next(
                    f for f in metas if f.file_type == "PRIMARY_DESCRIPTOR" and f.descriptor_type == descriptor_type
                )
            else:
                path = relative_path[2:] if relative_path.startswith("./") else relative_path
                found = next((f for f in metas if f.path == path), None)
                if found is None:
                    raise NotFound(
                        f"no {descriptor_type} file {relative_path[:200]!r} in version {version_id} of tool {tool_id}"
                    )
                wanted = found
            content = s.scalar(sa.select(ToolFileRow.content).where(ToolFileRow.pk == wanted.pk))
            return FileContent(_file_info(wanted), bytes(content or b""))

    def find_image_pins(self, reference: str, limit: int = 20) -> list[VersionInfo]:
        """Signed versions whose primary image (the signed subject) is ``reference``: the tag the
        publisher wrote, the pinned ``name@sha256:<manifest>``, or a local ``sha256:<image id>``.
        Newest first. WES uses this to find the signature that covers a task's image."""
        ref = reference.strip()
        cond: list[Any] = [ImageRow.reference == ref]
        if "@sha256:" in ref:
            name, _, digest = ref.partition("@")
            host, _, repo = name.partition("/")
            cond.append(
                sa.and_(
                    ImageRow.manifest_digest == digest, ImageRow.registry_host == host, ImageRow.repository == repo
                )
            )
        elif ref.startswith("sha256:"):
            cond.append(ImageRow.config_digest == ref)
        with self.db.session() as s:
            pks = s.scalars(
                sa.select(ImageRow.version_pk)
                .where(ImageRow.position == 0, sa.or_(*cond))
                .order_by(ImageRow.version_pk.desc())
                .limit(limit)
            ).all()
            rows = s.scalars(_version_query().where(ToolVersionRow.pk.in_(pks))).all() if pks else []
            infos = [_version_info(r) for r in rows]
        return sorted((i for i in infos if i.signed), key=lambda i: i.created_at, reverse=True)

    def bundle(self, tool_id: str, version_id: str) -> str:
        with self.db.session() as s:
            row = self._version_row(s, tool_id, version_id, metadata_only=True)
            if not row.bundle:
                raise NotFound(f"version {version_id} of tool {tool_id} has no signature bundle")
            return row.bundle

    def publisher_bundle(self, tool_id: str, version_id: str) -> str:
        with self.db.session() as s:
            return self._version_row(s, tool_id, version_id, metadata_only=True).publisher_bundle

    # ------------------------------------------------------------ publish
    def publish_version(self, actor: str, tool_id: str, spec: v.PublishSpec) -> VersionInfo:
        with self.db.session() as s:
            tool = self._owned_tool(s, actor, tool_id, "publish versions of")
            if self._exists(s, tool_id, spec.version_id):
                raise Conflict(f"version {spec.version_id} of tool {tool_id} is already published and is immutable")
            required = [
                v.PublisherIdentity(p["identity"], p["issuer"]) for p in tool.required_publisher_identities or []
            ]
        # Network calls happen outside any database transaction.
        resolved = [self.resolver.resolve(img.reference, img.digest) for img in spec.images]
        primary = resolved[0]
        publisher_signer = self._check_publisher(tool_id, spec, required, primary)
        claim = ToolVersionClaim(
            tool_id=tool_id,
            version_id=spec.version_id,
            image_name=primary.subject_name,
            image_digest=primary.signed_digest,
            digest_kind=primary.digest_kind,
            descriptor_checksums={f.path: f.sha256 for f in spec.files},
            publisher=actor,
            config_digest=primary.config_digest,
        )
        bundle, signer_name = self._sign_and_verify(claim)
        now = utcnow()
        row = ToolVersionRow(
            tool_id=tool_id,
            version_id=spec.version_id,
            name=spec.name,
            is_production=True,
            verified=False,
            verified_source=[],
            included_apps=spec.included_apps,
            descriptor_type_versions=spec.descriptor_type_versions,
            meta_version=1,
            publisher=actor,
            signed=True,
            bundle=bundle,
            signer_kind=self.signer.kind,
            signer=signer_name,
            signed_digest=claim.image_digest,
            digest_kind=claim.digest_kind,
            signed_at=now,
            publisher_bundle=(spec.publisher_bundle or "") if required else "",
            publisher_signer=publisher_signer,
            created_at=now,
            updated_at=now,
            updated_by=actor,
        )
        row.authors = [VersionAuthorRow(position=i, author=a) for i, a in enumerate(spec.authors)]
        row.files = [
            ToolFileRow(
                path=f.path,
                file_type=f.file_type,
                descriptor_type=f.descriptor_type,
                content=f.content,
                sha256=f.sha256,
                size=f.size,
            )
            for f in spec.files
        ]
        row.images = [self._image_row(i, img, now) for i, img in enumerate(resolved)]
        try:
            with self.db.session() as s:
                s.add(row)
                s.flush()
                return _version_info(row)
        except sa_exc.IntegrityError as exc:
            if _is_unique_violation(exc):  # a concurrent publish of the same id won the race
                raise Conflict(
                    f"version {spec.version_id} of tool {tool_id} is already published and is immutable"
                ) from None
            raise

    @staticmethod
    def _exists(s: Session, tool_id: str, version_id: str) -> bool:
        q = sa.select(ToolVersionRow.pk).where(
            ToolVersionRow.tool_id == tool_id, ToolVersionRow.version_id == version_id
        )
        return s.scalar(q) is not None

    @staticmethod
    def _image_row(position: int, img: ResolvedImage, now: datetime) -> ImageRow:
        return ImageRow(
            position=position,
            reference=img.reference,
            source=img.source,
            registry_host=img.registry_host,
            repository=img.repository,
            tag=img.tag,
            manifest_digest=img.manifest_digest,
            config_digest=img.config_digest,
            media_type=img.media_type,
            size=img.size,
            resolved_at=now,
        )

    def _check_publisher(
        self, tool_id: str, spec: v.PublishSpec, required: list[v.PublisherIdentity], primary: ResolvedImage
    ) -> str:
        if not required:
            if spec.publisher_bundle is not None:
                raise BadRequest(
                    f"tool {tool_id} has no required_publisher_identities: a publisher bundle could not be checked "
                    "against anyone; set the tool's required_publisher_identities first"
                )
            return ""
        allowed = ", ".join(f"{p.identity} (issuer {p.issuer})" for p in required)
        if spec.publisher_bundle is None:
            raise PublisherSignatureRefused(
                f"tool {tool_id} requires a publisher signature by {allowed} on image {primary.signed_digest}; "
                "none was sent (publisher_bundle)"
            )
        policy = SigstoreTrustPolicy(
            trust_config_json=load_trust_config(self.settings.sigstore_trust_config),
            identities=tuple((p.identity, p.issuer) for p in required),
        )
        try:
            result = verify_publisher_bundle(
                spec.publisher_bundle, policy=policy, expected_digest=primary.signed_digest
            )
        except VerificationError as exc:
            raise PublisherSignatureRefused(
                f"publisher signature refused for tool {tool_id}: {exc.message}",
                details={"expected": exc.expected, "actual": exc.actual, "allowed": allowed},
            ) from None
        return str(result.signer)

    def _sign_and_verify(self, claim: ToolVersionClaim) -> tuple[str, str]:
        """Sign ``claim`` and verify the bundle at once; return (bundle JSON, signer description)."""
        # A key rotation must not interleave with sign + verify; keyless signing needs no lock.
        lock = self._sign_lock if isinstance(self.signer, KeySigner) else contextlib.nullcontext()
        with lock:
            bundle = self.signer.sign(claim)
            verified = verify_tool_bundle(
                bundle,
                policy=self.trust_policy(),
                expected_digest=claim.image_digest,
                tool_id=claim.tool_id,
                version_id=claim.version_id,
            )
        if verified.claim != claim:
            raise VerificationError(
                "the registry's own signature does not carry the published claim",
                subject=f"{claim.tool_id}:{claim.version_id}",
                expected=json.dumps(claim.predicate(), sort_keys=True)[:300],
                actual=json.dumps(verified.claim.predicate(), sort_keys=True)[:300],
            )
        signer = verified.signer
        return bundle, (signer.key_id or "") if signer.kind == "key" else f"{signer.identity} ({signer.issuer})"

    # ------------------------------------------------------------ versions (edit)
    def update_version(
        self, actor: str, tool_id: str, version_id: str, edit: v.VersionEdit
    ) -> tuple[VersionInfo, list[str]]:
        with self.db.session() as s:
            self._owned_tool(s, actor, tool_id, "edit versions of")
            row = self._version_row(s, tool_id, version_id, metadata_only=True)
            changed: list[str] = []
            if edit.name is not None and edit.name != row.name:
                row.name = edit.name
                changed.append("name")
            if edit.included_apps is not None and list(edit.included_apps) != list(row.included_apps or []):
                row.included_apps = list(edit.included_apps)
                changed.append("included_apps")
            if edit.author is not None and list(edit.author) != [a.author for a in row.authors]:
                row.authors = []
                s.flush()
                row.authors = [VersionAuthorRow(position=i, author=a) for i, a in enumerate(edit.author)]
                changed.append("author")
            self._touch(row, actor, changed)
            s.flush()
            return _version_info(row), changed

    def set_verification(
        self, actor: str, tool_id: str, version_id: str, record: v.Verification
    ) -> tuple[VersionInfo, list[str]]:
        """An administrator records whether (and by whom) a version was verified."""
        flag, source_list = record.verified, list(record.sources)
        with self.db.session() as s:
            row = self._version_row(s, tool_id, version_id, metadata_only=True)
            changed: list[str] = []
            if row.verified != flag:
                row.verified = flag
                changed.append("verified")
            if list(row.verified_source or []) != source_list:
                row.verified_source = source_list
                changed.append("verified_source")
            self._touch(row, actor, changed)
            s.flush()
            return _version_info(row), changed

    @staticmethod
    def _touch(row: ToolVersionRow, actor: str, changed: list[str]) -> None:
        if changed:
            row.meta_version += 1
            row.updated_at = utcnow()
            row.updated_by = actor

    # ------------------------------------------------------------ image drift
    def check_image_current(self, tool_id: str, version_id: str) -> DriftReport:
        """Re-resolve every image reference of a version and compare with the pinned digests.

        A tag that now points elsewhere is ``drifted``; a tag that no longer resolves is
        ``missing``; a registry that cannot be reached is ``unreachable``.
        """
        info = self.get_version(tool_id, version_id)
        out: list[ImageStatus] = []
        for img in info.images:
            ref = parse_reference(img.reference)
            # Resolve the name as written, without the client's digest: the question is where it points now.
            lookup = ref.original.split("@", 1)[0] if ref.tag else ref.original
            try:
                current = self.resolver.resolve(lookup)
            except BadRequest as exc:
                out.append(ImageStatus(img.reference, img.pinned_digest, None, "missing", exc.message))
                continue
            except (UpstreamError, HelixGateError) as exc:
                out.append(ImageStatus(img.reference, img.pinned_digest, None, "unreachable", exc.message))
                continue
            status = "current" if current.signed_digest == img.pinned_digest else "drifted"
            message = (
                ""
                if status == "current"
                else (f"{img.reference} now resolves to {current.signed_digest}, pinned {img.pinned_digest}")
            )
            out.append(ImageStatus(img.reference, img.pinned_digest, current.signed_digest, status, message))
        return DriftReport(tool_id, version_id, utcnow(), tuple(out))

    # ------------------------------------------------------------ key management
    def _key_signer(self) -> KeySigner:
        if not isinstance(self.signer, KeySigner):
            raise Conflict(
                f"signing keys are managed only with the 'key' signer (this registry uses {self.signer.kind!r})"
            )
        return self.signer

    def rotate_key(self) -> str:
        signer = self._key_signer()
        with self._sign_lock:
            return signer.rotate()

    def revoke_key(self, key_id: str) -> RevocationResult:
        """Revoke a key; versions it signed are re-signed with the active key (their content is frozen)."""
        signer = self._key_signer()
        # What the key signed is re-signed, not what the tables say now: the old bundles are
        # verified under the policy that still trusts the key (see docs/security-model.md 3.1).
        before = signer.policy()
        with self._sign_lock:
            signer.revoke(key_id)
        resigned: list[str] = []
        unsigned: list[str] = []
        with self.db.session() as s:
            pks = list(
                s.scalars(
                    sa.select(ToolVersionRow.pk).where(
                        ToolVersionRow.signer_kind == "key", ToolVersionRow.signer == key_id
                    )
                )
            )
        for pk in pks:
            with self.db.session() as s:
                row = s.get(ToolVersionRow, pk)
                if row is None:
                    continue
                name = f"{row.tool_id}:{row.version_id}"
                try:
                    claim = self._verified_claim(row, before)
                    bundle, signer_name = self._sign_and_verify(claim)
                except HelixGateError:
                    row.signed = False
                    unsigned.append(name)
                    continue
                row.bundle, row.signer, row.signed, row.signed_at = bundle, signer_name, True, utcnow()
                resigned.append(name)
        return RevocationResult(key_id, signer.active_key_id, tuple(resigned), tuple(unsigned))

    @staticmethod
    def _verified_claim(row: ToolVersionRow, policy: TrustPolicy) -> ToolVersionClaim:
        """The claim the row's own bundle signs under ``policy``; a v1 claim gains the
        configuration digest recorded at publish (the only field taken from the tables)."""
        claim = verify_tool_bundle(
            row.bundle, policy=policy, expected_digest=None, tool_id=row.tool_id, version_id=row.version_id
        ).claim
        if not claim.config_digest and row.images:
            claim = dataclasses.replace(claim, config_digest=row.images[0].config_digest)
        return claim

    def upgrade_legacy_statements(self) -> list[str]:
        """Migration: re-sign versions whose statement is v1 (no image configuration digest).

        The new claim is the old *verified* claim plus the configuration digest recorded at
        publish; only that one field comes from the tables, once, at this migration (see
        docs/security-model.md). A v1 bundle that no longer verifies is left alone: the worker
        refuses such a version. Returns "<tool>:<version>" of every re-signed version.
        """
        from helixgate.signing.statement import PREDICATE_TYPE_V1

        with self.db.session() as s:
            pks = list(s.scalars(sa.select(ToolVersionRow.pk).where(ToolVersionRow.signed.is_(True))))
        upgraded: list[str] = []
        for pk in pks:
            with self.db.session() as s:
                row = s.get(ToolVersionRow, pk)
                if row is None or not row.bundle or not row.images:
                    continue
                try:
                    old = verify_tool_bundle(
                        row.bundle,
                        policy=self.trust_policy(),
                        expected_digest=None,
                        tool_id=row.tool_id,
                        version_id=row.version_id,
                    )
                except HelixGateError:
                    continue
                if old.predicate_type != PREDICATE_TYPE_V1:
                    continue
                claim = dataclasses.replace(old.claim, config_digest=row.images[0].config_digest)
                try:
                    bundle, signer_name = self._sign_and_verify(claim)
                except HelixGateError as exc:
                    log.warning("could not re-sign legacy statement of %s:%s: %s", row.tool_id, row.version_id, exc)
                    continue
                row.bundle, row.signer, row.signed_at = bundle, signer_name, utcnow()
                upgraded.append(f"{row.tool_id}:{row.version_id}")
        if upgraded:
            log.info("re-signed %d legacy (v1) tool statements as v2", len(upgraded))
        return upgraded


# ---------------------------------------------------------------- wiring
def sigstore_token_provider(platform: Platform) -> Callable[[], str]:
    """The registry's OIDC identity token for keyless signing (audience ``sigstore``).

    A token file (``sigstore_token_file``, e.g. a projected service-account token) wins when
    configured; otherwise the built-in issuer mints a short-lived token for the registry's
    identity (``sigstore_identity``, default ``helixgate-trs``).
    """
    settings = platform.settings
    token_file = str(getattr(settings, "sigstore_token_file", "") or "")
    if token_file:
        path = Path(token_file).expanduser()

        def from_file() -> str:
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read the Sigstore token file (sigstore_token_file): {exc.strerror}"
                ) from None

        return from_file
    issuer = getattr(platform, "issuer", None)
    if settings.builtin_issuer and issuer is not None:
        identity = settings.sigstore_identity or DEFAULT_SIGNING_IDENTITY
        extra = {"email": identity, "email_verified": True} if "@" in identity else None
        ttl = min(SIGSTORE_TOKEN_TTL, settings.token_max_lifetime)
        return lambda: str(issuer.issue(identity, ttl, audience="sigstore", extra_claims=extra))
    raise ConfigurationError(
        "signer 'sigstore' needs an identity token: enable builtin_issuer or set sigstore_token_file"
    )


def build(platform: Platform, *, token_provider: Callable[[], str] | None = None) -> TrsRegistry:
    """The registry for this process (``Platform.domain(TrsRegistry)``)."""
    settings: Settings = platform.settings
    if settings.signer == "sigstore" and token_provider is None:
        token_provider = sigstore_token_provider(platform)
    signer = build_signer(settings, token_provider)
    resolver = ImageResolver(
        insecure_hosts=settings.registry_insecure_hosts,
        allow_private_addresses=settings.allow_private_addresses,
        allowed_hosts=[h for h in settings.outbound_allow_list if "://" not in h],
        ca_bundle=settings.tls_ca_bundle,
    )
    registry = TrsRegistry(platform.db, settings, signer, resolver)
    registry.trust_policy()  # fail at start on an unusable verification policy
    if settings.signer == "key":  # keyless re-signing needs an identity token: run it explicitly
        registry.upgrade_legacy_statements()
    return registry
