"""Auditors' pages, the logic: filters checked before they reach the audit API, and rows
with security-relevant records marked (plain functions over the core API's JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from helixgate.errors import BadRequest

CATEGORIES = ("request", "change", "execution", "security")
OUTCOMES = ("success", "failure", "denied", "error")
PAGE_SIZES = (25, 50, 100, 250)
_TEXT_FILTERS = ("action", "actor", "target")


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def parse_time(label: str, value: str) -> str:
    """An ISO 8601 date or date-time, as the API's RFC 3339 UTC date-time ("" when not given).

    A bare date or a time without a zone (what a datetime-local field sends) is read as UTC."""
    value = value.strip()
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{label}: not a date or date-time (use 2026-01-31 or 2026-01-31T12:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditFilters:
    category: str = ""
    outcome: str = ""
    action: str = ""
    actor: str = ""
    target: str = ""
    since: str = ""
    until: str = ""
    page_size: int = 50
    page_token: str = ""

    def api_params(self) -> dict[str, str]:
        """Query parameters for ``GET /helixgate/v1/audit/events`` (empty filters left out)."""
        params = {
            "category": self.category,
            "outcome": self.outcome,
            "action": self.action,
            "actor": self.actor,
            "target": self.target,
            "since": self.since,
            "until": self.until,
            "page_token": self.page_token,
        }
        out = {k: v for k, v in params.items() if v}
        out["page_size"] = str(self.page_size)
        return out

    def query(self, **changes: str) -> dict[str, str]:
        """This page's filters as UI query parameters (for links: next page, export)."""
        values = {
            "category": self.category,
            "outcome": self.outcome,
            "action": self.action,
            "actor": self.actor,
            "target": self.target,
            "since": self.since,
            "until": self.until,
            "page_size": str(self.page_size),
            **changes,
        }
        return {k: v for k, v in values.items() if v}


def parse_filters(args: Mapping[str, str]) -> AuditFilters:
    category = args.get("category", "").strip()
    if category and category not in CATEGORIES:
        raise BadRequest(f"category must be one of {', '.join(CATEGORIES)}")
    outcome = args.get("outcome", "").strip()
    if outcome and outcome not in OUTCOMES:
        raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
    text = {}
    for key in _TEXT_FILTERS:
        value = args.get(key, "").strip()
        if len(value) > 256:
            raise BadRequest(f"{key}: at most 256 characters")
        text[key] = value
    raw_size = args.get("page_size", "").strip() or "50"
    if not raw_size.isdigit() or int(raw_size) not in PAGE_SIZES:
        raise BadRequest(f"page size must be one of {', '.join(map(str, PAGE_SIZES))}")
    token = args.get("page_token", "").strip()
    if len(token) > 256:
        raise BadRequest("page_token is not one the audit API issued")
    since, until = parse_time("since", args.get("since", "")), parse_time("until", args.get("until", ""))
    if since and until and since > until:
        raise BadRequest("since must not be later than until")
    return AuditFilters(category, outcome, since=since, until=until, page_size=int(raw_size), page_token=token, **text)


def cef_params(args: Mapping[str, str]) -> dict[str, str]:
    since, until = parse_time("since", args.get("since", "")), parse_time("until", args.get("until", ""))
    return {k: v for k, v in {"since": since, "until": until}.items() if v}


@dataclass(frozen=True)
class EventRow:
    seq: int
    time: str
    category: str
    action: str
    outcome: str
    actor: str
    on_behalf_of: str
    target: str
    service: str
    request_id: str
    client_addr: str
    severity: int
    details: str
    hash: str
    prev_hash: str

    @property
    def security(self) -> bool:
        return self.category == "security"

    @property
    def highlighted(self) -> bool:
        """Security events and refusals stand out in the trail."""
        return self.security or self.outcome in ("denied", "failure", "error") or self.severity >= 7


def event_rows(events: Iterable[Mapping[str, Any]]) -> list[EventRow]:
    rows = []
    for e in events:
        if not isinstance(e, Mapping):
            continue
        severity = e.get("severity")
        seq = e.get("seq")
        rows.append(
            EventRow(
                seq=seq if isinstance(seq, int) else 0,
                time=_str(e.get("time")),
                category=_str(e.get("category")),
                action=_str(e.get("action")),
                outcome=_str(e.get("outcome")),
                actor=_str(e.get("actor")),
                on_behalf_of=_str(e.get("on_behalf_of")),
                target=_str(e.get("target")),
                service=_str(e.get("service")),
                request_id=_str(e.get("request_id")),
                client_addr=_str(e.get("client_addr")),
                severity=severity if isinstance(severity, int) else 0,
                details=json.dumps(e.get("details") or {}, sort_keys=True, ensure_ascii=False)[:2000],
                hash=_str(e.get("hash")),
                prev_hash=_str(e.get("prev_hash")),
            )
        )
    return rows


@dataclass(frozen=True)
class ChainStatus:
    ok: bool
    problems: tuple[str, ...]


def chain_status(answer: Mapping[str, Any]) -> ChainStatus:
    problems = tuple(_str(p) for p in answer.get("problems") or [])
    return ChainStatus(bool(answer.get("ok")) and not problems, problems)
