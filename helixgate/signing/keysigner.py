"""The ``key`` backend: a registry-held ECDSA P-256 key, encrypted at rest, rotatable, revocable.

Layout of the key directory (created 0700):

* ``keys.json``: the public keyring, ``{"active": id, "keys": [{keyId, publicKey (PEM),
  created, revoked}]}``. Old public keys stay here after rotation so old bundles verify.
* ``<key id>.key.json``: the active private key (PKCS#8 DER) sealed with AES-256-GCM under a
  key derived with scrypt from the passphrase; the key id is bound as associated data, so a
  swapped or edited file fails to open. Only the active key has a private key file: rotation
  and revocation delete the retired one.
* ``passphrase`` (0600): generated on first start unless a passphrase is given or
  ``HELIXGATE_SIGNING_PASSPHRASE`` is set (production: inject it from a secret store and
  keep it off the data volume).

Bundles are Sigstore bundle v0.3 JSON with ``publicKey`` verification material (hint = key id)
and a DSSE envelope, the cosign key-mode shape. sigstore-python cannot verify these
(sigstore-python #1244), so ``verify_key_bundle`` does it with ``sigstore_models`` +
``cryptography``. A key id is the hex SHA-256 of the DER SubjectPublicKeyInfo, so a verifier
can check that a published id really names its key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import ValidationError
from sigstore_models.bundle.v1 import Bundle as BundleModel
from sigstore_models.bundle.v1 import VerificationMaterial
from sigstore_models.common.v1 import PublicKeyIdentifier
from sigstore_models.intoto import Envelope, Signature

from helixgate.errors import ConfigurationError, NotFound, VerificationError
from helixgate.fsutil import write_private
from helixgate.signing.base import BUNDLE_MEDIA_TYPE, MAX_BUNDLE_BYTES, SignerIdentity, b64, pae
from helixgate.signing.statement import PAYLOAD_TYPE, ToolVersionClaim

PASSPHRASE_ENV = "HELIXGATE_SIGNING_PASSPHRASE"
KEY_FILE_FORMAT = "helixgate-encrypted-key/v1"
_KEYRING = "keys.json"
_PASSPHRASE_FILE = "passphrase"
_LOCK = ".lock"
# scrypt N=2^15, r=8: ~32 MiB and tens of milliseconds, paid once per process per key.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_ACCEPTED_MEDIA_TYPES = frozenset({BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3"})


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _verification_failed(message: str, *, expected: str | None = None, actual: str | None = None) -> VerificationError:
    return VerificationError(message, subject="tool signature", expected=expected, actual=actual)


# ---------------------------------------------------------------- trust policy
@dataclass(frozen=True)
class KeyTrustPolicy:
    """Registry public keys a verifier trusts (key id -> PEM), minus the revoked ids."""

    public_keys: Mapping[str, str]
    revoked: frozenset[str] = frozenset()
    _loaded: Mapping[str, ec.EllipticCurvePublicKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        loaded: dict[str, ec.EllipticCurvePublicKey] = {}
        for key_id, pem in self.public_keys.items():
            try:
                key = serialization.load_pem_public_key(pem.encode())
            except ValueError:
                raise ConfigurationError(f"trusted signing key {key_id} is not a PEM public key") from None
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ConfigurationError(f"trusted signing key {key_id} is not an ECDSA P-256 key")
            if key_id_of(key) != key_id:
                raise ConfigurationError(
                    f"trusted signing key id {key_id} does not match its public key ({key_id_of(key)})"
                )
            loaded[key_id] = key
        object.__setattr__(self, "public_keys", types.MappingProxyType(dict(self.public_keys)))
        object.__setattr__(self, "revoked", frozenset(self.revoked))
        object.__setattr__(self, "_loaded", types.MappingProxyType(loaded))

    @classmethod
    def from_trust_material(cls, material: Mapping[str, Any]) -> KeyTrustPolicy:
        """Build the policy from ``KeySigner.trust_material()`` (what the registry publishes)."""
        if material.get("kind") != "key" or not isinstance(material.get("keys"), list):
            raise ConfigurationError("signing trust material is not a registry keyring (kind 'key' with keys)")
        public: dict[str, str] = {}
        revoked: set[str] = set()
        for entry in material["keys"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("keyId"), str):
                raise ConfigurationError("signing trust material holds a malformed key entry")
            public[entry["keyId"]] = str(entry.get("publicKey", ""))
            if entry.get("revoked"):
                revoked.add(entry["keyId"])
        return cls(public_keys=public, revoked=frozenset(revoked))

    def key_for(self, key_id: str) -> ec.EllipticCurvePublicKey:
        key = self._loaded.get(key_id)
        if key is None:
            trusted = ", ".join(sorted(self._loaded)) or "none"
            raise _verification_failed(
                f"bundle was signed by unknown key {key_id[:80]!r}; trusted registry keys: {trusted}",
                expected=trusted,
                actual=key_id[:80],
            )
        if key_id in self.revoked:
            raise _verification_failed(f"bundle was signed by revoked registry key {key_id}", actual=key_id)
        return key


def verify_key_bundle(bundle_json: str | bytes, policy: KeyTrustPolicy) -> tuple[str, bytes, SignerIdentity]:
    """Verify a key-mode bundle's DSSE signature; return (payload type, payload, signer).

    The payload is *not* checked here: the caller must run the statement checks.
    """
    if len(bundle_json) > MAX_BUNDLE_BYTES:
        raise _verification_failed(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        bundle = BundleModel.from_json(bundle_json)
    except (ValidationError, ValueError) as exc:
        raise _verification_failed(f"bundle is not a valid Sigstore bundle: {_first_error(exc)}") from None
    if bundle.media_type not in _ACCEPTED_MEDIA_TYPES:
        raise _verification_failed(
            f"bundle media type is {bundle.media_type!r}, expected {BUNDLE_MEDIA_TYPE!r}",
            expected=BUNDLE_MEDIA_TYPE,
            actual=bundle.media_type,
        )
    material = bundle.verification_material
    if material.public_key is None:
        raise _verification_failed(
            "bundle carries a certificate (keyless signature) but the policy trusts registry keys",
            expected="publicKey verification material",
            actual="certificate",
        )
    key_id = material.public_key.hint or ""
    public_key = policy.key_for(key_id)
    envelope = bundle.dsse_envelope
    if envelope is None:
        raise _verification_failed("bundle has no DSSE envelope", expected="dsseEnvelope", actual="messageSignature")
    if len(envelope.signatures) != 1:
        raise _verification_failed(
            f"DSSE envelope must carry exactly one signature, it has {len(envelope.signatures)}",
            expected="1",
            actual=str(len(envelope.signatures)),
        )
    signature = envelope.signatures[0]
    if signature.keyid and signature.keyid != key_id:
        raise _verification_failed(
            f"DSSE signature key id {signature.keyid[:80]!r} differs from the bundle's key hint {key_id!r}",
            expected=key_id,
            actual=signature.keyid[:80],
        )
    try:
        public_key.verify(signature.sig, pae(envelope.payload_type, envelope.payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _verification_failed(
            f"DSSE signature does not verify with registry key {key_id}: payload or signature was altered"
        ) from None
    return envelope.payload_type, envelope.payload, SignerIdentity(kind="key", key_id=key_id)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid"))
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# ---------------------------------------------------------------- the signer
class KeySigner:
    """Signs tool-version claims with the registry's active key; manages the keyring on disk."""

    kind = "key"

    def __init__(self, key_dir: Path, passphrase: bytes | None = None) -> None:
        self._dir = Path(key_dir)
        self._explicit_passphrase = passphrase
        self._private: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked():
            state = self._read_state()
            if state is None:
                self._write_new_key(self._passphrase(create=True), state={"active": None, "keys": []})
                state = self._read_state()
            assert state is not None
            # Fail at start, not at first publish, on a wrong passphrase or damaged key file.
            self._load_private(state["active"])

    def __repr__(self) -> str:
        return f"KeySigner(key_dir={str(self._dir)!r})"

    # ---------------------------------------------------------------- public API
    @property
    def active_key_id(self) -> str:
        return str(self._state()["active"])

    def sign(self, claim: ToolVersionClaim) -> str:
        key_id = self.active_key_id
        private = self._load_private(key_id)
        payload = claim.statement_bytes()
        signature = private.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
        # sigstore_models' bytes fields take base64 input (protobuf JSON convention).
        bundle = BundleModel(
            media_type="application/vnd.dev.sigstore.bundle.v0.3+json",
            verification_material=VerificationMaterial(
                public_key=PublicKeyIdentifier(hint=key_id),
                tlog_entries=[],
            ),
            dsse_envelope=Envelope(
                payload=b64(payload).encode(),
                payload_type=PAYLOAD_TYPE,
                signatures=[Signature(sig=b64(signature).encode())],
            ),
        )
        return bundle.to_json()

    def trust_material(self) -> dict[str, Any]:
        state = self._state()
        return {
            "kind": "key",
            "activeKeyId": state["active"],
            "keys": [dict(entry) for entry in state["keys"]],
        }

    def policy(self) -> KeyTrustPolicy:
        return KeyTrustPolicy.from_trust_material(self.trust_material())

    def rotate(self) -> str:
        """Make a new key active; the previous public key stays trusted for verification."""
        with self._locked():
            state = self._state()
            return self._write_new_key(self._passphrase(create=False), state=state)

    def revoke(self, key_id: str) -> None:
        """Stop trusting ``key_id``: bundles it signed fail verification. Revoking the active key rotates first."""
        with self._locked():
            state = self._state()
            entry = next((k for k in state["keys"] if k["keyId"] == key_id), None)
            if entry is None:
                raise NotFound(f"unknown signing key {key_id[:80]!r}")
            if state["active"] == key_id:
                self._write_new_key(self._passphrase(create=False), state=state)
                state = self._state()
                entry = next(k for k in state["keys"] if k["keyId"] == key_id)
            if not entry.get("revoked"):
                entry["revoked"] = _now()
                self._write_json(self._dir / _KEYRING, state, mode=0o644)
            self._private.pop(key_id, None)

    # ---------------------------------------------------------------- state on disk
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Several API replicas may share one data directory: serialise generation and rotation.
        with open(self._dir / _LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any] | None:
        path = self._dir / _KEYRING
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"signing keyring {path} is unreadable: {type(exc).__name__}") from None
        if not isinstance(state, dict) or not isinstance(state.get("keys"), list) or not state.get("active"):
            raise ConfigurationError(f"signing keyring {path} is malformed")
        return state

    def _state(self) -> dict[str, Any]:
        state = self._read_state()
        if state is None:
            raise ConfigurationError(f"signing keyring {self._dir / _KEYRING} disappeared")
        return state

    def _write_json(self, path: Path, value: Any, *, mode: int) -> None:
        write_private(path, json.dumps(value, indent=2, sort_keys=True).encode(), mode=mode)

    def _key_path(self, key_id: str) -> Path:
        return self._dir / f"{key_id}.key.json"

    def _write_new_key(self, passphrase: bytes, *, state: dict[str, Any]) -> str:
        private = ec.generate_private_key(ec.SECP256R1())
        key_id = key_id_of(private.public_key())
        self._write_json(self._key_path(key_id), _seal(private, key_id, passphrase), mode=0o600)
        retired = state.get("active")
        state["keys"].append(
            {"keyId": key_id, "publicKey": _public_pem(private.public_key()), "created": _now(), "revoked": None}
        )
        state["active"] = key_id
        self._write_json(self._dir / _KEYRING, state, mode=0o644)
        self._private[key_id] = private
        if retired:
            # Only the active key ever signs again: do not keep retired private keys at rest.
            self._key_path(retired).unlink(missing_ok=True)
            self._private.pop(retired, None)
        return key_id

    def _passphrase_source(self) -> str:
        if self._explicit_passphrase is not None:
            return "the configured passphrase"
        if os.environ.get(PASSPHRASE_ENV):
            return PASSPHRASE_ENV
        return f"passphrase file {self._dir / _PASSPHRASE_FILE}"

    def _passphrase(self, *, create: bool) -> bytes:
        if self._explicit_passphrase is not None:
            if not self._explicit_passphrase:
                raise ConfigurationError("signing key passphrase must not be empty")
            return self._explicit_passphrase
        env = os.environ.get(PASSPHRASE_ENV)
        if env:
            return env.encode()
        path = self._dir / _PASSPHRASE_FILE
        try:
            if path.stat().st_mode & 0o077:
                raise ConfigurationError(f"signing passphrase file {path} must not be readable by group or others")
            value = path.read_bytes().strip()
            if not value:
                raise ConfigurationError(f"signing passphrase file {path} is empty")
            return value
        except FileNotFoundError:
            pass
        if not create:
            raise ConfigurationError(
                f"signing keys in {self._dir} are encrypted but no passphrase is available: "
                f"set {PASSPHRASE_ENV} or restore {path}"
            )
        value = secrets.token_urlsafe(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(value + b"\n")
        return value

    def _load_private(self, key_id: str) -> ec.EllipticCurvePrivateKey:
        cached = self._private.get(key_id)
        if cached is not None:
            return cached
        path = self._key_path(key_id)
        try:
            sealed = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(
                f"private key file for active signing key {key_id} is missing in {self._dir}"
            ) from None
        except (OSError, json.JSONDecodeError):
            raise ConfigurationError(f"private key file {path} is unreadable") from None
        private = _open(sealed, key_id, self._passphrase(create=False), path, self._passphrase_source())
        self._private[key_id] = private
        return private


# ---------------------------------------------------------------- encryption at rest
def _kek(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _aad(key_id: str) -> bytes:
    return f"{KEY_FILE_FORMAT}:{key_id}".encode()


def _seal(private: ec.EllipticCurvePrivateKey, key_id: str, passphrase: bytes) -> dict[str, Any]:
    salt, nonce = os.urandom(16), os.urandom(12)
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ciphertext = AESGCM(_kek(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)).encrypt(nonce, der, _aad(key_id))
    return {
        "format": KEY_FILE_FORMAT,
        "keyId": key_id,
        "kdf": {"name": "scrypt", "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P, "salt": b64(salt)},
        "cipher": "AES-256-GCM",
        "nonce": b64(nonce),
        "ciphertext": b64(ciphertext),
    }


def _open(sealed: Any, key_id: str, passphrase: bytes, path: Path, source: str) -> ec.EllipticCurvePrivateKey:
    try:
        if sealed["format"] != KEY_FILE_FORMAT or sealed["kdf"]["name"] != "scrypt":
            raise ValueError("unknown key file format")
        kdf = sealed["kdf"]
        kek = _kek(passphrase, base64.b64decode(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        nonce, ciphertext = base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ConfigurationError(f"private key file {path} is malformed") from None
    try:
        der = AESGCM(kek).decrypt(nonce, ciphertext, _aad(key_id))
    except InvalidTag:
        raise ConfigurationError(
            f"cannot decrypt signing key {key_id} in {path.parent}: wrong passphrase ({source}) or altered key file"
        ) from None
    private = serialization.load_der_private_key(der, password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey) or key_id_of(private.public_key()) != key_id:
        raise ConfigurationError(f"private key file {path} does not hold signing key {key_id}")
    return private
