"""Shared helpers for the hostile-input tests: an in-process app on SQLite and token forgery
with the built-in issuer's own key (what an attacker who stole nothing can and cannot do)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helixgate.db import Database
from helixgate_app.services import build_platform
from tests.fixtures.app import Harness, make_settings


@pytest.fixture()
def hostile_factory(tmp_path: Path, sqlite_database: Database) -> Iterator[Callable[..., Harness]]:
    """Harnesses on one SQLite database (authorization is database-agnostic; the shared
    ``harness`` fixture already runs the access rules on PostgreSQL too)."""
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        settings = make_settings(tmp_path / f"data{len(made)}", sqlite_database, **overrides)
        h = Harness(build_platform(settings), ("wes", "trs", "drs", "core"))
        made.append(h)
        return h

    yield make
    for h in made:
        h.client.close()
        h.platform.close()


@pytest.fixture()
def hostile(hostile_factory: Callable[..., Harness]) -> Harness:
    return hostile_factory()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def builtin_key(h: Harness) -> tuple[Any, str]:
    issuer = h.platform.issuer
    assert issuer is not None
    kid = issuer.key_id  # creates the key on first use
    pem = (h.platform.settings.data_dir / "issuer" / "signing-key.pem").read_bytes()
    return serialization.load_pem_private_key(pem, None), kid


def claims(h: Harness, **overrides: Any) -> dict[str, Any]:
    assert h.platform.issuer is not None
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": h.platform.issuer.issuer_url,
        "sub": "alice",
        "aud": h.platform.settings.audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    body.update(overrides)
    return body


def signed(h: Harness, **overrides: Any) -> str:
    """A token signed with the real built-in issuer key (valid unless ``overrides`` break it)."""
    key, kid = builtin_key(h)
    return jwt.encode(claims(h, **overrides), key, algorithm="ES256", headers={"kid": kid})


def forged(h: Harness) -> str:
    """Right claims and kid, signed by a key the attacker made."""
    _, kid = builtin_key(h)
    return jwt.encode(claims(h), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid})


def alg_none(h: Harness) -> str:
    _, kid = builtin_key(h)
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64(json.dumps(claims(h)).encode())}."


def hs256_with_public_key(h: Harness) -> str:
    """Algorithm confusion: HMAC keyed with the issuer's *public* key, which anyone can fetch."""
    key, kid = builtin_key(h)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims(h)).encode())
    sig = b64(hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest())
    return f"{header}.{body}.{sig}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
