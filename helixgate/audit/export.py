"""Reading the trail out: filtered pages, CEF export for a SIEM, and retention purges.

Purges export the oldest records first and leave a signed anchor (seq and hash of the last
purged record) from which the remaining chain is verified.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import delete, func, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.sql.elements import ColumnElement

from helixgate.audit.chain import ChainTrail
from helixgate.audit.models import AuditAnchorRow, AuditCheckpointRow, AuditRecordRow, to_record
from helixgate.audit.records import (
    CATEGORIES,
    GENESIS_HASH,
    MAX_PAGE_SIZE,
    OUTCOMES,
    AuditRecord,
    _canonical,
    _choice,
    _now,
    _service,
    _utc,
    statement,
)
from helixgate.cef import record_to_cef
from helixgate.errors import BadRequest, ConfigurationError, Conflict, IntegrityError
from helixgate.limits import bounded_int

Order = Literal["newest", "oldest"]


@dataclass(frozen=True)
class _Filters:
    category: str | None = None
    action_prefix: str | None = None
    actor: str | None = None
    outcome: str | None = None
    target: str | None = None
    service: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        r = AuditRecordRow
        out: list[ColumnElement[bool]] = []
        if self.category is not None:
            out.append(r.category == _choice("category", self.category, CATEGORIES))
        if self.outcome is not None:
            out.append(r.outcome == _choice("outcome", self.outcome, OUTCOMES))
        if self.service is not None:
            out.append(r.service == _service(self.service))
        if self.action_prefix:
            out.append(r.action.startswith(self.action_prefix, autoescape=True))
        if self.actor is not None:
            out.append(r.actor == self.actor)
        if self.target is not None:
            out.append(r.target == self.target)
        if self.request_id is not None:
            out.append(r.request_id == self.request_id)
        if self.since is not None:
            out.append(r.time >= _utc(self.since))
        if self.until is not None:
            out.append(r.time < _utc(self.until))
        return out


class AuditTrail(ChainTrail):
    """The audit trail of one HelixGate deployment (one chain per database).

    Thread-safe; any number of processes may append to the same database concurrently.
    """

    # ------------------------------------------------------------------ querying
    def query(
        self,
        *,
        category: str | None = None,
        action_prefix: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        target: str | None = None,
        service: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        order: Order = "newest",
        page_size: int = 100,
        page_token: str | None = None,
    ) -> tuple[list[AuditRecord], str | None]:
        """One page of records; ``since`` inclusive, ``until`` exclusive. Next token is None on the last page."""
        if order not in ("newest", "oldest"):
            raise BadRequest(f"invalid order {str(order)[:20]!r}: expected newest or oldest")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise BadRequest(f"invalid page_size {page_size!r}: expected 1..{MAX_PAGE_SIZE}")
        filters = _Filters(category, action_prefix, actor, outcome, target, service, request_id, since, until)
        stmt = select(AuditRecordRow).where(*filters.clauses())
        if page_token:
            after = _decode_token(page_token, order)
            stmt = stmt.where(AuditRecordRow.seq < after if order == "newest" else AuditRecordRow.seq > after)
        key = AuditRecordRow.seq.desc() if order == "newest" else AuditRecordRow.seq.asc()
        with self.db.session() as s:
            rows = s.scalars(stmt.order_by(key).limit(page_size + 1)).all()
            records = [to_record(r) for r in rows[:page_size]]
        next_token = _encode_token(records[-1].seq, order) if len(rows) > page_size else None
        return records, next_token

    def get(self, seq: int) -> AuditRecord | None:
        with self.db.session() as s:
            row = s.get(AuditRecordRow, seq)
            return to_record(row) if row else None

    def export_cef(
        self,
        *,
        category: str | None = "security",
        action_prefix: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[str]:
        """CEF lines (no newline), oldest first; security events unless ``category`` says otherwise."""
        token: str | None = None
        while True:
            page, token = self.query(
                category=category,
                action_prefix=action_prefix,
                actor=actor,
                outcome=outcome,
                target=target,
                since=since,
                until=until,
                order="oldest",
                page_size=MAX_PAGE_SIZE,
                page_token=token,
            )
            for rec in page:
                yield record_to_cef(rec)
            if token is None:
                return

    # ------------------------------------------------------------------ retention
    def purge(self, *, older_than: datetime, export_path: Path) -> int:
        """Export, then delete, the oldest records whose time is before ``older_than``.

        Only a prefix of the chain is removed (up to the first record at or after the
        cut-off), so the remaining chain stays contiguous from the signed anchor. The export
        (JSON lines, one record with its hashes per line) is written and fsynced before
        anything is deleted. Refuses to purge records whose chain does not verify: purging
        them would destroy the evidence. Returns the number of records purged (0: nothing
        to purge, no file written).
        """
        cutoff = _utc(older_than)
        export_path = Path(export_path)
        if export_path.exists():
            raise Conflict(f"audit export file {export_path} already exists; refusing to overwrite an archive")
        with self.db.session() as s:
            first_kept = s.scalar(select(func.min(AuditRecordRow.seq)).where(AuditRecordRow.time >= cutoff))
            stmt = select(func.max(AuditRecordRow.seq)).where(AuditRecordRow.time < cutoff)
            if first_kept is not None:
                stmt = stmt.where(AuditRecordRow.seq < first_kept)
            last_purged = s.scalar(stmt)
            anchor = s.scalars(select(AuditAnchorRow).order_by(AuditAnchorRow.seq.desc()).limit(1)).one_or_none()
        if last_purged is None:
            return 0
        if anchor is not None and not self._key.verifies(
            statement("anchor", anchor.seq, anchor.hash, anchor.time), anchor.signature
        ):
            raise IntegrityError(
                f"refusing to purge: the purge anchor at seq {anchor.seq} does not verify",
                subject="core_audit_anchor",
            )

        count, last_hash = self._export(export_path, last_purged, anchor)
        committing = False
        try:
            with self.db.session() as s:
                self._lock_head(s)
                latest = s.scalar(select(func.max(AuditAnchorRow.seq)))
                if latest != (anchor.seq if anchor else None):
                    raise Conflict("another audit purge ran at the same time; run the purge again")
                current = s.get(AuditRecordRow, last_purged)
                if current is None or current.hash != last_hash:
                    raise IntegrityError(
                        f"audit record seq {last_purged} changed while purging",
                        subject=f"audit record {last_purged}",
                        expected=last_hash,
                        actual=None if current is None else current.hash,
                    )
                result = s.execute(delete(AuditRecordRow).where(AuditRecordRow.seq <= last_purged))
                deleted = cast(CursorResult[Any], result).rowcount
                if deleted != count:
                    raise IntegrityError(
                        f"audit purge up to seq {last_purged}: record count changed while purging",
                        subject="core_audit_records",
                        expected=str(count),
                        actual=str(deleted),
                    )
                s.execute(delete(AuditCheckpointRow).where(AuditCheckpointRow.seq < last_purged))
                now = self._clock()
                s.add(
                    AuditAnchorRow(
                        seq=last_purged,
                        hash=last_hash,
                        time=now,
                        purged=count,
                        key_id=self._key.key_id,
                        signature=self._key.sign(statement("anchor", last_purged, last_hash, now)),
                    )
                )
                s.flush()
                committing = True
        except BaseException:
            # Before COMMIT nothing was deleted: drop the archive. A failed COMMIT is ambiguous
            # (it may have happened), so the archive is kept.
            if not committing:
                export_path.unlink(missing_ok=True)
            raise
        return count

    def _export(self, path: Path, upto: int, anchor: AuditAnchorRow | None) -> tuple[int, str]:
        """Write records seq <= upto to ``path`` after checking their chain; returns (count, last hash)."""
        expected_seq = anchor.seq + 1 if anchor else 1
        prev = anchor.hash if anchor else GENESIS_HASH
        count = 0
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh, self.db.session() as s:
                for row in self._iter_rows(s, upto=upto):
                    rec = to_record(row)
                    if rec.seq != expected_seq or rec.prev_hash != prev or rec.computed_hash() != rec.hash:
                        raise IntegrityError(
                            f"refusing to purge: audit chain broken at seq {rec.seq}; run 'helixgate audit verify'",
                            subject=f"audit record {rec.seq}",
                            expected=f"seq {expected_seq} linked to {prev}",
                            actual=f"seq {rec.seq} linked to {rec.prev_hash}",
                        )
                    fh.write(_canonical(rec.to_dict()) + "\n")
                    expected_seq, prev, count = rec.seq + 1, rec.hash, count + 1
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)  # fails rather than overwrite an archive created meanwhile
        except FileExistsError:
            raise Conflict(f"audit export file {path} already exists; refusing to overwrite an archive") from None
        finally:
            tmp.unlink(missing_ok=True)
        return count, prev


def retention_cutoff(retention_days: int, *, now: datetime | None = None) -> datetime:
    """``older_than`` for :meth:`AuditTrail.purge` given ``Settings.audit_retention_days``."""
    if retention_days <= 0:
        raise ConfigurationError(f"invalid setting audit_retention_days: must be positive, got {retention_days}")
    return _utc(now or _now()) - timedelta(days=retention_days)


# ----------------------------------------------------------------------------- page tokens
def _encode_token(seq: int, order: str) -> str:
    raw = f"{order[0]}{seq}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_token(token: str, order: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        if raw[:1] != order[0] or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError
        return bounded_int(int(raw[1:]), "page_token", 0)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            f"invalid page_token for order {order!r}: use the token returned by the previous page"
        ) from None
