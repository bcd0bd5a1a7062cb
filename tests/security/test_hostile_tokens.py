"""Hostile tokens against every service: forged, expired, ``alg: none``, wrong audience and
algorithm confusion are refused with a 401 in the service's own error shape and recorded as
a security event; a bad token never downgrades to anonymous access."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from tests.fixtures.app import Harness
from tests.security.conftest import alg_none, bearer, forged, hs256_with_public_key, signed

pytestmark = pytest.mark.integration

# One operation per service, including the anonymous-capable reads (TRS, DRS) where a
# broken token must not silently fall back to "anonymous".
ENDPOINTS: list[tuple[str, str, str, Any]] = [
    ("wes", "GET", "/ga4gh/wes/v1/runs", None),
    ("trs", "GET", "/ga4gh/trs/v2/tools", None),
    ("trs", "POST", "/ga4gh/trs/v2/x-helixgate/tools", {"organization": "o", "name": "n"}),
    ("drs", "GET", "/ga4gh/drs/v1/objects/abc", None),
    ("drs", "POST", "/ga4gh/drs/v1/x-helixgate/datasets", {"name": "d"}),
    ("core", "GET", "/helixgate/v1/me", None),
]

TOKENS: dict[str, Callable[[Harness], str]] = {
    "forged-signature": forged,
    "expired": lambda h: signed(
        h, iat=int(time.time()) - 4000, nbf=int(time.time()) - 4000, exp=int(time.time()) - 600
    ),
    "alg-none": alg_none,
    "wrong-audience": lambda h: signed(h, aud="another-service"),
    "hs256-public-key-confusion": hs256_with_public_key,
    "lifetime-above-maximum": lambda h: signed(h, exp=int(time.time()) + 30 * 24 * 3600),
    "not-yet-valid": lambda h: signed(h, nbf=int(time.time()) + 3600),
    "foreign-issuer": lambda h: signed(h, iss="https://evil.example.com"),
}


def _error_message(service: str, body: dict[str, Any], status: int) -> str:
    if service == "trs":
        assert body["code"] == status
        return str(body["message"])
    assert body["status_code"] == status
    return str(body["msg"])


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_hostile_token_is_401_on_every_service_and_audited(hostile: Harness, kind: str) -> None:
    hostile.user("alice", "admin", "analyst", "tool-developer", "data-steward")  # a real, powerful user
    token = TOKENS[kind](hostile)
    for service, method, path, body in ENDPOINTS:
        r = hostile.client.request(method, path, headers=bearer(token), json=body)
        assert r.status_code == 401, (kind, path, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert _error_message(service, r.json(), 401)
    failed = [e for e in hostile.platform.audit.query(category="security", action_prefix="auth.failed")[0]]
    assert len(failed) >= len(ENDPOINTS), failed
    # the token itself never reaches the audit trail
    assert not any(token in line for line in hostile.platform.audit.export_cef())


def test_passport_in_drs_body_is_verified_like_a_bearer_token(hostile: Harness) -> None:
    hostile.user("alice", "data-steward")
    for token in (forged(hostile), alg_none(hostile), hs256_with_public_key(hostile)):
        r = hostile.client.post("/ga4gh/drs/v1/objects/abc", json={"passports": [token]})
        assert r.status_code == 401, r.text
        assert r.json()["status_code"] == 401


def test_the_same_claims_properly_signed_are_accepted(hostile: Harness) -> None:
    """Control: the refusals above are about the tokens, not the endpoints."""
    hostile.user("alice", "admin", "analyst", "tool-developer", "data-steward")
    token = signed(hostile)
    for _, method, path, body in ENDPOINTS:
        r = hostile.client.request(method, path, headers=bearer(token), json=body)
        assert r.status_code in (200, 201, 404), (path, r.status_code, r.text)


def test_token_for_a_user_who_was_deleted_or_deactivated_is_403(hostile: Harness) -> None:
    token = hostile.user("alice", "analyst")
    admin = hostile.auth("root", "admin")
    assert hostile.client.patch("/helixgate/v1/users/alice", headers=admin, json={"active": False}).status_code == 200
    for service, method, path, body in ENDPOINTS:
        r = hostile.client.request(method, path, headers=bearer(token), json=body)
        assert r.status_code == 403, (path, r.text)
        assert "not active" in _error_message(service, r.json(), 403)
