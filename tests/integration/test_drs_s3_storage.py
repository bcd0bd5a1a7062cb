"""S3 backend against the moto server: SSE, multipart, presigned URLs, registration in place, retries."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3  # type: ignore[import-untyped]
import pytest
import requests

from drs_store.backends import make_storage
from drs_store.s3_storage import S3Storage
from drs_store.storage import MissingData, StoredBlob
from helixgate.config import Settings
from helixgate.errors import BadRequest, Forbidden, IntegrityError, NotFound, UpstreamError

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


class GeneratedStream(io.RawIOBase):
    """``size`` bytes produced on demand, hashed as they are read."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._block = hashlib.sha256(b"s3").digest() * 32768
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        want = min(self._left, len(self._block) if n is None or n < 0 else min(n, len(self._block)))
        self._left -= want
        data = self._block[:want]
        self.sha.update(data)
        return data


def _empty_bucket(client: Any, bucket: str) -> None:
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture()
def s3(aws_env: str) -> Any:
    return boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")


@pytest.fixture()
def bucket(s3: Any) -> Iterator[str]:
    name = "drs-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    yield name
    _empty_bucket(s3, name)


@pytest.fixture()
def other_bucket(s3: Any) -> Iterator[str]:
    name = "ext-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    yield name
    _empty_bucket(s3, name)


@pytest.fixture()
def storage(aws_env: str, bucket: str, other_bucket: str) -> S3Storage:
    return S3Storage(bucket, endpoint_url=aws_env, registration_buckets=frozenset({other_bucket}), max_attempts=2)


def test_objects_carry_server_side_encryption(storage: S3Storage, s3: Any, bucket: str) -> None:
    small = storage.put(io.BytesIO(b"small"))
    large = storage.put(io.BytesIO(os.urandom(17 * MIB)))  # multipart: 8 MiB parts
    for blob in (small, large):
        head = s3.head_object(Bucket=bucket, Key=blob.location)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ContentLength"] == blob.size
        assert blob.key_id is None


def test_kms_encryption_with_key_id(aws_env: str, s3: Any, bucket: str) -> None:
    kms = boto3.client("kms", endpoint_url=aws_env, region_name="us-east-1")
    key_id = kms.create_key(Description="helixgate drs test")["KeyMetadata"]["KeyId"]
    storage = S3Storage(bucket, endpoint_url=aws_env, sse="aws:kms", kms_key_id=key_id)
    data = os.urandom(9 * MIB)
    for blob in (storage.put(io.BytesIO(b"tiny")), storage.put(io.BytesIO(data))):
        head = s3.head_object(Bucket=bucket, Key=blob.location)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert key_id in head["SSEKMSKeyId"]
        assert blob.key_id == key_id
    assert b"".join(storage.read_verified(blob)) == data


def test_multipart_checksum_mismatch_aborts_the_upload(storage: S3Storage, s3: Any, bucket: str) -> None:
    stream = GeneratedStream(20 * MIB)
    with pytest.raises(IntegrityError):
        storage.put(stream, expected_sha256="ab" * 32)  # type: ignore[arg-type]
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_memory_stays_flat_for_a_large_multipart_upload(storage: S3Storage) -> None:
    stream = GeneratedStream(48 * MIB + 3)
    tracemalloc.start()
    try:
        blob = storage.put(stream)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"peak {peak} bytes"
    assert blob.sha256 == stream.sha.hexdigest()
    check = hashlib.sha256()
    for piece in storage.read_verified(blob):
        check.update(piece)
    assert check.hexdigest() == blob.sha256


def test_presigned_url_returns_the_bytes(storage: S3Storage) -> None:
    data = os.urandom(3 * MIB + 1)
    blob = storage.put(io.BytesIO(data))
    url = storage.presign(blob, 120)
    assert url is not None
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["120"]
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data


def test_objects_carry_their_identity_and_presign_refuses_another_objects_key(storage: S3Storage, s3: Any) -> None:
    """S3 encrypts server-side (no associated data of ours): the object id and size live in the
    object's metadata and are compared with the row before a presigned URL is handed out."""
    a = storage.put(io.BytesIO(b"aaaa"), object_id="obj-a")
    b = storage.put(io.BytesIO(b"bbbbbb"), object_id="obj-b")
    meta = s3.head_object(Bucket=storage.bucket, Key=b.location)["Metadata"]
    assert meta == {"helixgate-object-id": "obj-b", "helixgate-size": "6"}
    assert storage.presign(a, 60)
    with pytest.raises(IntegrityError, match="obj-a"):
        storage.presign(dataclasses.replace(b, object_id="obj-a"), 60)
    s3.delete_object(Bucket=storage.bucket, Key=a.location)
    with pytest.raises(MissingData):
        storage.presign(a, 60)


@pytest.mark.parametrize("ttl", [0, -5, 8 * 24 * 3600])
def test_presign_ttl_is_bounded(storage: S3Storage, ttl: int) -> None:
    blob = storage.put(io.BytesIO(b"x"))
    with pytest.raises(BadRequest, match="lifetime"):
        storage.presign(blob, ttl)


def test_register_external_computes_the_checksum_without_copying(
    storage: S3Storage, s3: Any, bucket: str, other_bucket: str
) -> None:
    data = os.urandom(2 * MIB + 10)
    s3.put_object(Bucket=other_bucket, Key="runs/sample 1.bam", Body=data)
    url = f"s3://{other_bucket}/runs/sample 1.bam"
    blob = storage.register_external(url, expected_sha256=hashlib.sha256(data).hexdigest())
    assert (blob.location, blob.size, blob.sha256, blob.external) == (
        url,
        len(data),
        hashlib.sha256(data).hexdigest(),
        True,
    )
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # no copy
    assert b"".join(storage.read_verified(blob)) == data
    assert b"".join(storage.open_range(blob, MIB - 1, MIB + 1)) == data[MIB - 1 : MIB + 1]
    assert requests.get(storage.presign(blob, 60) or "", timeout=30).content == data
    storage.delete(blob)  # drops only our reference
    assert s3.head_object(Bucket=other_bucket, Key="runs/sample 1.bam")["ContentLength"] == len(data)


def test_external_object_changed_later_fails_verification(storage: S3Storage, s3: Any, other_bucket: str) -> None:
    s3.put_object(Bucket=other_bucket, Key="data.vcf", Body=b"original contents")
    blob = storage.register_external(f"s3://{other_bucket}/data.vcf")
    s3.put_object(Bucket=other_bucket, Key="data.vcf", Body=b"modified contents")
    with pytest.raises(IntegrityError) as info:
        b"".join(storage.read_verified(blob))
    assert info.value.expected == hashlib.sha256(b"original contents").hexdigest()
    assert info.value.actual == hashlib.sha256(b"modified contents").hexdigest()


def test_register_external_with_wrong_checksum(storage: S3Storage, s3: Any, other_bucket: str) -> None:
    s3.put_object(Bucket=other_bucket, Key="x", Body=b"abc")
    with pytest.raises(IntegrityError):
        storage.register_external(f"s3://{other_bucket}/x", expected_sha256="00" * 32)


def test_register_external_refusals(storage: S3Storage, s3: Any, bucket: str, other_bucket: str) -> None:
    with pytest.raises(NotFound):
        storage.register_external(f"s3://{other_bucket}/missing")
    with pytest.raises(Forbidden, match="not allowed"):
        storage.register_external("s3://some-unlisted-bucket/key")
    own = storage.put(io.BytesIO(b"ours"))
    with pytest.raises(Forbidden, match="managed by the data store"):
        storage.register_external(f"s3://{bucket}/{own.location}")
    for bad in ("https://example.org/x", "s3://bucket-only", "s3:///key", "s3://UPPER/key"):
        with pytest.raises(BadRequest):
            storage.register_external(bad)
    # Our own bucket outside our prefix is allowed.
    s3.put_object(Bucket=bucket, Key="incoming/a.txt", Body=b"a")
    assert storage.register_external(f"s3://{bucket}/incoming/a.txt").sha256 == hashlib.sha256(b"a").hexdigest()


def test_rotation_is_not_an_s3_operation(storage: S3Storage) -> None:
    with pytest.raises(BadRequest, match="KMS"):
        storage.rotate_master_key()


def test_unreachable_endpoint_gives_upstream_error_after_bounded_retries(aws_env: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    storage = S3Storage("helixgate-down", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=3, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="PutObject failed after retries") as info:
        storage.put(io.BytesIO(b"data"))
    assert time.monotonic() - started < 30
    assert info.value.status == 502
    assert "testing" not in str(info.value)  # no credentials in the message
    blob = StoredBlob("s3", "objects/" + "0" * 32, 1, "0" * 64, None)
    with pytest.raises(UpstreamError, match="GetObject"):
        storage.read_verified(blob)


def test_missing_bucket_is_an_upstream_error(aws_env: str) -> None:
    storage = S3Storage("no-such-bucket-" + uuid.uuid4().hex[:8], endpoint_url=aws_env, max_attempts=1)
    with pytest.raises(UpstreamError, match="NoSuchBucket"):
        storage.put(io.BytesIO(b"data"))


def test_make_storage_builds_the_configured_s3_backend(
    aws_env: str, s3: Any, bucket: str, other_bucket: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=aws_env,
        outbound_allow_list=(f"s3://{other_bucket}", "example.org"),
    )
    storage = make_storage(settings)
    blob = storage.put(io.BytesIO(b"via settings"))
    assert s3.head_object(Bucket=bucket, Key=blob.location)["ServerSideEncryption"] == "AES256"
    s3.put_object(Bucket=other_bucket, Key="k", Body=b"external")
    assert storage.register_external(f"s3://{other_bucket}/k").size == len(b"external")
