"""The data store's rules: objects, bundles, datasets, grants, access URLs and streaming.

``DrsStore`` is built once per process by ``build(platform)``; HTTP handlers in
``drs_store.api`` only parse requests and render the store's read models with
``drs_store.shapes``. Every method takes the caller as a ``Principal`` (effective user +
roles, and the authenticated actor). Who may do what is decided in ``drs_store.access``;
the SQL lives in ``drs_store.repository``; this module holds the rules and transactions.

Decisions (documented in the API notes as well):

* Ids are ``uuid4().hex`` (32 lower-case hex characters): never a ``/``, and never the
  literal ``access``, so ``POST /objects/access`` cannot shadow an object.
* A client checksum that does not match the server's SHA-256 answers **422** (IntegrityError)
  naming expected and actual; nothing is stored and no row is written.
* Soft delete: the row stays (audit), the object answers 404, the stored bytes are deleted
  (registered-in-place S3 objects are never deleted: only our reference goes). Objects
  that are members of a live bundle cannot be deleted (409).
* A read refused by policy answers 403 (401 for anonymous callers), or 404 with the same
  message as a missing object when ``settings.drs_hide_existence`` is on.
* An integrity failure while streaming quarantines the object: its metadata stays
  readable with ``available: false`` access methods, every byte access answers 409.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import urlencode

from sqlalchemy import update
from sqlalchemy.orm import Session

from drs_store import repository as repo
from drs_store.access import (
    ObjectHidden,
    Principal,
    ReadFacts,
    UrlSigner,
    may_delete,
    may_manage_dataset,
    may_see_dataset,
    principal_may_read,
    read_refusal,
)
from drs_store.backends import make_storage
from drs_store.models import BundleMemberRow, DatasetRow, GrantRow, ObjectRow, utcnow
from drs_store.storage import ObjectStorage, StoredBlob
from helixgate.audit import AuditTrail
from helixgate.config import Settings
from helixgate.db import Database
from helixgate.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HelixGateError,
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from helixgate.integrity import normalize_sha256
from helixgate.limits import loads as safe_json_loads
from helixgate.platform import Platform
from helixgate.users import UserDirectory

log = logging.getLogger(__name__)

BASE_PATH = "/ga4gh/drs/v1"
STREAM_PATH = "/x-helixgate/stream/"
ACCESS_HTTPS = "https"
ACCESS_S3 = "s3"
MAX_BUNDLE_MEMBERS = 1000
MAX_EXPAND_DEPTH = 64
MAX_PROVENANCE_BYTES = 16 * 1024
_ID = repo.ID
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(;.{0,120})?$")
_IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PROV_TEXT = re.compile(r"^[A-Za-z0-9._:@/+-]{1,256}$")
_PROVENANCE_KEYS = {"run_id", "task_id", "image_digest", "input_checksums", "tool", "workflow"}


T = TypeVar("T")


class Quarantined(Conflict):
    """The object failed an integrity check; its bytes are never served again."""


class RangeNotSatisfiable(HelixGateError):
    status = 416
    kind = "range_not_satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class ObjectMeta:
    """Client-supplied description of a new object (validated by ``parse_meta``)."""

    name: str | None = None
    description: str | None = None
    mime_type: str | None = None
    dataset_id: str | None = None
    public: bool = False
    sha256: str | None = None
    provenance: dict[str, Any] | None = None


@dataclass(frozen=True)
class RequestInfo:
    """What a streaming response needs to audit after the request context is gone."""

    request_id: str | None = None
    client_addr: str | None = None
    actor: str | None = None
    on_behalf_of: str | None = None


@dataclass
class StreamPlan:
    status: int
    headers: dict[str, str]
    body: Iterator[bytes]


@dataclass
class BulkResult(Generic[T]):
    """What a bulk request resolved, what failed (by status) and which ids policy refused."""

    requested: int
    resolved: list[T] = field(default_factory=list)
    failed: dict[int, list[str]] = field(default_factory=dict)
    denied: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- read models
@dataclass(frozen=True)
class Member:
    """One entry of a bundle; ``contents`` is set only when expanded and the member is a bundle."""

    name: str
    id: str
    contents: tuple[Member, ...] | None = None


@dataclass(frozen=True)
class ObjectInfo:
    id: str
    kind: str  # "blob" | "bundle"
    size: int
    sha256: str
    created_at: datetime
    updated_at: datetime
    name: str | None
    mime_type: str | None
    description: str | None
    backend: str | None
    public: bool  # the object or its dataset is public
    quarantined_at: datetime | None
    provenance: dict[str, Any] | None
    contents: tuple[Member, ...] | None = None  # bundles only


@dataclass(frozen=True)
class Authorizations:
    object_id: str
    public: bool


@dataclass(frozen=True)
class AccessUrl:
    object_id: str
    access_id: str
    url: str


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    name: str
    description: str
    public: bool
    created_by: str
    created_at: datetime
    object_count: int


@dataclass(frozen=True)
class GrantInfo:
    id: str
    dataset_id: str
    username: str
    granted_by: str
    granted_at: datetime
    revoked_by: str | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: GrantRow) -> GrantInfo:
        return cls(row.id, row.dataset_id, row.username, row.granted_by, row.granted_at, row.revoked_by, row.revoked_at)


# --------------------------------------------------------------------------- validation
def parse_meta(
    *,
    name: str | None = None,
    description: str | None = None,
    mime_type: str | None = None,
    dataset_id: str | None = None,
    public: bool | None = None,
    sha256: str | None = None,
    provenance: Any = None,
) -> ObjectMeta:
    if name is not None and not _NAME.match(name):
        raise BadRequest("invalid name: use 1-255 characters from [A-Za-z0-9._-] (DRS portable file names)")
    if description is not None and len(description) > 4096:
        raise BadRequest(f"description too long: {len(description)} characters, at most 4096")
    if mime_type is not None and not _MIME.match(mime_type):
        raise BadRequest(f"invalid mime_type {mime_type[:80]!r}: expected type/subtype")
    if dataset_id is not None and not _ID.match(dataset_id):
        raise NotFound(f"dataset not found: {dataset_id[:64]}")
    return ObjectMeta(
        name=name,
        description=description,
        mime_type=mime_type,
        dataset_id=dataset_id,
        public=bool(public),
        sha256=normalize_sha256(sha256) if sha256 else None,
        provenance=parse_provenance(provenance),
    )


def parse_provenance(raw: Any) -> dict[str, Any] | None:
    """Provenance of a workflow output: run_id, task_id (required), image_digest, input_checksums, tool, workflow."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        if len(raw.encode()) > MAX_PROVENANCE_BYTES:
            raise BadRequest(f"provenance too large: at most {MAX_PROVENANCE_BYTES} bytes of JSON")
        raw = safe_json_loads(raw, "provenance")  # depth, valid strings, 64-bit integers
    if not isinstance(raw, dict):
        raise BadRequest("provenance must be a JSON object")
    unknown = sorted(set(raw) - _PROVENANCE_KEYS)
    if unknown:
        raise BadRequest(
            f"unknown provenance field(s): {', '.join(unknown)[:200]}; allowed: {sorted(_PROVENANCE_KEYS)}"
        )
    out: dict[str, Any] = {}
    for key in ("run_id", "task_id"):
        value = raw.get(key)
        if not isinstance(value, str) or not _PROV_TEXT.match(value):
            raise BadRequest(f"provenance.{key} is required: 1-256 characters from [A-Za-z0-9._:@/+-]")
        out[key] = value
    for key in ("tool", "workflow"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or not 0 < len(value) <= 1024:
                raise BadRequest(f"provenance.{key} must be a string of 1-1024 characters")
            out[key] = value
    if "image_digest" in raw:
        digest = raw["image_digest"]
        if not isinstance(digest, str) or not _IMAGE_DIGEST.match(digest):
            raise BadRequest("provenance.image_digest must be 'sha256:' followed by 64 lower-case hex digits")
        out["image_digest"] = digest
    if "input_checksums" in raw:
        inputs = raw["input_checksums"]
        if not isinstance(inputs, dict) or len(inputs) > 1000:
            raise BadRequest("provenance.input_checksums must be an object {input name: sha256 hex} (at most 1000)")
        checked: dict[str, str] = {}
        for key, value in inputs.items():
            if not isinstance(value, str) or not 0 < len(key) <= 256:
                raise BadRequest("provenance.input_checksums entries must map a name (1-256 chars) to a sha256 hex")
            checked[key] = normalize_sha256(value)
        out["input_checksums"] = checked
    if len(json.dumps(out).encode()) > MAX_PROVENANCE_BYTES:
        raise BadRequest(f"provenance too large: at most {MAX_PROVENANCE_BYTES} bytes of JSON")
    return out


def bundle_checksum(member_sha256s: Iterable[str]) -> str:
    """DRS rule: sha-256 over the sorted concatenation of the members' hex checksums (not recursive)."""
    return hashlib.sha256("".join(sorted(member_sha256s)).encode("ascii")).hexdigest()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range -> ``(start, end_exclusive)``; None to serve the whole object.

    Several ranges or other units are ignored (RFC 9110 lets a server do so) and the whole
    object is served; an unsatisfiable range raises RangeNotSatisfiable (416).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise BadRequest(f"malformed Range header {header[:80]!r}")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable("empty suffix range", size)
            start, end = max(size - suffix, 0), size
        else:
            start = int(first)
            end = size if last == "" else min(int(last) + 1, size)
            if int(first) < 0 or (last != "" and int(last) < start):
                raise BadRequest(f"malformed Range header {header[:80]!r}")
    except ValueError:
        raise BadRequest(f"malformed Range header {header[:80]!r}") from None
    if start >= size:
        raise RangeNotSatisfiable(f"range starts at byte {start} but the object has {size} bytes", size)
    return start, end


def _rfc3339(value: datetime) -> str:
    return value.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _new_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- the store
class DrsStore:
    def __init__(
        self,
        *,
        db: Database,
        storage: ObjectStorage,
        signer: UrlSigner,
        settings: Settings,
        users: UserDirectory,
        audit: AuditTrail,
        bearer_issuers: Sequence[str] = (),
    ) -> None:
        self.db = db
        self.storage = storage
        self.signer = signer
        self.settings = settings
        self.users = users
        self.audit = audit
        self.bearer_issuers = list(bearer_issuers)

    def __repr__(self) -> str:
        return f"DrsStore(storage={self.storage!r})"

    # ------------------------------------------------------------------ service-info
    def stats(self) -> tuple[int, int]:
        """(number of live objects, total bytes of live blobs)."""
        with self.db.session() as s:
            return repo.stats(s)

    # ------------------------------------------------------------------ reads
    def get_object(self, who: Principal, object_id: str, *, expand: bool = False) -> ObjectInfo:
        with self.db.session() as s:
            row = self._readable(s, who, object_id)
            return self._info(s, row, expand=expand)

    def authorizations(self, who: Principal, object_id: str) -> Authorizations:
        """OPTIONS: how to authorize for this object. Needs no read access (it tells how to get it)."""
        if not _ID.match(object_id):
            raise NotFound(f"object not found: {object_id[:64]}")
        with self.db.session() as s:
            row = s.get(ObjectRow, object_id)
            if row is None or row.deleted_at is not None:
                if self.settings.drs_hide_existence:
                    # Same answer as for an existing private object: no existence oracle.
                    return Authorizations(object_id, public=False)
                raise NotFound(f"object not found: {object_id}")
            return Authorizations(object_id, public=self._is_public(s, row))

    def bulk_objects(self, who: Principal, ids: Sequence[str], *, expand: bool = False) -> BulkResult[ObjectInfo]:
        self._check_bulk(ids)
        result: BulkResult[ObjectInfo] = BulkResult(len(ids))
        with self.db.session() as s:
            for object_id in ids:
                try:
                    row = self._readable(s, who, object_id)
                    result.resolved.append(self._info(s, row, expand=expand))
                except HelixGateError as exc:
                    if isinstance(exc, (ObjectHidden, Forbidden, Unauthorized)):
                        result.denied.append(object_id)
                    result.failed.setdefault(exc.status, []).append(object_id)
        return result

    def bulk_authorizations(self, who: Principal, ids: Sequence[str]) -> BulkResult[Authorizations]:
        self._check_bulk(ids)
        result: BulkResult[Authorizations] = BulkResult(len(ids))
        for object_id in ids:
            try:
                result.resolved.append(self.authorizations(who, object_id))
            except HelixGateError as exc:
                result.failed.setdefault(exc.status, []).append(object_id)
        return result

    def find_by_checksum(self, who: Principal, sha256: str) -> list[ObjectInfo]:
        digest = normalize_sha256(sha256)
        with self.db.session() as s:
            rows = repo.by_checksum(s, digest)
            return [self._info(s, r, expand=False) for r in rows if self._may_read(s, who, r)]

    # ------------------------------------------------------------------ access URLs
    def access_url(self, who: Principal, object_id: str, access_id: str) -> AccessUrl:
        with self.db.session() as s:
            row = self._readable(s, who, object_id)
            if row.kind != "blob":
                raise NotFound(f"object {object_id} is a bundle: fetch its contents instead")
            if access_id not in self._access_ids(row):
                raise NotFound(f"access id {access_id[:64]!r} not found for object {object_id}")
            self._refuse_quarantined(row)
            blob = self._blob(row)
        ttl = int(self.settings.signed_url_ttl)
        if access_id == ACCESS_S3:
            url = self.storage.presign(blob, ttl)  # checks the stored object's identity first
            if url is None:
                raise NotFound(f"access id 's3' not found for object {object_id}")
            return AccessUrl(object_id, access_id, url)
        params = self.signer.sign(object_id, who.user, ttl)
        stream_url = f"{self.settings.effective_drs_url}{BASE_PATH}{STREAM_PATH}{object_id}?{urlencode(params)}"
        return AccessUrl(object_id, access_id, stream_url)

    def bulk_access(self, who: Principal, pairs: Sequence[tuple[str, Sequence[str]]]) -> BulkResult[AccessUrl]:
        self._check_bulk(pairs)
        result: BulkResult[AccessUrl] = BulkResult(sum(len(dict.fromkeys(a)) for _, a in pairs))
        for object_id, access_ids in pairs:
            for access_id in dict.fromkeys(access_ids):
                try:
                    result.resolved.append(self.access_url(who, object_id, access_id))
                except HelixGateError as exc:
                    if isinstance(exc, (ObjectHidden, Forbidden, Unauthorized)):
                        result.denied.append(object_id)
                    ids = result.failed.setdefault(exc.status, [])
                    if object_id not in ids:
                        ids.append(object_id)
        return result

    # ------------------------------------------------------------------ streaming
    def open_stream(
        self,
        object_id: str,
        *,
        user: str | None,
        expires: str,
        signature: str,
        range_header: str | None,
        info: RequestInfo,
    ) -> StreamPlan:
        """Serve the bytes behind a signed URL, re-checking access now (grants may have been revoked)."""
        self.signer.verify(object_id, user, expires, signature)
        roles: tuple[str, ...] = ()
        if user is not None:
            account = self.users.get(user)
            if account is None or not account.active:
                raise Forbidden(f"signed URL was issued to {user}, who is no longer an active user")
            roles = tuple(account.roles)
        who = Principal(user, roles, user)
        with self.db.session() as s:
            row = self._readable(s, who, object_id)
            if row.kind != "blob":
                raise NotFound(f"object {object_id} is a bundle and has no bytes")
            self._refuse_quarantined(row)
            blob = self._blob(row)
            mime, name = row.mime_type or "application/octet-stream", row.name
        headers = {
            "Content-Type": mime,
            "Accept-Ranges": "bytes",
            "ETag": f'"{blob.sha256}"',
            "Repr-Digest": f"sha-256=:{_b64(bytes.fromhex(blob.sha256))}:",
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        }
        if name:
            headers["Content-Disposition"] = f'attachment; filename="{name}"'
        span = parse_range(range_header, blob.size)
        try:  # opening may already find the bytes missing or not this object's: quarantine too
            if span is None:
                chunks, status, length = self.storage.read_verified(blob), 200, blob.size
            else:
                start, end = span
                chunks, status, length = self.storage.open_range(blob, start, end), 206, end - start
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        except IntegrityError as exc:
            self.quarantine(object_id, exc, info)
            raise
        headers["Content-Length"] = str(length)
        body = self._guarded(object_id, chunks, info)
        # Pull the first piece now: a failure found before any byte left (small objects are
        # verified entirely before their only piece is released) becomes a clean error response.
        first = next(body, None)
        return StreamPlan(status, headers, body if first is None else itertools.chain([first], body))

    def _guarded(self, object_id: str, chunks: Iterator[bytes], info: RequestInfo) -> Iterator[bytes]:
        try:
            yield from chunks
        except IntegrityError as exc:
            self.quarantine(object_id, exc, info)
            raise

    def quarantine(self, object_id: str, exc: IntegrityError, info: RequestInfo) -> None:
        """Flag the object, then record the security event and the change (runs without a request context)."""
        reason = exc.message[:500]
        with self.db.session() as s:
            s.execute(
                update(ObjectRow)
                .where(ObjectRow.id == object_id, ObjectRow.quarantined_at.is_(None))
                .values(quarantined_at=utcnow(), quarantine_reason=reason)
            )
        log.error("object %s quarantined after an integrity failure (request %s)", object_id, info.request_id)
        common: dict[str, Any] = dict(
            actor=info.actor,
            on_behalf_of=info.on_behalf_of,
            service="drs",
            target=object_id,
            request_id=info.request_id,
            client_addr=info.client_addr,
        )
        try:
            self.audit.security_event(
                "drs.integrity.failure",
                outcome="failure",
                severity=9,
                details={"reason": reason, "expected": exc.expected, "actual": exc.actual, "action": "quarantined"},
                **common,
            )
            self.audit.record(
                category="change",
                action="drs.object.quarantine",
                outcome="success",
                details={"reason": reason},
                **common,
            )
        except Exception:  # pragma: no cover - the quarantine flag is set; the log line above remains
            log.exception("could not audit the quarantine of object %s", object_id)

    # ------------------------------------------------------------------ writes
    def upload(self, who: Principal, stream: BinaryIO, meta: ObjectMeta, *, content_length: int | None) -> ObjectInfo:
        limit = int(self.settings.max_upload_bytes)
        if content_length is not None and content_length > limit:
            raise PayloadTooLarge(f"upload of {content_length} bytes exceeds the limit of {limit} bytes")
        with self.db.session() as s:
            self._check_dataset_write(s, who, meta.dataset_id)  # before reading a single byte
        object_id = _new_id()  # bound into the stored bytes (authenticated at rest)
        blob = self.storage.put(stream, expected_sha256=meta.sha256, max_bytes=limit, object_id=object_id)
        return self._insert_blob(who, blob, meta)

    def register_external(self, who: Principal, url: str, meta: ObjectMeta) -> ObjectInfo:
        with self.db.session() as s:
            self._check_dataset_write(s, who, meta.dataset_id)
        blob = self.storage.register_external(url, expected_sha256=meta.sha256)
        return self._insert_blob(who, blob, meta)

    def _new_row(
        self, who: Principal, kind: str, meta: ObjectMeta, *, object_id: str | None = None, **content: Any
    ) -> ObjectRow:
        """A new object row: ``meta`` describes it, ``content`` is its size/checksum/storage."""
        owner, actor = self._owner(who)
        now = utcnow()
        return ObjectRow(
            id=object_id or _new_id(),
            kind=kind,
            name=meta.name,
            description=meta.description,
            mime_type=meta.mime_type,
            dataset_id=meta.dataset_id,
            public=meta.public,
            owner=owner,
            created_by=actor,
            provenance=meta.provenance,
            created_at=now,
            updated_at=now,
            **content,
        )

    def _insert_blob(self, who: Principal, blob: StoredBlob, meta: ObjectMeta) -> ObjectInfo:
        row = self._new_row(
            who,
            "blob",
            meta,
            object_id=blob.object_id or None,
            size=blob.size,
            sha256=blob.sha256,
            backend=blob.backend,
            location=blob.location,
            key_id=blob.key_id,
            external=blob.external,
        )
        try:
            with self.db.session() as s:
                s.add(row)
                s.flush()
                return self._info(s, row, expand=False)
        except BaseException:
            self._delete_blob_quietly(blob)  # no row -> the bytes must not linger either
            raise

    def create_bundle(self, who: Principal, meta: ObjectMeta, members: Sequence[tuple[str, str]]) -> ObjectInfo:
        if not 0 < len(members) <= MAX_BUNDLE_MEMBERS:
            raise BadRequest(f"a bundle needs 1-{MAX_BUNDLE_MEMBERS} contents, got {len(members)}")
        names = [n for n, _ in members]
        for n in names:
            if not _NAME.match(n):
                raise BadRequest(f"invalid contents name {n[:80]!r}: use [A-Za-z0-9._-], 1-255 characters")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BadRequest(f"contents names must be unique within a bundle: {', '.join(dupes)[:200]}")
        with self.db.session() as s:
            self._check_dataset_write(s, who, meta.dataset_id)
            children = []
            for name, member_id in members:
                try:
                    child = self._readable(s, who, member_id)
                except (ObjectHidden, Forbidden, Unauthorized):
                    raise Forbidden(f"contents {name!r}: you may not read object {member_id}") from None
                children.append(child)
            row = self._new_row(
                who,
                "bundle",
                meta,
                size=sum(c.size for c in children),
                sha256=bundle_checksum(c.sha256 for c in children),
            )
            s.add(row)
            s.flush()
            for pos, ((name, _), child) in enumerate(zip(members, children, strict=True)):
                s.add(BundleMemberRow(bundle_id=row.id, name=name, member_id=child.id, position=pos))
            s.flush()
            return self._info(s, row, expand=False)

    def delete_object(self, who: Principal, object_id: str) -> dict[str, Any]:
        """Soft delete. Returns what was deleted (for the audit record)."""
        with self.db.session() as s:
            row = repo.live_object(s, object_id)
            dataset = repo.dataset(s, row.dataset_id)
            creator = dataset.created_by if dataset is not None else None
            if not may_delete(who, owner=row.owner, dataset_creator=creator):
                if not self._may_read(s, who, row):
                    raise self._refusal(object_id, who)
                raise Forbidden(f"only the owner, the dataset's creator or an admin may delete object {object_id}")
            parents = repo.live_parents(s, object_id)
            if parents:
                raise Conflict(
                    f"object {object_id} is in bundle(s) {', '.join(sorted(set(parents)))[:300]}: delete those first"
                )
            row.deleted_at = utcnow()
            row.deleted_by = who.actor or who.user
            blob = self._blob(row) if row.kind == "blob" else None
            summary = {"kind": row.kind, "sha256": row.sha256, "size": row.size, "external": row.external}
        if blob is not None and self._delete_blob_quietly(blob):
            with self.db.session() as s:
                s.execute(update(ObjectRow).where(ObjectRow.id == object_id).values(blob_deleted=True))
            summary["blob_deleted"] = not blob.external
        return summary

    # ------------------------------------------------------------------ datasets and grants
    def create_dataset(self, who: Principal, name: str, description: str, public: bool) -> DatasetInfo:
        if not isinstance(name, str) or not 0 < len(name.strip()) <= 255:
            raise BadRequest("dataset name is required: 1-255 characters")
        if not isinstance(description, str) or len(description) > 4096:
            raise BadRequest("dataset description must be a string of at most 4096 characters")
        owner, _ = self._owner(who)
        row = DatasetRow(
            id=_new_id(), name=name.strip(), description=description, public=bool(public), created_by=owner
        )
        with self.db.session() as s:
            s.add(row)
            s.flush()
            return self._dataset_info(s, row)

    def get_dataset(self, who: Principal, dataset_id: str) -> DatasetInfo:
        with self.db.session() as s:
            row = repo.dataset_row(s, dataset_id)
            granted = who.user is not None and repo.active_grant(s, row.id, who.user) is not None
            if not may_see_dataset(who, public=row.public, creator=row.created_by, has_grant=granted):
                if self.settings.drs_hide_existence:
                    raise ObjectHidden(f"dataset not found: {dataset_id}")
                raise Forbidden(f"you have no access to dataset {dataset_id}")
            return self._dataset_info(s, row)

    def list_datasets(self, who: Principal) -> list[DatasetInfo]:
        """The datasets ``who`` may see (the rule of ``get_dataset``), by name."""
        if who.user is not None and not who.has("drs:read"):
            return []
        with self.db.session() as s:
            return [
                self._dataset_info(s, row)
                for row, granted in repo.visible_datasets(s, who.user)
                if may_see_dataset(who, public=row.public, creator=row.created_by, has_grant=granted)
            ]

    def dataset_objects(
        self, who: Principal, dataset_id: str, *, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[ObjectInfo], str]:
        """One page of a visible dataset's live objects that ``who`` may read, and the next page's token."""
        if not 1 <= page_size <= 1000:
            raise BadRequest("page_size must be between 1 and 1000")
        if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) <= 12):
            raise BadRequest("page_token is not one this server issued")
        offset = int(page_token or 0)
        self.get_dataset(who, dataset_id)  # 403/404 unless the caller may see the dataset
        with self.db.session() as s:
            rows = repo.dataset_objects(s, dataset_id, offset=offset, limit=page_size + 1)
            page = [self._info(s, r, expand=False) for r in rows[:page_size] if self._may_read(s, who, r)]
            return page, str(offset + page_size) if len(rows) > page_size else ""

    def grant(self, who: Principal, dataset_id: str, username: str) -> tuple[GrantInfo, bool]:
        """Grant read on a dataset. Idempotent: returns (grant, created)."""
        if not isinstance(username, str) or not username:
            raise BadRequest("username is required")
        account = self.users.get(username)
        if account is None:
            raise BadRequest(f"user {username[:128]} is not registered in HelixGate")
        with self.db.session() as s:
            ds = self._managed_dataset(s, who, dataset_id)
            existing = repo.active_grant(s, ds.id, username)
            if existing is not None:
                return GrantInfo.of(existing), False
            row = GrantRow(id=_new_id(), dataset_id=ds.id, username=username, granted_by=who.actor or str(who.user))
            s.add(row)
            s.flush()
            return GrantInfo.of(row), True

    def list_grants(self, who: Principal, dataset_id: str, *, include_revoked: bool = False) -> list[GrantInfo]:
        with self.db.session() as s:
            ds = self._managed_dataset(s, who, dataset_id)
            return [GrantInfo.of(g) for g in repo.grants(s, ds.id, include_revoked=include_revoked)]

    def revoke(self, who: Principal, dataset_id: str, username: str) -> GrantInfo:
        with self.db.session() as s:
            ds = self._managed_dataset(s, who, dataset_id)
            existing = repo.active_grant(s, ds.id, username)
            if existing is None:
                raise NotFound(f"no active grant for {username[:128]} on dataset {dataset_id}")
            now = utcnow()
            for g in repo.active_grants(s, ds.id, username):
                g.revoked_at, g.revoked_by = now, who.actor or str(who.user)
            s.flush()
            return GrantInfo.of(existing)

    # ------------------------------------------------------------------ policy, applied
    def _readable(self, s: Session, who: Principal, object_id: str) -> ObjectRow:
        row = repo.live_object(s, object_id)
        if not self._may_read(s, who, row):
            raise self._refusal(object_id, who)
        return row

    def _refusal(self, object_id: str, who: Principal) -> HelixGateError:
        return read_refusal(object_id, who, hide_existence=bool(self.settings.drs_hide_existence))

    def _may_read(self, s: Session, who: Principal, row: ObjectRow) -> bool:
        ds = repo.dataset(s, row.dataset_id)
        facts = ReadFacts(
            object_public=row.public,
            owner=row.owner,
            dataset_public=bool(ds and ds.public),
            dataset_creator=ds.created_by if ds else None,
            has_grant=bool(ds and who.user and repo.active_grant(s, ds.id, who.user) is not None),
        )
        return principal_may_read(who, facts)

    @staticmethod
    def _is_public(s: Session, row: ObjectRow) -> bool:
        ds = repo.dataset(s, row.dataset_id)
        return row.public or bool(ds and ds.public)

    def _check_dataset_write(self, s: Session, who: Principal, dataset_id: str | None) -> None:
        if dataset_id is None:
            return
        ds = repo.dataset_row(s, dataset_id)
        if not may_manage_dataset(who, ds.created_by):
            raise Forbidden(f"only the creator of dataset {dataset_id} may add objects to it")

    def _managed_dataset(self, s: Session, who: Principal, dataset_id: str) -> DatasetRow:
        ds = repo.dataset_row(s, dataset_id)
        if not may_manage_dataset(who, ds.created_by):
            raise Forbidden(f"only the creator of dataset {dataset_id} or an admin may manage its grants")
        return ds

    @staticmethod
    def _owner(who: Principal) -> tuple[str, str]:
        """(owner, actor): objects made by a service identity for a user belong to that user."""
        if who.user is None:
            raise Unauthorized("authentication required")
        return who.user, who.actor or who.user

    @staticmethod
    def _refuse_quarantined(row: ObjectRow) -> None:
        if row.quarantined_at is not None:
            raise Quarantined(
                f"object {row.id} is quarantined since {_rfc3339(row.quarantined_at)} after an integrity failure; "
                "its bytes are not served (a data steward must restore or delete it)"
            )

    def _check_bulk(self, items: Sequence[Any]) -> None:
        limit = int(self.settings.drs_bulk_limit)
        if len(items) > limit:
            raise PayloadTooLarge(f"bulk request of {len(items)} items exceeds maxBulkRequestLength {limit}")
        if not items:
            raise BadRequest("bulk request lists no objects")

    @staticmethod
    def _blob(row: ObjectRow) -> StoredBlob:
        if row.backend not in ("local", "s3") or row.location is None:
            raise NotFound(f"object {row.id} has no stored bytes")
        return StoredBlob(
            row.backend,  # type: ignore[arg-type]
            row.location,
            row.size,
            row.sha256,
            row.key_id,
            row.external,
            object_id=row.id,
        )

    def _delete_blob_quietly(self, blob: StoredBlob) -> bool:
        try:
            self.storage.delete(blob)
            return True
        except Exception as exc:  # the row already says what to do; a sweeper may retry
            log.warning("could not delete stored bytes at %s: %s", blob.backend, type(exc).__name__)
            return False

    # ------------------------------------------------------------------ read models
    @staticmethod
    def _access_ids(row: ObjectRow) -> list[str]:
        ids = [ACCESS_HTTPS]
        if row.backend == "s3":
            ids.append(ACCESS_S3)
        return ids

    def _info(self, s: Session, row: ObjectRow, *, expand: bool) -> ObjectInfo:
        return ObjectInfo(
            id=row.id,
            kind=row.kind,
            size=row.size,
            sha256=row.sha256,
            created_at=row.created_at,
            updated_at=row.updated_at,
            name=row.name,
            mime_type=row.mime_type,
            description=row.description,
            backend=row.backend,
            public=self._is_public(s, row),
            quarantined_at=row.quarantined_at,
            provenance=row.provenance,
            contents=None if row.kind == "blob" else self._contents(s, row.id, expand=expand, depth=0),
        )

    def _contents(self, s: Session, bundle_id: str, *, expand: bool, depth: int) -> tuple[Member, ...]:
        if depth > MAX_EXPAND_DEPTH:
            raise BadRequest(f"bundle nesting deeper than {MAX_EXPAND_DEPTH} levels")
        return tuple(
            Member(
                name,
                member_id,
                self._contents(s, member_id, expand=True, depth=depth + 1) if expand and kind == "bundle" else None,
            )
            for name, member_id, kind in repo.members(s, bundle_id)
        )

    @staticmethod
    def _dataset_info(s: Session, row: DatasetRow) -> DatasetInfo:
        return DatasetInfo(
            id=row.id,
            name=row.name,
            description=row.description,
            public=row.public,
            created_by=row.created_by,
            created_at=row.created_at,
            object_count=repo.live_count(s, row.id),
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------- factory
def build(platform: Platform, *, storage_factory: Callable[[Any], ObjectStorage] = make_storage) -> DrsStore:
    settings = platform.settings
    issuers = [i.issuer for i in settings.issuers]
    if platform.issuer is not None:
        issuers.insert(0, platform.issuer.issuer_url)
    return DrsStore(
        db=platform.db,
        storage=storage_factory(settings),
        signer=UrlSigner.from_data_dir(settings.data_dir),
        settings=settings,
        users=platform.users,
        audit=platform.audit,
        bearer_issuers=issuers,
    )
