"""The ``sigstore`` backend: keyless signing and verification through sigstore-python 4.5.

Signing: an OIDC identity token (from ``token_provider``) buys a short-lived Fulcio
certificate for an ephemeral P-256 key; the in-toto statement is signed as a DSSE envelope
and logged in Rekor (``SigningContext.from_trust_config`` -> ``Signer.sign_dsse``).
Verification: ``Verifier(trusted_root=...)`` from the same ``ClientTrustConfig`` with an
``Identity(identity, issuer)`` policy per allowed pair. ``verify_dsse`` returns the payload
unchecked, so callers always run the statement checks (``helixgate.signing.verify``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from pydantic import ValidationError
from sigstore.dsse import DigestSet, StatementBuilder, Subject
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
from sigstore.oidc import IdentityToken
from sigstore.sign import SigningContext
from sigstore.verify import Verifier, policy

from helixgate.errors import ConfigurationError, UpstreamError, VerificationError
from helixgate.signing.base import MAX_BUNDLE_BYTES, SignerIdentity
from helixgate.signing.statement import PREDICATE_TYPE, ToolVersionClaim

_logger = logging.getLogger(__name__)

_OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def _verification_failed(message: str, *, expected: str | None = None, actual: str | None = None) -> VerificationError:
    return VerificationError(message, subject="tool signature", expected=expected, actual=actual)


def _short(text: object, limit: int = 300) -> str:
    value = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return value if len(value) <= limit else value[:limit] + "..."


@functools.lru_cache(maxsize=16)
def _parse_trust_config(trust_config_json: str) -> ClientTrustConfig:
    try:
        config = ClientTrustConfig.from_json(trust_config_json)
        # Touch both halves so a broken config fails here, naming the setting, not at first use.
        config.trusted_root.get_fulcio_certs()
        return config
    except (SigstoreError, ValidationError, ValueError) as exc:
        raise ConfigurationError(f"invalid Sigstore ClientTrustConfig: {_short(exc)}") from None


def load_trust_config(value: str) -> str:
    """Resolve the ``sigstore_trust_config`` setting to ClientTrustConfig JSON text.

    ``""`` selects the public-good instance from sigstore-python's embedded TUF root
    (offline: no refresh), a value starting with ``{`` is the JSON itself, anything else a path.
    """
    if not value.strip():
        try:
            return ClientTrustConfig.production(offline=True)._inner.to_json()
        except SigstoreError as exc:
            raise ConfigurationError(f"cannot load the Sigstore public-good trust root: {_short(exc)}") from None
    if value.lstrip().startswith("{"):
        text = value
    else:
        try:
            text = Path(value).expanduser().read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read Sigstore trust config {value!r}: {exc.strerror}") from None
    _parse_trust_config(text)
    return text


# ---------------------------------------------------------------- trust policy
@dataclass(frozen=True)
class SigstoreTrustPolicy:
    """Trust a Sigstore instance (``ClientTrustConfig`` JSON) for these (identity, issuer) pairs; any may match."""

    trust_config_json: str = field(repr=False)
    identities: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        pairs = tuple((str(identity), str(issuer)) for identity, issuer in self.identities)
        if not pairs:
            raise ConfigurationError("a Sigstore trust policy needs at least one allowed (identity, issuer) pair")
        for identity, issuer in pairs:
            if not identity or not issuer:
                raise ConfigurationError("a Sigstore trust policy identity and issuer must both be non-empty")
        object.__setattr__(self, "identities", pairs)
        _parse_trust_config(self.trust_config_json)

    @property
    def trusted_root(self) -> TrustedRoot:
        return _parse_trust_config(self.trust_config_json).trusted_root

    def describe(self) -> str:
        return ", ".join(f"{identity} (issuer {issuer})" for identity, issuer in self.identities)


def _san_values(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.RFC822Name) + san.get_values_for_type(x509.UniformResourceIdentifier)


def certificate_identity(cert: x509.Certificate) -> tuple[str, str]:
    """(identity, issuer) as Fulcio records them: the SAN (email or URI) and the OIDC issuer extension."""
    sans = _san_values(cert)
    identity = sans[0] if sans else ""
    issuer = ""
    for oid in (_OIDC_ISSUER_V1, _OIDC_ISSUER_V2):
        try:
            raw = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        data = raw.value if isinstance(raw, x509.UnrecognizedExtension) else b""
        if oid == _OIDC_ISSUER_V2 and len(data) > 2 and data[0] == 0x0C:
            data = data[2:] if data[1] < 0x80 else data[2 + (data[1] & 0x7F) :]  # strip DER UTF8String header
        issuer = data.decode(errors="replace")
        break
    return identity, issuer


def verify_sigstore_bundle(bundle_json: str | bytes, trust: SigstoreTrustPolicy) -> tuple[str, bytes, SignerIdentity]:
    """Verify a keyless bundle cryptographically and against the identity policy.

    Returns (payload type, payload, signer); the payload is *not* checked here.
    """
    if len(bundle_json) > MAX_BUNDLE_BYTES:
        raise _verification_failed(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        raw = json.loads(bundle_json)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _verification_failed("bundle is not JSON") from None
    material = raw.get("verificationMaterial") if isinstance(raw, dict) else None
    if isinstance(material, dict) and "publicKey" in material:
        raise _verification_failed(
            "bundle is signed with a registry key but the policy expects a keyless Sigstore signature",
            expected="certificate verification material",
            actual="publicKey",
        )
    try:
        bundle = Bundle.from_json(bundle_json)
    except (SigstoreError, ValidationError, ValueError) as exc:
        raise _verification_failed(f"bundle is not a valid Sigstore bundle: {_short(exc)}") from None
    if bundle._inner.dsse_envelope is None:
        raise _verification_failed("bundle has no DSSE envelope", expected="dsseEnvelope", actual="messageSignature")

    # Check the identity first for a precise message; the sigstore policy below re-checks it
    # after the certificate is proven to chain to the trusted CA.
    identity, issuer = certificate_identity(bundle.signing_certificate)
    sans = set(_san_values(bundle.signing_certificate))
    allowed = [(ident, iss) for ident, iss in trust.identities if ident in sans and iss == issuer]
    if not allowed:
        raise _verification_failed(
            f"signer {identity or '<none>'} (issuer {issuer or '<none>'}) is not allowed; allowed: {trust.describe()}",
            expected=trust.describe(),
            actual=f"{identity} (issuer {issuer})",
        )
    identity_policy = policy.AnyOf([policy.Identity(identity=ident, issuer=iss) for ident, iss in trust.identities])
    try:
        payload_type, payload = Verifier(trusted_root=trust.trusted_root).verify_dsse(bundle, identity_policy)
    except (SigstoreVerificationError, SigstoreError, ValueError) as exc:
        raise _verification_failed(f"Sigstore bundle does not verify: {_short(exc)}") from None
    return payload_type, payload, SignerIdentity(kind="sigstore", identity=allowed[0][0], issuer=issuer)


# ---------------------------------------------------------------- the signer
class SigstoreSigner:
    """Keyless signer: one Fulcio certificate and one Rekor entry per signature."""

    kind = "sigstore"

    def __init__(self, trust_config_json: str, token_provider: Callable[[], str]) -> None:
        self._trust_config_json = trust_config_json
        self._token_provider = token_provider
        config = _parse_trust_config(trust_config_json)
        try:
            self._context = SigningContext.from_trust_config(config)
        except (SigstoreError, ValueError) as exc:
            raise ConfigurationError(f"Sigstore signing config is unusable: {_short(exc)}") from None

    def __repr__(self) -> str:
        return "SigstoreSigner()"

    def sign(self, claim: ToolVersionClaim) -> str:
        statement = (
            StatementBuilder()
            .subjects([Subject(name=claim.image_name, digest=DigestSet({"sha256": claim.image_digest_hex}))])
            .predicate_type(PREDICATE_TYPE)
            .predicate(claim.predicate())
            .build()
        )
        try:
            token = IdentityToken(self._token_provider())
        except SigstoreError as exc:
            raise UpstreamError(f"Sigstore signing identity token was refused: {_short(exc)}") from None
        try:
            with self._context.signer(token, cache=True) as signer:
                bundle = signer.sign_dsse(statement)
        except Exception as exc:  # noqa: BLE001 - see below
            # sigstore-python's Fulcio and Rekor client errors are not part of its public API (they
            # derive from Exception only), so any failure of this call -- sigstore.errors.Error,
            # ExpiredIdentity, the private client errors, requests' -- is the signing service's.
            # Messages come from Fulcio/Rekor/requests: never the token, which travels in a header.
            _logger.warning("sigstore signing failed: %s", type(exc).__name__)
            raise UpstreamError(f"Sigstore signing failed ({type(exc).__name__}): {_short(exc)}") from None
        return bundle.to_json()

    def trust_material(self) -> dict[str, Any]:
        return {"kind": "sigstore", "trustConfig": json.loads(self._trust_config_json)}
