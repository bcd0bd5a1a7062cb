"""Common Event Format (CEF) lines for security events of the audit trail.

``CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension``

Escaping follows the ArcSight CEF specification: header fields escape ``\\`` and ``|``;
extension values escape ``\\`` and ``=`` and encode CR/LF as the two-character sequences
``\\r``/``\\n``. Any other character that a log pipeline could treat as a line break or
control code (C0/C1 controls, U+2028/U+2029) becomes a space, so an attacker-controlled
value can never start a new line or forge a field. Extension keys are fixed here, never
taken from input.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import helixgate

if TYPE_CHECKING:
    from helixgate.audit import AuditRecord

VENDOR: Final = "HelixGate"
PRODUCT: Final = "helixgate"

# Everything str.splitlines() splits on, plus the remaining C0/C1 controls and DEL.
_UNSAFE = re.compile("[\x00-\x09\x0b-\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_MAX_EXTENSION_VALUE = 1023  # CEF's documented limit for string custom fields

# Display names for the security actions HelixGate emits; other actions use the action itself.
EVENT_NAMES: Final[dict[str, str]] = {
    "auth.session": "Token accepted for a new session",
    "auth.failed": "Authentication failed",
    "auth.denied": "Permission denied",
    "integrity.failed": "Integrity check failed",
    "audit.purge": "Audit records purged",
}


def _clean(value: str) -> str:
    return _UNSAFE.sub(" ", value)


def escape_header(value: object) -> str:
    """Escape one header field: backslash and pipe; line breaks cannot survive."""
    text = _clean(str(value)).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def escape_extension(value: object) -> str:
    """Escape one extension value: backslash, equals sign, CR and LF."""
    text = _clean(str(value)).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def cef_line(
    *,
    signature_id: str,
    name: str,
    severity: int,
    extensions: Iterable[tuple[str, object | None]],
    version: str = helixgate.__version__,
) -> str:
    """One CEF line (no trailing newline). Extensions whose value is None are left out."""
    if not 0 <= severity <= 10:
        raise ValueError(f"CEF severity must be 0..10, got {severity}")
    header = "|".join(
        escape_header(v) for v in ("CEF:0", VENDOR, PRODUCT, version, signature_id, name, str(severity))
    )
    # "CEF:0" has nothing to escape; the loop keeps every header field on one code path.
    ext = " ".join(f"{key}={escape_extension(val)}" for key, val in extensions if val is not None)
    return f"{header}|{ext}"


def _ms_epoch(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_EXTENSION_VALUE else text[: _MAX_EXTENSION_VALUE - 3] + "..."


def record_to_cef(record: AuditRecord) -> str:
    """The CEF line for one audit record (normally a security event)."""
    src: str | None = None
    shost: str | None = None
    if record.client_addr:
        try:
            src = str(ipaddress.ip_address(record.client_addr))
        except ValueError:
            shost = record.client_addr  # not an IP literal: CEF's src would be rejected by strict parsers
    msg = None
    if record.details:
        msg = json.dumps(record.details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    extensions: list[tuple[str, object | None]] = [
        ("rt", _ms_epoch(record.time)),
        ("cat", record.category),
        ("act", record.action),
        ("suser", record.actor),
        ("duser", record.on_behalf_of),
        ("src", src),
        ("shost", shost),
        ("outcome", record.outcome),
        ("cs1Label", "requestId" if record.request_id is not None else None),
        ("cs1", record.request_id),
        ("cs2Label", "target" if record.target is not None else None),
        ("cs2", None if record.target is None else _bounded(record.target)),
        ("cs3Label", "service"),
        ("cs3", record.service),
        ("cn1Label", "seq"),
        ("cn1", record.seq),
        ("msg", None if msg is None else _bounded(msg)),
    ]
    return cef_line(
        signature_id=record.action,
        name=EVENT_NAMES.get(record.action, record.action),
        severity=record.severity,
        extensions=extensions,
    )
