"""Foundation: authentication, registration, roles and the audit trail through HTTP,
on SQLite and PostgreSQL (the ``database`` fixture runs each test on both)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from helixgate_app.cli import main as cli_main

pytestmark = pytest.mark.integration

ADMIN_USERS = "/helixgate/v1/users"


@pytest.fixture()
def harness(harness_factory: Any) -> Any:
    return harness_factory(services=("core",))


def _builtin_key(h: Any) -> tuple[Any, str]:
    kid = h.platform.issuer.key_id  # creates the key on first use
    pem = (h.platform.settings.data_dir / "issuer" / "signing-key.pem").read_bytes()
    return serialization.load_pem_private_key(pem, None), kid


def _token(h: Any, **claims: Any) -> str:
    key, kid = _builtin_key(h)
    now = int(time.time())
    body = {
        "iss": h.platform.issuer.issuer_url,
        "sub": "alice",
        "aud": h.platform.settings.audience,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    body.update(claims)
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid})


def _get(h: Any, token: str, path: str = "/helixgate/v1/me") -> Any:
    return h.client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_valid_token_of_registered_user_is_accepted(harness: Any) -> None:
    harness.user("alice", "viewer")
    r = _get(harness, _token(harness))
    assert r.status_code == 200, r.text
    assert r.json()["username"] == "alice"
    assert "drs:read" in r.json()["permissions"]


def test_expired_token_is_401(harness: Any) -> None:
    harness.user("alice", "viewer")
    now = int(time.time())
    r = _get(harness, _token(harness, iat=now - 4000, exp=now - 600))
    assert r.status_code == 401
    assert r.json()["status_code"] == 401 and "expired" in r.json()["msg"]
    assert r.headers["content-type"].startswith("application/json")


def test_unlisted_issuer_is_401(harness: Any) -> None:
    harness.user("alice", "viewer")
    r = _get(harness, _token(harness, iss="https://evil.example.com"))
    assert r.status_code == 401
    assert "issuer" in r.json()["msg"]


def test_forged_signature_is_401(harness: Any) -> None:
    harness.user("alice", "viewer")
    other = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    forged = jwt.encode(
        {"iss": harness.platform.issuer.issuer_url, "sub": "alice", "aud": "helixgate", "iat": now, "exp": now + 60},
        other,
        algorithm="ES256",
        headers={"kid": harness.platform.issuer.key_id},
    )
    assert _get(harness, forged).status_code == 401


def test_alg_none_is_401(harness: Any) -> None:
    harness.user("alice", "viewer")
    now = int(time.time())
    unsigned = jwt.encode(
        {"iss": harness.platform.issuer.issuer_url, "sub": "alice", "aud": "helixgate", "iat": now, "exp": now + 60},
        None,
        algorithm="none",
    )
    r = _get(harness, unsigned)
    assert r.status_code == 401


def test_wrong_audience_is_401(harness: Any) -> None:
    harness.user("alice", "viewer")
    assert _get(harness, _token(harness, aud="another-service")).status_code == 401


def test_unregistered_user_is_403(harness: Any) -> None:
    r = _get(harness, _token(harness, sub="mallory"))
    assert r.status_code == 403
    assert "not registered" in r.json()["msg"]


def test_deactivation_takes_effect_on_next_request(harness: Any) -> None:
    token = harness.user("alice", "viewer")
    assert _get(harness, token).status_code == 200
    admin = harness.auth("root", "admin")
    r = harness.client.patch(f"{ADMIN_USERS}/alice", headers=admin, json={"active": False})
    assert r.status_code == 200 and r.json()["active"] is False
    r = _get(harness, token)
    assert r.status_code == 403 and "not active" in r.json()["msg"]


def test_viewer_calling_admin_endpoint_is_403_and_audited_as_cef(harness: Any) -> None:
    viewer = harness.auth("victor", "viewer")
    r = harness.client.get(ADMIN_USERS, headers=viewer)
    assert r.status_code == 403
    assert "admin:users" in r.json()["msg"]
    r = harness.client.post(ADMIN_USERS, headers=viewer, json={"username": "x", "roles": ["admin"]})
    assert r.status_code == 403
    lines = list(harness.platform.audit.export_cef())
    denials = [line for line in lines if "auth.denied" in line and "suser=victor" in line]
    assert len(denials) == 2, lines
    assert denials[0].startswith("CEF:0|HelixGate|helixgate|")


def test_admin_manages_users_and_roles(harness: Any) -> None:
    admin = harness.auth("root", "admin")
    r = harness.client.post(ADMIN_USERS, headers=admin, json={"username": "carol", "roles": ["analyst"]})
    assert r.status_code == 201 and r.json()["active"] is False
    assert harness.client.post(ADMIN_USERS, headers=admin, json={"username": "carol"}).status_code == 409
    r = harness.client.patch(
        f"{ADMIN_USERS}/carol", headers=admin, json={"roles": ["analyst", "data-steward"], "active": True}
    )
    assert r.json()["roles"] == ["analyst", "data-steward"] and r.json()["active"]
    r = harness.client.patch(f"{ADMIN_USERS}/carol", headers=admin, json={"roles": ["superuser"]})
    assert r.status_code == 400 and "unknown role" in r.json()["msg"]
    assert harness.client.get(f"{ADMIN_USERS}/nobody", headers=admin).status_code == 404
    # every change is in the audit trail
    actions = [r.action for r in harness.platform.audit.query(category="change", page_size=50)[0]]
    assert "core.user.create" in actions and "core.user.roles" in actions and "core.user.activate" in actions


def test_malformed_json_is_400_in_spec_shape(harness: Any) -> None:
    admin = harness.auth("root", "admin")
    r = harness.client.post(ADMIN_USERS, headers={**admin, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"msg", "status_code"} and body["status_code"] == 400
    assert "Traceback" not in r.text


def test_unknown_route_is_404_in_each_spec_shape(harness: Any) -> None:
    r = harness.client.get("/ga4gh/trs/v2/no/such/route")
    assert r.status_code == 404 and set(r.json()) == {"code", "message"}
    r = harness.client.get("/ga4gh/wes/v1/no-such-route")
    assert r.status_code == 404 and set(r.json()) == {"msg", "status_code"}


def test_every_request_is_audited_with_request_id(harness: Any) -> None:
    admin = harness.auth("root", "admin")
    r = harness.client.get(ADMIN_USERS, headers={**admin, "X-Request-ID": "req-12345678"})
    assert r.headers["X-Request-ID"] == "req-12345678"
    recs = harness.platform.audit.query(category="request", request_id="req-12345678")[0]
    assert len(recs) == 1
    assert recs[0].actor == "root" and recs[0].outcome == "success" and recs[0].action == "core.ListUsers"


def test_edited_audit_row_makes_cli_verify_fail_naming_it(harness: Any, capsys: pytest.CaptureFixture[str]) -> None:
    admin = harness.auth("root", "admin")
    for _ in range(3):
        harness.client.get(ADMIN_USERS, headers=admin)
    settings = harness.platform.settings
    argv = ["audit", "verify", "--data-dir", str(settings.data_dir)]
    env_db = {"HELIXGATE_DATABASE_URL": settings.effective_database_url}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env_db.items():
            mp.setenv(k, v)
        assert cli_main(argv) == 0
        seq = harness.platform.audit.query(category="request", page_size=1)[0][0].seq
        with harness.platform.db.engine.begin() as conn:
            conn.execute(text("UPDATE core_audit_records SET actor = 'someone-else' WHERE seq = :s"), {"s": seq})
        capsys.readouterr()
        assert cli_main(argv) == 1
        err = capsys.readouterr().err
    assert "FAILED" in err and str(seq) in err


def test_audit_query_over_http_needs_auditor(harness: Any) -> None:
    analyst = harness.auth("ann", "analyst")
    assert harness.client.get("/helixgate/v1/audit/events", headers=analyst).status_code == 403
    auditor = harness.auth("audrey", "auditor")
    r = harness.client.get(
        "/helixgate/v1/audit/events", headers=auditor, params={"category": "security", "page_size": 5}
    )
    assert r.status_code == 200
    events = r.json()["events"]
    assert any(e["action"] == "auth.denied" and e["actor"] == "ann" for e in events)
    r = harness.client.get("/helixgate/v1/audit/cef", headers=auditor)
    assert r.status_code == 200 and "auth.denied" in r.text
    assert harness.client.get("/helixgate/v1/audit/verify", headers=auditor).json()["ok"] is True


def test_token_endpoint_mints_short_lived_tokens_for_the_caller_only(harness: Any) -> None:
    admin = harness.auth("root", "admin")
    harness.user("dora", "viewer")
    r = harness.client.post("/helixgate/v1/tokens", headers=admin, json={"username": "root", "ttl": "5m"})
    assert r.status_code == 201 and r.json()["expires_in"] == 300
    assert _get(harness, r.json()["access_token"]).json()["username"] == "root"
    r = harness.client.post("/helixgate/v1/tokens", headers=admin, json={"username": "root", "ttl": "3d"})
    assert r.status_code == 400
    assert json.dumps(r.json()).count("token") >= 1
    # no silent impersonation: not for another user, not for the service identity
    for other in ("dora", harness.platform.settings.service_user):
        r = harness.client.post("/helixgate/v1/tokens", headers=admin, json={"username": other, "ttl": "5m"})
        assert r.status_code == 403, r.text


def test_audit_purge_cli_keeps_records_inside_retention(
    harness: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI wires retention to AuditTrail.purge (whose export/delete/anchor logic is unit-tested
    in tests/unit/test_audit_chain.py): records younger than the retention period stay."""
    admin = harness.auth("root", "admin")
    for _ in range(3):
        harness.client.get(ADMIN_USERS, headers=admin)
    settings = harness.platform.settings
    export = tmp_path / "audit-export.jsonl"
    before = len(harness.platform.audit.query(page_size=1000)[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HELIXGATE_DATABASE_URL", settings.effective_database_url)
        base = ["--data-dir", str(settings.data_dir)]
        capsys.readouterr()
        assert cli_main(["audit", "purge", "--export", str(export), "--json", *base]) == 0
        out = capsys.readouterr().out
        assert '"purged": 0' in out and '"retention_days": 270' in out
        assert cli_main(["audit", "purge", "--export", str(export), "--days", "0", *base]) == 1  # refused: not positive
        assert cli_main(["audit", "verify", *base]) == 0
    assert len(harness.platform.audit.query(page_size=1000)[0]) >= before
