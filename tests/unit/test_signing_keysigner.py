"""The ``key`` backend: key generation, encryption at rest, rotation, revocation, bundle checks."""

from __future__ import annotations

import base64
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sigstore_models.bundle.v1 import Bundle as BundleModel

from helixgate.config import Settings
from helixgate.errors import ConfigurationError, NotFound, VerificationError
from helixgate.signing import (
    PASSPHRASE_ENV,
    KeySigner,
    KeyTrustPolicy,
    Signer,
    TrustPolicy,
    build_signer,
    build_trust_policy,
    verify_tool_bundle,
)
from tests.unit.test_signing_statement import DIGEST, HandSigner, make_claim

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(autouse=True)
def _no_env_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def verify(bundle: str, policy: TrustPolicy, **overrides: str) -> Any:
    args = {"expected_digest": DIGEST, "tool_id": "bwa", "version_id": "0.7.17"}
    args.update(overrides)
    return verify_tool_bundle(bundle, policy=policy, **args)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- generation and storage
def test_first_start_generates_encrypted_key_with_private_permissions(tmp_path: Path) -> None:
    key_dir = tmp_path / "signing"
    signer = KeySigner(key_dir)
    assert isinstance(signer, Signer)
    key_id = signer.active_key_id
    key_file = key_dir / f"{key_id}.key.json"
    assert mode(key_dir) == 0o700
    assert mode(key_file) == 0o600
    assert mode(key_dir / "passphrase") == 0o600
    text = key_file.read_text()
    assert "BEGIN" not in text and "PRIVATE KEY" not in text
    sealed = json.loads(text)
    assert sealed["cipher"] == "AES-256-GCM" and sealed["kdf"]["name"] == "scrypt"

    # The plaintext key material appears nowhere in the file, raw or base64.
    private = KeySigner(key_dir)._load_private(key_id)
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    raw = key_file.read_bytes()
    for secret in (der, scalar):
        assert secret not in raw
        assert base64.b64encode(secret) not in raw
    assert base64.b64encode(scalar)[:20] not in raw


def test_restart_keeps_the_same_key_and_bundles_verify(tmp_path: Path) -> None:
    first = KeySigner(tmp_path, passphrase=PASSPHRASE)
    bundle = first.sign(make_claim())
    second = KeySigner(tmp_path, passphrase=PASSPHRASE)
    assert second.active_key_id == first.active_key_id
    assert verify(bundle, second.policy()).signer.key_id == first.active_key_id
    assert not (tmp_path / "passphrase").exists()  # an explicit passphrase is never written down


def test_wrong_passphrase_fails_clearly_without_leaking_it(tmp_path: Path) -> None:
    KeySigner(tmp_path, passphrase=PASSPHRASE)
    with pytest.raises(ConfigurationError, match="cannot decrypt signing key .* wrong passphrase") as err:
        KeySigner(tmp_path, passphrase=b"not the passphrase")
    assert "not the passphrase" not in str(err.value)
    assert PASSPHRASE.decode() not in str(err.value)


def test_environment_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "from-the-secret-store")
    signer = KeySigner(tmp_path)
    assert not (tmp_path / "passphrase").exists()
    monkeypatch.setenv(PASSPHRASE_ENV, "something else")
    with pytest.raises(ConfigurationError, match=f"wrong passphrase \\({PASSPHRASE_ENV}\\)"):
        KeySigner(tmp_path)
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ConfigurationError, match="no passphrase is available"):
        KeySigner(tmp_path)
    monkeypatch.setenv(PASSPHRASE_ENV, "from-the-secret-store")
    assert KeySigner(tmp_path).active_key_id == signer.active_key_id


def test_passphrase_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    KeySigner(tmp_path)
    (tmp_path / "passphrase").chmod(0o644)
    with pytest.raises(ConfigurationError, match="must not be readable by group or others"):
        KeySigner(tmp_path)


def test_altered_key_file_is_detected(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    path = tmp_path / f"{signer.active_key_id}.key.json"
    sealed = json.loads(path.read_text())
    ciphertext = bytearray(base64.b64decode(sealed["ciphertext"]))
    ciphertext[5] ^= 0x01
    sealed["ciphertext"] = base64.b64encode(bytes(ciphertext)).decode()
    path.write_text(json.dumps(sealed))
    with pytest.raises(ConfigurationError, match="wrong passphrase .* or altered key file"):
        KeySigner(tmp_path, passphrase=PASSPHRASE)


def test_repr_holds_no_secret(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    assert PASSPHRASE.decode() not in repr(signer)
    generated = KeySigner(tmp_path / "generated")
    assert (tmp_path / "generated" / "passphrase").read_text().strip() not in repr(generated)


def test_concurrent_first_start_agrees_on_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(lambda _: KeySigner(tmp_path / "shared").active_key_id, range(4)))
    assert len(set(ids)) == 1
    assert len(json.loads((tmp_path / "shared" / "keys.json").read_text())["keys"]) == 1


# ---------------------------------------------------------------- bundle format
def test_bundle_is_cosign_key_mode_shape(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    claim = make_claim()
    bundle_json = signer.sign(claim)
    raw = json.loads(bundle_json)
    assert raw["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert raw["verificationMaterial"] == {"publicKey": {"hint": signer.active_key_id}, "tlogEntries": []}
    assert raw["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(raw["dsseEnvelope"]["payload"]) == claim.statement_bytes()
    assert len(raw["dsseEnvelope"]["signatures"]) == 1
    BundleModel.from_json(bundle_json)  # valid for the Sigstore protobuf-specs models


def test_trust_material_round_trips_to_policy(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    material = json.loads(json.dumps(signer.trust_material()))  # JSON-able, as the registry publishes it
    assert material["kind"] == "key" and material["activeKeyId"] == signer.active_key_id
    assert material["keys"][0]["publicKey"].startswith("-----BEGIN PUBLIC KEY-----")
    policy = KeyTrustPolicy.from_trust_material(material)
    assert verify(signer.sign(make_claim()), policy).claim == make_claim()


def test_policy_rejects_key_id_that_does_not_name_its_key(tmp_path: Path) -> None:
    a, b = HandSigner(), HandSigner()
    pem_b = b.policy().public_keys[b.key_id]
    with pytest.raises(ConfigurationError, match="does not match its public key"):
        KeyTrustPolicy(public_keys={a.key_id: pem_b})


# ---------------------------------------------------------------- negative verification
def _tamper(bundle: str, fn: Any) -> str:
    raw = json.loads(bundle)
    fn(raw)
    return json.dumps(raw)


def test_tampered_payload_fails_signature(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    bundle = signer.sign(make_claim())
    forged = make_claim(image_digest="sha256:" + "ee" * 32).statement_bytes()

    def swap(raw: dict[str, Any]) -> None:
        raw["dsseEnvelope"]["payload"] = base64.b64encode(forged).decode()

    with pytest.raises(VerificationError, match="DSSE signature does not verify with registry key"):
        verify(_tamper(bundle, swap), signer.policy(), expected_digest="sha256:" + "ee" * 32)


def test_tampered_payload_type_fails_signature(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)

    def retype(raw: dict[str, Any]) -> None:
        raw["dsseEnvelope"]["payloadType"] = "application/json"

    with pytest.raises(VerificationError, match="DSSE signature does not verify"):
        verify(_tamper(signer.sign(make_claim()), retype), signer.policy())


def test_bundle_from_another_key(tmp_path: Path) -> None:
    ours = KeySigner(tmp_path / "ours", passphrase=PASSPHRASE)
    theirs = KeySigner(tmp_path / "theirs", passphrase=PASSPHRASE)
    bundle = theirs.sign(make_claim())
    with pytest.raises(VerificationError, match="signed by unknown key") as err:
        verify(bundle, ours.policy())
    assert err.value.actual == theirs.active_key_id

    # Claiming a trusted key id does not help: the signature is checked with that key.
    def claim_ours(raw: dict[str, Any]) -> None:
        raw["verificationMaterial"]["publicKey"]["hint"] = ours.active_key_id

    with pytest.raises(VerificationError, match="DSSE signature does not verify"):
        verify(_tamper(bundle, claim_ours), ours.policy())


def test_malformed_bundles(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    policy = signer.policy()
    bundle = signer.sign(make_claim())
    with pytest.raises(VerificationError, match="not a valid Sigstore bundle"):
        verify("{not json", policy)
    with pytest.raises(VerificationError, match="not a valid Sigstore bundle"):
        verify(_tamper(bundle, lambda raw: raw.pop("dsseEnvelope")), policy)
    with pytest.raises(VerificationError, match="media type"):
        verify(
            _tamper(bundle, lambda raw: raw.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.1")),
            policy,
        )
    with pytest.raises(VerificationError, match="exactly one signature, it has 2"):
        verify(
            _tamper(bundle, lambda raw: raw["dsseEnvelope"]["signatures"].append(raw["dsseEnvelope"]["signatures"][0])),
            policy,
        )
    with pytest.raises(VerificationError, match="larger than"):
        verify(" " * (5 * 1024 * 1024), policy)


# ---------------------------------------------------------------- rotation and revocation
def test_rotation_keeps_old_bundles_verifiable(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    old_id = signer.active_key_id
    old_bundle = signer.sign(make_claim())
    new_id = signer.rotate()
    assert new_id != old_id and signer.active_key_id == new_id
    new_bundle = signer.sign(make_claim())
    policy = signer.policy()
    assert verify(old_bundle, policy).signer.key_id == old_id
    assert verify(new_bundle, policy).signer.key_id == new_id
    assert not (tmp_path / f"{old_id}.key.json").exists()  # retired private keys are not kept
    assert [k["keyId"] for k in signer.trust_material()["keys"]] == [old_id, new_id]
    # Another process sharing the directory sees the rotation.
    assert KeySigner(tmp_path, passphrase=PASSPHRASE).active_key_id == new_id


def test_revocation_makes_that_keys_bundles_fail(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    old_id = signer.active_key_id
    old_bundle = signer.sign(make_claim())
    signer.rotate()
    new_bundle = signer.sign(make_claim())
    signer.revoke(old_id)
    policy = signer.policy()
    assert policy.revoked == frozenset({old_id})
    with pytest.raises(VerificationError, match=f"signed by revoked registry key {old_id}"):
        verify(old_bundle, policy)
    assert verify(new_bundle, policy).signer.key_id == signer.active_key_id
    signer.revoke(old_id)  # idempotent
    assert KeyTrustPolicy.from_trust_material(signer.trust_material()).revoked == frozenset({old_id})


def test_revoking_the_active_key_rotates_first(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    revoked = signer.active_key_id
    bundle = signer.sign(make_claim())
    signer.revoke(revoked)
    assert signer.active_key_id != revoked
    with pytest.raises(VerificationError, match="revoked"):
        verify(bundle, signer.policy())
    assert verify(signer.sign(make_claim()), signer.policy()).signer.key_id == signer.active_key_id


def test_revoking_unknown_key(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path, passphrase=PASSPHRASE)
    with pytest.raises(NotFound, match="unknown signing key"):
        signer.revoke("00" * 32)


# ---------------------------------------------------------------- wiring from settings
def test_build_signer_and_policy_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, signer="key")
    signer = build_signer(settings)
    assert isinstance(signer, KeySigner) and signer.kind == "key"
    assert (tmp_path / "signing" / "keys.json").exists()
    policy = build_trust_policy(settings, signer.trust_material())
    assert verify(signer.sign(make_claim()), policy).claim.publisher == "alice"
    with pytest.raises(ConfigurationError, match="published signing keys"):
        build_trust_policy(settings)
    with pytest.raises(ConfigurationError, match="token provider"):
        build_signer(Settings(data_dir=tmp_path, signer="sigstore"))
