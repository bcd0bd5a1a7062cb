"""Local filesystem backend with AES-256-GCM envelope encryption.

Layout under ``<data_dir>/drs``::

    keyring.json              master keys (mode 0600), see drs_store.keyring
    keyring.lock              flock: shared while wrapping a data key, exclusive while rotating
    objects/<id[:2]>/<id>.blob  header + encrypted chunks (never rewritten)
    objects/<id[:2]>/<id>.key   the wrapped data key (replaced atomically on rotation)

Blob format v1 (all integers big-endian)::

    header  = magic "HGXDRS\\x00\\x01" (8) | chunk_size u32 (4) | nonce_prefix (4)      16 bytes
    chunk i = AES-256-GCM(data_key, nonce = nonce_prefix | i u64,
                          aad = header | i u64 | final u8, plaintext[i*C:(i+1)*C])  len + 16 tag

Every object has at least one chunk (an empty object is one empty final chunk). Binding the
index and the final flag into the AAD means chunks cannot be reordered, dropped, duplicated
or the object truncated at a chunk boundary without a GCM failure; binding the header stops
chunk-size or nonce tampering. Plaintext chunk ``i`` sits at ``16 + i * (C + 16)``, so a
range read decrypts only the chunks it needs.

Blob format v2 (magic "HGXDRS\x00\x02", written by every new ``put``) binds the content to
its identity: the DRS object id and the total plaintext size are associated data too::

    ident   = len(object_id) u16 | object_id
    chunk i = AES-256-GCM(..., aad = header | ident | i u64 | final u8 [| size u64 on the final chunk])
    wrap    = AES-256-GCM(master, data_key, aad = key id | location | header | ident | size u64)

so a database row pointing at another object's blob (swapped rows: location, size and
checksum moved together), blob or key files swapped between objects, and reordered,
dropped or truncated chunks all fail authentication on read (``IntegrityError``: the object
is quarantined). The key file (v2) repeats the object id and size in clear so rotation can
re-wrap without the database; reads always take them from the database row, so editing them
in the file only makes the unwrap fail. v1 blobs (no identity binding) stay readable.

The wrapped key lives *beside* the blob (``<id>.key``, JSON) rather than in the blob header,
so master-key rotation replaces one small file per object atomically (write + rename) and
never touches ciphertext. The data key is wrapped with AES-256-GCM under the master key with
AAD = key id | object id | blob header, so a key file swapped between objects fails to unwrap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import struct
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from drs_store.keyring import Keyring
from drs_store.storage import (
    CHUNK,
    MissingData,
    StoredBlob,
    check_backend,
    check_limit,
    prepare_expected,
    read_full,
    resolve_range,
    verify_stream,
)
from helixgate.errors import BadRequest, ConfigurationError, IntegrityError
from helixgate.fsutil import DirectAppender, file_lock, fsync_dir, write_private
from helixgate.integrity import check_sha256

MAGIC = b"HGXDRS\x00\x01"  # v1: read only
MAGIC_V2 = b"HGXDRS\x00\x02"
HEADER_SIZE = 16
TAG_SIZE = 16
MIN_CHUNK = 4096
MAX_CHUNK = 64 * 1024 * 1024
_BATCH_BYTES = 8 * 1024 * 1024  # plaintext per read/hash/write step of an upload or a download
_KEYFILE_VERSIONS = (1, 2)
_LOCATION = re.compile(r"^[0-9a-f]{32}$")
_CHUNK_AAD = struct.Struct(">QB")
_NONCE_INDEX = struct.Struct(">Q")
_SIZE = struct.Struct(">Q")


class LocalStorage:
    """Encrypted object store in a local (or shared POSIX) directory. Thread- and process-safe."""

    name = "local"

    def __init__(self, root: Path, *, keyring: Keyring | None = None, chunk_size: int = CHUNK) -> None:
        if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
            raise ConfigurationError(
                f"local storage chunk size must be {MIN_CHUNK}..{MAX_CHUNK} bytes, got {chunk_size}"
            )
        self._root = Path(root)
        self._objects = self._root / "objects"
        self._objects.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_path = self._root / "keyring.lock"
        self._keyring = keyring if keyring is not None else Keyring(self._root / "keyring.json")
        self._chunk = chunk_size

    @classmethod
    def from_data_dir(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> LocalStorage:
        root = Path(data_dir) / "drs"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        storage = cls(root, keyring=Keyring(root / "keyring.json", env=env))
        storage.sweep_stale_temporaries()
        return storage

    def sweep_stale_temporaries(self, max_age: float = 3600.0) -> int:
        """Remove temp files of uploads that died (SIGKILL, power loss): never visible as objects,
        but they take disk. A live upload keeps touching its file, so only old ones go."""
        cutoff = time.time() - max_age
        removed = 0
        for tmp in self._objects.glob("*/.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self._root)!r}, active_key={self._keyring.active_key_id!r})"

    # ------------------------------------------------------------------ write
    def put(
        self,
        stream: BinaryIO,
        *,
        expected_sha256: str | None = None,
        max_bytes: int | None = None,
        object_id: str = "",
    ) -> StoredBlob:
        expected = prepare_expected(expected_sha256)
        ident = _ident(object_id)
        location = uuid.uuid4().hex
        blob_path, key_path = self._paths(location)
        blob_path.parent.mkdir(exist_ok=True, mode=0o700)
        tmp = blob_path.with_name(f".{location}.blob.tmp")
        data_key = AESGCM.generate_key(bit_length=256)
        header = MAGIC_V2 + struct.pack(">I", self._chunk) + secrets.token_bytes(4)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                digest, size = self._encrypt_stream(stream, fd, AESGCM(data_key), header, ident, max_bytes)
            finally:
                os.close(fd)
            if expected is not None:
                check_sha256("uploaded object", expected, digest)
            with self._file_lock(exclusive=False):
                # Another process may have rotated: wrap under the key that is active *now*.
                self._keyring.reload_if_changed()
                key_id = self._write_key_file(key_path, location, header, data_key, object_id, size)
                os.replace(tmp, blob_path)
            fsync_dir(blob_path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredBlob("local", location, size, digest, key_id, object_id=object_id)

    def _encrypt_stream(
        self, stream: BinaryIO, fd: int, aes: AESGCM, header: bytes, ident: bytes, max_bytes: int | None
    ) -> tuple[str, int]:
        """Write header + sealed chunks to ``fd`` and fsync; returns (sha256 hex, plaintext size)."""
        # Whole batches of chunks: one read, one hash update and one write per batch. Each of
        # those releases the GIL, and taking it back costs up to the interpreter's switch
        # interval while the event loop is busy receiving the body (docs/benchmarks.md):
        # few, large steps keep an upload from queueing behind the loop thousands of times.
        # Chunks are sealed straight into the writer's staging buffer (no extra copy). The
        # last chunk read is held back (copied, so its batch can go) until the next read
        # tells whether it is the final one.
        chunk_size = self._chunk
        batch_size = max(1, _BATCH_BYTES // chunk_size) * chunk_size
        out = DirectAppender(fd, HEADER_SIZE + batch_size + (batch_size // chunk_size + 1) * TAG_SIZE)
        sha = hashlib.sha256()
        prefix = header[12:16]
        index = 0
        size = 0

        def seal(piece: bytes | memoryview, final: bool) -> None:
            nonlocal index
            sealed = len(piece) + TAG_SIZE
            aad = _chunk_aad(header, ident, index, final, size)
            aes.encrypt_into(prefix + _NONCE_INDEX.pack(index), piece, aad, out.reserve(sealed))
            out.commit(sealed)
            index += 1

        try:
            out.append(header)
            held: bytes | None = None
            while True:
                data = read_full(stream, batch_size)  # short only at the end of the stream
                size += len(data)
                check_limit(size, max_bytes)
                if not data:
                    seal(held if held is not None else b"", final=True)  # an empty object is one empty chunk
                    break
                if held is not None:
                    seal(held, final=False)
                sha.update(data)
                with memoryview(data) as view:
                    starts = range(0, len(data), chunk_size)
                    for start in starts[:-1]:
                        seal(view[start : start + chunk_size], final=False)
                    held = bytes(view[starts[-1] :])
                del data
                if len(held) < chunk_size:
                    seal(held, final=True)  # a short chunk can only be the last one
                    break
                out.flush()
            out.finish()
            return sha.hexdigest(), size
        finally:
            out.close()

    def register_external(self, url: str, *, expected_sha256: str | None = None) -> StoredBlob:
        raise BadRequest("registering external objects in place needs the s3 storage backend; upload the data instead")

    # ------------------------------------------------------------------- read
    def open_range(self, blob: StoredBlob, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_backend(blob, self.name)
        start, stop = resolve_range(blob, start, end)
        blob_path, _ = self._existing(blob)
        return self._plaintext(blob, blob_path, start, stop, whole=False)

    def read_verified(self, blob: StoredBlob) -> Iterator[bytes]:
        check_backend(blob, self.name)
        blob_path, _ = self._existing(blob)
        return verify_stream(blob, self._plaintext(blob, blob_path, 0, blob.size, whole=True))

    def _plaintext(self, blob: StoredBlob, blob_path: Path, start: int, stop: int, *, whole: bool) -> Iterator[bytes]:
        if start == stop and not whole:
            return
        subject = blob.location
        try:
            fh_cm = open(blob_path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:  # vanished or unreadable since the check: still an integrity failure
            raise MissingData(
                f"stored data of object {blob.object_id or subject} is unreadable ({exc.strerror})",
                subject=blob.object_id or subject,
                expected="readable stored blob",
                actual=str(exc.strerror),
            ) from None
        with fh_cm as fh:
            header = fh.read(HEADER_SIZE)
            if len(header) != HEADER_SIZE or header[:8] not in (MAGIC, MAGIC_V2):
                raise IntegrityError(f"stored object {subject} has no valid header", subject=subject)
            chunk_size = struct.unpack(">I", header[8:12])[0]
            if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
                raise IntegrityError(f"stored object {subject} has an invalid chunk size", subject=subject)
            ident = _ident(blob.object_id) if header[:8] == MAGIC_V2 else None
            aes = AESGCM(self._data_key(blob.location, header, ident, blob.size))
            stride = chunk_size + TAG_SIZE
            body = os.fstat(fh.fileno()).st_size - HEADER_SIZE
            count = max(1, -(-body // stride))
            last_len = body - (count - 1) * stride - TAG_SIZE
            plain_size = (count - 1) * chunk_size + last_len
            if last_len < 0 or plain_size != blob.size:
                raise IntegrityError(
                    f"stored object {subject} has the wrong length: expected {blob.size} plaintext bytes, "
                    f"found {max(plain_size, 0)}",
                    subject=subject,
                    expected=str(blob.size),
                    actual=str(max(plain_size, 0)),
                )
            first, last = (0, count - 1) if whole else (start // chunk_size, (stop - 1) // chunk_size)
            prefix = header[12:16]
            fh.seek(HEADER_SIZE + first * stride)
            # Plaintext leaves in pieces of about _BATCH_BYTES: each piece is one hand-off to the
            # event loop and one hash update downstream (see _encrypt_stream on GIL hand-offs).
            pieces: list[bytes] = []
            held = 0
            for index in range(first, last + 1):
                final = index == count - 1
                sealed = fh.read(last_len + TAG_SIZE if final else stride)
                try:
                    aad = (
                        header + _CHUNK_AAD.pack(index, final)
                        if ident is None
                        else _chunk_aad(header, ident, index, final, blob.size)
                    )
                    plain = aes.decrypt(prefix + _NONCE_INDEX.pack(index), sealed, aad)
                except InvalidTag:
                    raise IntegrityError(
                        f"stored object {subject}: chunk {index} of {count} failed AES-GCM authentication "
                        f"(altered, reordered, or not the bytes of object {blob.object_id or subject})",
                        subject=subject,
                        expected="authentic chunk",
                        actual=f"chunk {index} altered",
                    ) from None
                base = index * chunk_size
                lo, hi = max(start - base, 0), min(stop - base, len(plain))
                if hi > lo:
                    pieces.append(plain if (lo == 0 and hi == len(plain)) else plain[lo:hi])
                    held += hi - lo
                if held >= _BATCH_BYTES or index == last:
                    if pieces:
                        yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    pieces, held = [], 0

    # ------------------------------------------------------------ management
    def delete(self, blob: StoredBlob) -> None:
        """Remove the ciphertext and its wrapped key. Deleting a missing object is not an error."""
        check_backend(blob, self.name)
        blob_path, key_path = self._paths(blob.location)
        with self._file_lock(exclusive=False):
            blob_path.unlink(missing_ok=True)
            key_path.unlink(missing_ok=True)

    def presign(self, blob: StoredBlob, ttl: int) -> str | None:
        return None  # no URL can reach a local file; the API streams it instead

    def rotate_master_key(self) -> str:
        """Activate a new master key, re-wrap every data key under it, then drop the old keys.

        Ciphertext is never rewritten. Safe to re-run after a crash: objects still under an
        old key are re-wrapped and old keys leave the keyring only after nothing uses them.
        With an environment-supplied key (HELIXGATE_MASTER_KEY) no key is generated: every
        data key is re-wrapped under the environment key and the file keys are dropped.
        Puts wait at their commit step while a rotation runs (one small file per object).
        """
        with self._file_lock(exclusive=True):
            self._keyring.reload_if_changed()
            active = self._keyring.active_key_id if self._keyring.env_managed else self._keyring.rotate()
            for key_path in self._objects.glob("*/*.key"):
                location = key_path.name[: -len(".key")]
                if not _LOCATION.match(location):
                    continue
                blob_path = key_path.with_suffix(".blob")
                try:
                    with open(blob_path, "rb") as fh:
                        header = fh.read(HEADER_SIZE)
                except FileNotFoundError:
                    key_path.unlink(missing_ok=True)  # orphan of an interrupted put/delete
                    continue
                doc = self._read_key_file(key_path, location)
                if doc["key_id"] == active:
                    continue
                ident = _ident(doc["object_id"]) if header[:8] == MAGIC_V2 else None
                data_key = self._keyring.unwrap(
                    doc["key_id"],
                    doc["wrapped"],
                    _wrap_context(location, header, ident, doc["size"]),
                    subject=location,
                )
                if ident is None:
                    self._write_key_file_v1(key_path, location, header, data_key)
                else:
                    self._write_key_file(key_path, location, header, data_key, doc["object_id"], doc["size"])
            self._keyring.remove(set(self._keyring.key_ids) - {active})
        return active

    # ---------------------------------------------------------------- private
    def _paths(self, location: str) -> tuple[Path, Path]:
        if not _LOCATION.match(location):
            raise BadRequest("invalid local object location")
        folder = self._objects / location[:2]
        return folder / f"{location}.blob", folder / f"{location}.key"

    def _existing(self, blob: StoredBlob) -> tuple[Path, Path]:
        paths = self._paths(blob.location)
        if not paths[0].is_file():
            raise MissingData(
                f"stored data of object {blob.object_id or blob.location} is missing (location {blob.location})",
                subject=blob.object_id or blob.location,
                expected="the stored blob",
                actual="missing",
            )
        return paths

    def _data_key(self, location: str, header: bytes, ident: bytes | None, size: int) -> bytes:
        _, key_path = self._paths(location)
        doc = self._read_key_file(key_path, location)
        if not self._keyring.has(doc["key_id"]):
            # Rotated by another process since we loaded the keyring: re-read both under the lock.
            with self._file_lock(exclusive=False):
                self._keyring.reload_if_changed()
                doc = self._read_key_file(key_path, location)
        return self._keyring.unwrap(
            doc["key_id"], doc["wrapped"], _wrap_context(location, header, ident, size), subject=location
        )

    @staticmethod
    def _read_key_file(key_path: Path, location: str) -> dict[str, Any]:
        try:
            doc = json.loads(key_path.read_text(encoding="utf-8"))
            if doc["v"] not in _KEYFILE_VERSIONS:
                raise ValueError("unsupported key file version")
            return {
                "key_id": str(doc["key_id"]),
                "wrapped": base64.b64decode(doc["wrapped"], validate=True),
                "object_id": str(doc.get("object_id", "")),
                "size": int(doc.get("size", 0)),
            }
        except FileNotFoundError:
            raise MissingData(
                f"wrapped data key of object {location} is missing", subject=location, expected="key file",
                actual="missing",
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"wrapped data key of object {location} is unreadable ({type(exc).__name__})", subject=location
            ) from None

    def _write_key_file(
        self, key_path: Path, location: str, header: bytes, data_key: bytes, object_id: str, size: int
    ) -> str:
        key_id, wrapped = self._keyring.wrap(data_key, _wrap_context(location, header, _ident(object_id), size))
        payload = json.dumps(
            {
                "v": 2,
                "key_id": key_id,
                "wrapped": base64.b64encode(wrapped).decode(),
                "object_id": object_id,
                "size": size,
            }
        )
        write_private(key_path, payload.encode())
        return key_id

    def _write_key_file_v1(self, key_path: Path, location: str, header: bytes, data_key: bytes) -> str:
        """Re-wrap (rotation) of a v1 blob's key: the v1 context, as it was written."""
        key_id, wrapped = self._keyring.wrap(data_key, _wrap_context(location, header, None, 0))
        payload = json.dumps({"v": 1, "key_id": key_id, "wrapped": base64.b64encode(wrapped).decode()})
        write_private(key_path, payload.encode())
        return key_id

    def _file_lock(self, *, exclusive: bool) -> AbstractContextManager[None]:
        return file_lock(self._lock_path, exclusive=exclusive)


def _ident(object_id: str) -> bytes:
    raw = object_id.encode()
    if len(raw) > 0xFFFF:
        raise BadRequest("object id too long")
    return struct.pack(">H", len(raw)) + raw


def _chunk_aad(header: bytes, ident: bytes, index: int, final: bool, size: int) -> bytes:
    """v2 chunk associated data: identity, position, and on the final chunk the total size."""
    return header + ident + _CHUNK_AAD.pack(index, final) + (_SIZE.pack(size) if final else b"")


def _wrap_context(location: str, header: bytes, ident: bytes | None, size: int) -> bytes:
    base = location.encode() + b"\x00" + header
    return base if ident is None else base + ident + _SIZE.pack(size)
