"""The values of the audit trail and their canonical form: what a record is, how it is hashed.

A record's ``hash`` is SHA-256 over the canonical JSON (sorted keys, no whitespace, UTF-8) of all
its fields including ``seq`` and ``prev_hash``; checkpoints and purge anchors sign a
domain-separated statement over (seq, hash, time).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from helixgate.cef import record_to_cef
from helixgate.errors import BadRequest

if TYPE_CHECKING:
    from helixgate.audit.models import AuditRecordRow

CATEGORIES: Final = ("request", "change", "execution", "security")
OUTCOMES: Final = ("success", "failure", "denied", "error")
# a service names itself in its declaration; the trail accepts any well-formed name
SERVICE_NAME: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
GENESIS_HASH: Final = "0" * 64
ANONYMOUS: Final = "anonymous"

# Security actions emitted by the platform (names shown in CEF come from helixgate.cef).
AUTH_SESSION: Final = "auth.session"
AUTH_FAILED: Final = "auth.failed"
AUTH_DENIED: Final = "auth.denied"
INTEGRITY_FAILED: Final = "integrity.failed"

MAX_PAGE_SIZE: Final = 1000
MAX_PROBLEMS: Final = 1000  # a wholesale rewrite must not turn verify() into a memory bomb

DEFAULT_SEVERITY: Final = {"success": 1, "failure": 3, "denied": 5, "error": 6}
COLUMN_LIMITS: Final = {
    "action": 128,
    "actor": 255,
    "on_behalf_of": 255,
    "target": 512,
    "request_id": 128,
    "client_addr": 64,
}


# ----------------------------------------------------------------------------- values
@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: datetime
    category: str
    action: str
    outcome: str
    actor: str
    on_behalf_of: str | None
    service: str
    target: str | None
    request_id: str | None
    client_addr: str | None
    severity: int
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also the line format of purge exports)."""
        out = _hashed_fields(self)
        out["hash"] = self.hash
        return out

    def to_cef(self) -> str:
        return record_to_cef(self)

    def computed_hash(self) -> str:
        return _record_hash(_hashed_fields(self))


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    time: datetime
    key_id: str
    signature: str  # base64 Ed25519 signature over the canonical checkpoint statement

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "time": _iso(self.time),
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    records_checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints_checked: int = 0
    anchor_seq: int | None = None
    problems_omitted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.problems_omitted += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "problems_omitted": self.problems_omitted,
            "records_checked": self.records_checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoints_checked": self.checkpoints_checked,
            "anchor_seq": self.anchor_seq,
        }


# ----------------------------------------------------------------------------- helpers
def _utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> datetime:
    return datetime.now(UTC)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _record_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(fields).encode("utf-8")).hexdigest()


def _hashed_fields(r: AuditRecord | AuditRecordRow) -> dict[str, Any]:
    details = r.details if isinstance(r.details, dict) else json.loads(r.details)
    return {
        "seq": r.seq,
        "time": _iso(r.time),
        "category": r.category,
        "action": r.action,
        "outcome": r.outcome,
        "actor": r.actor,
        "on_behalf_of": r.on_behalf_of,
        "service": r.service,
        "target": r.target,
        "request_id": r.request_id,
        "client_addr": r.client_addr,
        "severity": r.severity,
        "details": details,
        "prev_hash": r.prev_hash,
    }


def _service(value: str) -> str:
    if not isinstance(value, str) or not SERVICE_NAME.match(value):
        raise BadRequest(f"invalid audit service {str(value)[:40]!r}: expected a service name such as drs")
    return value


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BadRequest(f"invalid audit {name} {str(value)[:40]!r}: expected one of {', '.join(allowed)}")
    return value


def _statement(kind: str, seq: int, hash_: str, time: datetime) -> bytes:
    # Domain-separated so a checkpoint signature can never pass as an anchor and vice versa.
    return _canonical({"type": f"helixgate.audit.{kind}.v1", "seq": seq, "hash": hash_, "time": _iso(time)}).encode()


def statement(kind: str, seq: int, hash_: str, time: datetime) -> bytes:
    """What a checkpoint (``kind`` "checkpoint") or purge anchor ("anchor") signs.

    Domain-separated so a checkpoint signature can never pass as an anchor and vice versa."""
    return _canonical({"type": f"helixgate.audit.{kind}.v1", "seq": seq, "hash": hash_, "time": _iso(time)}).encode()
