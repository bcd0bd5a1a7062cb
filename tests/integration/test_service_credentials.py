"""The core's OAuth2 token endpoint (/oidc/token, client_credentials): a worker's service
credential buys a short-lived token; forged, expired, revoked or misused credentials get the
OAuth2 error shape, are audited as auth.failed, and their secret is never recorded or logged."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import pytest
from starlette.testclient import TestClient

from helixgate.service_credentials import PREFIX, ServiceCredentialRow, ServiceCredentials
from helixgate_app.server import build_app
from helixgate_app.services import build_platform, named
from tests.fixtures.app import Harness

pytestmark = pytest.mark.integration


@pytest.fixture()
def core(harness_factory: Callable[..., Harness]) -> Harness:
    h = harness_factory(services=("core",))
    h.client = TestClient(build_app(h.platform, named(("core",))), raise_server_exceptions=False)
    return h


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _exchange(h: Harness, secret: str, client_id: str | None = None) -> Any:
    client_id = client_id or h.platform.settings.service_user
    return h.client.post("/oidc/token", data={"grant_type": "client_credentials"}, headers=_basic(client_id, secret))


def _audit_text(h: Harness) -> str:
    records, _ = h.platform.audit.query(page_size=1000)
    return json.dumps([r.to_dict() for r in records])


def _failures(h: Harness) -> list[Any]:
    records, _ = h.platform.audit.query(action_prefix="auth.failed", page_size=1000)
    return records


def test_a_valid_credential_buys_a_short_lived_token_of_the_service_identity(core: Harness) -> None:
    p = core.platform
    info, secret = ServiceCredentials(p.db).create(p.settings.service_user, label="worker-a")
    r = _exchange(core, secret)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300
    assert r.headers["Cache-Control"] == "no-store"
    principal = p.verifier.verify(body["access_token"])
    assert principal.username == p.settings.service_user
    # client_secret_post works as well
    r = core.client.post(
        "/oidc/token",
        data={"grant_type": "client_credentials", "client_id": p.settings.service_user, "client_secret": secret},
    )
    assert r.status_code == 200, r.text
    issued, _ = p.audit.query(action_prefix="auth.service_token")
    assert issued and issued[0].target == info.id and issued[0].outcome == "success"
    assert issued[0].request_id == r.headers["X-Request-ID"]
    assert secret not in _audit_text(core)
    # the discovery document names the endpoint
    doc = core.client.get("/oidc/.well-known/openid-configuration").json()
    assert doc["token_endpoint"].endswith("/oidc/token") and "client_credentials" in doc["grant_types_supported"]


def _forged() -> str:
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return f"{PREFIX}.{secrets.token_hex(16)}.{secret}"


def _expired(h: Harness) -> str:
    info, secret = ServiceCredentials(h.platform.db).create(h.platform.settings.service_user, ttl_seconds=3600)
    with h.platform.db.session() as s:
        row = s.get(ServiceCredentialRow, info.id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    return secret


def _revoked(h: Harness) -> str:
    store = ServiceCredentials(h.platform.db)
    info, secret = store.create(h.platform.settings.service_user)
    assert _exchange(h, secret).status_code == 200  # it worked until revoked
    store.revoke(info.id)
    return secret


def _wrong_secret(h: Harness) -> str:
    _, secret = ServiceCredentials(h.platform.db).create(h.platform.settings.service_user)
    return secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")


@pytest.mark.parametrize(
    ("case", "make", "reason"),
    [
        ("forged", lambda h: _forged(), "unknown credential or wrong secret"),
        ("wrong-secret", _wrong_secret, "unknown credential or wrong secret"),
        ("malformed", lambda h: "not-a-credential", "malformed client secret"),
        ("expired", _expired, "credential expired"),
        ("revoked", _revoked, "credential revoked"),
    ],
)
def test_refused_credentials_get_invalid_client_are_audited_and_never_recorded(
    core: Harness, case: str, make: Callable[[Harness], str], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = make(core)
    before = len(_failures(core))
    with caplog.at_level(logging.DEBUG):
        r = _exchange(core, secret)
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "invalid_client", "error_description": "client authentication failed"}
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    failures = _failures(core)
    assert len(failures) == before + 1
    assert failures[0].details["reason"] == reason and failures[0].details["operation"] == "oauth2.token"
    assert failures[0].category == "security"
    assert secret not in _audit_text(core)
    assert secret not in caplog.text and secret not in r.text


def test_a_credential_only_authenticates_its_own_active_service_identity(core: Harness) -> None:
    p = core.platform
    _, secret = ServiceCredentials(p.db).create(p.settings.service_user)
    # presented under another client id
    r = _exchange(core, secret, client_id="admin")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert _failures(core)[0].details["reason"] == "credential belongs to another client"
    # a credential of a user who is not a service identity
    core.user("mallory", "analyst")
    _, other = ServiceCredentials(p.db).create("mallory")
    r = _exchange(core, other, client_id="mallory")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # the service identity deactivated by an administrator
    p.users.set_active(p.settings.service_user, False)
    r = _exchange(core, secret)
    assert r.status_code == 401
    assert _failures(core)[0].details["reason"] == "client identity is not an active service identity"


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password", "username": "admin", "password": "x"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),  # no client authentication at all
    ],
)
def test_malformed_token_requests_get_the_oauth2_error_shape(
    core: Harness, data: dict[str, str], status: int, error: str
) -> None:
    r = core.client.post("/oidc/token", data=data)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and "error_description" in r.json()


def test_two_client_authentication_methods_at_once_are_refused(core: Harness) -> None:
    p = core.platform
    _, secret = ServiceCredentials(p.db).create(p.settings.service_user)
    r = core.client.post(
        "/oidc/token",
        data={"grant_type": "client_credentials", "client_secret": secret},
        headers=_basic(p.settings.service_user, secret),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_operator_cli_creates_lists_and_revokes_credentials(tmp_path: Any) -> None:
    """`helixgate service-credential create|list|revoke` on the deployment's database (the
    SQLite file of a data directory, as `helixgate serve` leaves it): the secret is shown once
    (or written 0600), never listed; a revoked credential buys no more tokens."""
    import os
    import stat
    import subprocess

    from helixgate.config import load_settings
    from tests.fixtures.live import HELIXGATE, ROOT

    p = build_platform(load_settings(env={}, data_dir=str(tmp_path / "data")))
    core = Harness(p, ("core",))
    core.client = TestClient(build_app(p, named(("core",))), raise_server_exceptions=False)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HELIXGATE_")},
        "HELIXGATE_DATA_DIR": str(p.settings.data_dir),
    }

    def cli(*args: str) -> Any:
        r = subprocess.run([HELIXGATE, *args, "--json"], env=env, capture_output=True, text=True, cwd=str(ROOT))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    try:
        out = tmp_path / "worker.credential"
        created = cli("service-credential", "create", "--out", str(out), "--label", "worker-7", "--expires-in", "30d")
        assert stat.S_IMODE(out.stat().st_mode) == 0o600 and "credential" not in created
        secret = out.read_text().strip()
        assert created["username"] == p.settings.service_user and created["expires_at"]
        assert _exchange(core, secret).status_code == 200
        listed = cli("service-credential", "list")["credentials"]
        assert [c["id"] for c in listed] == [created["id"]] and secret not in json.dumps(listed)
        assert cli("service-credential", "revoke", created["id"])["revoked_at"]
        assert _exchange(core, secret).status_code == 401
        actions = [r.action for r in p.audit.query(action_prefix="core.service_credential", page_size=10)[0]]
        assert actions == ["core.service_credential.revoke", "core.service_credential.create"]
        assert secret not in _audit_text(core)
    finally:
        core.client.close()
        p.close()


def test_a_credential_sent_in_the_wrong_field_is_never_recorded(core: Harness) -> None:
    p = core.platform
    _, secret = ServiceCredentials(p.db).create(p.settings.service_user)
    r = core.client.post(
        "/oidc/token", data={"grant_type": "client_credentials", "client_id": secret, "client_secret": secret}
    )
    assert r.status_code == 401
    text = _audit_text(core)
    assert secret not in text and "[REDACTED]" in text
    # and in any audited detail, a credential keeps only its id
    p.audit.record(category="change", action="x", outcome="success", actor="a", service="core",
                   details={"note": f"copied {secret} here"})
    assert secret not in _audit_text(core) and secret.rsplit(".", 1)[0] + ".[REDACTED]" in _audit_text(core)
