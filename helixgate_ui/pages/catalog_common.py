"""What the tools, data and audit pages share: the user's API client and identity (from
``helixgate_ui.session``) and small request helpers.

API refusals (``ClientError``) that a view does not catch are rendered by the ``ui``
blueprint (403 "you may not ...", 404, 502 with the API's message); CSRF is checked before
every state-changing view by the ``ui`` blueprint.
"""

from __future__ import annotations

import html
from typing import Any, Callable, NoReturn, TypeVar, cast
from urllib.parse import quote

from flask import current_app, g, render_template, request

from helixgate.client import ClientError
from helixgate.errors import HelixGateError
from helixgate.sdk import HelixGate
from helixgate_ui import session

F = TypeVar("F", bound=Callable[..., Any])


def login_required(fn: F) -> F:
    return session.login_required(fn)


def client(service: str) -> HelixGate:
    """The public API of ``service`` ("trs", "drs", "core"), called with the signed-in user's
    token (at that service's URL in a split deployment)."""
    clients = g.setdefault("catalog_clients", {})
    if service not in clients:
        clients[service] = HelixGate(session.api(service=service))
    return cast(HelixGate, clients[service])


def me() -> dict[str, Any]:
    """The signed-in user as ``/me`` reports them: username, roles and permissions."""
    user = session.current_user()
    if user is None:  # login_required ran first: the session ended while the request ran
        raise session.LoginRequired()
    return {"username": user.username, "roles": list(user.roles), "permissions": sorted(user.permissions)}


def can(permission: str) -> bool:
    user = session.current_user()
    return user is not None and user.can(permission)


def refuse(message: str) -> NoReturn:
    """Stop with the page the ui blueprint renders for an API's 403 (the API would refuse too)."""
    raise ClientError(message, status=403)


def quoted(value: str) -> str:
    return quote(value, safe="")


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, "")
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        return default
    return int(raw)


def message(exc: HelixGateError) -> str:
    return exc.message


def status_of(exc: HelixGateError) -> int:
    """The status of a page that shows ``exc`` next to the form that caused it."""
    status = int(getattr(exc, "status", 400) or 400)
    return status if 400 <= status < 500 and status != 401 else 502 if status >= 500 else 400


def flash_ok(text: str) -> None:
    session.flash(text, "success")


def flash_error(text: str) -> None:
    session.flash(text, "error")


def render_form(template: str, error: str, status: int = 400, **context: Any) -> str | tuple[str, int]:
    """A form page, with ``error`` shown above the form (and a 4xx status) when there is one."""
    page = render_template(template, error=error, **context)
    return (page, status) if error else page


def has_page(endpoint: str) -> bool:
    """Whether another page module (e.g. the runs pages) is served here, to link to it."""
    return endpoint in current_app.view_functions


def fragment_error(text: str) -> str:
    """An htmx fragment saying what failed (answered 200: htmx swaps nothing on 4xx/5xx)."""
    return f'<p class="flash flash-error" role="alert">{html.escape(text)}</p>'
