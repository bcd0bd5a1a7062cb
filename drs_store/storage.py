"""Object storage interface of the data store, and the factory that picks a backend.

Invariants every backend keeps:

* ``put`` hashes (SHA-256) the bytes in the same pass that stores them, in fixed-size
  chunks, so memory stays flat for objects of any size.
* Nothing becomes visible unless the whole stream was read, the size limit held and the
  client's checksum (if any) matched: a failed ``put`` leaves no object and no partial data.
* ``read_verified`` re-hashes while streaming and raises ``IntegrityError`` on any mismatch;
  the last piece is released only after the whole-object digest matched, so a consumer
  never receives a complete but unverified copy.
* ``open_range`` serves bytes ``[start, end)`` (end exclusive, clamped to the size).

Errors are HelixGateError subclasses: BadRequest (bad arguments), MissingData (an
IntegrityError: the database names bytes that are not there),
PayloadTooLarge, IntegrityError (checksum or authentication failure: the caller quarantines
the object and records a security event), UpstreamError (S3 failed after retries),
ConfigurationError (missing master key, wrong backend).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from helixgate.errors import BadRequest, ConfigurationError, IntegrityError, PayloadTooLarge
from helixgate.integrity import OverlappedSha256, check_sha256, normalize_sha256

CHUNK = 1024 * 1024
MAX_PRESIGN_TTL = 7 * 24 * 3600  # SigV4 upper bound


@dataclass(frozen=True)
class StoredBlob:
    """What the database records about stored bytes. ``location`` is opaque and never holds secrets."""

    backend: Literal["local", "s3"]
    location: str
    size: int
    sha256: str  # lower-case hex, computed by the server
    key_id: str | None  # local: master key id at store time (informational); s3: KMS key id or None
    external: bool = False  # registered in place (s3://bucket/key); never deleted by us
    # The DRS object id the bytes were stored for: authenticated at rest (local: AES-GCM
    # associated data; s3: object metadata compared on read), so rows pointing at another
    # object's bytes fail on read. "" for objects written before the binding existed.
    object_id: str = ""


class MissingData(IntegrityError):
    """Stored bytes (or their wrapped key) are gone although the database says they exist:
    an integrity failure (quarantine + security event), not a plain 404."""


@runtime_checkable
class ObjectStorage(Protocol):
    name: str

    def put(
        self,
        stream: BinaryIO,
        *,
        expected_sha256: str | None = None,
        max_bytes: int | None = None,
        object_id: str = "",
    ) -> StoredBlob: ...

    def register_external(self, url: str, *, expected_sha256: str | None = None) -> StoredBlob: ...

    def open_range(self, blob: StoredBlob, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...

    def read_verified(self, blob: StoredBlob) -> Iterator[bytes]: ...

    def delete(self, blob: StoredBlob) -> None: ...

    def presign(self, blob: StoredBlob, ttl: int) -> str | None: ...

    def rotate_master_key(self) -> str: ...


# --------------------------------------------------------------- shared helpers (backends only)
def prepare_expected(expected_sha256: str | None) -> str | None:
    """Validate a client checksum before any byte is consumed (malformed -> BadRequest)."""
    return None if expected_sha256 is None else normalize_sha256(expected_sha256)


def check_limit(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise PayloadTooLarge(f"object exceeds the size limit of {max_bytes} bytes")


def read_full(stream: BinaryIO, n: int) -> bytes:
    """Read exactly ``n`` bytes unless EOF comes first (request bodies return short reads)."""
    data = stream.read(n)
    if not data or len(data) == n:
        return data or b""
    buf = bytearray(data)
    while len(buf) < n:
        more = stream.read(n - len(buf))
        if not more:
            break
        buf += more
    return bytes(buf)


def resolve_range(blob: StoredBlob, start: int, end: int | None) -> tuple[int, int]:
    """Validate ``[start, end)`` against the object size; ``end`` is clamped like a slice."""
    stop = blob.size if end is None else min(end, blob.size)
    if start < 0 or start > blob.size or stop < start:
        raise BadRequest(
            f"invalid byte range [{start}, {'end' if end is None else end}) for an object of {blob.size} bytes"
        )
    return start, stop


def verify_stream(blob: StoredBlob, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-hash ``chunks`` and hold the last one back until size and digest are proven.

    Each piece is hashed on a helper thread while the next one is read and decrypted; only
    the last piece has to wait for the digest, earlier ones leave as soon as the next arrives.
    """
    sha = OverlappedSha256()
    size = 0
    pending: bytes | None = None
    try:
        for chunk in chunks:
            if pending is not None:
                yield pending
            sha.update(chunk)
            size += len(chunk)
            pending = chunk
        if size != blob.size:
            raise IntegrityError(
                f"size mismatch for {blob.location}: expected {blob.size} bytes, got {size}",
                subject=blob.location,
                expected=str(blob.size),
                actual=str(size),
            )
        check_sha256(blob.location, blob.sha256, sha.hexdigest())
    finally:
        sha.close()
    if pending:
        yield pending


def check_backend(blob: StoredBlob, name: str) -> None:
    if blob.backend != name:
        raise ConfigurationError(f"object stored by the {blob.backend} backend cannot be read by the {name} backend")


def check_ttl(ttl: int) -> None:
    if not 0 < ttl <= MAX_PRESIGN_TTL:
        raise BadRequest(f"presigned URL lifetime must be between 1 and {MAX_PRESIGN_TTL} seconds, got {ttl}")
