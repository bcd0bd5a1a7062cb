"""The hash chain: appending records, signing checkpoints, verifying the whole trail.

Every record carries ``seq`` (1, 2, 3, ... without gaps), ``prev_hash`` (the previous record's
``hash``; 64 zeros for the first record) and ``hash`` (:func:`helixgate.audit.records._record_hash`).
Editing, deleting or inserting a record therefore breaks the chain.

Appends from many processes are serialized on one chain-head row: ``SELECT ... FOR UPDATE``
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite (whose write lock is database-wide).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from helixgate.audit.checkpoints import CheckpointKey
from helixgate.audit.models import AuditAnchorRow, AuditCheckpointRow, AuditHeadRow, AuditRecordRow, to_checkpoint
from helixgate.audit.records import (
    ANONYMOUS,
    CATEGORIES,
    DEFAULT_SEVERITY,
    GENESIS_HASH,
    OUTCOMES,
    Checkpoint,
    VerifyReport,
    _canonical,
    _choice,
    _hashed_fields,
    _iso,
    _now,
    _record_hash,
    _service,
    _utc,
    statement,
)
from helixgate.audit.sanitizer import column_text, sanitize_details
from helixgate.db import Database
from helixgate.errors import BadRequest, ConfigurationError, IntegrityError

log = logging.getLogger("helixgate.audit")


class ChainTrail:
    """The chain itself: appending, checkpoints, verification (see :class:`AuditTrail`)."""

    def __init__(
        self,
        db: Database,
        key_dir: Path,
        *,
        checkpoint_every: int = 1000,
        clock: Callable[[], datetime] = _now,
        signer: bool = True,
    ) -> None:
        """``signer=False``: a process that appends without the checkpoint key (a WES worker);
        it never opens the private key, and the audit writer signs the checkpoints it reaches."""
        if checkpoint_every < 0:
            raise ConfigurationError(f"audit checkpoint_every must be >= 0 (0 disables), got {checkpoint_every}")
        if db.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"audit trail supports SQLite and PostgreSQL, not {db.engine.dialect.name}")
        self.db = db
        self.checkpoint_every = checkpoint_every
        self._key = CheckpointKey(Path(key_dir), signer=signer)
        self._clock = clock

    def __repr__(self) -> str:
        return f"AuditTrail(db={self.db.engine.dialect.name}, key={str(self._key.path)!r})"

    @property
    def signer(self) -> bool:
        """Whether this process holds the checkpoint key."""
        return self._key.signer

    # ------------------------------------------------------------------ keys
    @property
    def key_id(self) -> str:
        return self._key.key_id

    def public_key_pem(self) -> str:
        """The checkpoint verification key, for auditors who verify exports elsewhere."""
        return self._key.public_pem().decode("ascii")

    # ------------------------------------------------------------------ appending
    def record(
        self,
        *,
        category: str,
        action: str,
        outcome: str,
        actor: str | None,
        service: str,
        target: str | None = None,
        request_id: str | None = None,
        client_addr: str | None = None,
        on_behalf_of: str | None = None,
        severity: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one record; returns its seq. Secrets in ``details`` are dropped."""
        _choice("category", category, CATEGORIES)
        _choice("outcome", outcome, OUTCOMES)
        _service(service)
        action_text = column_text("action", action)
        if not action_text or not action_text.strip():
            raise BadRequest("audit action must be a non-empty string")
        if severity is None:
            severity = 7 if category == "security" and outcome != "success" else DEFAULT_SEVERITY[outcome]
        if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 10:
            raise BadRequest(f"invalid audit severity {severity!r}: expected an integer 0..10")
        values: dict[str, Any] = {
            "category": category,
            "action": action_text,
            "outcome": outcome,
            "actor": column_text("actor", actor) or ANONYMOUS,
            "on_behalf_of": column_text("on_behalf_of", on_behalf_of),
            "service": service,
            "target": column_text("target", target),
            "request_id": column_text("request_id", request_id),
            "client_addr": column_text("client_addr", client_addr),
            "severity": severity,
        }
        clean_details = sanitize_details(details)
        with self.db.session() as s:
            head = self._lock_head(s)
            seq = head.seq + 1
            # Timestamp taken under the lock so time never runs backwards along seq on one host.
            now = _utc(self._clock())
            fields = {"seq": seq, "time": _iso(now), **values, "details": clean_details, "prev_hash": head.hash}
            digest = _record_hash(fields)
            s.add(
                AuditRecordRow(
                    seq=seq,
                    time=now,
                    details=_canonical(clean_details),
                    prev_hash=head.hash,
                    hash=digest,
                    **values,
                )
            )
            head.seq, head.hash = seq, digest
            s.flush()
            if self.checkpoint_every and seq % self.checkpoint_every == 0 and self._key.signer:
                try:
                    self._sign_checkpoint(s, seq, digest)
                except ConfigurationError as exc:
                    # Losing the record would be worse than a missed checkpoint; checkpoint()
                    # on demand keeps raising until the key is fixed.
                    log.error("audit checkpoint at seq %d skipped: %s", seq, exc.message)
        return seq

    def security_event(
        self,
        action: str,
        *,
        outcome: str = "denied",
        severity: int = 7,
        actor: str | None = None,
        service: str = "core",
        target: str | None = None,
        request_id: str | None = None,
        client_addr: str | None = None,
        on_behalf_of: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append a security event (sign-in, failed authentication, denial, integrity failure)."""
        return self.record(
            category="security",
            action=action,
            outcome=outcome,
            actor=actor,
            service=service,
            target=target,
            request_id=request_id,
            client_addr=client_addr,
            on_behalf_of=on_behalf_of,
            severity=severity,
            details=details,
        )

    def _lock_head(self, s: Session) -> AuditHeadRow:
        if self.db.engine.dialect.name == "sqlite":
            # pysqlite would open a deferred transaction and fail with SQLITE_BUSY when two
            # readers both try to upgrade; take the write lock first (waits on busy_timeout).
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        head = s.scalars(select(AuditHeadRow).where(AuditHeadRow.id == 1).with_for_update()).one_or_none()
        if head is None:
            self._create_head(s)
            head = s.scalars(select(AuditHeadRow).where(AuditHeadRow.id == 1).with_for_update()).one()
        return head

    def _create_head(self, s: Session) -> None:
        # A purge may have removed everything; otherwise an empty chain starts at genesis.
        if self.db.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Executable = pg_insert(AuditHeadRow).values(id=1, seq=0, hash=GENESIS_HASH).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(AuditHeadRow).values(id=1, seq=0, hash=GENESIS_HASH).on_conflict_do_nothing()
        records = s.scalar(select(func.count()).select_from(AuditRecordRow)) or 0
        anchors = s.scalar(select(func.count()).select_from(AuditAnchorRow)) or 0
        if records or anchors:
            # The head was deleted. Never silently restart the chain from genesis.
            raise IntegrityError(
                "audit chain head is missing while records or purge anchors exist; run 'helixgate audit verify'",
                subject="core_audit_head",
                expected="1 head row",
                actual="0 head rows",
            )
        s.execute(stmt)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> Checkpoint | None:
        """Sign the current chain head; None while the chain is empty. Idempotent per head."""
        with self.db.session() as s:
            head = self._lock_head(s)
            if head.seq == 0 or head.hash == GENESIS_HASH:
                return None
            existing = s.scalars(select(AuditCheckpointRow).where(AuditCheckpointRow.seq == head.seq)).one_or_none()
            if existing is not None:
                return to_checkpoint(existing)
            return self._sign_checkpoint(s, head.seq, head.hash)

    def _sign_checkpoint(self, s: Session, seq: int, hash_: str) -> Checkpoint:
        self._key.private()  # only the audit writer holds it (ConfigurationError elsewhere)
        now = self._clock()
        row = AuditCheckpointRow(
            seq=seq,
            hash=hash_,
            time=now,
            key_id=self._key.key_id,
            signature=self._key.sign(statement("checkpoint", seq, hash_, now)),
        )
        s.add(row)
        s.flush()
        return to_checkpoint(row)

    def catch_up_checkpoints(self, *, limit: int = 100) -> list[Checkpoint]:
        """Sign the checkpoints (multiples of ``checkpoint_every``) that records appended by
        processes without the key reached since the last checkpoint (see :class:`Checkpointer`)."""
        if not self.checkpoint_every:
            return []
        signed: list[Checkpoint] = []
        with self.db.session() as s:
            # look before taking the chain's write lock: most rounds find nothing to do
            head_seq = s.scalar(select(AuditHeadRow.seq).where(AuditHeadRow.id == 1)) or 0
            done = s.scalar(select(func.max(AuditCheckpointRow.seq))) or 0
            if head_seq // self.checkpoint_every <= done // self.checkpoint_every:
                return []
        with self.db.session() as s:
            head = self._lock_head(s)
            last = s.scalar(select(func.max(AuditCheckpointRow.seq))) or 0
            anchor = s.scalar(select(func.max(AuditAnchorRow.seq))) or 0
            every = self.checkpoint_every
            first = (max(last, anchor) // every + 1) * every
            for seq in range(first, head.seq + 1, every)[:limit]:
                row = s.get(AuditRecordRow, seq)
                if row is not None:
                    signed.append(self._sign_checkpoint(s, seq, row.hash))
        return signed

    def checkpoints(self) -> list[Checkpoint]:
        with self.db.session() as s:
            rows = s.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq)).all()
            return [to_checkpoint(r) for r in rows]

    # ------------------------------------------------------------------ verification
    def verify(self) -> VerifyReport:
        """Check the whole chain, every checkpoint and anchor. Never raises for tampering."""
        report = VerifyReport()
        have_key = self._key.exists()
        with self.db.session() as s:
            anchors = s.scalars(select(AuditAnchorRow).order_by(AuditAnchorRow.seq)).all()
            checkpoints = s.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq)).all()
            head = s.scalars(select(AuditHeadRow).where(AuditHeadRow.id == 1)).one_or_none()

            anchor: AuditAnchorRow | None = None
            for a in anchors:
                if self._signature_ok(report, "anchor", a, have_key):
                    anchor = a
            report.anchor_seq = anchor.seq if anchor else None

            wanted = {c.seq: c for c in checkpoints}
            seen_hashes: dict[int, str] = {}
            expected_seq = anchor.seq + 1 if anchor else 1
            prev_hash = anchor.hash if anchor else GENESIS_HASH
            last: AuditRecordRow | None = None
            # Appends may commit while we read: check the chain up to the head as read above,
            # and look for anything beyond the head only at the end.
            for row in self._iter_rows(s, upto=head.seq if head else None):
                report.records_checked += 1
                if report.first_seq is None:
                    report.first_seq = row.seq
                if row.seq > expected_seq:
                    gap_end = row.seq - 1
                    missing = f"seq {expected_seq}" if gap_end == expected_seq else f"seq {expected_seq}..{gap_end}"
                    report.add(f"record seq {row.seq}: {missing} missing before it (deleted records)")
                elif row.seq < expected_seq:
                    report.add(f"record seq {row.seq}: precedes the purge anchor at seq {expected_seq - 1}")
                if row.prev_hash != prev_hash:
                    report.add(
                        f"record seq {row.seq}: previous-hash link broken (expected {prev_hash}, found {row.prev_hash})"
                    )
                try:
                    computed = _record_hash(_hashed_fields(row))
                except (ValueError, TypeError):
                    computed = "<unparseable details>"
                if computed != row.hash:
                    report.add(f"record seq {row.seq}: content hash mismatch (computed {computed}, stored {row.hash})")
                if row.seq in wanted:
                    seen_hashes[row.seq] = row.hash
                expected_seq, prev_hash, last = row.seq + 1, row.hash, row
            report.last_seq = last.seq if last else None

            last_seq = last.seq if last else (anchor.seq if anchor else 0)
            for c in checkpoints:
                report.checkpoints_checked += 1
                if not self._signature_ok(report, "checkpoint", c, have_key):
                    continue
                if anchor is not None and c.seq <= anchor.seq:
                    if c.seq == anchor.seq and c.hash != anchor.hash:
                        report.add(f"checkpoint seq {c.seq}: hash differs from the purge anchor at that seq")
                    continue
                if c.seq > last_seq:
                    report.add(
                        f"checkpoint seq {c.seq}: refers beyond the last record seq {last_seq} (chain truncated)"
                    )
                elif c.seq not in seen_hashes:
                    report.add(f"checkpoint seq {c.seq}: record seq {c.seq} is missing")
                elif seen_hashes[c.seq] != c.hash:
                    report.add(
                        f"checkpoint seq {c.seq}: signed hash {c.hash} does not match record hash {seen_hashes[c.seq]}"
                    )

            head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
            tail_seq = last.seq if last else (anchor.seq if anchor else 0)
            tail_hash = last.hash if last else (anchor.hash if anchor else GENESIS_HASH)
            if head is None and tail_seq:
                report.add(f"chain head row is missing; last record seq {tail_seq}")
            elif (head_seq, head_hash) != (tail_seq, tail_hash):
                report.add(
                    f"chain head says seq {head_seq} (hash {head_hash}) but the last record is seq {tail_seq} "
                    f"(hash {tail_hash}): records after seq {min(head_seq, tail_seq)} were removed or appended "
                    "outside the trail"
                )
            if head is not None:
                # max(seq) before the head: a concurrent append can only raise the head past it.
                max_seq = s.scalar(select(func.max(AuditRecordRow.seq)))
                head_now = s.scalar(select(AuditHeadRow.seq).where(AuditHeadRow.id == 1))
                limit = max(head_seq, head_now or 0)
                if max_seq is not None and max_seq > limit:
                    report.add(
                        f"record seq {limit + 1}: records seq {limit + 1}..{max_seq} lie beyond the chain head "
                        f"seq {limit} (inserted outside the trail)"
                    )
        return report

    def _signature_ok(
        self,
        report: VerifyReport,
        kind: Literal["anchor", "checkpoint"],
        row: AuditAnchorRow | AuditCheckpointRow,
        have_key: bool,
    ) -> bool:
        label = "purge anchor" if kind == "anchor" else "checkpoint"
        if not have_key:
            report.add(f"{label} seq {row.seq}: cannot verify signature, audit signing key {self._key.path} is missing")
            return False
        if row.key_id != self._key.key_id:
            report.add(f"{label} seq {row.seq}: signed by unknown key {row.key_id[:32]} (expected {self._key.key_id})")
            return False
        if not self._key.verifies(statement(kind, row.seq, row.hash, row.time), row.signature):
            report.add(f"{label} seq {row.seq}: signature does not verify (forged or altered)")
            return False
        return True

    @staticmethod
    def _iter_rows(s: Session, *, upto: int | None = None, batch: int = 1000) -> Iterator[AuditRecordRow]:
        after = -1
        while True:
            stmt = select(AuditRecordRow).where(AuditRecordRow.seq > after)
            if upto is not None:
                stmt = stmt.where(AuditRecordRow.seq <= upto)
            rows = s.scalars(stmt.order_by(AuditRecordRow.seq).limit(batch)).all()
            if not rows:
                return
            yield from rows
            after = rows[-1].seq
            s.expunge_all()  # keep memory flat over millions of rows
