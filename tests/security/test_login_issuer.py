"""Interactive login at the built-in issuer (helixgate.login, /oidc/authorize, /oidc/token,
/oidc/revoke): PKCE S256 only, single-use codes bound to client and redirect, refresh token
rotation with reuse detection, revocation, throttled and audited failed logins, and every
refusal a 4xx in OAuth2's error shape. In-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from helixgate.login import AuthCodeRow, Passwords
from helixgate_app.server import build_app
from helixgate_app.services import named
from tests.fixtures.app import Harness
from tests.fixtures.ui import login_form

pytestmark = pytest.mark.integration

PUBLIC = "http://127.0.0.1:8080"
CLI_REDIRECT = "http://127.0.0.1:53682/callback"
PASSWORD = "correct horse battery"


@pytest.fixture()
def core(harness_factory: Callable[..., Harness]) -> Harness:
    h = harness_factory(services=("core",))
    h.client = TestClient(build_app(h.platform, named(("core",))), raise_server_exceptions=False)
    h.user("alice", "analyst")
    Passwords(h.platform.db).set("alice", PASSWORD)
    return h


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authz(challenge: str, **over: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "helixgate-cli",
        "redirect_uri": CLI_REDIRECT,
        "state": "st-" + secrets.token_hex(4),
        "nonce": "n-" + secrets.token_hex(4),
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v != ""}


def _login(h: Harness, params: dict[str, str], *, username: str = "alice", password: str = PASSWORD) -> Any:
    form_page = h.client.get("/oidc/authorize", params=params)
    assert form_page.status_code == 200, form_page.text
    form = login_form(form_page.text)
    data = {**form.fields, "username": username, "password": password}
    return h.client.post("/oidc/authorize", data=data, headers={"Origin": PUBLIC}, follow_redirects=False)


def _code(h: Harness, **over: str) -> tuple[str, str, dict[str, str]]:
    verifier, challenge = _pkce()
    params = _authz(challenge, **over)
    r = _login(h, params)
    assert r.status_code == 303, r.text
    location = urlsplit(r.headers["location"])
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"]
    assert query["state"] == params["state"] and query["iss"] == PUBLIC + "/oidc"
    return query["code"], verifier, params


def _exchange(h: Harness, code: str, verifier: str, redirect_uri: str = CLI_REDIRECT, **over: str) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": redirect_uri,
        "client_id": "helixgate-cli",
        **over,
    }
    return h.client.post("/oidc/token", data={k: v for k, v in data.items() if v != ""})


def _refresh(h: Harness, token: str, client_id: str = "helixgate-cli") -> Any:
    return h.client.post(
        "/oidc/token", data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    )


def _oauth_error(r: Any, status: int, error: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "error_description"} and body["error"] == error, body
    assert r.headers["Cache-Control"] == "no-store"
    return str(body["error_description"])


def _audit(h: Harness, prefix: str = "") -> list[Any]:
    records, _ = (
        h.platform.audit.query(action_prefix=prefix, page_size=1000)
        if prefix
        else h.platform.audit.query(page_size=1000)
    )
    return records


def test_code_flow_gives_short_access_token_refresh_token_and_id_token(core: Harness) -> None:
    code, verifier, params = _code(core)
    r = _exchange(core, code, verifier)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and body["refresh_token"]
    principal = core.platform.verifier.verify(body["access_token"])
    assert principal.username == "alice"
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert claims["aud"] == "helixgate-cli" and claims["nonce"] == params["nonce"] and claims["sub"] == "alice"
    # the access token works on the APIs
    me = core.client.get("/helixgate/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["username"] == "alice"
    logins = [r for r in _audit(core, "auth.login") if r.outcome == "success"]
    assert logins and logins[0].actor == "alice"


def test_a_code_is_single_use_and_its_replay_revokes_what_it_bought(core: Harness) -> None:
    code, verifier, _ = _code(core)
    first = _exchange(core, code, verifier)
    assert first.status_code == 200
    desc = _oauth_error(_exchange(core, code, verifier), 400, "invalid_grant")
    assert "already used" in desc
    # the tokens of the first exchange are revoked
    _oauth_error(_refresh(core, first.json()["refresh_token"]), 400, "invalid_grant")


def test_pkce_s256_is_required(core: Harness) -> None:
    verifier, challenge = _pkce()
    for over in ({"code_challenge_method": "plain"}, {"code_challenge_method": ""}, {"code_challenge": ""}):
        r = core.client.get("/oidc/authorize", params=_authz(challenge, **over), follow_redirects=False)
        assert r.status_code == 303, r.text
        query = parse_qs(urlsplit(r.headers["location"]).query)
        assert query["error"] == ["invalid_request"] and "S256" in query["error_description"][0]
    code, verifier, _ = _code(core)
    _oauth_error(_exchange(core, code, ""), 400, "invalid_request")
    wrong = secrets.token_urlsafe(48)
    assert "PKCE" in _oauth_error(_exchange(core, code, wrong), 400, "invalid_grant")
    # the failed attempt used the code up: the right verifier comes too late
    _oauth_error(_exchange(core, code, verifier), 400, "invalid_grant")
    failed = _audit(core, "auth.failed")
    assert any(r.details.get("grant_type") == "authorization_code" for r in failed)


def test_codes_are_bound_to_redirect_and_client_and_expire(core: Harness) -> None:
    code, verifier, _ = _code(core)
    assert "redirect_uri" in _oauth_error(
        _exchange(core, code, verifier, redirect_uri="http://127.0.0.1:9/callback"), 400, "invalid_grant"
    )
    code, verifier, _ = _code(core)
    _oauth_error(_exchange(core, code, verifier, client_id="helixgate-ui"), 400, "invalid_grant")
    _oauth_error(_exchange(core, code, verifier, client_id="nobody"), 401, "invalid_client")
    code, verifier, _ = _code(core)
    with core.platform.db.session() as s:
        s.execute(update(AuthCodeRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert "expired" in _oauth_error(_exchange(core, code, verifier), 400, "invalid_grant")


def test_untrusted_client_or_redirect_is_refused_without_redirecting(core: Harness) -> None:
    _, challenge = _pkce()
    for over in (
        {"client_id": "evil"},
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": "http://127.0.0.1:5000/other"},
        {"redirect_uri": "http://localhost.evil.example:80/callback"},
        {"client_id": "helixgate-ui", "redirect_uri": CLI_REDIRECT},
    ):
        r = core.client.get("/oidc/authorize", params=_authz(challenge, **over), follow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers, (over, r.text)
        assert r.json()["error"] in ("invalid_client", "invalid_request")
    r = core.client.get("/oidc/authorize", params=_authz(challenge, response_type="token"), follow_redirects=False)
    assert r.status_code == 303
    assert parse_qs(urlsplit(r.headers["location"]).query)["error"] == ["unsupported_response_type"]


def test_refresh_rotates_and_reuse_revokes_the_whole_login(core: Harness) -> None:
    code, verifier, _ = _code(core)
    first = _exchange(core, code, verifier).json()
    second = _refresh(core, first["refresh_token"])
    assert second.status_code == 200, second.text
    second_body = second.json()
    assert second_body["refresh_token"] != first["refresh_token"] and "id_token" not in second_body
    assert core.platform.verifier.verify(second_body["access_token"]).username == "alice"
    # the rotated token comes back: someone holds a copy; the login ends for both
    assert "already used" in _oauth_error(_refresh(core, first["refresh_token"]), 400, "invalid_grant")
    _oauth_error(_refresh(core, second_body["refresh_token"]), 400, "invalid_grant")
    reuse = _audit(core, "auth.refresh_reuse")
    assert reuse and reuse[0].actor == "alice" and reuse[0].severity == 9
    # a refresh token only works for its own client
    code, verifier, _ = _code(core)
    other = _exchange(core, code, verifier).json()
    _oauth_error(_refresh(core, other["refresh_token"], client_id="helixgate-ui"), 400, "invalid_grant")


def test_refresh_stops_for_a_deactivated_user_and_at_the_absolute_lifetime(core: Harness) -> None:
    code, verifier, _ = _code(core)
    tokens = _exchange(core, code, verifier).json()
    core.platform.users.set_active("alice", False)
    assert "not active" in _oauth_error(_refresh(core, tokens["refresh_token"]), 400, "invalid_grant")
    core.platform.users.set_active("alice", True)
    code, verifier, _ = _code(core)
    tokens = _exchange(core, code, verifier).json()
    from helixgate.login import RefreshTokenRow

    with core.platform.db.session() as s:
        s.execute(update(RefreshTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert "expired" in _oauth_error(_refresh(core, tokens["refresh_token"]), 400, "invalid_grant")


def test_revocation_ends_the_login(core: Harness) -> None:
    code, verifier, _ = _code(core)
    tokens = _exchange(core, code, verifier).json()
    r = core.client.post("/oidc/revoke", data={"token": tokens["refresh_token"], "client_id": "helixgate-cli"})
    assert r.status_code == 200
    assert "revoked" in _oauth_error(_refresh(core, tokens["refresh_token"]), 400, "invalid_grant")
    # RFC 7009: an unknown token is not an error; an unknown client is
    assert core.client.post("/oidc/revoke", data={"token": "nope", "client_id": "helixgate-cli"}).status_code == 200
    _oauth_error(core.client.post("/oidc/revoke", data={"token": "x", "client_id": "evil"}), 401, "invalid_client")
    _oauth_error(core.client.post("/oidc/revoke", data={"client_id": "helixgate-cli"}), 400, "invalid_request")
    assert [r.actor for r in _audit(core, "auth.logout")] == ["alice"]


def test_failed_logins_are_throttled_and_audited_without_the_password(
    core: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, challenge = _pkce()
    wrong = ["wrong-password-" + secrets.token_hex(4) for _ in range(5)]
    for password in wrong:
        r = _login(core, _authz(challenge), password=password)
        assert r.status_code == 401 and "Wrong username or password." in r.text
    # the limit is reached: even the right password is not checked now
    r = _login(core, _authz(challenge))
    assert r.status_code == 429 and "Too many failed sign-in attempts" in r.text and "location" not in r.headers
    events = _audit(core, "auth.login")
    reasons = [e.details.get("reason") for e in events if e.outcome == "denied"]
    assert reasons.count("wrong username or password") == 5 and "throttled" in reasons
    assert all(e.actor == "alice" and e.severity >= 7 for e in events if e.outcome == "denied")
    recorded = json.dumps([e.to_dict() for e in _audit(core)]) + caplog.text
    for password in [*wrong, PASSWORD]:
        assert password not in recorded
    # an unknown user is refused like a wrong password, and what was typed as the name (here a
    # password in the wrong field) is recorded nowhere
    r = _login(core, _authz(challenge), username="Pa55-w0rd-typed-here", password="whatever-it-is")
    assert r.status_code == 401 and "Wrong username or password." in r.text
    last = _audit(core, "auth.login")[0]
    assert last.actor == "anonymous" and last.details["username_registered"] is False
    assert "Pa55-w0rd-typed-here" not in json.dumps([e.to_dict() for e in _audit(core)])
    from sqlalchemy import select

    from helixgate.login import LoginFailureRow

    with core.platform.db.session() as s:
        stored = [row.username for row in s.scalars(select(LoginFailureRow))]
    assert stored and "alice" not in stored and all(len(name) == 64 for name in stored)


def test_inactive_user_cannot_log_in(core: Harness) -> None:
    core.platform.users.set_active("alice", False)
    _, challenge = _pkce()
    r = _login(core, _authz(challenge))
    assert r.status_code == 401
    denied = [e for e in _audit(core, "auth.login") if e.outcome == "denied"]
    assert denied[-1].details["reason"] == "user is not registered or not active"


def test_login_form_needs_its_csrf_token_and_our_origin(core: Harness) -> None:
    _, challenge = _pkce()
    params = _authz(challenge)
    page = core.client.get("/oidc/authorize", params=params)
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    fields = {**login_form(page.text).fields, "username": "alice", "password": PASSWORD}
    r = core.client.post("/oidc/authorize", data=fields, headers={"Origin": "https://evil.example"})
    assert "another origin" in _oauth_error(r, 400, "invalid_request")
    r = core.client.post("/oidc/authorize", data={**fields, "csrf_token": "forged"}, headers={"Origin": PUBLIC})
    assert "CSRF" in _oauth_error(r, 400, "invalid_request")
    core.client.cookies.clear()
    r = core.client.post("/oidc/authorize", data=fields, headers={"Origin": PUBLIC})
    _oauth_error(r, 400, "invalid_request")


def test_token_endpoint_refusals_use_the_oauth_error_shape(core: Harness) -> None:
    _oauth_error(core.client.post("/oidc/token", data={}), 400, "invalid_request")
    _oauth_error(core.client.post("/oidc/token", data={"grant_type": "password"}), 400, "unsupported_grant_type")
    _oauth_error(
        core.client.post("/oidc/token", data={"grant_type": "authorization_code", "client_id": "helixgate-cli"}),
        400,
        "invalid_request",
    )
    _oauth_error(_refresh(core, "not-a-token"), 400, "invalid_grant")
    doc = core.client.get("/oidc/.well-known/openid-configuration").json()
    assert doc["authorization_endpoint"] == PUBLIC + "/oidc/authorize"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["revocation_endpoint"] == PUBLIC + "/oidc/revoke"


# ------------------------------------------------------------------ device authorization grant
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _poll(h: Harness, device_code: str, client_id: str = "helixgate-cli") -> Any:
    return h.client.post(
        "/oidc/token", data={"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id}
    )


def _let_interval_pass(h: Harness) -> None:
    from helixgate.login import DeviceCodeRow

    with h.platform.db.session() as s:
        s.execute(update(DeviceCodeRow).values(last_poll_at=datetime.now(UTC) - timedelta(seconds=60)))


def _approve(h: Harness, user_code: str, *, password: str = PASSWORD) -> Any:
    page = h.client.get("/oidc/device", params={"user_code": user_code})
    assert page.status_code == 200 and "default-src 'none'" in page.headers["Content-Security-Policy"]
    form = login_form(page.text)
    data = {**form.fields, "username": "alice", "password": password}
    return h.client.post("/oidc/device", data=data, headers={"Origin": PUBLIC})


def test_device_grant_polls_until_approved_then_issues_tokens_once(core: Harness) -> None:
    r = core.client.post("/oidc/device_authorization", data={"client_id": "helixgate-cli", "scope": "openid"})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    start = r.json()
    assert start["verification_uri"] == PUBLIC + "/oidc/device" and start["interval"] == 5
    assert start["verification_uri_complete"].endswith("user_code=" + start["user_code"])
    device_code = start["device_code"]
    _oauth_error(_poll(core, device_code), 400, "authorization_pending")
    # polling again within the interval: slow down (and the interval grows)
    assert "10 seconds" in _oauth_error(_poll(core, device_code), 400, "slow_down")
    # a wrong password approves nothing
    r = _approve(core, start["user_code"], password="wrong-password-x")
    assert r.status_code == 401 and "Wrong username or password." in r.text
    _let_interval_pass(core)
    _oauth_error(_poll(core, device_code), 400, "authorization_pending")
    r = _approve(core, start["user_code"].lower().replace("-", " "))  # as a person might type it
    assert r.status_code == 200 and "Device approved" in r.text
    _let_interval_pass(core)
    tokens = _poll(core, device_code)
    assert tokens.status_code == 200, tokens.text
    assert core.platform.verifier.verify(tokens.json()["access_token"]).username == "alice"
    assert _refresh(core, tokens.json()["refresh_token"]).status_code == 200
    _let_interval_pass(core)
    _oauth_error(_poll(core, device_code), 400, "invalid_grant")
    # an approved code cannot be approved again
    assert _approve(core, start["user_code"]).status_code == 400
    assert [e.actor for e in _audit(core, "auth.device_approved")] == ["alice"]


def test_device_grant_refusals(core: Harness) -> None:
    from helixgate.login import DeviceCodeRow

    _oauth_error(core.client.post("/oidc/device_authorization", data={"client_id": "evil"}), 401, "invalid_client")
    start = core.client.post("/oidc/device_authorization", data={"client_id": "helixgate-cli"}).json()
    _oauth_error(_poll(core, start["device_code"], client_id="helixgate-ui"), 400, "invalid_grant")
    _oauth_error(_poll(core, "forged"), 400, "invalid_grant")
    with core.platform.db.session() as s:
        s.execute(update(DeviceCodeRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    _oauth_error(_poll(core, start["device_code"]), 400, "expired_token")
    r = _approve(core, start["user_code"])
    assert r.status_code == 400 and "unknown, used or expired" in r.text
    # the verification form has the login form's CSRF protection
    r = core.client.post(
        "/oidc/device", data={"user_code": start["user_code"], "username": "alice", "password": PASSWORD}
    )
    _oauth_error(r, 400, "invalid_request")


def test_long_expired_codes_and_logins_are_pruned(core: Harness) -> None:
    from sqlalchemy import select

    from helixgate.login import RefreshTokenRow

    code, verifier, _ = _code(core)
    old = _exchange(core, code, verifier).json()
    long_ago = datetime.now(UTC) - timedelta(days=2)
    with core.platform.db.session() as s:
        s.execute(update(AuthCodeRow).values(expires_at=long_ago))
        s.execute(update(RefreshTokenRow).values(expires_at=long_ago))
    code, verifier, _ = _code(core)  # a new login prunes
    assert _exchange(core, code, verifier).status_code == 200
    with core.platform.db.session() as s:
        codes = list(s.scalars(select(AuthCodeRow)))
        logins = list(s.scalars(select(RefreshTokenRow)))
    assert len(codes) == 1 and codes[0].expires_at > datetime.now(UTC)
    assert len(logins) == 1 and logins[0].expires_at > datetime.now(UTC)
    _oauth_error(_refresh(core, old["refresh_token"]), 400, "invalid_grant")
