"""The one verification entry point, used by the registry and by WES before every task.

Order: the bundle is checked cryptographically under the trust policy (registry key, or
Sigstore certificate chain + transparency log + identity), then the signed statement is
checked field by field. Any failure raises ``VerificationError`` with expected vs actual.
"""

from __future__ import annotations

from helixgate.errors import BadRequest, VerificationError
from helixgate.integrity import normalize_sha256
from helixgate.signing.base import SignerIdentity, VerifiedAttestation, VerifiedStatement
from helixgate.signing.keysigner import KeyTrustPolicy, verify_key_bundle
from helixgate.signing.sigstore_backend import SigstoreTrustPolicy, verify_sigstore_bundle
from helixgate.signing.statement import check_subject_digest, check_tool_statement, parse_statement, subject_sha256

TrustPolicy = KeyTrustPolicy | SigstoreTrustPolicy


def _verify_signature(bundle_json: str | bytes, policy: TrustPolicy) -> tuple[str, bytes, SignerIdentity]:
    if isinstance(policy, KeyTrustPolicy):
        return verify_key_bundle(bundle_json, policy)
    if isinstance(policy, SigstoreTrustPolicy):
        return verify_sigstore_bundle(bundle_json, policy)
    raise TypeError(f"unsupported trust policy {type(policy).__name__}")


def _expected_digest(expected_digest: str) -> str:
    try:
        return "sha256:" + normalize_sha256(expected_digest)
    except BadRequest:
        # The caller's pinned digest is ours, not the bundle's: still fail closed, as verification.
        raise VerificationError(
            f"expected image digest is not a sha256 digest: {expected_digest[:80]!r}", subject="tool signature"
        ) from None


def verify_tool_bundle(
    bundle_json: str | bytes,
    *,
    policy: TrustPolicy,
    expected_digest: str | None,
    tool_id: str,
    version_id: str,
) -> VerifiedStatement:
    """Verify a HelixGate tool-version bundle for exactly this image digest, tool and version.

    ``expected_digest`` None: the image is whatever the (single) signed subject names; the
    caller then takes every fact about the image from the returned claim.
    Raises ``VerificationError`` (a security event for the caller to audit) on any mismatch.
    """
    payload_type, payload, signer = _verify_signature(bundle_json, policy)
    statement = parse_statement(payload_type, payload)
    if expected_digest is None:
        subjects = statement["subject"]
        hex_ = subject_sha256(subjects[0]) if len(subjects) == 1 else None
        if hex_ is None:
            raise VerificationError(
                "signed statement must name exactly one image subject with a sha256 digest",
                subject="tool signature",
                expected="1 subject with a sha256 digest",
                actual=f"{len(subjects)} subjects",
            )
        expected_digest = "sha256:" + hex_
    expected = _expected_digest(expected_digest)
    claim = check_tool_statement(statement, expected_digest=expected, tool_id=tool_id, version_id=version_id)
    return VerifiedStatement(
        signer=signer,
        predicate_type=str(statement["predicateType"]),
        subject_digest=expected,
        statement=statement,
        claim=claim,
    )


def verify_publisher_bundle(
    bundle_json: str | bytes,
    *,
    policy: TrustPolicy,
    expected_digest: str,
    predicate_type: str | None = None,
) -> VerifiedAttestation:
    """Verify a publisher's own bundle (a DSSE in-toto statement, e.g. from ``cosign attest``).

    Used when a tool's policy requires its publisher's signature: the signer must be one of
    the policy's identities and one subject must carry ``expected_digest``. The predicate is
    the publisher's, so only its type is checked, and only when ``predicate_type`` is given.
    """
    expected = _expected_digest(expected_digest)
    payload_type, payload, signer = _verify_signature(bundle_json, policy)
    statement = parse_statement(payload_type, payload)
    actual_type = statement.get("predicateType")
    if predicate_type is not None and actual_type != predicate_type:
        raise VerificationError(
            f"publisher statement predicateType is {str(actual_type)[:120]!r}, expected {predicate_type!r}",
            subject="publisher signature",
            expected=predicate_type,
            actual=str(actual_type)[:120],
        )
    check_subject_digest(statement, expected, only_one=False)
    return VerifiedAttestation(
        signer=signer, predicate_type=str(actual_type), subject_digest=expected, statement=statement
    )
