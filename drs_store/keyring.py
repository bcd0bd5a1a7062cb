"""Master keys for the local object store's envelope encryption.

Every stored object has its own random AES-256 data key; the keyring wraps (AES-256-GCM)
that data key under a *master key* identified by a key id. Master keys come from:

* the keyring file (``<data_dir>/drs/keyring.json``, mode 0600, created on first use with
  one random key), and/or
* ``HELIXGATE_MASTER_KEY`` (base64 of 32 bytes) with ``HELIXGATE_MASTER_KEY_ID``. An
  environment key is never written to disk and is always the *active* key; keys in the file
  stay available for unwrapping (so objects wrapped before the switch remain readable until
  ``rotate`` re-wraps them).

Key bytes never leave this module except as wrapped/unwrapped data keys: they are not in
any repr, log line or error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from helixgate.errors import ConfigurationError, IntegrityError
from helixgate.fsutil import write_private

ENV_KEY = "HELIXGATE_MASTER_KEY"
ENV_KEY_ID = "HELIXGATE_MASTER_KEY_ID"
KEY_BYTES = 32
_NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FILE_VERSION = 1


@dataclass(frozen=True, eq=False)
class _MasterKey:
    key_id: str
    secret: bytes = field(repr=False)
    source: str = "file"  # "file" | "env"
    created: str = ""

    def __repr__(self) -> str:
        return f"_MasterKey(key_id={self.key_id!r}, source={self.source!r})"


def _new_key_id() -> str:
    return "mk-" + secrets.token_hex(8)


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _check_key_id(key_id: str, origin: str) -> str:
    if not _KEY_ID.match(key_id):
        raise ConfigurationError(f"invalid master key id from {origin}: must match {_KEY_ID.pattern}")
    return key_id


def _decode_key(value: str, origin: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"invalid master key in {origin}: not base64") from None
    if len(raw) != KEY_BYTES:
        # Only the length is reported: the value itself is secret.
        raise ConfigurationError(f"invalid master key in {origin}: expected {KEY_BYTES} bytes, got {len(raw)}")
    return raw


class Keyring:
    """Master keys by id, one of them active. Thread-safe; file writes are atomic (tmp + rename).

    Cross-process consistency (several API processes on one data directory) is the caller's
    job: ``LocalStorage`` holds a file lock around wrapping and rotation and calls
    ``reload_if_changed`` under it.
    """

    def __init__(self, path: Path, env: Mapping[str, str] | None = None) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        self._keys: dict[str, _MasterKey] = {}
        self._active = ""
        self._file_active = ""
        self._stamp: tuple[int, int, int] | None = None
        self._env_key = self._env_master_key(os.environ if env is None else env)
        with self._lock:
            self._load(create=self._env_key is None)

    # ------------------------------------------------------------------ public
    @property
    def path(self) -> Path:
        return self._path

    @property
    def active_key_id(self) -> str:
        with self._lock:
            return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._keys))

    @property
    def env_managed(self) -> bool:
        """True when the active key comes from HELIXGATE_MASTER_KEY (it cannot be rotated here)."""
        return self._env_key is not None

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap ``data_key`` under the active master key; ``context`` is bound as AAD. Returns (key id, blob)."""
        with self._lock:
            mk = self._keys[self._active]
        nonce = os.urandom(_NONCE_BYTES)
        return mk.key_id, nonce + AESGCM(mk.secret).encrypt(nonce, data_key, self._aad(mk.key_id, context))

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes, *, subject: str) -> bytes:
        """Unwrap a data key. Unknown key id -> ConfigurationError; tampered blob -> IntegrityError."""
        with self._lock:
            mk = self._keys.get(key_id)
        if mk is None:
            raise ConfigurationError(f"master key {key_id!r} needed for {subject} is not in the keyring")
        try:
            data_key = AESGCM(mk.secret).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], self._aad(key_id, context)
            )
        except InvalidTag:
            raise IntegrityError(
                f"wrapped data key of {subject} failed authentication under master key {key_id!r}",
                subject=subject,
            ) from None
        if len(data_key) != KEY_BYTES:
            raise IntegrityError(f"wrapped data key of {subject} has the wrong length", subject=subject)
        return data_key

    def has(self, key_id: str) -> bool:
        with self._lock:
            return key_id in self._keys

    def rotate(self) -> str:
        """Make a fresh random key active (persisted) and return its id. Old keys stay until ``remove``."""
        if self._env_key is not None:
            raise ConfigurationError(
                f"the active master key is supplied by {ENV_KEY}; rotate it there (set a new key and "
                f"{ENV_KEY_ID}) after adding the old key to the keyring file"
            )
        with self._lock:
            mk = _MasterKey(_new_key_id(), secrets.token_bytes(KEY_BYTES), "file", _now())
            keys = dict(self._file_keys())
            keys[mk.key_id] = mk
            self._save(keys, mk.key_id)
            return mk.key_id

    def remove(self, key_ids: set[str]) -> None:
        """Drop retired keys from the file. The active key can never be removed."""
        with self._lock:
            if self._active in key_ids:
                raise ConfigurationError(f"refusing to remove the active master key {self._active!r}")
            keys = {k: v for k, v in self._file_keys().items() if k not in key_ids}
            if len(keys) != len(self._file_keys()):
                file_active = self._file_active if self._file_active in keys else ""
                self._save(keys, file_active)

    def reload_if_changed(self) -> bool:
        """Re-read the file if another process replaced it. Returns True when it was re-read."""
        with self._lock:
            if self._file_stamp() == self._stamp:
                return False
            self._load(create=False)
            return True

    def __repr__(self) -> str:
        return f"Keyring(path={str(self._path)!r}, active={self.active_key_id!r}, keys={list(self.key_ids)!r})"

    # ----------------------------------------------------------------- private
    @staticmethod
    def _aad(key_id: str, context: bytes) -> bytes:
        return b"helixgate-drs-data-key/v1\x00" + key_id.encode() + b"\x00" + context

    @staticmethod
    def _env_master_key(env: Mapping[str, str]) -> _MasterKey | None:
        value = env.get(ENV_KEY, "")
        if not value:
            return None
        key_id = env.get(ENV_KEY_ID, "")
        if not key_id:
            raise ConfigurationError(f"{ENV_KEY} is set but {ENV_KEY_ID} is not: a master key needs an id")
        return _MasterKey(_check_key_id(key_id, ENV_KEY_ID), _decode_key(value, ENV_KEY), "env")

    def _file_keys(self) -> dict[str, _MasterKey]:
        return {k: v for k, v in self._keys.items() if v.source == "file"}

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, *, create: bool) -> None:
        keys: dict[str, _MasterKey] = {}
        file_active = ""
        stamp = self._file_stamp()
        if stamp is None and create:
            self._create_initial()
            stamp = self._file_stamp()
        if stamp is not None:
            keys, file_active = self._read_file()
        if self._env_key is not None:
            other = keys.get(self._env_key.key_id)
            if other is not None and not secrets.compare_digest(other.secret, self._env_key.secret):
                raise ConfigurationError(
                    f"master key id {self._env_key.key_id!r} from {ENV_KEY_ID} names a different key in {self._path}"
                )
            keys[self._env_key.key_id] = self._env_key
            active = self._env_key.key_id
        else:
            active = file_active
        if not active or active not in keys:
            raise ConfigurationError(f"keyring {self._path} has no active master key")
        self._keys, self._active, self._file_active, self._stamp = keys, active, file_active, self._file_stamp()

    def _read_file(self) -> tuple[dict[str, _MasterKey], str]:
        st = self._path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigurationError(
                f"keyring {self._path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):o}); "
                "it must be 0600"
            )
        try:
            doc: Any = json.loads(self._path.read_text(encoding="utf-8"))
            if doc.get("version") != _FILE_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            keys: dict[str, _MasterKey] = {}
            for item in doc["keys"]:
                key_id = _check_key_id(str(item["id"]), str(self._path))
                keys[key_id] = _MasterKey(
                    key_id, _decode_key(str(item["key"]), str(self._path)), "file", str(item.get("created", ""))
                )
            active = str(doc.get("active") or "")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # json errors quote the document: never include them, the document holds keys.
            raise ConfigurationError(f"cannot read keyring {self._path}: {type(exc).__name__}") from None
        return keys, active

    def _create_initial(self) -> None:
        mk = _MasterKey(_new_key_id(), secrets.token_bytes(KEY_BYTES), "file", _now())
        # if another process created the keyring first, we use theirs
        write_private(self._path, self._serialize({mk.key_id: mk}, mk.key_id), first_writer_wins=True)

    def _save(self, keys: dict[str, _MasterKey], active: str) -> None:
        write_private(self._path, self._serialize(keys, active))
        self._load(create=False)

    def _serialize(self, keys: dict[str, _MasterKey], active: str) -> bytes:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {
            "version": _FILE_VERSION,
            "active": active,
            "keys": [
                {"id": k.key_id, "key": base64.b64encode(k.secret).decode(), "created": k.created}
                for k in keys.values()
            ],
        }
        return json.dumps(doc, indent=1).encode()


