"""Hashing while data streams: every byte is read once and hashed on the way.

``HashingReader`` wraps a binary stream; ``hash_chunks`` passes chunks on to a sink. Digests
are compared with ``hmac.compare_digest`` (constant time) through ``check_sha256``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Callable, Iterable, Iterator

from helixgate.errors import BadRequest, IntegrityError, PayloadTooLarge

CHUNK = 1024 * 1024
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(value: str) -> str:
    """Accept ``<hex>`` or ``sha256:<hex>`` in any case; return lower-case hex or raise BadRequest."""
    v = value.strip().lower()
    if v.startswith("sha256:"):
        v = v[len("sha256:") :]
    if not _SHA256_HEX.match(v):
        raise BadRequest(f"not a SHA-256 hex digest: {value[:80]!r}")
    return v


def digests_equal(expected: str, actual: str) -> bool:
    return hmac.compare_digest(expected.encode(), actual.encode())


def check_sha256(subject: str, expected: str, actual: str) -> None:
    """Raise IntegrityError naming ``subject`` unless the two hex digests are equal."""
    exp, act = normalize_sha256(expected), normalize_sha256(actual)
    if not digests_equal(exp, act):
        raise IntegrityError(
            f"sha256 mismatch for {subject}: expected {exp}, got {act}",
            subject=subject,
            expected=exp,
            actual=act,
        )


class HashingReader:
    """A read-only stream that hashes (SHA-256) and counts what passes through it.

    ``limit`` bounds the number of bytes; exceeding it raises PayloadTooLarge.
    """

    def __init__(self, raw: BinaryIO, *, limit: int | None = None) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0
        self._limit = limit

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self.size += len(data)
            if self._limit is not None and self.size > self._limit:
                raise PayloadTooLarge(f"payload exceeds the limit of {self._limit} bytes")
            self._sha.update(data)
        return data

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        while True:
            data = self.read(size)
            if not data:
                return
            yield data

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


_HASHERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stream-hasher")
_INLINE_BELOW = 1024 * 1024


class OverlappedSha256:
    """SHA-256 of pieces hashed on a helper thread while the caller produces the next piece.

    SHA-256 releases the GIL on large buffers, so a stream that also decrypts or reads
    (a verified download) runs both at once instead of in series. Pieces are hashed strictly
    in order, at most one at a time per hasher; small pieces are hashed inline (a thread
    hand-off would cost more than it saves). ``hexdigest`` waits for every piece.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._pending: Future[None] | None = None

    def update(self, piece: bytes) -> None:
        self._wait()
        if len(piece) < _INLINE_BELOW:
            self._sha.update(piece)
        else:
            self._pending = _HASHERS.submit(self._sha.update, piece)

    def hexdigest(self) -> str:
        self._wait()
        return self._sha.hexdigest()

    def close(self) -> None:
        """Wait for the piece in flight (a stream abandoned half-way must not leave work behind)."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.cancel():
            pending.exception()  # waits; an error no longer matters to anyone

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


def hash_chunks(chunks: Iterable[bytes], sink: Callable[[bytes], object] | None = None) -> tuple[str, int]:
    """Hash an iterable of chunks, passing each to ``sink``; return (sha256 hex, size)."""
    sha = hashlib.sha256()
    size = 0
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink(chunk)
    return sha.hexdigest(), size


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()
