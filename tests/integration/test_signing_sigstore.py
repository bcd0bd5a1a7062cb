"""The ``sigstore`` backend through sigstore-python's real signing and verification code.

Fulcio, the CT log, Rekor v1 and the OIDC issuer are the in-process fake from
``tests.fixtures.fake_sigstore`` (run with ``-p tests.fixtures.fake_sigstore``): real HTTP
on 127.0.0.1, real certificates, SCTs, SETs, inclusion proofs and checkpoints.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sigstore.dsse import DigestSet, StatementBuilder, Subject
from sigstore.models import ClientTrustConfig
from sigstore.oidc import IdentityToken
from sigstore.sign import SigningContext

from helixgate.config import Settings
from helixgate.errors import ConfigurationError, UpstreamError, VerificationError
from helixgate.signing import (
    PREDICATE_TYPE,
    KeySigner,
    Signer,
    SigstoreSigner,
    SigstoreTrustPolicy,
    TrustPolicy,
    build_signer,
    build_trust_policy,
    load_trust_config,
    verify_publisher_bundle,
    verify_tool_bundle,
)
from tests.fixtures.fake_sigstore import FakeSigstore
from tests.unit.test_signing_statement import DIGEST, OTHER_DIGEST, make_claim

pytestmark = pytest.mark.integration

REGISTRY = "registry@helixgate.example"
PUBLISHER = "alice@lab.example"


@pytest.fixture(scope="module")
def signer(fake_sigstore: FakeSigstore) -> SigstoreSigner:
    return SigstoreSigner(fake_sigstore.trust_config_json(), lambda: fake_sigstore.mint_token(email=REGISTRY))


@pytest.fixture(scope="module")
def policy(fake_sigstore: FakeSigstore) -> SigstoreTrustPolicy:
    return SigstoreTrustPolicy(fake_sigstore.trust_config_json(), ((REGISTRY, fake_sigstore.issuer_url),))


@pytest.fixture(scope="module")
def bundle(signer: SigstoreSigner) -> str:
    return signer.sign(make_claim())


def verify(bundle: str, policy: TrustPolicy, **overrides: str) -> Any:
    args = {"expected_digest": DIGEST, "tool_id": "bwa", "version_id": "0.7.17"}
    args.update(overrides)
    return verify_tool_bundle(bundle, policy=policy, **args)


def tamper(bundle: str, fn: Callable[[dict[str, Any]], None]) -> str:
    raw = json.loads(bundle)
    fn(raw)
    return json.dumps(raw)


def sign_statement(fake: FakeSigstore, builder: StatementBuilder, email: str = REGISTRY) -> str:
    """Sign an arbitrary statement with sigstore-python directly (for statement-check cases)."""
    context = SigningContext.from_trust_config(ClientTrustConfig.from_json(fake.trust_config_json()))
    with context.signer(IdentityToken(fake.mint_token(email=email))) as s:
        return s.sign_dsse(builder.build()).to_json()


def statement_builder(subjects: list[tuple[str, str]], predicate_type: str = PREDICATE_TYPE) -> StatementBuilder:
    return (
        StatementBuilder()
        .subjects([Subject(name=name, digest=DigestSet({"sha256": hex_})) for name, hex_ in subjects])
        .predicate_type(predicate_type)
        .predicate(make_claim().predicate())
    )


# ---------------------------------------------------------------- the happy path
def test_sign_and_verify_keyless(
    fake_sigstore: FakeSigstore, signer: SigstoreSigner, policy: SigstoreTrustPolicy
) -> None:
    assert isinstance(signer, Signer) and signer.kind == "sigstore"
    entries = fake_sigstore.entry_count
    bundle_json = signer.sign(make_claim())
    assert fake_sigstore.entry_count == entries + 1  # logged in Rekor
    raw = json.loads(bundle_json)
    assert raw["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert "certificate" in raw["verificationMaterial"]
    entry = raw["verificationMaterial"]["tlogEntries"][0]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert entry["inclusionPromise"]["signedEntryTimestamp"]
    assert entry["inclusionProof"]["checkpoint"]["envelope"]

    result = verify(bundle_json, policy)
    assert result.claim == make_claim()
    assert result.signer.kind == "sigstore"
    assert (result.signer.identity, result.signer.issuer) == (REGISTRY, fake_sigstore.issuer_url)
    assert str(result.signer) == f"{REGISTRY} (issuer {fake_sigstore.issuer_url})"


def test_any_allowed_identity_may_match(fake_sigstore: FakeSigstore, bundle: str) -> None:
    policy = SigstoreTrustPolicy(
        fake_sigstore.trust_config_json(),
        (("someone@else.example", fake_sigstore.issuer_url), (REGISTRY, fake_sigstore.issuer_url)),
    )
    assert verify(bundle, policy).signer.identity == REGISTRY


def test_trust_material_is_the_trust_config(fake_sigstore: FakeSigstore, signer: SigstoreSigner) -> None:
    material = json.loads(json.dumps(signer.trust_material()))
    assert material == {"kind": "sigstore", "trustConfig": fake_sigstore.trust_config()}


# ---------------------------------------------------------------- identity policy
def test_wrong_identity(fake_sigstore: FakeSigstore, bundle: str) -> None:
    policy = SigstoreTrustPolicy(
        fake_sigstore.trust_config_json(), (("mallory@evil.example", fake_sigstore.issuer_url),)
    )
    with pytest.raises(VerificationError) as err:
        verify(bundle, policy)
    assert err.value.message == (
        f"signer {REGISTRY} (issuer {fake_sigstore.issuer_url}) is not allowed; "
        f"allowed: mallory@evil.example (issuer {fake_sigstore.issuer_url})"
    )


def test_wrong_issuer(fake_sigstore: FakeSigstore, bundle: str) -> None:
    policy = SigstoreTrustPolicy(fake_sigstore.trust_config_json(), ((REGISTRY, "https://accounts.google.com"),))
    with pytest.raises(VerificationError, match="is not allowed; allowed: .*issuer https://accounts.google.com"):
        verify(bundle, policy)


def test_bundle_from_another_instance(
    fake_sigstore: FakeSigstore, other_fake_sigstore: FakeSigstore, policy: SigstoreTrustPolicy
) -> None:
    # Same identity, but the certificate comes from another CA (and logs): not trusted.
    foreign_signer = SigstoreSigner(
        other_fake_sigstore.trust_config_json(), lambda: other_fake_sigstore.mint_token(email=REGISTRY)
    )
    foreign = foreign_signer.sign(make_claim())
    foreign_policy = SigstoreTrustPolicy(
        fake_sigstore.trust_config_json(), ((REGISTRY, other_fake_sigstore.issuer_url),)
    )
    with pytest.raises(VerificationError, match="Sigstore bundle does not verify: .*certificate chain"):
        verify(foreign, foreign_policy)
    with pytest.raises(VerificationError, match="is not allowed"):
        verify(foreign, policy)


# ---------------------------------------------------------------- tampering
def test_tampered_payload(policy: SigstoreTrustPolicy, bundle: str) -> None:
    forged = make_claim(image_digest=OTHER_DIGEST).statement_bytes()

    def swap(raw: dict[str, Any]) -> None:
        raw["dsseEnvelope"]["payload"] = base64.b64encode(forged).decode()

    with pytest.raises(VerificationError, match="Sigstore bundle does not verify: DSSE: invalid signature"):
        verify(tamper(bundle, swap), policy, expected_digest=OTHER_DIGEST)


def test_tampered_inclusion_proof(policy: SigstoreTrustPolicy, bundle: str) -> None:
    def reroot(raw: dict[str, Any]) -> None:
        raw["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["rootHash"] = base64.b64encode(
            b"\x00" * 32
        ).decode()

    with pytest.raises(VerificationError, match="Sigstore bundle does not verify: invalid log entry"):
        verify(tamper(bundle, reroot), policy)


def test_tampered_signed_entry_timestamp(policy: SigstoreTrustPolicy, bundle: str) -> None:
    def retime(raw: dict[str, Any]) -> None:
        entry = raw["verificationMaterial"]["tlogEntries"][0]
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)

    with pytest.raises(VerificationError, match="Sigstore bundle does not verify"):
        verify(tamper(bundle, retime), policy)


def test_wrong_digest(policy: SigstoreTrustPolicy, bundle: str) -> None:
    with pytest.raises(VerificationError) as err:
        verify(bundle, policy, expected_digest=OTHER_DIGEST)
    assert err.value.message == f"signed image digest does not match: expected {OTHER_DIGEST}, got {DIGEST}"


@pytest.mark.parametrize(("field", "value"), [("tool_id", "samtools"), ("version_id", "9.9")])
def test_wrong_tool_or_version(policy: SigstoreTrustPolicy, bundle: str, field: str, value: str) -> None:
    with pytest.raises(VerificationError, match="does not match: expected '" + value):
        verify(bundle, policy, **{field: value})


def test_backend_mismatch_is_reported(tmp_path: Path, policy: SigstoreTrustPolicy, bundle: str) -> None:
    key_signer = KeySigner(tmp_path, passphrase=b"test")
    with pytest.raises(VerificationError, match="signed with a registry key but the policy expects a keyless"):
        verify(key_signer.sign(make_claim()), policy)
    with pytest.raises(VerificationError, match="carries a certificate .* policy trusts registry keys"):
        verify_tool_bundle(
            bundle, policy=key_signer.policy(), expected_digest=DIGEST, tool_id="bwa", version_id="0.7.17"
        )


# ---------------------------------------------------------------- statement checks on keyless bundles
def test_wrong_predicate_type_keyless(fake_sigstore: FakeSigstore, policy: SigstoreTrustPolicy) -> None:
    bundle = sign_statement(fake_sigstore, statement_builder([("img", "ab" * 32)], "https://slsa.dev/provenance/v1"))
    with pytest.raises(VerificationError, match="predicateType is 'https://slsa.dev/provenance/v1'"):
        verify(bundle, policy)


def test_two_subjects_keyless(fake_sigstore: FakeSigstore, policy: SigstoreTrustPolicy) -> None:
    bundle = sign_statement(fake_sigstore, statement_builder([("img", "ab" * 32), ("other", "cd" * 32)]))
    with pytest.raises(VerificationError, match="exactly one subject, it has 2"):
        verify(bundle, policy)


# ---------------------------------------------------------------- publisher bundles
def test_publisher_bundle_against_tool_identities(fake_sigstore: FakeSigstore) -> None:
    bundle = sign_statement(
        fake_sigstore,
        StatementBuilder()
        .subjects([Subject(name="127.0.0.1:5000/tools/bwa", digest=DigestSet({"sha256": "ab" * 32}))])
        .predicate_type("https://slsa.dev/provenance/v1")
        .predicate({"buildDefinition": {"buildType": "https://example.org/docker"}}),
        email=PUBLISHER,
    )
    tool_identities = SigstoreTrustPolicy(
        fake_sigstore.trust_config_json(),
        (("ci@lab.example", fake_sigstore.issuer_url), (PUBLISHER, fake_sigstore.issuer_url)),
    )
    result = verify_publisher_bundle(bundle, policy=tool_identities, expected_digest=DIGEST)
    assert result.signer.identity == PUBLISHER
    assert result.predicate_type == "https://slsa.dev/provenance/v1"
    with pytest.raises(VerificationError, match=f"expected {OTHER_DIGEST}, got {DIGEST}"):
        verify_publisher_bundle(bundle, policy=tool_identities, expected_digest=OTHER_DIGEST)
    others = SigstoreTrustPolicy(fake_sigstore.trust_config_json(), (("ci@lab.example", fake_sigstore.issuer_url),))
    with pytest.raises(VerificationError, match=f"signer {PUBLISHER} .* is not allowed"):
        verify_publisher_bundle(bundle, policy=others, expected_digest=DIGEST)


# ---------------------------------------------------------------- signing failures
def test_forged_token_is_refused_by_fulcio(fake_sigstore: FakeSigstore) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    forged = fake_sigstore.mint_token(email=REGISTRY, key=ec.generate_private_key(ec.SECP256R1()))
    signer = SigstoreSigner(fake_sigstore.trust_config_json(), lambda: forged)
    with pytest.raises(UpstreamError, match="Sigstore signing failed") as err:
        signer.sign(make_claim())
    assert forged not in err.value.message
    assert forged.split(".")[2] not in err.value.message


def test_token_for_another_audience_is_refused(fake_sigstore: FakeSigstore) -> None:
    token = fake_sigstore.mint_token(email=REGISTRY, audience="helixgate")
    signer = SigstoreSigner(fake_sigstore.trust_config_json(), lambda: token)
    with pytest.raises(UpstreamError, match="identity token was refused") as err:
        signer.sign(make_claim())
    assert token not in err.value.message


# ---------------------------------------------------------------- configuration
def test_policy_and_signer_configuration_errors(fake_sigstore: FakeSigstore) -> None:
    with pytest.raises(ConfigurationError, match="at least one allowed"):
        SigstoreTrustPolicy(fake_sigstore.trust_config_json(), ())
    with pytest.raises(ConfigurationError, match="invalid Sigstore ClientTrustConfig"):
        SigstoreTrustPolicy('{"mediaType": "nope"}', ((REGISTRY, fake_sigstore.issuer_url),))
    with pytest.raises(ConfigurationError, match="invalid Sigstore ClientTrustConfig"):
        SigstoreSigner("not json", lambda: "")


def test_settings_wiring(fake_sigstore: FakeSigstore, tmp_path: Path) -> None:
    config_file = tmp_path / "trust.json"
    config_file.write_text(fake_sigstore.trust_config_json())
    settings = Settings(
        data_dir=tmp_path,
        signer="sigstore",
        sigstore_trust_config=str(config_file),
        sigstore_identity=REGISTRY,
        sigstore_oidc_issuer=fake_sigstore.issuer_url,
    )
    signer = build_signer(settings, token_provider=lambda: fake_sigstore.mint_token(email=REGISTRY))
    assert isinstance(signer, SigstoreSigner)
    assert verify(signer.sign(make_claim()), build_trust_policy(settings)).claim == make_claim()
    with pytest.raises(ConfigurationError, match="HELIXGATE_SIGSTORE_IDENTITY"):
        build_trust_policy(settings.replace(sigstore_identity=""))


def test_public_good_trust_config_loads_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = json.loads(load_trust_config(""))
    assert config["mediaType"] == "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
    assert any("rekor.sigstore.dev" in t["baseUrl"] for t in config["trustedRoot"]["tlogs"])
    policy = SigstoreTrustPolicy(json.dumps(config), (("someone@example.org", "https://accounts.google.com"),))
    assert policy.trusted_root.get_fulcio_certs()
