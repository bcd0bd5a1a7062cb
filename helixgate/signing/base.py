"""The signer interface and the results of verification, shared by both backends."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from helixgate.signing.statement import ToolVersionClaim

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
MAX_BUNDLE_BYTES = 4 * 1024 * 1024


@runtime_checkable
class Signer(Protocol):
    """A signing backend: ``"key"`` (registry-held ECDSA key) or ``"sigstore"`` (keyless)."""

    kind: str

    def sign(self, claim: ToolVersionClaim) -> str:
        """Sign the claim's in-toto statement; return the Sigstore bundle (v0.3) as JSON text."""
        ...

    def trust_material(self) -> dict[str, Any]:
        """JSON-able material a verifier needs (public keys, or the Sigstore trust config)."""
        ...


@dataclass(frozen=True)
class SignerIdentity:
    """Who signed: a registry key id (``key``) or a certificate identity and issuer (``sigstore``)."""

    kind: str
    key_id: str | None = None
    identity: str | None = None
    issuer: str | None = None

    def __str__(self) -> str:
        if self.kind == "key":
            return f"registry key {self.key_id}"
        return f"{self.identity} (issuer {self.issuer})"


@dataclass(frozen=True)
class VerifiedAttestation:
    """A bundle whose signature verified and whose statement names the expected image digest."""

    signer: SignerIdentity
    predicate_type: str
    subject_digest: str  # "sha256:<hex>"
    statement: Mapping[str, Any]


@dataclass(frozen=True)
class VerifiedStatement(VerifiedAttestation):
    """A verified HelixGate tool-version statement; ``claim`` holds its checked fields."""

    claim: ToolVersionClaim


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature actually covers."""
    type_bytes = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
