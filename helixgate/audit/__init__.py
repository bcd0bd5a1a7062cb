"""Tamper-evident audit trail: one append-only, hash-chained sequence of records.

- :mod:`~helixgate.audit.records`: what a record is and its canonical, hashed form;
- :mod:`~helixgate.audit.models`: the tables (``core_audit_*``);
- :mod:`~helixgate.audit.sanitizer`: what may enter a record (secrets dropped, sizes bounded);
- :mod:`~helixgate.audit.chain`: appending, verifying the chain, checkpoints and anchors;
- :mod:`~helixgate.audit.checkpoints`: the Ed25519 checkpoint key (held only by the audit
  writer) and the :class:`Checkpointer` that signs what keyless writers appended;
- :mod:`~helixgate.audit.export`: :class:`AuditTrail` with paging, CEF export and purges.
"""

from helixgate.audit.checkpoints import KEY_FILENAME, PUBLIC_KEY_FILENAME, Checkpointer, CheckpointKey
from helixgate.audit.export import AuditTrail, retention_cutoff
from helixgate.audit.models import AuditAnchorRow, AuditCheckpointRow, AuditHeadRow, AuditRecordRow, UTCDateTime
from helixgate.audit.records import (
    ANONYMOUS,
    AUTH_DENIED,
    AUTH_FAILED,
    AUTH_SESSION,
    CATEGORIES,
    GENESIS_HASH,
    INTEGRITY_FAILED,
    MAX_PAGE_SIZE,
    OUTCOMES,
    SERVICE_NAME,
    AuditRecord,
    Checkpoint,
    VerifyReport,
)
from helixgate.audit.sanitizer import sanitize_details

__all__ = [
    "ANONYMOUS",
    "AUTH_DENIED",
    "AUTH_FAILED",
    "AUTH_SESSION",
    "CATEGORIES",
    "GENESIS_HASH",
    "INTEGRITY_FAILED",
    "KEY_FILENAME",
    "MAX_PAGE_SIZE",
    "OUTCOMES",
    "PUBLIC_KEY_FILENAME",
    "SERVICE_NAME",
    "AuditAnchorRow",
    "AuditCheckpointRow",
    "AuditHeadRow",
    "AuditRecord",
    "AuditRecordRow",
    "AuditTrail",
    "CheckpointKey",
    "Checkpoint",
    "Checkpointer",
    "UTCDateTime",
    "VerifyReport",
    "retention_cutoff",
    "sanitize_details",
]
