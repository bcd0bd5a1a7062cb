"""Auditors' pages: the audit trail with filters and paging, security events and refusals
highlighted, the chain's verification status, and the CEF export as a download.

Every call goes to the core audit API (``/helixgate/v1/audit/...``, permission ``audit:read``)
with the signed-in user's token.
"""

from __future__ import annotations

from typing import Iterator

from flask import Blueprint, render_template, request
from werkzeug.wrappers import Response

from helixgate.errors import HelixGateError
from helixgate_ui import NavItem
from helixgate_ui.pages import catalog_common as common
from helixgate_ui.pages.audit_view import (
    CATEGORIES,
    OUTCOMES,
    PAGE_SIZES,
    AuditFilters,
    EventRow,
    cef_params,
    chain_status,
    event_rows,
    parse_filters,
)

blueprint = Blueprint("audit", __name__, url_prefix="/audit")
NAV = [NavItem("Audit", "ui.audit.index", "audit:read")]
CORE = "/helixgate/v1"


def _require_auditor() -> None:
    if "audit:read" not in common.me().get("permissions", []):
        common.refuse("the audit trail is for auditors")


@blueprint.get("/")
@common.login_required
def index() -> str | tuple[str, int]:
    _require_auditor()
    try:
        filters = parse_filters(request.args)
    except HelixGateError as exc:
        return _page(AuditFilters(), [], "", common.message(exc)), 400
    answer = common.client("core").api.get_object(f"{CORE}/audit/events", params=filters.api_params())
    return _page(filters, event_rows(answer.get("events") or []), str(answer.get("next_page_token") or ""), "")


def _page(filters: AuditFilters, events: list[EventRow], next_token: str, error: str) -> str:
    return render_template(
        "audit/index.html",
        f=filters,
        events=events,
        next_token=next_token,
        error=error,
        categories=CATEGORIES,
        outcomes=OUTCOMES,
        page_sizes=PAGE_SIZES,
    )


@blueprint.get("/verify")
@common.login_required
def verify() -> str:
    """The chain's verification status (an htmx fragment; a full page without htmx)."""
    _require_auditor()
    fragment = bool(request.headers.get("HX-Request"))
    try:
        status = chain_status(common.client("core").api.get_object(f"{CORE}/audit/verify"))
    except HelixGateError as exc:
        if not fragment:
            raise
        return common.fragment_error(f"the chain could not be verified: {exc.message}")  # htmx swaps only 2xx
    template = "audit/_chain.html" if fragment else "audit/chain.html"
    return render_template(template, status=status)


@blueprint.get("/cef")
@common.login_required
def cef() -> Response | tuple[str, int]:
    """The security events in Common Event Format, downloaded as a file."""
    _require_auditor()
    try:
        params = cef_params(request.args)
    except HelixGateError as exc:
        return _page(AuditFilters(), [], "", common.message(exc)), 400
    upstream = common.client("core").api.request("GET", f"{CORE}/audit/cef", params=params, stream=True)

    def body() -> Iterator[bytes]:
        try:
            yield from upstream.iter_content(64 * 1024)
        finally:
            upstream.close()

    return Response(
        body(),
        mimetype="text/plain",
        headers={"Content-Disposition": 'attachment; filename="helixgate-security-events.cef"'},
    )
