"""Bearer JWT verification against a real (tiny) OIDC identity provider on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from helixgate.auth import Principal, TokenVerifier, bearer_token, builtin_issuer_for, make_verifier
from helixgate.config import IssuerConfig, Settings
from helixgate.errors import ConfigurationError, Unauthorized, UpstreamError
from helixgate.issuer import BuiltinIssuer

AUDIENCE = "helixgate"
REALM = "/realms/test"


# ------------------------------------------------------------------ a tiny IdP
class FakeIdP:
    """Serves OIDC discovery and a JWKS; counts requests per path."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.hits: Counter[str] = Counter()
        self.fail = False
        self.announced_issuer: str | None = None
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.hits[self.path] += 1
                if idp.fail:
                    self._send(500, {"error": "down"})
                elif self.path == REALM + "/.well-known/openid-configuration":
                    doc = {"issuer": idp.announced_issuer or idp.issuer, "jwks_uri": idp.jwks_uri}
                    self._send(200, doc)
                elif self.path == REALM + "/certs":
                    self._send(200, idp.jwks)
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client refusing our certificate is the point of some tests

        self.server = Server(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.issuer = f"{scheme}://127.0.0.1:{self.server.server_address[1]}{REALM}"
        self.jwks_uri = self.issuer + "/certs"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.jwks = {"keys": []}
        self.hits.clear()
        self.fail = False
        self.announced_issuer = None

    @property
    def jwks_hits(self) -> int:
        return self.hits[REALM + "/certs"]

    def publish(self, *keys: tuple[Any, str]) -> None:
        """Publish the public halves of (private_key, kid) pairs."""
        published = []
        for private, kid in keys:
            alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
            algo = jwt.get_algorithm_by_name(alg)
            jwk = json.loads(algo.to_jwk(private.public_key()))
            published.append({**jwk, "kid": kid, "use": "sig"})
        self.jwks = {"keys": published}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def rsa_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("a", "b", "forger")}


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def idp_server() -> Iterator[FakeIdP]:
    server = FakeIdP()
    yield server
    server.close()


@pytest.fixture
def idp(idp_server: FakeIdP, rsa_keys: dict[str, rsa.RSAPrivateKey], ec_key: ec.EllipticCurvePrivateKey) -> FakeIdP:
    idp_server.reset()
    idp_server.publish((rsa_keys["a"], "key-a"), (ec_key, "key-ec"))
    return idp_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(idp: FakeIdP, clock: FakeClock) -> TokenVerifier:
    config = IssuerConfig(issuer=idp.issuer, audience=AUDIENCE, algorithms=("RS256", "ES256"))
    return TokenVerifier([config], clock_skew=30, max_lifetime=3600, jwks_cache_seconds=300, monotonic=clock)


def mint(
    key: Any,
    kid: str | None,
    issuer: str,
    *,
    alg: str = "RS256",
    audience: str = AUDIENCE,
    lifetime: int = 300,
    iat_offset: int = 0,
    drop: tuple[str, ...] = (),
    headers: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    now = int(time.time()) + iat_offset
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-123",
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        **extra,
    }
    for name in drop:
        claims.pop(name)
    all_headers = dict(headers or {})
    if kid is not None:
        all_headers["kid"] = kid
    return jwt.encode(claims, key, algorithm=alg, headers=all_headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(verifier: TokenVerifier, token: str, message: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as exc:
        verifier.verify(token)
    assert message in exc.value.message
    assert exc.value.status == 401
    assert token not in exc.value.message and token not in repr(exc.value)
    return exc.value


# ------------------------------------------------------------------ happy paths
def test_valid_rs256_token_via_discovery(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    token = mint(rsa_keys["a"], "key-a", idp.issuer, email="u@example.org", groups=["g1", "g2"], secret_stuff="x")
    principal = verifier.verify(token)
    assert principal.username == "user-123" == principal.subject
    assert principal.issuer == idp.issuer
    assert principal.token_id is not None and len(principal.token_id) == 32
    assert int(principal.expires_at.timestamp()) - int(principal.issued_at.timestamp()) == 300
    assert principal.issued_at.tzinfo is not None
    assert dict(principal.claims) == {"email": "u@example.org", "groups": ("g1", "g2")}
    assert idp.hits[REALM + "/.well-known/openid-configuration"] == 1 and idp.jwks_hits == 1
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.jwks_hits == 1  # cached


def test_valid_es256_token_from_same_issuer(verifier: TokenVerifier, idp: FakeIdP, ec_key: Any) -> None:
    assert verifier.verify(mint(ec_key, "key-ec", idp.issuer, alg="ES256")).subject == "user-123"


def test_username_from_configured_claim(idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    config = IssuerConfig(issuer=idp.issuer, audience=AUDIENCE, username_claim="preferred_username")
    verifier = TokenVerifier([config])
    token = mint(rsa_keys["a"], "key-a", idp.issuer, preferred_username="alice")
    assert verifier.verify(token).username == "alice"
    refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer), "token has no usable 'preferred_username' claim")


def test_expiry_within_clock_skew_is_accepted(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer, lifetime=300, iat_offset=-310))


def test_principal_repr_holds_no_token(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    token = mint(rsa_keys["a"], "key-a", idp.issuer, email="u@example.org")
    principal = verifier.verify(token)
    _, payload, signature = token.split(".")
    for text in (repr(principal), str(principal)):
        assert token not in text and signature not in text and payload not in text
    assert "user-123" in repr(principal)
    with pytest.raises(AttributeError):
        principal.username = "mallory"  # type: ignore[misc]
    assert isinstance(hash(principal), int)


# ------------------------------------------------------------------ refusals
def test_expired_token(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer, lifetime=300, iat_offset=-400), "token expired")


def test_unlisted_issuer(verifier: TokenVerifier, rsa_keys: dict[str, Any]) -> None:
    err = refused(verifier, mint(rsa_keys["a"], "key-a", "https://evil.example/realms/x"), "issuer not allowed")
    assert err.message == "issuer not allowed: https://evil.example/realms/x"


def test_forged_signature_with_same_kid(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    err = refused(verifier, mint(rsa_keys["forger"], "key-a", idp.issuer), "signature verification failed")
    assert err.message == "signature verification failed"


def test_tampered_payload(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    header, _, signature = mint(rsa_keys["a"], "key-a", idp.issuer).split(".")
    now = int(time.time())
    forged = {"iss": idp.issuer, "sub": "admin", "aud": AUDIENCE, "iat": now, "exp": now + 60}
    refused(verifier, f"{header}.{b64(json.dumps(forged).encode())}.{signature}", "signature verification failed")


def test_alg_none(verifier: TokenVerifier, idp: FakeIdP) -> None:
    token = mint(None, "key-a", idp.issuer, alg="none")
    assert refused(verifier, token, "algorithm not allowed").message == "algorithm not allowed: none"
    # Hand-made variants PyJWT would not produce.
    now = int(time.time())
    claims = b64(json.dumps({"iss": idp.issuer, "sub": "x", "aud": AUDIENCE, "iat": now, "exp": now + 60}).encode())
    for alg in ("None", "NONE", ""):
        header = b64(json.dumps({"alg": alg, "kid": "key-a"}).encode())
        refused(verifier, f"{header}.{claims}.", "algorithm")


def test_hs256_with_public_key_as_secret(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    pem = (
        rsa_keys["a"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "key-a"}).encode())
    claims = b64(json.dumps({"iss": idp.issuer, "sub": "x", "aud": AUDIENCE, "iat": now, "exp": now + 60}).encode())
    signature = b64(hmac.new(pem, f"{header}.{claims}".encode(), hashlib.sha256).digest())
    err = refused(verifier, f"{header}.{claims}.{signature}", "algorithm not allowed")
    assert err.message == "algorithm not allowed: HS256"
    assert idp.jwks_hits == 0  # refused before any key lookup


def test_symmetric_algorithms_cannot_be_configured(idp: FakeIdP) -> None:
    config = IssuerConfig(issuer=idp.issuer, audience=AUDIENCE, algorithms=("RS256", "HS256"))
    with pytest.raises(ConfigurationError, match="asymmetric algorithms only"):
        TokenVerifier([config])


def test_rs256_header_with_ec_key_is_refused(
    verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any], ec_key: Any
) -> None:
    refused(verifier, mint(rsa_keys["a"], "key-ec", idp.issuer), "algorithm RS256 does not match the signing key type")
    refused(
        verifier, mint(ec_key, "key-a", idp.issuer, alg="ES256"), "algorithm ES256 does not match the signing key type"
    )


def test_algorithm_not_configured_for_issuer(idp: FakeIdP, ec_key: Any) -> None:
    verifier = TokenVerifier([IssuerConfig(issuer=idp.issuer, audience=AUDIENCE, algorithms=("RS256",))])
    err = refused(verifier, mint(ec_key, "key-ec", idp.issuer, alg="ES256"), "algorithm not allowed: ES256")
    assert "issuer accepts RS256" in err.message


def test_wrong_audience(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer, audience="another-service"), "audience mismatch")


def test_audience_list_containing_ours_is_accepted(
    verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]
) -> None:
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer, audience=["account", AUDIENCE]))  # type: ignore[arg-type]


def test_nbf_in_the_future(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    now = int(time.time())
    token = mint(rsa_keys["a"], "key-a", idp.issuer, nbf=now + 600, exp=now + 900)
    refused(verifier, token, "token not valid yet (nbf)")


def test_iat_in_the_future(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer, iat_offset=600), "issued in the future")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud"])
def test_missing_required_claim(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any], claim: str) -> None:
    refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer, drop=(claim,)), f"missing the required '{claim}' claim")


def test_string_dates_are_malformed(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    now = int(time.time())
    refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer, exp=str(now + 60)), "'exp' must be a number")


def test_lifetime_above_maximum(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    err = refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer, lifetime=7200), "exceeds the maximum")
    assert err.message == "token lifetime 7200s exceeds the maximum of 3600s"
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer, lifetime=3600))


def test_jku_header_is_ignored(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    token = mint(rsa_keys["forger"], "attacker", idp.issuer, headers={"jku": "http://127.0.0.1:1/evil.json"})
    refused(verifier, token, "unknown key id")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d.e",
        "ä.ö.ü",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        b64(b"[1,2]") + "." + b64(b"{}") + ".sig",
        b64(b'{"alg": 5}') + "." + b64(b"{}") + ".sig",
        b64(b'{"alg": "RS256", "kid": 7}') + "." + b64(b'{"iss": "x"}') + ".sig",
        b64(b'{"alg": "RS256"}') + "." + b64(b"[]") + ".sig",
        b64(b'{"alg": "RS256"}') + "." + b64(b'{"iss": 12}') + ".sig",
        b64(b'{"alg": "RS256"}') + "." + b64(b"not json") + ".sig",
        "x" * 100_000,
        "Bearer x.y.z",
    ],
)
def test_garbage_is_unauthorized(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(Unauthorized) as exc:
        verifier.verify(garbage)
    assert garbage not in exc.value.message or garbage == ""


@pytest.mark.parametrize("value", [None, b"a.b.c", 42])
def test_non_string_tokens_are_unauthorized(verifier: TokenVerifier, value: Any) -> None:
    with pytest.raises(Unauthorized, match="missing bearer token"):
        verifier.verify(value)


def test_garbage_signature_on_real_key(verifier: TokenVerifier, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    header, payload, _ = mint(rsa_keys["a"], "key-a", idp.issuer).split(".")
    refused(verifier, f"{header}.{payload}.!!!notbase64!!!", "")
    refused(verifier, f"{header}.{payload}.{b64(b'short')}", "signature verification failed")


# ------------------------------------------------------------------ key set refresh
def test_rotation_at_idp_refetches_once(
    verifier: TokenVerifier, idp: FakeIdP, clock: FakeClock, rsa_keys: dict[str, Any]
) -> None:
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.jwks_hits == 1
    idp.publish((rsa_keys["b"], "key-b"))  # the IdP rotates; our cache still holds key-a only
    clock.advance(11)
    token_b = mint(rsa_keys["b"], "key-b", idp.issuer)
    assert verifier.verify(token_b).subject == "user-123"
    assert idp.jwks_hits == 2
    verifier.verify(token_b)
    assert idp.jwks_hits == 2


def test_random_kids_are_rate_limited(
    verifier: TokenVerifier, idp: FakeIdP, clock: FakeClock, rsa_keys: dict[str, Any]
) -> None:
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.jwks_hits == 1
    for _ in range(30):
        refused(verifier, mint(rsa_keys["forger"], uuid.uuid4().hex, idp.issuer), "unknown key id")
    assert idp.jwks_hits == 1  # within 10 s of the last fetch: no refetch at all
    clock.advance(10.5)
    for _ in range(30):
        refused(verifier, mint(rsa_keys["forger"], uuid.uuid4().hex, idp.issuer), "unknown key id")
    assert idp.jwks_hits == 2  # one refetch per interval
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.jwks_hits == 2


def test_cache_expires_after_jwks_cache_seconds(
    verifier: TokenVerifier, idp: FakeIdP, clock: FakeClock, rsa_keys: dict[str, Any]
) -> None:
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    clock.advance(299)
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.jwks_hits == 1
    clock.advance(2)
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.jwks_hits == 2


def test_key_withdrawn_at_idp_is_refused_after_cache_expiry(
    verifier: TokenVerifier, idp: FakeIdP, clock: FakeClock, rsa_keys: dict[str, Any]
) -> None:
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    idp.publish((rsa_keys["b"], "key-b"))
    clock.advance(301)
    refused(verifier, mint(rsa_keys["a"], "key-a", idp.issuer), "unknown key id")


def test_idp_outage_keeps_cached_keys(
    verifier: TokenVerifier, idp: FakeIdP, clock: FakeClock, rsa_keys: dict[str, Any]
) -> None:
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    idp.fail = True
    clock.advance(301)
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))  # stale keys beat no keys
    assert idp.hits[REALM + "/.well-known/openid-configuration"] == 2


def test_idp_unreachable_without_cached_keys_is_upstream_error(
    verifier: TokenVerifier, idp: FakeIdP, clock: FakeClock, rsa_keys: dict[str, Any]
) -> None:
    idp.fail = True
    token = mint(rsa_keys["a"], "key-a", idp.issuer)
    with pytest.raises(UpstreamError, match="HTTP 500") as exc:
        verifier.verify(token)
    assert exc.value.status == 502
    with pytest.raises(UpstreamError):
        verifier.verify(token)  # answered from the remembered failure ...
    assert sum(idp.hits.values()) == 1  # ... without asking the IdP again
    idp.fail = False
    clock.advance(11)
    verifier.verify(token)


def test_discovery_naming_another_issuer_is_refused(idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    idp.announced_issuer = "https://evil.example"
    verifier = TokenVerifier([IssuerConfig(issuer=idp.issuer, audience=AUDIENCE)])
    with pytest.raises(UpstreamError, match="names issuer 'https://evil.example'"):
        verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.jwks_hits == 0


def test_configured_jwks_uri_skips_discovery(idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    verifier = TokenVerifier([IssuerConfig(issuer=idp.issuer, audience=AUDIENCE, jwks_uri=idp.jwks_uri)])
    verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))
    assert idp.hits[REALM + "/.well-known/openid-configuration"] == 0 and idp.jwks_hits == 1


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_weak_rsa_key_is_refused(idp: FakeIdP) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    idp.publish((weak, "weak"))
    verifier = TokenVerifier([IssuerConfig(issuer=idp.issuer, audience=AUDIENCE)])
    refused(verifier, mint(weak, "weak", idp.issuer), "too weak")


def test_concurrent_cold_cache_fetches_once(idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    verifier = TokenVerifier([IssuerConfig(issuer=idp.issuer, audience=AUDIENCE)])
    tokens = [mint(rsa_keys["a"], "key-a", idp.issuer, sub=f"user-{i}") for i in range(16)]
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(tokens))

    def work(token: str) -> None:
        barrier.wait()
        try:
            results.append(verifier.verify(token).subject)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == sorted(f"user-{i}" for i in range(16))
    assert idp.jwks_hits == 1


@pytest.mark.parametrize("url", ["http://idp.example.org/realms/x", "ftp://127.0.0.1/x"])
def test_plain_http_issuer_off_loopback_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must be an https:// URL"):
        TokenVerifier([IssuerConfig(issuer=url, audience=AUDIENCE)])


def test_duplicate_issuer_is_a_configuration_error(idp: FakeIdP) -> None:
    config = IssuerConfig(issuer=idp.issuer, audience=AUDIENCE)
    with pytest.raises(ConfigurationError, match="configured twice"):
        TokenVerifier([config, IssuerConfig(issuer=idp.issuer + "/", audience="other")])


# ------------------------------------------------------------------ TLS
@pytest.fixture(scope="module")
def tls_idp(tmp_path_factory: pytest.TempPathFactory, rsa_keys: dict[str, Any]) -> Iterator[tuple[FakeIdP, Path]]:
    """An HTTPS IdP with a self-signed certificate for 127.0.0.1; yields it and the CA bundle path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test idp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = FakeIdP(tls=context)
    server.publish((rsa_keys["a"], "key-a"))
    yield server, cert_path
    server.close()


def test_https_idp_with_untrusted_certificate_is_refused(
    tls_idp: tuple[FakeIdP, Path], rsa_keys: dict[str, Any]
) -> None:
    idp, _ = tls_idp
    verifier = TokenVerifier([IssuerConfig(issuer=idp.issuer, audience=AUDIENCE)])
    with pytest.raises(UpstreamError, match="SSLError"):
        verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer))


def test_https_idp_trusted_through_ca_bundle(tls_idp: tuple[FakeIdP, Path], rsa_keys: dict[str, Any]) -> None:
    idp, ca_bundle = tls_idp
    verifier = TokenVerifier([IssuerConfig(issuer=idp.issuer, audience=AUDIENCE)], tls_ca_bundle=str(ca_bundle))
    assert verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer)).subject == "user-123"


# ------------------------------------------------------------------ built-in issuer
def _settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(data_dir=tmp_path, public_url="http://127.0.0.1:8080/", **changes)


def test_builtin_issuer_tokens_verify(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    builtin = builtin_issuer_for(settings)
    assert builtin.issuer_url == "http://127.0.0.1:8080/oidc"
    assert builtin.key_dir == tmp_path / "issuer"
    verifier = make_verifier(settings, builtin)
    principal = verifier.verify(builtin.issue("alice", 900, extra_claims={"email": "a@example.org"}))
    assert (principal.username, principal.issuer) == ("alice", "http://127.0.0.1:8080/oidc")
    assert principal.claims["email"] == "a@example.org"
    refused(verifier, builtin.issue("alice", 900, audience="elsewhere"), "audience mismatch")


def test_builtin_issuer_created_when_not_given(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    verifier = make_verifier(settings, None)
    token = BuiltinIssuer(tmp_path / "issuer", "http://127.0.0.1:8080/oidc", AUDIENCE).issue("bob", 60)
    assert verifier.verify(token).username == "bob"


def test_builtin_issuer_lifetime_capped_by_settings(tmp_path: Path) -> None:
    builtin = builtin_issuer_for(_settings(tmp_path, token_max_lifetime=600))
    with pytest.raises(Exception, match="token lifetime 900s exceeds the maximum of 600s"):
        builtin.issue("alice", 900)


def test_builtin_issuer_off_refuses_its_tokens(tmp_path: Path, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    external = IssuerConfig(issuer=idp.issuer, audience=AUDIENCE)
    settings = _settings(tmp_path, builtin_issuer=False, issuers=(external,))
    builtin = builtin_issuer_for(settings)
    verifier = make_verifier(settings, builtin)
    refused(verifier, builtin.issue("alice", 60), "issuer not allowed: http://127.0.0.1:8080/oidc")
    assert verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer)).subject == "user-123"


def test_builtin_and_external_issuers_together(tmp_path: Path, idp: FakeIdP, rsa_keys: dict[str, Any]) -> None:
    settings = _settings(tmp_path, issuers=(IssuerConfig(issuer=idp.issuer, audience="other-aud"),))
    builtin = builtin_issuer_for(settings)
    verifier = make_verifier(settings, builtin)
    assert verifier.issuers == ("http://127.0.0.1:8080/oidc", idp.issuer)
    assert verifier.verify(builtin.issue("alice", 60)).username == "alice"
    assert verifier.verify(mint(rsa_keys["a"], "key-a", idp.issuer, audience="other-aud")).username == "user-123"
    assert idp.jwks_hits == 1  # only the external issuer went over HTTP


def test_builtin_rotation_and_withdrawal(tmp_path: Path, clock: FakeClock) -> None:
    builtin = BuiltinIssuer(tmp_path / "issuer", "http://127.0.0.1:8080/oidc", AUDIENCE)
    config = IssuerConfig(issuer=builtin.issuer_url, audience=AUDIENCE, algorithms=("ES256",))
    verifier = TokenVerifier([config], local_jwks={builtin.issuer_url: builtin.jwks}, monotonic=clock)
    old = builtin.issue("alice", 60)
    verifier.verify(old)
    # A rotation by another process (the CLI) is seen at once: unknown kids re-read local keys.
    BuiltinIssuer(tmp_path / "issuer", builtin.issuer_url, AUDIENCE).rotate()
    verifier.verify(builtin.issue("alice", 60))
    verifier.verify(old)
    # Withdrawing every old key (leak response) takes effect within the local cache's second.
    builtin.rotate(keep_previous=False)
    clock.advance(1.5)
    refused(verifier, old, "unknown key id")


def test_builtin_token_forged_with_other_ec_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    builtin = builtin_issuer_for(settings)
    verifier = make_verifier(settings, builtin)
    forger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    claims = {"iss": builtin.issuer_url, "sub": "admin", "aud": AUDIENCE, "iat": now, "exp": now + 60}
    token = jwt.encode(claims, forger, algorithm="ES256", headers={"kid": builtin.key_id})
    refused(verifier, token, "signature verification failed")


# ------------------------------------------------------------------ bearer header
def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc.def.ghi ") == "abc.def.ghi"
    for value, message in [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "authorization scheme must be Bearer"),
        ("Bearer", "malformed bearer token"),
        ("Bearer a b", "malformed bearer token"),
    ]:
        with pytest.raises(Unauthorized, match=message):
            bearer_token(value)


def test_principal_is_a_plain_frozen_record() -> None:
    from dataclasses import fields

    assert [f.name for f in fields(Principal)] == [
        "username",
        "issuer",
        "subject",
        "token_id",
        "issued_at",
        "expires_at",
        "claims",
    ]
