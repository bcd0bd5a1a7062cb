"""Handlers of the HelixGate core API (openapi/core.yaml): users, tokens, audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response

from helixgate import rbac
from helixgate.errors import BadRequest, Forbidden, NotFound
from helixgate.limits import parse_datetime
from helixgate.service_info import CORE_TYPE, base_service_info
from helixgate.web import audit_change, caller, json_body, platform, set_target


def get_service_info() -> dict[str, Any]:
    s = platform().settings
    return base_service_info(CORE_TYPE, s.effective_public_url, s.drs_host)


def get_me() -> dict[str, Any]:
    c = caller()
    user = platform().users.get(c.username) if c.username else None
    body: dict[str, Any] = user.to_dict() if user else {"username": c.username}
    body["permissions"] = sorted(rbac.permissions_for(c.roles))
    return body


def list_users() -> dict[str, Any]:
    return {"users": [u.to_dict() for u in platform().users.all()]}


def _refuse_service_role(roles: Any) -> None:
    """The ``service`` role is never granted over the API: service identities are configured
    (``service_user``) and get credentials only through their own configured path."""
    if isinstance(roles, list) and "service" in roles:
        raise Forbidden(
            "the service role cannot be granted over the API (it belongs to the configured service identity)"
        )


def create_user() -> tuple[dict[str, Any], int]:
    body = json_body()
    set_target(str(body.get("username", ""))[:128])
    _refuse_service_role(body.get("roles"))
    user = platform().users.register(
        body["username"],
        roles=tuple(body.get("roles", [])),
        active=bool(body.get("active", False)),
        display_name=body.get("display_name", ""),
    )
    set_target(user.username)
    audit_change("core.user.create", user.username, details={"roles": list(user.roles), "active": user.active})
    return user.to_dict(), 201


def get_user(username: str) -> dict[str, Any]:
    user = platform().users.get(username)
    if user is None:
        raise NotFound(f"user not found: {username}")
    return user.to_dict()


def update_user(username: str) -> dict[str, Any]:
    body = json_body()
    users = platform().users
    set_target(username)
    user = users.get(username)
    if user is None:
        raise NotFound(f"user not found: {username}")
    if "roles" in body:
        _refuse_service_role(body["roles"])
        if username == platform().settings.service_user:
            raise Forbidden("the roles of the configured service identity are not managed over the API")
        user = users.set_roles(username, list(body["roles"]))
        audit_change("core.user.roles", username, details={"roles": list(user.roles)})
    if "active" in body:
        user = users.set_active(username, bool(body["active"]))
        audit_change("core.user.activate" if user.active else "core.user.deactivate", username)
    return user.to_dict()


def delete_user(username: str) -> tuple[str, int]:
    set_target(username)
    platform().users.delete(username)
    audit_change("core.user.delete", username)
    return "", 204


def issue_token() -> tuple[dict[str, Any], int]:
    from helixgate.issuer import parse_duration

    p = platform()
    body = json_body()
    username = body["username"]
    set_target(username)
    if username != caller().username:
        # no silent impersonation: a token names only the person who asked for it
        raise Forbidden(
            "tokens are issued only for the caller; other users sign in themselves and the service "
            "identity uses its configured credentials"
        )
    if p.issuer is None:
        raise BadRequest("the built-in token issuer is disabled; tokens come from the configured identity provider")
    user = p.users.get(username)
    if user is None or not user.active:
        raise NotFound(f"no active user {username}")
    ttl = parse_duration(str(body.get("ttl", "15m")))
    if ttl > p.settings.token_max_lifetime:
        raise BadRequest(f"ttl {ttl}s exceeds the maximum token lifetime of {p.settings.token_max_lifetime}s")
    token = p.issuer.issue(username, ttl)
    audit_change("core.token.issue", username, details={"ttl": ttl})
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}, 201


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    return parse_datetime(value, name)


def list_audit_events(
    category: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    outcome: str | None = None,
    target: str | None = None,
    since: str | None = None,
    until: str | None = None,
    page_size: int = 100,
    page_token: str | None = None,
) -> dict[str, Any]:
    records, next_token = platform().audit.query(
        category=category,
        action_prefix=action,
        actor=actor,
        outcome=outcome,
        target=target,
        since=_when(since, "since"),
        until=_when(until, "until"),
        page_size=page_size,
        page_token=page_token,
    )
    return {"events": [r.to_dict() for r in records], "next_page_token": next_token or ""}


def verify_audit() -> dict[str, Any]:
    report = platform().audit.verify()
    return {"ok": report.ok, "problems": list(report.problems)}


def export_audit_cef(since: str | None = None, until: str | None = None) -> Response:
    lines = platform().audit.export_cef(since=_when(since, "since"), until=_when(until, "until"))
    return Response("".join(line + "\n" for line in lines), mimetype="text/plain")
