"""Built-in token issuer: key storage, token contents, JWKS/discovery, rotation, durations."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from helixgate.errors import BadRequest, ConfigurationError
from helixgate.issuer import MAX_RETIRED_KEYS, BuiltinIssuer, parse_duration

ISSUER_URL = "http://127.0.0.1:8080/oidc"
AUDIENCE = "helixgate"


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "issuer"


@pytest.fixture
def issuer(key_dir: Path) -> BuiltinIssuer:
    return BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _verify_with_jwks(token: str, jwks: dict[str, Any], audience: str = AUDIENCE) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token, key=jwt.PyJWK(key, algorithm="ES256"), algorithms=["ES256"], audience=audience, issuer=ISSUER_URL
    )
    return claims


# ------------------------------------------------------------------ key storage
def test_key_generated_on_first_use_with_private_permissions(issuer: BuiltinIssuer, key_dir: Path) -> None:
    assert not key_dir.exists()  # nothing happens before first use
    issuer.issue("alice", 60)
    key_file = key_dir / "signing-key.pem"
    assert _mode(key_file) == 0o600
    assert _mode(key_dir) == 0o700
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not [p for p in key_dir.iterdir() if p.name.endswith(".tmp")]


def test_second_instance_on_same_dir_reuses_the_key(issuer: BuiltinIssuer, key_dir: Path) -> None:
    token = issuer.issue("alice", 60)
    pem_before = (key_dir / "signing-key.pem").read_bytes()
    again = BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE)
    assert again.key_id == issuer.key_id
    assert (key_dir / "signing-key.pem").read_bytes() == pem_before
    assert _verify_with_jwks(token, again.jwks())["sub"] == "alice"


def test_concurrent_first_use_creates_a_single_key(key_dir: Path) -> None:
    kids: list[str] = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        kids.append(BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE).key_id)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kids) == 8 and len(set(kids)) == 1


def test_existing_loose_directory_is_tightened(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, mode=0o755)
    os.chmod(key_dir, 0o755)
    BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE).issue("alice", 60)
    assert _mode(key_dir) == 0o700


def test_key_readable_by_others_is_refused(issuer: BuiltinIssuer, key_dir: Path) -> None:
    issuer.issue("alice", 60)
    os.chmod(key_dir / "signing-key.pem", 0o644)
    with pytest.raises(ConfigurationError, match=r"mode 0644\); expected 0600") as exc:
        BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE).issue("alice", 60)
    assert "PRIVATE KEY" not in exc.value.message


def test_corrupt_key_file_is_a_configuration_error(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, mode=0o700)
    fd = os.open(key_dir / "signing-key.pem", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(ConfigurationError, match="not a readable PEM private key"):
        BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE).jwks()


def test_kid_is_the_rfc7638_thumbprint(issuer: BuiltinIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    # Recompute from PyJWT's own JWK export of the public key, not from our JWK dict.
    public = jwt.PyJWK(key, algorithm="ES256").key
    exported = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    canonical = json.dumps({m: exported[m] for m in ("crv", "kty", "x", "y")}, sort_keys=True, separators=(",", ":"))
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert key["kid"] == thumbprint == issuer.key_id


def test_repr_shows_no_key_material(issuer: BuiltinIssuer, key_dir: Path) -> None:
    issuer.issue("alice", 60)
    pem = (key_dir / "signing-key.pem").read_text()
    body = "".join(pem.splitlines()[1:-1])
    assert body[:20] not in repr(issuer)
    assert "PRIVATE" not in repr(issuer)


# ------------------------------------------------------------------ tokens
def test_issue_sets_the_registered_claims(issuer: BuiltinIssuer) -> None:
    before = int(time.time())
    token = issuer.issue("alice", 900)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == issuer.key_id
    claims = _verify_with_jwks(token, issuer.jwks())
    assert claims["iss"] == ISSUER_URL
    assert claims["sub"] == "alice"
    assert claims["aud"] == AUDIENCE
    assert before <= claims["iat"] <= int(time.time())
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + 900
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims["jti"] != _verify_with_jwks(issuer.issue("alice", 900), issuer.jwks())["jti"]


def test_issue_with_audience_and_extra_claims(issuer: BuiltinIssuer) -> None:
    token = issuer.issue("bob", 60, audience="drs", extra_claims={"email": "bob@example.org", "groups": ["a"]})
    claims = _verify_with_jwks(token, issuer.jwks(), audience="drs")
    assert claims["email"] == "bob@example.org" and claims["groups"] == ["a"]


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"])
def test_extra_claims_cannot_override_registered_claims(issuer: BuiltinIssuer, claim: str) -> None:
    with pytest.raises(BadRequest, match=f"may not override registered claims: {claim}"):
        issuer.issue("alice", 60, extra_claims={claim: "x"})


def test_extra_claims_must_be_json(issuer: BuiltinIssuer) -> None:
    with pytest.raises(BadRequest, match="JSON-serialisable"):
        issuer.issue("alice", 60, extra_claims={"when": object()})


@pytest.mark.parametrize("username", ["", "   ", " alice", "al\nice", "a" * 256])
def test_invalid_usernames_are_refused(issuer: BuiltinIssuer, username: str) -> None:
    with pytest.raises(BadRequest, match="invalid username"):
        issuer.issue(username, 60)


@pytest.mark.parametrize("ttl", [0, -5, True, 1.5])
def test_invalid_ttl_is_refused(issuer: BuiltinIssuer, ttl: Any) -> None:
    with pytest.raises(BadRequest, match="invalid token lifetime"):
        issuer.issue("alice", ttl)


def test_ttl_above_configured_maximum_is_refused(key_dir: Path) -> None:
    capped = BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE, max_ttl_seconds=3600)
    assert capped.issue("alice", 3600)
    with pytest.raises(BadRequest, match="token lifetime 7200s exceeds the maximum of 3600s"):
        capped.issue("alice", 7200)


@pytest.mark.parametrize("url", ["ftp://example.org/oidc", "example.org/oidc", "http:///oidc", "https://h/o?x=1"])
def test_invalid_issuer_url_is_a_configuration_error(key_dir: Path, url: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid built-in issuer URL"):
        BuiltinIssuer(key_dir, url, AUDIENCE)


# ------------------------------------------------------------------ published documents
def test_jwks_holds_public_keys_only(issuer: BuiltinIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["use"] == "sig"


def test_jwks_returns_a_copy(issuer: BuiltinIssuer) -> None:
    issuer.jwks()["keys"][0]["kid"] = "tampered"
    assert issuer.jwks()["keys"][0]["kid"] == issuer.key_id


def test_discovery_document(key_dir: Path) -> None:
    doc = BuiltinIssuer(key_dir, ISSUER_URL + "/", AUDIENCE).discovery_document()
    assert doc["issuer"] == ISSUER_URL
    assert doc["jwks_uri"] == ISSUER_URL + "/jwks.json"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["subject_types_supported"] == ["public"]
    assert not key_dir.exists()  # publishing metadata does not need the key


# ------------------------------------------------------------------ rotation
def test_rotate_keeps_previous_public_key(issuer: BuiltinIssuer, key_dir: Path) -> None:
    old_token = issuer.issue("alice", 60)
    old_kid = issuer.key_id
    new_kid = issuer.rotate()
    assert new_kid != old_kid == jwt.get_unverified_header(old_token)["kid"]
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [new_kid, old_kid]
    assert all("d" not in k and "retired_at" not in k for k in issuer.jwks()["keys"])
    new_token = issuer.issue("alice", 60)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert _verify_with_jwks(old_token, issuer.jwks())["sub"] == "alice"
    assert _verify_with_jwks(new_token, issuer.jwks())["sub"] == "alice"
    assert _mode(key_dir / "signing-key.pem") == 0o600
    assert _mode(key_dir / "retired-keys.json") == 0o600


def test_rotation_by_another_instance_is_picked_up(issuer: BuiltinIssuer, key_dir: Path) -> None:
    old_kid = issuer.key_id
    new_kid = BuiltinIssuer(key_dir, ISSUER_URL, AUDIENCE).rotate()  # e.g. the CLI, while the server runs
    assert issuer.key_id == new_kid
    assert jwt.get_unverified_header(issuer.issue("alice", 60))["kid"] == new_kid
    assert {k["kid"] for k in issuer.jwks()["keys"]} == {old_kid, new_kid}


def test_rotate_without_keeping_previous_withdraws_old_keys(issuer: BuiltinIssuer) -> None:
    issuer.rotate()
    new_kid = issuer.rotate(keep_previous=False)
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [new_kid]


def test_retired_keys_are_capped(issuer: BuiltinIssuer) -> None:
    kids = [issuer.key_id] + [issuer.rotate() for _ in range(MAX_RETIRED_KEYS + 2)]
    published = [k["kid"] for k in issuer.jwks()["keys"]]
    assert published == list(reversed(kids))[: MAX_RETIRED_KEYS + 1]


# ------------------------------------------------------------------ durations
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h", 3600), ("30s", 30), ("2d", 172800), ("900", 900), (" 15M ", 900), ("1", 1)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "   ", "m", "15x", "-5m", "1.5h", "15 m", "1h30m", "0", "0s", "9999999999", "fifteen", "1e3"]
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(BadRequest, match="invalid duration"):
        parse_duration(text)
