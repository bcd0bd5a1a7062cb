"""Signed checkpoints of the audit chain and the key that signs them.

A hash chain alone cannot reveal a cut-off tail, so the chain head is signed (Ed25519) every
``checkpoint_every`` records: a signed checkpoint naming a record that no longer exists, or
whose hash differs, proves truncation or rewriting.

Only the audit writer holds the private key (``<key_dir>/audit-ed25519.pem``, 0600 in a 0700
directory): the process serving the core API, and the operator's ``helixgate audit`` commands.
Every other process (WES workers) appends records to the chain without the key; the
:class:`Checkpointer` of the core API process signs the checkpoints their records reached.
Verification needs only the public key (``audit-ed25519.pub.pem``, written beside the private
key when it is created).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from helixgate.errors import ConfigurationError
from helixgate.fsutil import write_private

if TYPE_CHECKING:
    from helixgate.audit.export import AuditTrail

log = logging.getLogger(__name__)

KEY_FILENAME: Final = "audit-ed25519.pem"
PUBLIC_KEY_FILENAME: Final = "audit-ed25519.pub.pem"


class CheckpointKey:
    """The Ed25519 checkpoint key in ``key_dir``.

    ``signer=True`` (the audit writer): the private key is created on first use and signs.
    ``signer=False``: the private key is never created or opened; verification reads the
    public key file.
    """

    def __init__(self, key_dir: Path, *, signer: bool = True) -> None:
        self.path = key_dir / KEY_FILENAME
        self.public_path = key_dir / PUBLIC_KEY_FILENAME
        self.signer = signer
        self._private: Ed25519PrivateKey | None = None
        self._public: Ed25519PublicKey | None = None

    def __repr__(self) -> str:
        return f"CheckpointKey(path={str(self.path)!r}, signer={self.signer})"

    def exists(self) -> bool:
        """Whether there is a key to verify with."""
        if self.signer:
            return self.path.exists()
        return self.public_path.exists()

    def private(self) -> Ed25519PrivateKey:
        if not self.signer:
            raise ConfigurationError(
                "this process does not hold the audit checkpoint key: checkpoints are signed by the core API"
            )
        if self._private is None:
            if not self.path.exists():
                self._create()
            self._private = self._load()
            self._ensure_public_file(self._private.public_key())
        return self._private

    def public(self) -> Ed25519PublicKey:
        if self._public is None:
            if self.signer:
                self._public = self.private().public_key()
            else:
                self._public = self._load_public()
        return self._public

    @property
    def key_id(self) -> str:
        raw = self.public().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:32]

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private().sign(message)).decode("ascii")

    def verifies(self, message: bytes, signature: str) -> bool:
        try:
            sig = base64.b64decode(signature, validate=True)
            self.public().verify(sig, message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    def public_pem(self) -> bytes:
        return self.public().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def _create(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Write a private temp file, then link it into place: concurrent first starts never
        # see a half-written key, and exactly one key wins.
        write_private(self.path, pem, first_writer_wins=True)

    def _ensure_public_file(self, public: Ed25519PublicKey) -> None:
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        try:
            if self.public_path.read_bytes() == pem:
                return
        except FileNotFoundError:
            pass
        write_private(self.public_path, pem)  # public, but nobody else needs it: 0600 too

    def _load(self) -> Ed25519PrivateKey:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"audit signing key {self.path} must be private to its owner: expected mode 0600, found {mode:04o}"
            )
        try:
            key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
        except ValueError:
            raise ConfigurationError(f"audit signing key {self.path} is not a readable PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"audit signing key {self.path}: expected an Ed25519 key")
        return key

    def _load_public(self) -> Ed25519PublicKey:
        try:
            key = serialization.load_pem_public_key(self.public_path.read_bytes())
        except FileNotFoundError:
            raise ConfigurationError(f"audit verification key {self.public_path} is missing") from None
        except ValueError:
            raise ConfigurationError(f"audit verification key {self.public_path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigurationError(f"audit verification key {self.public_path}: expected an Ed25519 key")
        return key


class Checkpointer:
    """Signs, in the audit writer's process, the checkpoints that records appended by processes
    without the key (WES workers) reached: every ``interval`` seconds, each multiple of
    ``checkpoint_every`` up to the chain head that has no checkpoint yet."""

    def __init__(self, trail: AuditTrail, *, interval: float = 5.0) -> None:
        self.trail = trail
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.trail.checkpoint_every or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="hg-audit-checkpointer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.trail.catch_up_checkpoints()
            except ConfigurationError as exc:
                log.error("audit checkpoints not signed: %s", exc.message)
            except Exception:  # a database blip: next round
                log.warning("audit checkpoint round failed", exc_info=True)
