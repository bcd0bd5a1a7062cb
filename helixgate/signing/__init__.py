"""Signing and verification of published tool versions (ARCHITECTURE.md section 2).

Two backends behind ``Signer``: ``KeySigner`` (registry-held ECDSA P-256 key, the embedded
default) and ``SigstoreSigner`` (keyless). One entry point verifies both:
``verify_tool_bundle`` (registry statements) and ``verify_publisher_bundle`` (a publisher's
own Sigstore bundle). ``build_signer`` picks the backend from ``Settings``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from helixgate.config import Settings
from helixgate.errors import ConfigurationError
from helixgate.signing.base import Signer, SignerIdentity, VerifiedAttestation, VerifiedStatement
from helixgate.signing.keysigner import PASSPHRASE_ENV, KeySigner, KeyTrustPolicy
from helixgate.signing.sigstore_backend import SigstoreSigner, SigstoreTrustPolicy, load_trust_config
from helixgate.signing.statement import DIGEST_KINDS, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, ToolVersionClaim
from helixgate.signing.verify import TrustPolicy, verify_publisher_bundle, verify_tool_bundle

__all__ = [
    "DIGEST_KINDS",
    "PASSPHRASE_ENV",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "KeySigner",
    "KeyTrustPolicy",
    "Signer",
    "SignerIdentity",
    "SigstoreSigner",
    "SigstoreTrustPolicy",
    "ToolVersionClaim",
    "TrustPolicy",
    "VerifiedAttestation",
    "VerifiedStatement",
    "build_signer",
    "build_trust_policy",
    "load_trust_config",
    "verify_publisher_bundle",
    "verify_tool_bundle",
]


def build_signer(settings: Settings, token_provider: Callable[[], str] | None = None) -> Signer:
    """The signer chosen by ``settings.signer``: keys under ``<data_dir>/signing``, or Sigstore.

    ``token_provider`` returns the registry's OIDC identity token (audience ``sigstore``);
    it is required for the ``sigstore`` backend.
    """
    if settings.signer == "key":
        return KeySigner(settings.data_dir / "signing")
    if settings.signer == "sigstore":
        if token_provider is None:
            raise ConfigurationError("signer 'sigstore' (HELIXGATE_SIGNER) needs an OIDC identity token provider")
        return SigstoreSigner(load_trust_config(settings.sigstore_trust_config), token_provider)
    raise ConfigurationError(f"unknown signer {settings.signer!r} (HELIXGATE_SIGNER): expected 'key' or 'sigstore'")


def build_trust_policy(settings: Settings, key_material: Mapping[str, Any] | None = None) -> TrustPolicy:
    """The policy that verifies the registry's own bundles under ``settings``.

    ``key`` backend: ``key_material`` is the registry's published ``trust_material()``.
    ``sigstore`` backend: the trust config plus the registry's identity and OIDC issuer settings.
    """
    if settings.signer == "key":
        if key_material is None:
            raise ConfigurationError("signer 'key' needs the registry's published signing keys to verify")
        return KeyTrustPolicy.from_trust_material(key_material)
    if not settings.sigstore_identity or not settings.sigstore_oidc_issuer:
        raise ConfigurationError(
            "signer 'sigstore' needs HELIXGATE_SIGSTORE_IDENTITY and HELIXGATE_SIGSTORE_OIDC_ISSUER to verify"
        )
    return SigstoreTrustPolicy(
        trust_config_json=load_trust_config(settings.sigstore_trust_config),
        identities=((settings.sigstore_identity, settings.sigstore_oidc_issuer),),
    )
