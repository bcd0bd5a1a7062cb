"""The signed claim, its statement, and the statement checks shared by both backends.

Bundles here are key-mode bundles built by hand with a test key, so each statement defect
is signed validly and only the statement checks can catch it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from helixgate.errors import BadRequest, VerificationError
from helixgate.signing import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    KeyTrustPolicy,
    ToolVersionClaim,
    verify_publisher_bundle,
    verify_tool_bundle,
)
from helixgate.signing.base import pae
from helixgate.signing.keysigner import _public_pem, key_id_of
from helixgate.signing.statement import PREDICATE_TYPE_V1, canonical_json

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
CONFIG = "sha256:" + "c0" * 32


def make_claim(**overrides: Any) -> ToolVersionClaim:
    fields: dict[str, Any] = {
        "tool_id": "bwa",
        "version_id": "0.7.17",
        "image_name": "127.0.0.1:5000/tools/bwa",
        "image_digest": DIGEST,
        "digest_kind": "manifest",
        "descriptor_checksums": {"bwa.cwl": "11" * 32, "lib/common.yml": "22" * 32},
        "publisher": "alice",
        "config_digest": CONFIG,
    }
    fields.update(overrides)
    return ToolVersionClaim(**fields)


class HandSigner:
    """Signs arbitrary payloads into key-mode bundles, like KeySigner but without the checks."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = key_id_of(self.key.public_key())

    def policy(self) -> KeyTrustPolicy:
        return KeyTrustPolicy(public_keys={self.key_id: _public_pem(self.key.public_key())})

    def bundle(self, payload: bytes, payload_type: str = PAYLOAD_TYPE) -> str:
        sig = self.key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "verificationMaterial": {"publicKey": {"hint": self.key_id}, "tlogEntries": []},
                "dsseEnvelope": {
                    "payload": base64.b64encode(payload).decode(),
                    "payloadType": payload_type,
                    "signatures": [{"sig": base64.b64encode(sig).decode()}],
                },
            }
        )

    def statement_bundle(self, statement: dict[str, Any]) -> str:
        return self.bundle(json.dumps(statement).encode())


@pytest.fixture()
def signer() -> HandSigner:
    return HandSigner()


def verify(signer: HandSigner, bundle: str, **overrides: str) -> Any:
    args = {"expected_digest": DIGEST, "tool_id": "bwa", "version_id": "0.7.17"}
    args.update(overrides)
    return verify_tool_bundle(bundle, policy=signer.policy(), **args)


# ---------------------------------------------------------------- the claim
def test_claim_normalises_digests_and_orders_checksums() -> None:
    claim = make_claim(
        image_digest="AB" * 32, descriptor_checksums={"z.cwl": "sha256:" + "EE" * 32, "a.cwl": "ff" * 32}
    )
    assert claim.image_digest == DIGEST
    assert list(claim.descriptor_checksums) == ["a.cwl", "z.cwl"]
    assert claim.descriptor_checksums["z.cwl"] == "ee" * 32


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"image_digest": "sha256:1234"}, "not a SHA-256"),
        ({"digest_kind": "tag"}, "digest_kind"),
        ({"tool_id": ""}, "tool_id"),
        ({"descriptor_checksums": {"/etc/passwd": "11" * 32}}, "relative"),
        ({"descriptor_checksums": {"a.cwl": "nothex"}}, "not a SHA-256"),
    ],
)
def test_claim_rejects_invalid_fields(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        make_claim(**overrides)


def test_statement_shape_and_determinism() -> None:
    claim = make_claim()
    statement = json.loads(claim.statement_bytes())
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [{"name": claim.image_name, "digest": {"sha256": "ab" * 32}}]
    assert statement["predicate"] == {
        "toolId": "bwa",
        "versionId": "0.7.17",
        "digestKind": "manifest",
        "descriptorChecksums": {"bwa.cwl": "11" * 32, "lib/common.yml": "22" * 32},
        "publisher": "alice",
        "imageConfigDigest": CONFIG,
    }
    assert make_claim().statement_bytes() == claim.statement_bytes()


def test_legacy_v1_statement_verifies_without_a_config_digest(signer: HandSigner) -> None:
    legacy = make_claim(config_digest="")
    statement = json.loads(legacy.statement_bytes())
    assert statement["predicateType"] == PREDICATE_TYPE_V1
    assert "imageConfigDigest" not in statement["predicate"]
    assert verify(signer, signer.bundle(legacy.statement_bytes())).claim.config_digest == ""
    # a v1 payload never signed a config digest: one smuggled into it is not part of the claim
    statement["predicate"]["imageConfigDigest"] = "sha256:" + "ee" * 32
    assert verify(signer, signer.bundle(canonical_json(statement))).claim.config_digest == ""


def test_image_id_claim_signs_its_subject_as_config_digest() -> None:
    claim = make_claim(digest_kind="image-id", config_digest="")
    assert claim.config_digest == DIGEST
    assert json.loads(claim.statement_bytes())["predicateType"] == PREDICATE_TYPE


def test_v2_statement_without_config_digest_is_refused(signer: HandSigner) -> None:
    statement = json.loads(make_claim().statement_bytes())
    del statement["predicate"]["imageConfigDigest"]
    with pytest.raises(VerificationError, match="imageConfigDigest"):
        verify(signer, signer.bundle(canonical_json(statement)))


def test_descriptor_path_with_traversal_is_refused_in_a_claim() -> None:
    with pytest.raises(BadRequest, match="leaves its directory"):
        make_claim(descriptor_checksums={"../evil.cwl": "11" * 32})


# ---------------------------------------------------------------- statement checks
def test_valid_statement_returns_claim(signer: HandSigner) -> None:
    claim = make_claim(digest_kind="image-id")
    result = verify(signer, signer.bundle(claim.statement_bytes()))
    assert result.claim == claim
    assert result.subject_digest == DIGEST
    assert result.signer.key_id == signer.key_id
    assert str(result.signer) == f"registry key {signer.key_id}"


def test_wrong_payload_type(signer: HandSigner) -> None:
    bundle = signer.bundle(make_claim().statement_bytes(), payload_type="application/json")
    with pytest.raises(VerificationError, match="payload type is 'application/json', expected") as err:
        verify(signer, bundle)
    assert err.value.expected == PAYLOAD_TYPE


def test_payload_not_json(signer: HandSigner) -> None:
    with pytest.raises(VerificationError, match="not a JSON document"):
        verify(signer, signer.bundle(b"\xff\x00 not json"))


def test_wrong_statement_type(signer: HandSigner) -> None:
    statement = make_claim().statement()
    statement["_type"] = "https://in-toto.io/Statement/v0.1"
    with pytest.raises(VerificationError, match="_type is 'https://in-toto.io/Statement/v0.1'"):
        verify(signer, signer.statement_bundle(statement))


def test_wrong_predicate_type(signer: HandSigner) -> None:
    statement = make_claim().statement()
    statement["predicateType"] = "https://slsa.dev/provenance/v1"
    with pytest.raises(VerificationError, match="predicateType is 'https://slsa.dev/provenance/v1', expected") as err:
        verify(signer, signer.statement_bundle(statement))
    assert err.value.expected == PREDICATE_TYPE
    assert err.value.actual == "https://slsa.dev/provenance/v1"


def test_two_subjects_are_refused_even_if_one_matches(signer: HandSigner) -> None:
    statement = make_claim().statement()
    statement["subject"].append({"name": "other", "digest": {"sha256": "cd" * 32}})
    with pytest.raises(VerificationError, match="exactly one subject, it has 2"):
        verify(signer, signer.statement_bundle(statement))


def test_no_subject(signer: HandSigner) -> None:
    statement = make_claim().statement()
    statement["subject"] = []
    with pytest.raises(VerificationError, match="no valid subject"):
        verify(signer, signer.statement_bundle(statement))


def test_wrong_digest_names_both(signer: HandSigner) -> None:
    bundle = signer.bundle(make_claim().statement_bytes())
    with pytest.raises(VerificationError) as err:
        verify(signer, bundle, expected_digest=OTHER_DIGEST)
    assert err.value.message == f"signed image digest does not match: expected {OTHER_DIGEST}, got {DIGEST}"
    assert (err.value.expected, err.value.actual) == (OTHER_DIGEST, DIGEST)
    assert err.value.status == 422


def test_subject_without_sha256(signer: HandSigner) -> None:
    statement = make_claim().statement()
    statement["subject"][0]["digest"] = {"sha512": "00" * 64}
    with pytest.raises(VerificationError, match="got <no sha256 digest>"):
        verify(signer, signer.statement_bundle(statement))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tool_id": "samtools"}, "signed toolId does not match: expected 'samtools', got 'bwa'"),
        ({"version_id": "0.7.18"}, "signed versionId does not match: expected '0.7.18', got '0.7.17'"),
    ],
)
def test_wrong_tool_or_version(signer: HandSigner, overrides: dict[str, str], message: str) -> None:
    bundle = signer.bundle(make_claim().statement_bytes())
    with pytest.raises(VerificationError) as err:
        verify(signer, bundle, **overrides)
    assert err.value.message == message


def test_malformed_predicate(signer: HandSigner) -> None:
    statement = make_claim().statement()
    statement["predicate"]["digestKind"] = "tag"
    with pytest.raises(VerificationError, match="predicate is malformed"):
        verify(signer, signer.statement_bundle(statement))


def test_invalid_expected_digest_fails_closed(signer: HandSigner) -> None:
    with pytest.raises(VerificationError, match="expected image digest is not a sha256 digest"):
        verify(signer, signer.bundle(make_claim().statement_bytes()), expected_digest="latest")


# ---------------------------------------------------------------- publisher statements
def test_publisher_bundle_any_subject_and_foreign_predicate(signer: HandSigner) -> None:
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": "other", "digest": {"sha256": "cd" * 32}},
            {"name": "bwa", "digest": {"sha256": "ab" * 32}},
        ],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {}},
    }
    bundle = signer.statement_bundle(statement)
    result = verify_publisher_bundle(bundle, policy=signer.policy(), expected_digest=DIGEST)
    assert result.predicate_type == "https://slsa.dev/provenance/v1"
    assert result.subject_digest == DIGEST
    with pytest.raises(VerificationError, match="expected sha256:" + "ef" * 32):
        verify_publisher_bundle(bundle, policy=signer.policy(), expected_digest="ef" * 32)
    with pytest.raises(VerificationError, match="publisher statement predicateType"):
        verify_publisher_bundle(
            bundle, policy=signer.policy(), expected_digest=DIGEST, predicate_type="https://example.org/other"
        )
