"""One behaviour contract, run on every ObjectStorage backend (local encrypted, S3 on the moto server)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest

from drs_store.keyring import Keyring
from drs_store.local_storage import HEADER_SIZE, LocalStorage
from drs_store.s3_storage import S3Storage
from drs_store.storage import CHUNK, MissingData, ObjectStorage, StoredBlob
from helixgate.errors import BadRequest, IntegrityError, PayloadTooLarge

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@dataclass
class Backend:
    storage: ObjectStorage
    listing: Callable[[], list[str]]  # everything the backend holds, including partial uploads
    tamper: Callable[[StoredBlob], None]  # flip one stored byte behind the storage's back


class TrickleStream(io.RawIOBase):
    """Returns at most ``step`` bytes per read, like a slow request body."""

    def __init__(self, data: bytes, step: int) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        return self._buf.read(self._step if n is None or n < 0 else min(n, self._step))


def _local(tmp_path: Path) -> Backend:
    root = tmp_path / "drs"
    root.mkdir()
    storage = LocalStorage(root, keyring=Keyring(root / "keyring.json", env={}))

    def listing() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in (root / "objects").rglob("*") if p.is_file())

    def tamper(blob: StoredBlob) -> None:
        path = root / "objects" / blob.location[:2] / f"{blob.location}.blob"
        raw = bytearray(path.read_bytes())
        raw[HEADER_SIZE + 5] ^= 0x01
        path.write_bytes(bytes(raw))

    return Backend(storage, listing, tamper)


def _s3(moto_url: str) -> Iterator[Backend]:
    bucket = "contract-" + uuid.uuid4().hex[:16]
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    storage = S3Storage(bucket, endpoint_url=moto_url, max_attempts=2)

    def listing() -> list[str]:
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        uploads = [f"upload:{u['Key']}" for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
        return sorted(keys + uploads)

    def tamper(blob: StoredBlob) -> None:
        raw = bytearray(client.get_object(Bucket=bucket, Key=blob.location)["Body"].read())
        raw[5] ^= 0x01
        client.put_object(Bucket=bucket, Key=blob.location, Body=bytes(raw), ServerSideEncryption="AES256")

    yield Backend(storage, listing, tamper)
    for key in listing():
        if not key.startswith("upload:"):
            client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield _local(tmp_path)
    else:
        yield from _s3(request.getfixturevalue("aws_env"))


def _read(storage: ObjectStorage, blob: StoredBlob) -> bytes:
    return b"".join(storage.read_verified(blob))


def test_put_computes_the_sha256_of_the_bytes(backend: Backend) -> None:
    data = os.urandom(2 * CHUNK + 333)
    blob = backend.storage.put(io.BytesIO(data))
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert (blob.size, blob.backend, blob.external) == (len(data), backend.storage.name, False)
    assert _read(backend.storage, blob) == data
    assert len(backend.listing()) >= 1


@pytest.mark.parametrize("form", ["hex", "upper", "prefixed"])
def test_matching_client_checksum_is_accepted_in_any_form(backend: Backend, form: str) -> None:
    data = os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    supplied = {"hex": digest, "upper": digest.upper(), "prefixed": "sha256:" + digest}[form]
    assert backend.storage.put(io.BytesIO(data), expected_sha256=supplied).sha256 == digest


@pytest.mark.parametrize("size", [10, 2 * CHUNK + 1, 9 * MIB + 5])  # single chunk, multi chunk, S3 multipart
def test_wrong_client_checksum_stores_nothing(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    wrong = hashlib.sha256(data + b"x").hexdigest()
    with pytest.raises(IntegrityError) as info:
        backend.storage.put(io.BytesIO(data), expected_sha256=wrong)
    assert (info.value.expected, info.value.actual) == (wrong, hashlib.sha256(data).hexdigest())
    assert info.value.status == 422
    assert backend.listing() == []


@pytest.mark.parametrize("size", [CHUNK + 10, 9 * MIB + 5])
def test_size_limit_raises_and_stores_nothing(backend: Backend, size: int) -> None:
    with pytest.raises(PayloadTooLarge):
        backend.storage.put(io.BytesIO(os.urandom(size)), max_bytes=size - 1)
    assert backend.listing() == []
    assert backend.storage.put(io.BytesIO(b"z" * 100), max_bytes=100).size == 100


def test_empty_object(backend: Backend) -> None:
    blob = backend.storage.put(io.BytesIO(b""))
    assert (blob.size, blob.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert _read(backend.storage, blob) == b""
    assert b"".join(backend.storage.open_range(blob)) == b""


def test_short_reads_from_the_client_stream(backend: Backend) -> None:
    data = os.urandom(CHUNK + 5000)
    blob = backend.storage.put(TrickleStream(data, 7000))  # type: ignore[arg-type]
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(backend.storage.open_range(blob, CHUNK - 10, CHUNK + 10)) == data[CHUNK - 10 : CHUNK + 10]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 1),
        (CHUNK - 1, CHUNK + 1),  # straddles the first chunk boundary
        (CHUNK, 2 * CHUNK),  # exactly one chunk
        (100, 2 * CHUNK + 50),  # three chunks, partial at both ends
        (2 * CHUNK + 99, None),  # the last byte
        (500, 500),  # empty
        (10, 10**12),  # end clamped to the size
    ],
)
def test_range_reads_equal_the_plaintext_slice(backend: Backend, start: int, end: int | None) -> None:
    data = os.urandom(2 * CHUNK + 100)
    blob = backend.storage.put(io.BytesIO(data))
    assert b"".join(backend.storage.open_range(blob, start, end)) == data[start:end]


@pytest.mark.parametrize(("start", "end"), [(-1, None), (50, 10), (101, None)])
def test_invalid_ranges_are_bad_requests(backend: Backend, start: int, end: int | None) -> None:
    blob = backend.storage.put(io.BytesIO(os.urandom(100)))
    with pytest.raises(BadRequest):
        backend.storage.open_range(blob, start, end)


def test_tampered_stored_bytes_raise_integrity_error(backend: Backend) -> None:
    data = os.urandom(CHUNK + 77)
    blob = backend.storage.put(io.BytesIO(data))
    backend.tamper(blob)
    with pytest.raises(IntegrityError) as info:
        _read(backend.storage, blob)
    assert info.value.subject == blob.location


def test_digest_mismatch_with_the_record_is_reported_and_the_tail_withheld(backend: Backend) -> None:
    data = os.urandom(2 * CHUNK + 9)
    blob = backend.storage.put(io.BytesIO(data))
    recorded = dataclasses.replace(blob, sha256=hashlib.sha256(b"something else").hexdigest())
    received = bytearray()
    with pytest.raises(IntegrityError) as info:
        for piece in backend.storage.read_verified(recorded):
            received += piece
    assert (info.value.expected, info.value.actual) == (recorded.sha256, blob.sha256)
    assert len(received) < len(data)


@pytest.mark.parametrize("size", [5000, 9 * MIB + 5])  # single put and (S3) multipart
def test_swapped_rows_are_refused_on_read(backend: Backend, size: int) -> None:
    """A's row pointing at B's stored bytes with B's size and checksum (rows swapped whole)."""
    a = backend.storage.put(io.BytesIO(os.urandom(size)), object_id="obj-a")
    b = backend.storage.put(io.BytesIO(os.urandom(size)), object_id="obj-b")
    assert (a.object_id, b.object_id) == ("obj-a", "obj-b")
    swapped = dataclasses.replace(b, object_id="obj-a")
    with pytest.raises(IntegrityError):
        _read(backend.storage, swapped)
    with pytest.raises(IntegrityError):
        b"".join(backend.storage.open_range(swapped, 0, 10))
    assert len(_read(backend.storage, b)) == size  # the true row still reads


def test_read_of_deleted_data_is_an_integrity_failure(backend: Backend) -> None:
    """The database names bytes that are gone: MissingData (IntegrityError), never a plain 404."""
    blob = backend.storage.put(io.BytesIO(b"to be deleted"))
    backend.storage.delete(blob)
    assert backend.listing() == []
    with pytest.raises(MissingData):
        _read(backend.storage, blob)
    with pytest.raises(MissingData):
        b"".join(backend.storage.open_range(blob, 0, 3))
    backend.storage.delete(blob)  # idempotent


def test_objects_are_independent(backend: Backend) -> None:
    a, b = os.urandom(3000), os.urandom(4000)
    blob_a, blob_b = backend.storage.put(io.BytesIO(a)), backend.storage.put(io.BytesIO(b))
    assert blob_a.location != blob_b.location
    backend.storage.delete(blob_a)
    assert _read(backend.storage, blob_b) == b
