"""DRS's in-process implementation of ``helixgate.ports.DataPort``: the same read and write
policy as the HTTP API (the service identity acting for a user, with that user's rights),
without a request to its own server, audited here once per call by DRS itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

from drs_store.access import Principal
from drs_store.domain import ACCESS_HTTPS, DrsStore, ObjectInfo, RequestInfo, parse_meta
from drs_store.shapes import drs_uri
from helixgate import rbac
from helixgate.audit import AuditTrail
from helixgate.errors import Conflict, Forbidden, HelixGateError, Hidden, IntegrityError, NotFound, Unauthorized
from helixgate.platform import Platform
from helixgate.ports import DataObject, Download, Provenance, receive_verified
from helixgate.users import UserDirectory


class InProcessDataPort:
    def __init__(self, store: DrsStore, users: UserDirectory, audit: AuditTrail, service_user: str) -> None:
        self.store = store
        self.users = users
        self.audit = audit
        self.service_user = service_user

    def _principal(self, user: str) -> Principal:
        """The user's rights, exercised by the service identity (what the HTTP guard builds
        from the on-behalf-of header: the service identity must be active and allowed to
        delegate; an unknown or inactive user is refused)."""
        service = self.users.get(self.service_user)
        if service is None or not service.active:
            raise Forbidden(f"user {self.service_user} is not registered or not active")
        if not rbac.allows(service.roles, "drs:delegate"):
            raise Forbidden(f"{self.service_user} may not act on behalf of another user")
        account = self.users.get(user)
        if account is None or not account.active:
            raise Forbidden(f"user {user} is not registered or not active")
        return Principal(user, tuple(account.roles), self.service_user)

    def _audit(
        self,
        action: str,
        user: str,
        target: str,
        outcome: str,
        details: Mapping[str, object],
        *,
        category: str = "request",
    ) -> None:
        self.audit.record(
            category=category,
            action=action,
            outcome=outcome,
            actor=self.service_user,
            on_behalf_of=user,
            service="drs",
            target=target,
            details={"in_process": True, **details},
        )

    @staticmethod
    def _outcome(exc: HelixGateError) -> str:
        """As the HTTP guard records it: refused access is "denied", a plain miss "failure"."""
        return "denied" if exc.status in (401, 403) or isinstance(exc, Hidden) else "failure"

    def lookup(self, user: str, object_id: str) -> DataObject:
        try:
            raw = self.store.get_object(self._principal(user), object_id)
        except HelixGateError as exc:
            outcome = self._outcome(exc)
            if outcome == "denied":  # a refused read is a security event, as over HTTP
                self.audit.security_event(
                    "auth.denied",
                    actor=self.service_user,
                    on_behalf_of=user,
                    service="drs",
                    target=object_id,
                    details={"operation": "GetObject", "reason": exc.message, "status": exc.status},
                )
            self._audit("drs.GetObject", user, object_id, outcome, {"status": exc.status})
            raise
        self._audit("drs.GetObject", user, object_id, "success", {"status": 200})
        return self._data_object(raw)

    def _data_object(self, info: ObjectInfo) -> DataObject:
        """The store's read model as the port's value (what ``from_drs_json`` reads over HTTP)."""
        return DataObject(
            id=info.id,
            self_uri=drs_uri(self.store.settings.drs_host, info.id),
            name=info.name or "",
            size=info.size,
            sha256=info.sha256,
            mime_type=info.mime_type or "",
        )

    def unreadable(self, user: str, object_ids: Sequence[str]) -> list[str]:
        refused = []
        for object_id in object_ids:
            try:
                self.lookup(user, object_id)
            except (Unauthorized, Forbidden, NotFound):
                refused.append(object_id)
        return refused

    def download(self, user: str, object_id: str, dest: Path) -> Download:
        obj = self.lookup(user, object_id)  # audited (a refusal is a security event), as over HTTP
        who = self._principal(user)
        subject = f"input {obj.self_uri}"
        info = RequestInfo(actor=self.service_user, on_behalf_of=user)
        outcome = "failure"
        details: dict[str, object] = {"status": 500}
        try:
            # the https access method, as a client would use it: the signed URL's claims are
            # checked again when the stream opens (a grant revoked meanwhile stops it)
            query = parse_qs(urlsplit(self.store.access_url(who, object_id, ACCESS_HTTPS).url).query)
            plan = self.store.open_stream(
                object_id,
                user=query.get("u", [None])[0],
                expires=query.get("exp", [""])[0],
                signature=query.get("sig", [""])[0],
                range_header=None,
                info=info,
            )
            sha, size = receive_verified(plan.body, dest, obj.sha256, subject=subject)
            outcome, details = "success", {"status": plan.status, "sha256": sha, "size": size}
        except (IntegrityError, Conflict) as exc:  # quarantined now or before: refused
            details = {"status": exc.status, "error": exc.message[:300]}
            raise IntegrityError(f"{subject} refused by DRS: {exc.message}", subject=subject) from None
        except HelixGateError as exc:
            outcome, details = self._outcome(exc), {"status": exc.status}
            raise
        finally:
            self._audit("drs.object.read", user, object_id, outcome, details)
        return Download(sha, size, obj)

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
        meta = parse_meta(name=name, mime_type=mime_type, sha256=sha256, provenance=provenance.as_json())
        try:
            raw = self.store.upload(self._principal(user), stream, meta, content_length=None)
        except IntegrityError as exc:
            self.audit.security_event(
                "drs.upload.checksum_mismatch",
                severity=6,
                actor=self.service_user,
                on_behalf_of=user,
                service="drs",
                details={"expected": exc.expected, "actual": exc.actual, "name": name, "in_process": True},
            )
            raise IntegrityError(f"output {name} refused by DRS: {exc.message}", subject=name) from None
        obj = self._data_object(raw)
        prov = {"run_id": provenance.run_id, "task_id": provenance.task_id}
        if provenance.image_digest:
            prov["image_digest"] = provenance.image_digest
        details: dict[str, object] = {"sha256": obj.sha256, "size": obj.size, "dataset_id": None, "provenance": prov}
        self._audit("drs.object.create", user, obj.id, "success", details, category="change")
        return obj


def build(platform: Platform) -> InProcessDataPort:
    """The provider ``Platform.port(DataPort)`` calls when DRS is served in this process."""
    store = platform.domain(DrsStore)
    return InProcessDataPort(store, platform.users, platform.audit, platform.settings.service_user)
